import CRdKafka
import NIOCore

/// An error reported by librdkafka (or by this wrapper, with a librdkafka-style code).
public struct KafkaError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// librdkafka's `rd_kafka_resp_err_t`: negative for local errors, positive for broker errors.
    public let code: Int32
    /// librdkafka's symbolic name, e.g. `_QUEUE_FULL`, `_ALL_BROKERS_DOWN`, `MSG_SIZE_TOO_LARGE`.
    public let name: String
    /// A human-readable message (librdkafka's reason when it gave one).
    public let message: String
    /// A fatal error leaves the client unusable: the stage should exit and be restarted.
    public let isFatal: Bool

    public init(code: Int32, name: String, message: String, isFatal: Bool = false) {
        self.code = code
        self.name = name
        self.message = message
        self.isFatal = isFatal
    }

    init(_ err: rd_kafka_resp_err_t, reason: String? = nil, isFatal: Bool = false) {
        self.code = err.rawValue
        self.name = String(cString: rd_kafka_err2name(err))
        let text = String(cString: rd_kafka_err2str(err))
        if let reason, !reason.isEmpty { self.message = reason } else { self.message = text }
        self.isFatal = isFatal
    }

    public var description: String { "\(message) (\(name))" }

    /// librdkafka's code for a full producer queue (kafka-out reports its own backpressure with it).
    public static let queueFullCode = RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue
    /// A record not delivered within `message.timeout.ms`.
    public static let messageTimedOutCode = RD_KAFKA_RESP_ERR__MSG_TIMED_OUT.rawValue
}

/// A topic partition.
public struct KafkaTopicPartition: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)[\(partition)]" }
}

/// Where a consumer starts reading a partition.
public enum KafkaOffset: Hashable, Sendable, CustomStringConvertible {
    /// The oldest record still in the log.
    case beginning
    /// An absolute offset (the next record read is the one at this offset).
    case offset(Int64)
    /// `count` records before the partition's end (librdkafka resolves the end with ListOffsets; on Tansu that
    /// end is the last *batch's* base offset + 1, so a tail may start a little earlier than asked: harmless for
    /// cache warm-up).
    case tail(Int64)

    var rawValue: Int64 {
        switch self {
        case .beginning: return SY_RD_KAFKA_OFFSET_BEGINNING
        case .offset(let o): return max(0, o)
        case .tail(let n): return sy_rd_kafka_offset_tail(max(0, n))
        }
    }

    public var description: String {
        switch self {
        case .beginning: return "beginning"
        case .offset(let o): return "\(o)"
        case .tail(let n): return "tail(\(n))"
        }
    }
}

/// A partition as the consumer sees it when it assigns it.
public struct KafkaPartitionInfo: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    /// The topic's id (Kafka's UUID, base64url without padding as Kafka's own tools print it), or nil when the
    /// broker reports none.
    public var topicID: String?
    /// Identifies this partition of this incarnation of the topic: changes when the topic is deleted and
    /// created again. See `KafkaEpoch`.
    public var epoch: String

    public var topicPartition: KafkaTopicPartition { KafkaTopicPartition(topic: topic, partition: partition) }
    public var description: String { "\(topic)[\(partition)] epoch \(epoch)" }
}

/// The epoch string Switchyard gives messages from a Kafka partition.
///
/// Format: `<topic-id>.<partition>`, e.g. `AaIPBfkSdBGvsryjCJI7lA.3`, where `<topic-id>` is the topic's UUID in
/// base64url without padding (what Kafka's Java tools print as "TopicId"). Every node reads the same topic id from
/// the cluster, so every node computes the same epoch; recreating the topic gives it a new id, hence a new epoch.
/// When the broker reports no topic id (the all-zero UUID: brokers older than Kafka 2.8), the fallback is
/// `<topic>.<partition>`: same on every node, but it does NOT change when the topic is recreated.
public enum KafkaEpoch {
    public static func make(topic: String, partition: Int32, topicID: String?) -> String {
        if let topicID { return "\(topicID).\(partition)" }
        return "\(topic).\(partition)"
    }

    /// Kafka's textual form of a UUID: base64url of its 16 bytes, no padding; nil for the all-zero UUID.
    public static func topicIDString(mostSignificant: Int64, leastSignificant: Int64) -> String? {
        if mostSignificant == 0 && leastSignificant == 0 { return nil }
        var bytes = [UInt8](repeating: 0, count: 16)
        let msb = UInt64(bitPattern: mostSignificant), lsb = UInt64(bitPattern: leastSignificant)
        for i in 0..<8 {
            bytes[i] = UInt8(truncatingIfNeeded: msb >> (56 - 8 * UInt64(i)))
            bytes[8 + i] = UInt8(truncatingIfNeeded: lsb >> (56 - 8 * UInt64(i)))
        }
        return base64URLNoPadding(bytes)
    }

    static func base64URLNoPadding(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)]]
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)]]
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// One header of a Kafka record, as Kafka has it: a name and a value of any bytes, or a null value.
public struct KafkaHeader: Sendable, Equatable {
    public var name: String
    /// nil for a null value.
    public var value: ByteBuffer?

    public init(name: String, value: ByteBuffer?) {
        self.name = name
        self.value = value
    }
}

/// One record read from Kafka. Key, value and headers are copies, owned by the record.
public struct KafkaRecord: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    /// nil for a record with a null key.
    public var key: ByteBuffer?
    public var value: ByteBuffer
    /// Milliseconds since the Unix epoch (create or log-append time); -1 when the record has none.
    public var timestamp: Int64
    /// The partition's epoch (see `KafkaEpoch`), as assigned.
    public var epoch: String
    /// The record's headers, in order: at most `maxHeaders` of them. Empty for most records, which costs nothing.
    public var headers: [KafkaHeader] = []
    /// Headers of the record not read: past `maxHeaders`, or with a name that is not UTF-8.
    public var headersNotRead = 0

    /// The most headers read of one record: bounds what a hostile record costs before the stage's own bounds.
    public static let maxHeaders = 64
}

/// The result of a delivery: the record is stored in Kafka (error nil) or failed for good.
public struct KafkaDeliveryReport: Sendable, Equatable {
    /// The id given to `produce`.
    public var id: UInt64
    public var topic: String
    public var partition: Int32
    /// The offset Kafka assigned; -1 when unknown (failed delivery).
    public var offset: Int64
    public var error: KafkaError?
}

/// Something a producer or consumer reports besides records and delivery reports. Delivered on the client's
/// own poll thread.
public enum KafkaEvent: Sendable, Equatable {
    /// A log line from librdkafka (syslog levels: 3 error, 4 warning, 5 notice, 6 info, 7 debug).
    case log(level: Int32, facility: String, message: String)
    /// An error librdkafka reports on the client as a whole (a broker connection failed, ...). Usually
    /// transient: librdkafka retries by itself. A fatal one (`isFatal`) leaves the client unusable.
    case error(KafkaError)
    /// The cluster became reachable (true) or unreachable (false): reported on every change, starting with the
    /// first time it is known. `reason` says what showed it.
    case reachability(reachable: Bool, reason: String)
    /// Consumer: partitions now assigned, each with its epoch and start offset.
    case partitionsAssigned([KafkaPartitionAssignment])
    /// Consumer: partitions no longer consumed (topic deleted or recreated, or no longer selected).
    case partitionsRevoked([KafkaPartitionInfo])
    /// Consumer: the partition is read up to its end (`offset` is the next offset to come). Fires again each
    /// time the consumer catches up after new records. Use this, not the high watermark, to know the consumer
    /// is caught up (Tansu reports a high watermark that is the last batch's base offset + 1).
    case partitionEOF(KafkaPartitionInfo, offset: Int64)
    /// Consumer: an error on one partition (offset out of range, ...).
    case partitionError(KafkaPartitionInfo, KafkaError)
}

/// A partition the consumer assigned and where it starts.
public struct KafkaPartitionAssignment: Sendable, Equatable, CustomStringConvertible {
    public var info: KafkaPartitionInfo
    public var start: KafkaOffset
    public var description: String { "\(info) from \(start)" }
}
