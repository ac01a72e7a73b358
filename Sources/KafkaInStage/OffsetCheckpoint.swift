import Foundation
import NIOConcurrencyHelpers
import SwitchyardCore
import SwitchyardKafka

/// The next offset to forward per partition epoch, saved to `<RunDir>/kafka-in-<n>.offsets.json`
/// (`OffsetCheckpointFile`) at most once a second, so a restarted kafka-in resumes where it stopped instead of
/// skipping what arrived while it was down.
// @unchecked Sendable: `next` and `lastSaved` are touched only under `lock`.
final class OffsetCheckpoint: @unchecked Sendable {
    private let file: String
    private let lock = NIOLock()
    private var next: [String: Int64] = [:]
    private var lastSaved: UInt64 = 0

    init(file: String) {
        self.file = file
    }

    /// The offsets the previous run saved: empty when there is none; a file that cannot be read throws (naming
    /// it) and leaves them empty, so kafka-in starts as if for the first time (the warm-up tail).
    func load() throws(RunDirFileError) -> [String: Int64] {
        let saved = try OffsetCheckpointFile.read(from: file)?.nextOffsets ?? [:]
        lock.withLock { next = saved }
        return saved
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
        guard let snapshot else { return }
        try? OffsetCheckpointFile(nextOffsets: snapshot).write(to: file)
    }
}
