import NIOCore
import NIOWebSocket
import SwitchyardCore

/// One WebSocket client of this ingress and its write path. Owned by the hub, touched only on the event loop.
///
/// Two kinds of output share one order:
/// - live output (messages as they are published, replies to the client's requests) is written at once through
///   the connection's `ClientWire` (the frame's bytes, built once per message, go straight below the frame
///   encoder) and flushed once per batch while the channel is writable; while it is not, it waits in the
///   connection's own queue (a reference to the frame shared by every subscriber: no work in the pipeline for a
///   client that does not read). A client whose queued live output passes its limit is too slow;
/// - an answer (a subscribe's history or recovery, of any size) is queued and written in parts, each flushed,
///   while the channel is writable, continuing when it becomes writable again. It never counts against the
///   client. Live output that comes while an answer is queued waits behind it (and does count).
/// A client that takes none of its waiting output for `SlowClientTimeout` is too slow as well (`stalledSince`).
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
    /// Where live output enters the channel's pipeline.
    let wire: ClientWire
    /// Live output the client may leave unread (queued while the channel is not writable, or behind an answer)
    /// before it is too slow: the `ClientBufferLimit` less what the channel itself buffers.
    let liveBacklogLimit: Int
    /// The MQTT state of an MQTT client; nil for a WebSocket (JSON) client. Decides how messages are encoded.
    let mqtt: MQTTSession?
    var subjects: Set<String> = []
    /// What the connection may subscribe to and publish on (its token's, or `Entitlement`'s default); set by
    /// `ClientHandler` before the connection's first frame.
    var permissions = Permissions.nothing
    var isClosing = false
    /// Monotonic time of the client's last frame, for the idle timeout.
    var lastActivity: UInt64

    /// Subscribe requests of this connection sent to the pipeline and not answered yet.
    var subscribesInFlight = 0
    var subscribeRate: TokenBucket
    var publishRate: TokenBucket
    var pingRate: TokenBucket
    var rateLimitStrikes = RateLimitStrikes()

    /// Output waiting for the channel: while it is not writable, or while an answer is being written.
    private enum Queued {
        case live(WireFrame)
        case answer(WebSocketFrame)
        /// A message of an answer, encoded only when written: an answer is held once, as the cache sent it.
        case answerMessage(Message, MessageKind)
    }

    private var queued = OutputQueue<Queued>()
    /// Bytes of live output queued.
    private(set) var liveBacklog = 0
    private(set) var needsFlush = false
    /// In the hub's list of connections to flush at the end of the batch.
    var isDirty = false
    /// Monotonic time since which output has been waiting for a channel that takes none; nil while it takes it.
    private(set) var stalledSince: UInt64?

    init(id: UInt64, channel: Channel, liveBacklogLimit: Int, limits: ConnectionLimits, now: UInt64,
         mqtt: MQTTSession? = nil) {
        self.id = id
        self.mqtt = mqtt
        self.channel = channel
        wire = ClientWire(channel: channel)
        self.liveBacklogLimit = liveBacklogLimit
        self.lastActivity = now
        subscribeRate = TokenBucket(perSecond: limits.subscribeRate, burst: limits.subscribeBurst, now: now)
        publishRate = TokenBucket(perSecond: limits.publishRate, burst: limits.publishRate, now: now)
        pingRate = TokenBucket(perSecond: limits.pingRate, burst: limits.pingRate, now: now)
    }

    /// True while part of an answer (and what came after it) waits to be written.
    var isPacingAnswer: Bool { !queued.isEmpty }

    /// Writes live output without flushing (`flush()` once per batch), or queues it while the channel is not
    /// writable (a burst of this batch may fill it: `leftUnread` judges the client after the flush).
    func writeLive(_ frame: WireFrame) {
        guard !isClosing else { return }
        if !queued.isEmpty || !wire.isWritable {
            queued.append(.live(frame))
            liveBacklog += frame.payloadBytes
        } else {
            wire.write(frame)
            needsFlush = true
        }
    }

    /// After a flush, what is still queued is what the client did not take: past the limit it is too slow; and
    /// from now on its output is stalled until the channel takes some again.
    func leftUnread(now: UInt64) -> WriteOutcome {
        guard noteStall(now: now) else { return .accepted }
        return liveBacklog > liveBacklogLimit ? .tooSlow : .accepted
    }

    /// Starts the stall clock when output waits for a channel that takes none; true when it does.
    @discardableResult
    private func noteStall(now: UInt64) -> Bool {
        guard !isClosing, !queued.isEmpty, !channel.isWritable else { return false }
        if stalledSince == nil { stalledSince = now }
        return true
    }

    /// True when output has waited for longer than `timeout` nanoseconds for a channel that takes none of it.
    func isStalled(now: UInt64, timeout: UInt64) -> Bool {
        guard let stalledSince, now >= stalledSince else { return false }
        return now - stalledSince >= timeout
    }

    /// Why the hub's timer closes a connection.
    enum Overdue: Equatable {
        /// No subscription and no frame for `IdleTimeout`.
        case idle
        /// Output waited `SlowClientTimeout` for a channel that took none of it.
        case stalled
        /// An MQTT client sent no packet for 1.5 times its keepalive.
        case keepAliveExpired
    }

    /// What the connection's clocks say at `now` (the hub asks every connection once per tick); nil: nothing.
    func overdue(now: UInt64, limits: ConnectionLimits) -> Overdue? {
        guard !isClosing else { return nil }
        let quietFor = now >= lastActivity ? now - lastActivity : 0
        let idleTimeout = limits.idleTimeoutNanoseconds
        if idleTimeout > 0, subjects.isEmpty, mqtt?.patterns.isEmpty ?? true, quietFor >= idleTimeout { return .idle }
        let slowClientTimeout = limits.slowClientTimeoutNanoseconds
        if slowClientTimeout > 0, isStalled(now: now, timeout: slowClientTimeout) { return .stalled }
        if let keepAlive = mqtt?.keepAliveTimeoutNanoseconds, keepAlive > 0, quietFor >= keepAlive {
            return .keepAliveExpired
        }
        return nil
    }

    /// Queues one frame of an answer; `writeQueued(now:)` writes what the channel takes.
    func queueAnswer(_ frame: WebSocketFrame) {
        guard !isClosing else { return }
        queued.append(.answer(frame))
    }

    /// Queues one message of an answer, to be encoded as a `message` frame of `kind` when it is written.
    func queueAnswer(_ message: Message, kind: MessageKind) {
        guard !isClosing else { return }
        queued.append(.answerMessage(message, kind))
    }

    /// Writes queued output while the channel is writable, flushing every `answerChunkBytes`; notes a stall when
    /// output is left for a channel that takes none.
    func writeQueued(now: UInt64) {
        defer { noteStall(now: now) }
        var unflushed = 0
        while !isClosing, channel.isWritable, let next = queued.popFirst() {
            switch next {
            case .live(let live):
                liveBacklog -= live.payloadBytes
                unflushed += live.payloadBytes
                wire.write(live)
            case .answer(let answer):
                unflushed += answer.data.readableBytes
                channel.write(answer, promise: nil)
            case .answerMessage(let message, let kind):
                guard let encoded = encodeAnswer(message, kind: kind) else { continue }
                unflushed += encoded.data.readableBytes
                channel.write(encoded, promise: nil)
            }
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
        wire.flush()
    }

    /// The client read what was buffered: write what waits for it.
    func writabilityChanged(now: UInt64) {
        guard channel.isWritable else { return }
        stalledSince = nil
        writeQueued(now: now)
    }

    /// Drops queued output (the connection is closing).
    func discardQueued() {
        queued.removeAll()
        liveBacklog = 0
        stalledSince = nil
    }
}

/// A first-in first-out queue that holds no storage while it is empty: most connections never queue output, and
/// one that did (a burst, a long answer) gives the storage back once it has written everything.
struct OutputQueue<Element> {
    private var buffer: CircularBuffer<Element>?

    var isEmpty: Bool { buffer?.isEmpty ?? true }

    mutating func append(_ element: Element) {
        if buffer == nil { buffer = CircularBuffer(initialCapacity: 4) }
        buffer?.append(element)
    }

    /// The first element; the storage is released with the last one.
    mutating func popFirst() -> Element? {
        guard let first = buffer?.popFirst() else { return nil }
        if buffer?.isEmpty ?? true { buffer = nil }
        return first
    }

    mutating func removeAll() { buffer = nil }
}
