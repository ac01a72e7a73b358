import NIOCore
import NIOWebSocket

/// The protocol the bench speaks to its target (`--protocol`).
enum WireProtocol: String {
    /// Switchyard's protocol v1 (JSON over WebSocket), with publish acknowledgements.
    case switchyard
    /// MQTT 3.1.1 over WebSocket (subprotocol `mqtt`), QoS 0.
    case mqtt
    /// NATS over WebSocket.
    case nats
    /// The floor program's fixed 110-byte records over plain TCP (scripts/bench-floor.c).
    case raw

    /// A subject name in the target's syntax for the run's `subject` index.
    func subject(runID: String, target: String, index: Int) -> String {
        switch self {
        case .switchyard: return "/bench/\(runID)/\(target)/s\(index)"
        case .mqtt: return "bench/\(runID)/\(target)/s\(index)"
        case .nats: return "bench.\(runID).\(target).s\(index)"
        case .raw: return String(index)
        }
    }

    func session(subjects: [String]) -> PeerSession? {
        switch self {
        case .switchyard: return nil
        case .mqtt: return MQTTSession(subjects: subjects)
        case .nats: return NATSSession(subjects: subjects)
        case .raw: return RawSession()
        }
    }
}

/// What a peer session found in the bytes a server sent.
enum PeerEvent {
    /// Bytes to send back at once (a NATS CONNECT after INFO, a PONG).
    case reply(ByteBuffer)
    /// The server answered the subscribe (granted or refused).
    case subscribed(granted: Bool)
    /// A delivered message's payload.
    case message(ByteBuffer)
    /// The server refused the connection or sent something the bench cannot read; the connection is closed.
    case failure(String)
}

/// One connection's side of a peer protocol, without sockets: what to send on connect, how to frame a publish,
/// and what the server's bytes mean. Subscriber sessions subscribe to `subscribeTo` when they open. A value type
/// (each connection mutates its own copy), `Sendable` so that the handler factories can run on an event loop.
protocol PeerSession: Sendable {
    /// Bytes to send once the connection is up; `subscribeTo` is nil for a publisher.
    mutating func opening(subscribeTo subjectIndex: Int?) -> ByteBuffer
    /// Consumes every complete unit at the front of `buffer` (what is left is an incomplete one).
    mutating func consume(_ buffer: inout ByteBuffer, _ event: (PeerEvent) -> Void)
    /// One publish of `payload` to subject `subjectIndex`.
    func publish(subjectIndex: Int, payload: ByteBuffer) -> ByteBuffer
    /// What to send periodically so that the server keeps the connection, and how often.
    var keepalive: (every: TimeAmount, bytes: ByteBuffer)? { get }
}

/// The content the bench publishes with the peer protocols: `t=<send time ns>;n=<seq of the subject>;` padded
/// with dots to the payload size. One publisher numbers each subject's messages from 1, so subscribers check
/// gaps and duplicates as with Switchyard's `seq`.
enum PeerPayload {
    static let sentAt = Needle("t=")
    static let seq = Needle(";n=")

    static func make(sentAt: UInt64, seq: UInt64, size: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: max(size, 48))
        buffer.writeStaticString("t=")
        buffer.writeDecimal(sentAt)
        buffer.writeStaticString(";n=")
        buffer.writeDecimal(seq)
        buffer.writeStaticString(";")
        if buffer.readableBytes < size { buffer.writeRepeatingByte(UInt8(ascii: "."), count: size - buffer.readableBytes) }
        return buffer
    }

    /// The send time and seq in a payload, or nil when they are not there.
    static func parse(_ bytes: UnsafeRawBufferPointer) -> (sentAt: UInt64, seq: UInt64)? {
        guard let timeAt = sentAt.end(in: bytes), let (time, afterTime) = Scan.decimal(in: bytes, at: timeAt),
              let seqAt = seq.end(in: bytes, from: afterTime), let (number, _) = Scan.decimal(in: bytes, at: seqAt)
        else { return nil }
        return (time, number)
    }
}

/// Turns a WebSocket connection into a byte stream for the peer handlers: the payload of every data frame goes
/// up as a `ByteBuffer` (MQTT and NATS packets may span frames and frames may hold several packets), bytes going
/// down leave as one masked binary frame each. Answers pings; a close frame closes the connection.
final class WebSocketStreamAdapter: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = WebSocketFrame

    private let stats: LoopStats
    private var random: FastRandom

    init(stats: LoopStats, seed: UInt64) {
        self.stats = stats
        random = FastRandom(seed: seed)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary, .text, .continuation:
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(using: &random), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            let code = data.readInteger(as: UInt16.self).map(String.init) ?? "none"
            let reason = data.readString(length: data.readableBytes) ?? ""
            stats.counts.closeReasons["close frame \(code) \(reason)", default: 0] += 1
            context.close(promise: nil)
        default:
            break
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(using: &random),
                                   data: unwrapOutboundIn(data))
        context.write(wrapOutboundOut(frame), promise: promise)
    }
}
