import Foundation
import NIOConcurrencyHelpers
import SwitchyardCore
import SwitchyardKafka

/// The next offset to forward per partition epoch, saved to `<RunDir>/kafka-in-<n>.offsets.json` at most once a
/// second, so a restarted kafka-in resumes where it stopped instead of skipping what arrived while it was down.
// @unchecked Sendable: `next` and `lastSaved` are touched only under `lock`.
final class OffsetCheckpoint: @unchecked Sendable {
    private let file: String
    private let lock = NIOLock()
    private var next: [String: Int64] = [:]
    private var lastSaved: UInt64 = 0

    init(file: String) {
        self.file = file
    }

    /// The offsets the previous run saved (empty when there is none or it cannot be read).
    func load() -> [String: Int64] {
        guard let data = FileManager.default.contents(atPath: file),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Int64] else { return [:] }
        lock.withLock { next = object }
        return object
    }

    /// Notes records that were forwarded; saves when the last save is a second old.
    func advance(_ records: [KafkaRecord]) {
        let now = monotonicNanoseconds()
        let snapshot: [String: Int64]? = lock.withLock {
            for record in records { next[record.epoch] = max(next[record.epoch] ?? 0, record.offset + 1) }
            guard elapsedNanoseconds(from: lastSaved, to: now) >= 1_000_000_000 else { return nil }
            lastSaved = now
            return next
        }
        guard let snapshot, let data = try? JSONSerialization.data(withJSONObject: snapshot) else { return }
        try? data.write(to: URL(fileURLWithPath: file), options: .atomic)
    }
}
