import Logging
import NIOCore

/// The binary wire format of a batch of envelopes, shared by every stage.
///
/// ```
/// batch    := magic "SY" · version u8 · reserved u8 · count u32 · envelope*
/// envelope := length u32 · kind u8 · body          (length counts kind and body)
/// string   := length u32 · UTF-8 bytes             bytes := length u32 · bytes
/// message  := subject · content bytes · seq u64 · previous seq u64 · epoch · flags u8 · closure · timestamp u64
///             · headers                         (headers from version 3 on)
/// headers  := count u16 · (name string · value string)*
/// ```
/// patternInterest := pattern string · ingress u32 · added u8     patternSubscribe := id u64 · replyTo · pattern
/// Integers are big-endian. A reader skips envelopes of kinds it does not know, so a newer stage can add kinds
/// without breaking an older peer; anything malformed is a `CodecError`, never a crash.
public enum EnvelopeCodec {
    /// 2: messages carry their previous seq. 3: messages carry their headers. A stage writes `version` and reads
    /// `readableVersions` (a version 2 message has no headers); an older stage refuses a newer batch with a clear
    /// error, so a change of version needs every stage of a node restarted together, not a rolling upgrade.
    public static let version: UInt8 = 3
    public static let readableVersions: ClosedRange<UInt8> = 2...3
    /// The first version whose messages carry headers.
    static let headersVersion: UInt8 = 3
    static let magic: UInt16 = 0x5359  // "SY"
    static let headerSize = 8
    static let countOffset = 4
    /// The smallest encoded message (every string and the content empty, version 2): bounds a count read from
    /// the wire.
    static let minimumMessageBytes = 4 + 4 + 8 + 8 + 4 + 1 + 4 + 8
    /// The smallest encoded header (name and value empty): bounds a header count read from the wire.
    static let minimumHeaderBytes = 4 + 4

    /// A length or count as the format writes it, or `CodecError.tooLarge` naming `field`.
    static func checkedLength(_ length: Int, of field: String) throws -> UInt32 {
        guard let value = UInt32(exactly: length) else { throw CodecError.tooLarge(field) }
        return value
    }

    enum Kind: UInt8 {
        case publish = 1
        case publishAck = 2
        case message = 3
        case subscribe = 4
        case subscribeReply = 5
        case interest = 6
        case peerUp = 7
        /// Added within version 3: an older stage skips it as an unknown kind.
        case patternInterest = 8
        case patternSubscribe = 9
    }

    /// Decodes a batch a stage received: logs envelopes of unknown kinds it skipped, counts the envelopes in
    /// `metrics` (and records the batch's size); nil for a malformed batch, which is logged and dropped.
    public static func decodeReceived(_ batch: ByteBuffer, logger: Logger, metrics: StageMetrics) -> [Envelope]? {
        do {
            let (envelopes, skipped) = try decodeBatch(batch)
            if skipped > 0 { logger.warning("skipped envelopes of unknown kinds", metadata: ["count": "\(skipped)"]) }
            metrics.countReceivedBatch(envelopes.count)
            logger.debug("batch received",
                         metadata: ["envelopes": "\(envelopes.count)", "bytes": "\(batch.readableBytes)"])
            return envelopes
        } catch {
            logger.error("malformed batch dropped", metadata: ["error": "\(error)", "bytes": "\(batch.readableBytes)"])
            return nil
        }
    }

    /// Decodes a whole batch. `skippedUnknown` counts envelopes of kinds this build does not know.
    public static func decodeBatch(_ batch: ByteBuffer) throws -> (envelopes: [Envelope], skippedUnknown: Int) {
        var reader = batch
        guard let magic = reader.readInteger(as: UInt16.self), magic == Self.magic else { throw CodecError.badMagic }
        guard let version = reader.readInteger(as: UInt8.self) else { throw CodecError.truncated }
        guard readableVersions.contains(version) else { throw CodecError.unsupportedVersion(version) }
        let hasHeaders = version >= headersVersion
        guard reader.readInteger(as: UInt8.self) != nil, let count = reader.readInteger(as: UInt32.self) else {
            throw CodecError.truncated
        }
        // Every envelope takes at least its length field: a count the batch cannot hold is malformed.
        guard Int(count) <= reader.readableBytes / 4 else { throw CodecError.truncated }
        var envelopes: [Envelope] = []
        envelopes.reserveCapacity(Int(min(count, 4096)))
        var skipped = 0
        for _ in 0..<count {
            let length = try reader.readLength()
            guard var body = reader.readSlice(length: length) else { throw CodecError.truncated }
            guard let rawKind = body.readInteger(as: UInt8.self) else { throw CodecError.truncated }
            guard let kind = Kind(rawValue: rawKind) else {
                skipped += 1
                continue
            }
            envelopes.append(try body.readEnvelope(kind, hasHeaders: hasHeaders))
            guard body.readableBytes == 0 else { throw CodecError.trailingBytes }
        }
        guard reader.readableBytes == 0 else { throw CodecError.trailingBytes }
        return (envelopes, skipped)
    }
}

public enum CodecError: Error, Equatable, CustomStringConvertible {
    case badMagic
    case unsupportedVersion(UInt8)
    case truncated
    case trailingBytes
    case invalidValue(String)
    /// A length or count does not fit the format's 32 bits (an envelope of 4 GiB or more): nothing is written.
    case tooLarge(String)

    public var description: String {
        switch self {
        case .badMagic: return "not a Switchyard batch (bad magic)"
        case .unsupportedVersion(let version): return "unsupported batch version \(version)"
        case .truncated: return "truncated batch"
        case .trailingBytes: return "trailing bytes after an envelope"
        case .invalidValue(let field): return "invalid value for \(field)"
        case .tooLarge(let field): return "\(field) is too large for the envelope format (4 GiB or more)"
        }
    }
}

/// Accumulates envelopes for one destination into one nanomsg message.
public struct BatchWriter {
    public private(set) var buffer: ByteBuffer
    public private(set) var count: Int = 0

    public init(allocator: ByteBufferAllocator = ByteBufferAllocator(), capacity: Int = 16 * 1024) {
        buffer = allocator.buffer(capacity: capacity)
        writeHeader()
    }

    public var isEmpty: Bool { count == 0 }
    public var byteCount: Int { buffer.readableBytes }

    /// Adds an envelope, or throws `CodecError.tooLarge` and leaves the batch as it was when a length or count
    /// of it does not fit the format.
    public mutating func encode(_ envelope: Envelope) throws {
        guard count < Int(UInt32.max) else { throw CodecError.tooLarge("batch count") }
        let lengthIndex = buffer.writerIndex
        do {
            buffer.writeInteger(UInt32(0))
            try buffer.writeEnvelope(envelope)
            let length = try EnvelopeCodec.checkedLength(buffer.writerIndex - lengthIndex - 4, of: "envelope")
            buffer.setInteger(length, at: lengthIndex)
        } catch {
            buffer.moveWriterIndex(to: lengthIndex)
            throw error
        }
        count += 1
    }

    /// Adds an envelope; false (and the batch unchanged) when it is too large for the format, see `encode`.
    @discardableResult
    public mutating func append(_ envelope: Envelope) -> Bool {
        (try? encode(envelope)) != nil
    }

    /// Returns the finished batch and starts an empty one.
    public mutating func finish() -> ByteBuffer {
        buffer.setInteger(UInt32(count), at: buffer.readerIndex + EnvelopeCodec.countOffset)
        let batch = buffer
        buffer = ByteBufferAllocator().buffer(capacity: max(1024, min(batch.readableBytes, 64 * 1024)))
        count = 0
        writeHeader()
        return batch
    }

    private mutating func writeHeader() {
        buffer.writeInteger(EnvelopeCodec.magic)
        buffer.writeInteger(EnvelopeCodec.version)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(0))
    }
}

extension ByteBuffer {
    fileprivate mutating func writeEnvelope(_ envelope: Envelope) throws {
        switch envelope {
        case .publish(let publish):
            writeInteger(EnvelopeCodec.Kind.publish.rawValue)
            writeInteger(publish.requestID)
            try writeLengthPrefixed(publish.replyTo)
            try writeMessage(publish.message)
        case .publishAck(let ack):
            writeInteger(EnvelopeCodec.Kind.publishAck.rawValue)
            writeInteger(ack.requestID)
            writeInteger(ack.status.rawValue)
            try writeLengthPrefixed(ack.reason)
        case .message(let message):
            writeInteger(EnvelopeCodec.Kind.message.rawValue)
            try writeMessage(message)
        case .subscribe(let subscribe):
            writeInteger(EnvelopeCodec.Kind.subscribe.rawValue)
            writeInteger(subscribe.requestID)
            try writeLengthPrefixed(subscribe.replyTo)
            try writeLengthPrefixed(subscribe.subject)
            writeInteger(subscribe.ingress)
            writeInteger(subscribe.registersInterest ? UInt8(1) : 0)
            switch subscribe.start {
            case .snapshot:
                writeInteger(UInt8(0))
            case .history(let count):
                writeInteger(UInt8(1))
                writeInteger(count)
            case .recover(let epoch, let seq):
                writeInteger(UInt8(2))
                try writeLengthPrefixed(epoch)
                writeInteger(seq)
            }
        case .subscribeReply(let reply):
            writeInteger(EnvelopeCodec.Kind.subscribeReply.rawValue)
            writeInteger(reply.requestID)
            try writeLengthPrefixed(reply.subject)
            writeInteger(reply.kind.rawValue)
            writeInteger(reply.status.rawValue)
            try writeLengthPrefixed(reply.epoch)
            writeInteger(reply.lastSeq)
            writeInteger(try EnvelopeCodec.checkedLength(reply.messages.count, of: "message count"))
            for message in reply.messages { try writeMessage(message) }
        case .interest(let interest):
            writeInteger(EnvelopeCodec.Kind.interest.rawValue)
            try writeLengthPrefixed(interest.subject)
            writeInteger(interest.ingress)
            writeInteger(interest.isAdded ? UInt8(1) : 0)
        case .peerUp(let peer):
            writeInteger(EnvelopeCodec.Kind.peerUp.rawValue)
            try writeLengthPrefixed(peer.stage)
            writeInteger(peer.instance)
        case .patternInterest(let interest):
            writeInteger(EnvelopeCodec.Kind.patternInterest.rawValue)
            try writeLengthPrefixed(interest.pattern)
            writeInteger(interest.ingress)
            writeInteger(interest.isAdded ? UInt8(1) : 0)
        case .patternSubscribe(let subscribe):
            writeInteger(EnvelopeCodec.Kind.patternSubscribe.rawValue)
            writeInteger(subscribe.requestID)
            try writeLengthPrefixed(subscribe.replyTo)
            try writeLengthPrefixed(subscribe.pattern)
        }
    }

    private mutating func writeMessage(_ message: Message) throws {
        try writeLengthPrefixed(message.subject)
        writeInteger(try EnvelopeCodec.checkedLength(message.content.readableBytes, of: "content"))
        writeImmutableBuffer(message.content)
        writeInteger(message.seq)
        writeInteger(message.previousSeq)
        try writeLengthPrefixed(message.epoch)
        writeInteger(message.flags.rawValue)
        try writeLengthPrefixed(message.closure)
        writeInteger(message.timestamp)
        guard let count = UInt16(exactly: message.headers.count) else { throw CodecError.tooLarge("header count") }
        writeInteger(count)
        for header in message.headers {
            try writeLengthPrefixed(header.name)
            try writeLengthPrefixed(header.value)
        }
    }

    private mutating func writeLengthPrefixed(_ string: String) throws {
        writeInteger(try EnvelopeCodec.checkedLength(string.utf8.count, of: "string"))
        writeString(string)
    }

    fileprivate mutating func readEnvelope(_ kind: EnvelopeCodec.Kind, hasHeaders: Bool) throws -> Envelope {
        switch kind {
        case .publish:
            let requestID = try readRequired(UInt64.self)
            let replyTo = try readLengthPrefixedString()
            let message = try readMessage(hasHeaders: hasHeaders)
            return .publish(Publish(requestID: requestID, replyTo: replyTo, message: message))
        case .publishAck:
            let requestID = try readRequired(UInt64.self)
            guard let status = PublishAck.Status(rawValue: try readRequired(UInt8.self)) else {
                throw CodecError.invalidValue("publish ack status")
            }
            return .publishAck(PublishAck(requestID: requestID, status: status, reason: try readLengthPrefixedString()))
        case .message:
            return .message(try readMessage(hasHeaders: hasHeaders))
        case .subscribe:
            let requestID = try readRequired(UInt64.self)
            let replyTo = try readLengthPrefixedString()
            let subject = try readLengthPrefixedString()
            let ingress = try readRequired(UInt32.self)
            let registersInterest = try readBool("registersInterest")
            let start: SubscribeStart
            switch try readRequired(UInt8.self) {
            case 0: start = .snapshot
            case 1: start = .history(count: try readRequired(UInt32.self))
            case 2: start = .recover(epoch: try readLengthPrefixedString(), seq: try readRequired(UInt64.self))
            default: throw CodecError.invalidValue("subscribe start")
            }
            return .subscribe(Subscribe(requestID: requestID, replyTo: replyTo, subject: subject, ingress: ingress,
                                        registersInterest: registersInterest, start: start))
        case .subscribeReply:
            let requestID = try readRequired(UInt64.self)
            let subject = try readLengthPrefixedString()
            guard let kind = MessageKind(rawValue: try readRequired(UInt8.self)) else {
                throw CodecError.invalidValue("message kind")
            }
            guard let status = SubscribeReply.Status(rawValue: try readRequired(UInt8.self)) else {
                throw CodecError.invalidValue("subscribe reply status")
            }
            let epoch = try readLengthPrefixedString()
            let lastSeq = try readRequired(UInt64.self)
            let count = try readRequired(UInt32.self)
            guard Int(count) <= readableBytes / EnvelopeCodec.minimumMessageBytes else { throw CodecError.truncated }
            var messages: [Message] = []
            messages.reserveCapacity(Int(count))
            for _ in 0..<count { messages.append(try readMessage(hasHeaders: hasHeaders)) }
            return .subscribeReply(SubscribeReply(requestID: requestID, subject: subject, kind: kind, status: status,
                                                  messages: messages, epoch: epoch, lastSeq: lastSeq))
        case .interest:
            let subject = try readLengthPrefixedString()
            let ingress = try readRequired(UInt32.self)
            return .interest(Interest(subject: subject, ingress: ingress, isAdded: try readBool("interest")))
        case .peerUp:
            let stage = try readLengthPrefixedString()
            return .peerUp(PeerUp(stage: stage, instance: try readRequired(UInt32.self)))
        case .patternInterest:
            let pattern = try readLengthPrefixedString()
            let ingress = try readRequired(UInt32.self)
            return .patternInterest(PatternInterest(pattern: pattern, ingress: ingress,
                                                    isAdded: try readBool("pattern interest")))
        case .patternSubscribe:
            let requestID = try readRequired(UInt64.self)
            let replyTo = try readLengthPrefixedString()
            return .patternSubscribe(PatternSubscribe(requestID: requestID, replyTo: replyTo,
                                                      pattern: try readLengthPrefixedString()))
        }
    }

    private mutating func readMessage(hasHeaders: Bool) throws -> Message {
        let subject = try readLengthPrefixedString()
        guard let content = readSlice(length: try readLength()) else { throw CodecError.truncated }
        let seq = try readRequired(UInt64.self)
        let previousSeq = try readRequired(UInt64.self)
        let epoch = try readLengthPrefixedString()
        let flags = MessageFlags(rawValue: try readRequired(UInt8.self))
        let closure = try readLengthPrefixedString()
        let timestamp = try readRequired(UInt64.self)
        return Message(subject: subject, content: content, seq: seq, previousSeq: previousSeq, epoch: epoch,
                       flags: flags, closure: closure, timestamp: timestamp,
                       headers: hasHeaders ? try readHeaders() : [])
    }

    private mutating func readHeaders() throws -> [MessageHeader] {
        let count = Int(try readRequired(UInt16.self))
        guard count > 0 else { return [] }
        guard count <= readableBytes / EnvelopeCodec.minimumHeaderBytes else { throw CodecError.truncated }
        var headers: [MessageHeader] = []
        headers.reserveCapacity(count)
        for _ in 0..<count {
            let name = try readLengthPrefixedString()
            headers.append(MessageHeader(name, try readLengthPrefixedString()))
        }
        return headers
    }

    fileprivate mutating func readLength() throws -> Int {
        let length = Int(try readRequired(UInt32.self))
        guard length <= readableBytes else { throw CodecError.truncated }
        return length
    }

    private mutating func readRequired<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        guard let value = readInteger(as: T.self) else { throw CodecError.truncated }
        return value
    }

    private mutating func readBool(_ field: String) throws -> Bool {
        switch try readRequired(UInt8.self) {
        case 0: return false
        case 1: return true
        default: throw CodecError.invalidValue(field)
        }
    }

    private mutating func readLengthPrefixedString() throws -> String {
        let length = try readLength()
        guard let string = readString(length: length) else { throw CodecError.truncated }
        return string
    }
}
