import NIOCore

/// Flags of a message, as carried on the wire.
public struct MessageFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The message becomes the subject's snapshot.
    public static let retained = MessageFlags(rawValue: 1 << 0)
    /// `qos: GUARANTEED`: kept for history and recovery (`STANDARD` messages are only delivered live).
    public static let guaranteed = MessageFlags(rawValue: 1 << 1)
    /// The content is binary: clients see it base64-encoded.
    public static let binary = MessageFlags(rawValue: 1 << 2)
    /// The publisher waits for a `publish_status`: whoever stores the message acknowledges it.
    public static let wantsAck = MessageFlags(rawValue: 1 << 3)
    /// With `retained` and empty content: the message removes the subject's snapshot instead of becoming it (an
    /// MQTT publish with the retain flag and an empty payload). It is still delivered and kept in the history like any other.
    public static let clearsSnapshot = MessageFlags(rawValue: 1 << 4)
}

/// How a message reaches a client: live, or as part of the answer to a subscribe.
public enum MessageKind: UInt8, Sendable {
    case update = 0
    case snapshot = 1
    case recovered = 2
    case historical = 3

    public var protocolName: String {
        switch self {
        case .update: return "update"
        case .snapshot: return "snapshot"
        case .recovered: return "recovered"
        case .historical: return "historical"
        }
    }
}

/// A message on a subject. `seq` and `epoch` are zero and empty until the cache (or Kafka) assigns them.
public struct Message: Equatable, Sendable {
    public var subject: String
    public var content: ByteBuffer
    public var seq: UInt64
    /// The seq of the subject's message before this one in the same epoch, when known (0: unknown or none).
    /// Whoever receives the stream can tell a message was lost when this is above the last seq it saw.
    public var previousSeq: UInt64
    public var epoch: String
    public var flags: MessageFlags
    /// The publisher's closure, echoed to subscribers; empty when none was given.
    public var closure: String
    /// Nanoseconds since the Unix epoch when the message entered the broker.
    public var timestamp: UInt64
    /// (name, value) pairs carried with the content: MQTT 5 user properties, Kafka record headers. Empty for
    /// most messages, which costs nothing (an empty array does not allocate). Bounded by `MessageHeader.maxCount`
    /// and `.maxBytes` wherever a message enters the broker.
    public var headers: [MessageHeader]

    public init(subject: String, content: ByteBuffer, seq: UInt64 = 0, previousSeq: UInt64 = 0, epoch: String = "",
                flags: MessageFlags = [.retained, .guaranteed], closure: String = "", timestamp: UInt64 = 0,
                headers: [MessageHeader] = []) {
        self.subject = subject
        self.content = content
        self.seq = seq
        self.previousSeq = previousSeq
        self.epoch = epoch
        self.flags = flags
        self.closure = closure
        self.timestamp = timestamp
        self.headers = headers
    }

    /// The bytes the message holds: its content and its headers' names and values.
    public var byteCount: Int {
        headers.isEmpty ? content.readableBytes : content.readableBytes + MessageHeader.byteCount(of: headers)
    }
}

/// One (name, value) pair of a message's headers: both UTF-8 strings without U+0000 (MQTT 5 strings); names
/// need not be unique, and their order is kept.
public struct MessageHeader: Equatable, Hashable, Sendable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }

    /// At most this many headers per message.
    public static let maxCount = 32
    /// At most this many bytes of names and values (UTF-8) per message, counted in `MessageSizeLimit` too.
    public static let maxBytes = 4096

    /// The UTF-8 bytes of the names and values of `headers`.
    public static func byteCount(of headers: [MessageHeader]) -> Int {
        headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count }
    }

    /// Whether `headers` keep within `maxCount` and `maxBytes`.
    public static func areWithinBounds(_ headers: [MessageHeader]) -> Bool {
        headers.count <= maxCount && byteCount(of: headers) <= maxBytes
    }

    /// The headers of `candidates`, in order, up to the first that would cross `maxCount` or `maxBytes`, and
    /// how many were dropped from there on.
    public static func bounded(_ candidates: [MessageHeader]) -> (kept: [MessageHeader], dropped: Int) {
        var bytes = 0
        for (index, header) in candidates.enumerated() {
            bytes += header.name.utf8.count + header.value.utf8.count
            if index == maxCount || bytes > maxBytes {
                return (Array(candidates[..<index]), candidates.count - index)
            }
        }
        return (candidates, 0)
    }
}

/// A publish on its way from an ingress to whoever stores it.
public struct Publish: Equatable, Sendable {
    /// Chosen by the ingress; echoed in the `PublishAck`.
    public var requestID: UInt64
    /// The ingress's inbound address: acknowledgements are pushed straight there.
    public var replyTo: String
    public var message: Message

    public init(requestID: UInt64, replyTo: String, message: Message) {
        self.requestID = requestID
        self.replyTo = replyTo
        self.message = message
    }
}

public struct PublishAck: Equatable, Sendable {
    public enum Status: UInt8, Sendable {
        case ok = 0
        case failed = 1
    }

    public var requestID: UInt64
    public var status: Status
    public var reason: String

    public init(requestID: UInt64, status: Status, reason: String = "") {
        self.requestID = requestID
        self.status = status
        self.reason = reason
    }
}

/// What a subscriber asks for when it subscribes.
public enum SubscribeStart: Equatable, Sendable {
    /// The retained snapshot, if any.
    case snapshot
    /// Up to `count` most recent cached messages.
    case history(count: UInt32)
    /// Every message after `seq` in `epoch`, or the snapshot and a resync when that is not possible.
    case recover(epoch: String, seq: UInt64)
}

/// A subscribe from an ingress: optionally registers the ingress's interest in the subject (with the fanout,
/// in order with the subject's messages) and asks the cache for the subscriber's initial messages.
public struct Subscribe: Equatable, Sendable {
    public var requestID: UInt64
    public var replyTo: String
    public var subject: String
    public var ingress: UInt32
    /// True when this is the ingress's first subscriber of the subject: the cache forwards an interest to the fanout.
    public var registersInterest: Bool
    public var start: SubscribeStart

    public init(requestID: UInt64, replyTo: String, subject: String, ingress: UInt32, registersInterest: Bool,
                start: SubscribeStart) {
        self.requestID = requestID
        self.replyTo = replyTo
        self.subject = subject
        self.ingress = ingress
        self.registersInterest = registersInterest
        self.start = start
    }
}

/// The cache's answer to a `Subscribe`.
public struct SubscribeReply: Equatable, Sendable {
    public enum Status: UInt8, Sendable {
        /// No recovery was asked for.
        case none = 0
        /// Everything after the client's position is in `messages`.
        case sync = 1
        /// The position could not be served: `messages` holds the snapshot, if any.
        case resync = 2
    }

    public var requestID: UInt64
    public var subject: String
    public var kind: MessageKind
    public var status: Status
    public var messages: [Message]
    /// The subject's epoch and last sequence number when the cache answered: live messages at or below it were
    /// either in `messages` or are not meant for this subscriber.
    public var epoch: String
    public var lastSeq: UInt64

    public init(requestID: UInt64, subject: String, kind: MessageKind, status: Status, messages: [Message],
                epoch: String, lastSeq: UInt64) {
        self.requestID = requestID
        self.subject = subject
        self.kind = kind
        self.status = status
        self.messages = messages
        self.epoch = epoch
        self.lastSeq = lastSeq
    }
}

/// An ingress gains its first or loses its last subscriber of a subject.
public struct Interest: Equatable, Sendable {
    public var subject: String
    public var ingress: UInt32
    public var isAdded: Bool

    public init(subject: String, ingress: UInt32, isAdded: Bool) {
        self.subject = subject
        self.ingress = ingress
        self.isAdded = isAdded
    }
}

/// An ingress gains its first or loses its last subscriber of a pattern (`SubjectPattern`, MQTT wildcards). The
/// router sends it to every fanout shard: a pattern can match subjects of any shard.
public struct PatternInterest: Equatable, Sendable {
    /// The pattern's text (`/vehicles/+/speed`); a receiver that cannot parse it drops the envelope.
    public var pattern: String
    public var ingress: UInt32
    public var isAdded: Bool

    public init(pattern: String, ingress: UInt32, isAdded: Bool) {
        self.pattern = pattern
        self.ingress = ingress
        self.isAdded = isAdded
    }
}

/// A subscribe to a pattern asks every cache shard for the retained snapshots of the subjects it matches. Each
/// shard answers with one `SubscribeReply` (kind `snapshot`, `subject` the pattern, at most
/// `maxSnapshots` messages; none when it holds no match).
public struct PatternSubscribe: Equatable, Sendable {
    /// Snapshots a cache shard sends for one pattern subscribe at most, and their content and header bytes.
    public static let maxSnapshots = 1000
    public static let maxSnapshotBytes = 8 * 1024 * 1024

    public var requestID: UInt64
    public var replyTo: String
    public var pattern: String

    public init(requestID: UInt64, replyTo: String, pattern: String) {
        self.requestID = requestID
        self.replyTo = replyTo
        self.pattern = pattern
    }
}

/// A stage instance (re)started: ingresses answer by re-announcing their interest.
public struct PeerUp: Equatable, Sendable {
    public var stage: String
    public var instance: UInt32

    public init(stage: String, instance: UInt32) {
        self.stage = stage
        self.instance = instance
    }
}

/// Everything that travels between stages.
public enum Envelope: Equatable, Sendable {
    case publish(Publish)
    case publishAck(PublishAck)
    case message(Message)
    case subscribe(Subscribe)
    case subscribeReply(SubscribeReply)
    case interest(Interest)
    case peerUp(PeerUp)
    case patternInterest(PatternInterest)
    case patternSubscribe(PatternSubscribe)
}

extension Envelope {
    /// A short name for logs.
    public var kindName: String {
        switch self {
        case .publish: return "publish"
        case .publishAck: return "publishAck"
        case .message: return "message"
        case .subscribe: return "subscribe"
        case .subscribeReply: return "subscribeReply"
        case .interest: return "interest"
        case .peerUp: return "peerUp"
        case .patternInterest: return "patternInterest"
        case .patternSubscribe: return "patternSubscribe"
        }
    }
}
