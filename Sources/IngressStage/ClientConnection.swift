import NIOCore
import NIOWebSocket
import SwitchyardCore

/// One WebSocket client of this ingress and its write path. Owned by the hub, touched only on the event loop.
///
/// Two kinds of output share one order:
/// - live output (messages as they are published, replies to the client's requests) is written at once and
///   flushed once per batch; a client whose unread live output passes half the buffer limit is too slow;
/// - an answer (a subscribe's history or recovery, of any size) is queued and written in parts, each flushed,
///   while the channel is writable, continuing when it becomes writable again. It never counts against the
///   client. Live output that comes while an answer is queued waits behind it (and does count).
final class ClientConnection {
    /// What a live write found.
    enum WriteOutcome: Equatable {
        case accepted
        /// The client does not read its live output: close it (`1008`).
        case tooSlow
    }

    /// An answer is written and flushed in parts of about this many bytes.
    static let answerChunkBytes = 64 * 1024

    let id: UInt64
    let channel: Channel
    /// Live output the client may leave unread (written while the channel is not writable, or queued behind an
    /// answer) before it is too slow: half the `ClientBufferLimit`, the other half being the channel's buffer.
    let liveBacklogLimit: Int
    /// The MQTT state of an MQTT client; nil for a WebSocket (JSON) client. Decides how messages are encoded.
    let mqtt: MQTTSession?
    var subjects: Set<String> = []
    var isClosing = false
    /// Monotonic time of the client's last frame, for the idle timeout.
    var lastActivity: UInt64

    /// Subscribe requests of this connection sent to the pipeline and not answered yet.
    var subscribesInFlight = 0
    var subscribeRate: TokenBucket
    var publishRate: TokenBucket
    var rateLimitStrikes = RateLimitStrikes()

    /// Output waiting for the channel while an answer is being written.
    private enum Queued {
        case live(WebSocketFrame)
        case answer(WebSocketFrame)
        /// A message of an answer, encoded only when written: an answer is held once, as the cache sent it.
        case answerMessage(Message, MessageKind)

        var liveBytes: Int {
            if case .live(let frame) = self { return frame.data.readableBytes }
            return 0
        }
    }

    private var queued = CircularBuffer<Queued>(initialCapacity: 0)
    /// Bytes of live output written since the channel last stopped being writable, plus those queued.
    private(set) var liveBacklog = 0
    private(set) var needsFlush = false

    init(id: UInt64, channel: Channel, liveBacklogLimit: Int, limits: ConnectionLimits, now: UInt64,
         mqtt: MQTTSession? = nil) {
        self.id = id
        self.mqtt = mqtt
        self.channel = channel
        self.liveBacklogLimit = liveBacklogLimit
        self.lastActivity = now
        subscribeRate = TokenBucket(perSecond: limits.subscribeRate, burst: limits.subscribeBurst, now: now)
        publishRate = TokenBucket(perSecond: limits.publishRate, burst: limits.publishRate, now: now)
    }

    /// True while part of an answer (and what came after it) waits to be written.
    var isPacingAnswer: Bool { !queued.isEmpty }

    /// Writes live output without flushing (`flush()` once per batch); says when the client is too slow.
    func writeLive(_ frame: WebSocketFrame) -> WriteOutcome {
        guard !isClosing else { return .accepted }
        if !queued.isEmpty {
            queued.append(.live(frame))
            liveBacklog += frame.data.readableBytes
        } else {
            if !channel.isWritable { liveBacklog += frame.data.readableBytes }
            channel.write(frame, promise: nil)
            needsFlush = true
        }
        return liveBacklog > liveBacklogLimit ? .tooSlow : .accepted
    }

    /// Queues one frame of an answer; `writeQueued()` writes what the channel takes.
    func queueAnswer(_ frame: WebSocketFrame) {
        guard !isClosing else { return }
        queued.append(.answer(frame))
    }

    /// Queues one message of an answer, to be encoded as a `message` frame of `kind` when it is written.
    func queueAnswer(_ message: Message, kind: MessageKind) {
        guard !isClosing else { return }
        queued.append(.answerMessage(message, kind))
    }

    /// Writes queued output while the channel is writable, flushing every `answerChunkBytes`.
    func writeQueued() {
        var unflushed = 0
        while !isClosing, channel.isWritable, let next = queued.popFirst() {
            let frame: WebSocketFrame
            switch next {
            case .live(let live):
                liveBacklog -= live.data.readableBytes
                frame = live
            case .answer(let answer):
                frame = answer
            case .answerMessage(let message, let kind):
                guard let encoded = encodeAnswer(message, kind: kind) else { continue }
                frame = encoded
            }
            unflushed += frame.data.readableBytes
            channel.write(frame, promise: nil)
            needsFlush = true
            if unflushed >= Self.answerChunkBytes {
                flush()
                unflushed = 0
            }
        }
        flush()
    }

    /// A message of an answer as this client's protocol has it: a `message` frame, or an MQTT PUBLISH (retain
    /// set on a snapshot; nil when it exceeds the client's Maximum Packet Size).
    private func encodeAnswer(_ message: Message, kind: MessageKind) -> WebSocketFrame? {
        guard let mqtt else {
            return WebSocketFrame(fin: true, opcode: .text,
                                  data: ServerFrames.message(message, kind: kind, allocator: channel.allocator))
        }
        var publish = MQTTOutgoingPublish(message: message, retain: kind == .snapshot)
        return publish.packet(for: mqtt, allocator: channel.allocator).map {
            WebSocketFrame(fin: true, opcode: .binary, data: $0)
        }
    }

    func flush() {
        guard needsFlush else { return }
        needsFlush = false
        channel.flush()
    }

    /// The client read what was buffered: its backlog is gone; continue an answer.
    func writabilityChanged() {
        guard channel.isWritable else { return }
        liveBacklog = queued.reduce(0) { $0 + $1.liveBytes }
        writeQueued()
    }

    /// Drops queued output (the connection is closing).
    func discardQueued() {
        queued.removeAll()
        liveBacklog = 0
    }
}
