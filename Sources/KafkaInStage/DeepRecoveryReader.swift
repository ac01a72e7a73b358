import Foundation
import NIOCore
import SwitchyardCore
import SwitchyardKafka

/// Reads one partition from an offset to its end with a short-lived consumer of its own, keeping the records of
/// one key: how a subscriber whose position is older than the caches hold is recovered from Kafka itself.
final class DeepRecoveryReader: Sendable {
    enum Outcome {
        /// The key's records after the position, and the partition's end (the next offset) when read.
        case records([KafkaRecord], end: Int64)
        /// Kafka cannot serve it (the position is no longer in the log, or the read took too long).
        case unavailable(String)
    }

    /// Bounds of one deep recovery: beyond them it is answered with a resync (never a reply with a gap).
    static let timeout: UInt64 = 15_000_000_000
    static let maxRecordsKept = 100_000
    /// Content bytes of one reply: a reply this large would stall the ingress and the client alike.
    static let maxReplyBytes = 16 * 1024 * 1024

    private let config: KafkaConfig
    private let isStopping: @Sendable () -> Bool

    init(config: KafkaConfig, isStopping: @escaping @Sendable () -> Bool) {
        self.config = config
        self.isStopping = isStopping
    }

    /// - Parameter position: the last offset the subscriber has; below `Int64.max`, as every Kafka offset is.
    func read(_ partition: KafkaPartitionInfo, after position: Int64, key: String?) -> Outcome {
        guard position >= -1, position < Int64.max else { return .unavailable("\(position) is not a Kafka offset") }
        let collector = Collector(partition: partition.partition, first: position + 1, key: key,
                                  maxBytes: Self.maxReplyBytes)
        let consumer: KafkaConsumer
        do {
            consumer = try KafkaConsumer(
                config: config, topics: KafkaTopicSelection(names: [partition.topic]),
                startOffset: { info in info.partition == partition.partition ? .offset(position + 1) : nil },
                onRecords: { records in collector.add(records) },
                onEvent: { event in collector.note(event, epoch: partition.epoch) })
        } catch {
            return .unavailable("cannot create a reader: \(error)")
        }
        consumer.start()
        defer { consumer.close() }
        return collector.wait(until: monotonicNanoseconds() + Self.timeout, unless: isStopping)
    }

    /// Gathers what the reader's poll thread delivers, until the partition's end, within the bounds.
    // @unchecked Sendable: every mutable property is touched only under `condition`'s lock.
    final class Collector: @unchecked Sendable {
        private let condition = NSCondition()
        private let partition: Int32
        private let first: Int64
        private let key: ByteBuffer?
        private let maxBytes: Int
        private var records: [KafkaRecord] = []
        private var bytesKept = 0
        private var firstOffsetSeen: Int64?
        private var outcome: Outcome?

        init(partition: Int32, first: Int64, key: String?, maxBytes: Int) {
            self.partition = partition
            self.first = first
            self.key = key.map { ByteBuffer(string: $0) }
            self.maxBytes = maxBytes
        }

        func add(_ batch: [KafkaRecord]) {
            condition.lock()
            defer { condition.unlock() }
            for record in batch where record.partition == partition && outcome == nil {
                if firstOffsetSeen == nil {
                    firstOffsetSeen = record.offset
                    if record.offset > first {
                        // The log no longer starts at the position: records in between are gone.
                        finish(.unavailable("the log starts at offset \(record.offset), after \(first)"))
                        return
                    }
                }
                if record.key == key && record.offset >= first {
                    records.append(record)
                    bytesKept += record.value.readableBytes
                }
                if records.count > DeepRecoveryReader.maxRecordsKept {
                    finish(.unavailable("more than \(DeepRecoveryReader.maxRecordsKept) records to recover"))
                } else if bytesKept > maxBytes {
                    finish(.unavailable("more than \(maxBytes) bytes to recover"))
                }
            }
        }

        func note(_ event: KafkaEvent, epoch: String) {
            condition.lock()
            defer { condition.unlock() }
            switch event {
            case .partitionsAssigned(let assignments):
                if let mine = assignments.first(where: { $0.info.partition == partition }), mine.info.epoch != epoch {
                    finish(.unavailable("the topic was recreated"))
                }
            case .partitionEOF(let info, let offset) where info.partition == partition && outcome == nil:
                if firstOffsetSeen == nil && offset > first {
                    finish(.unavailable("the log ends at offset \(offset) without the position's records"))
                } else {
                    finish(.records(records, end: offset))
                }
            case .error(let error) where error.isFatal:
                finish(.unavailable("fatal Kafka client error: \(error)"))
            case .partitionError(let info, let error) where info.partition == partition:
                finish(.unavailable("partition error: \(error)"))
            default:
                break
            }
        }

        /// Called with the lock held.
        private func finish(_ result: Outcome) {
            guard outcome == nil else { return }
            outcome = result
            condition.broadcast()
        }

        /// Waits in short slices, so a stopping stage does not wait out the whole timeout. `deadline` is on the
        /// monotonic clock.
        func wait(until deadline: UInt64, unless stopping: () -> Bool) -> Outcome {
            condition.lock()
            defer { condition.unlock() }
            while true {
                if let outcome { return outcome }
                if monotonicNanoseconds() >= deadline { return .unavailable("no answer from Kafka in time") }
                if stopping() { return .unavailable("the stage is stopping") }
                _ = condition.wait(until: Date().addingTimeInterval(0.1))
            }
        }
    }
}
