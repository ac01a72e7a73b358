import NIOCore

/// A publisher the runner starts at a time and stops at another (Switchyard's or a peer protocol's).
protocol BenchPublisher: AnyObject {
    /// Starts publishing at `start` (monotonic) until `stop`. Call on the channel's event loop.
    func run(start: UInt64, stop: UInt64)
}

extension PublisherHandler: BenchPublisher {}

/// The byte-stream side shared by the peer handlers: a session, the bytes not yet consumed, keep-alive, and
/// disconnect accounting. Sits above `WebSocketStreamAdapter` (WebSocket) or directly on a TCP channel (raw).
class PeerConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let stats: LoopStats
    var session: PeerSession
    private let subscribeTo: Int?
    private var pending = ByteBuffer()
    private var opened = false
    private var keepaliveTask: RepeatedTask?
    private(set) var context: ChannelHandlerContext?

    init(stats: LoopStats, session: PeerSession, subscribeTo: Int?) {
        self.stats = stats
        self.session = session
        self.subscribeTo = subscribeTo
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { open(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        keepaliveTask?.cancel()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        open(context)
        context.fireChannelActive()
    }

    private func open(_ context: ChannelHandlerContext) {
        guard !opened else { return }
        opened = true
        let hello = session.opening(subscribeTo: subscribeTo)
        if hello.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(hello), promise: nil) }
        if let (every, bytes) = session.keepalive {
            // Runs on the channel's loop; `handlerRemoved` cancels it, which releases the handler.
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            keepaliveTask = context.eventLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in
                guard let context = handler.value.context else { return }
                context.writeAndFlush(NIOAny(bytes), promise: nil)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if pending.readableBytes == 0 {
            pending = bytes
        } else {
            pending.writeBuffer(&bytes)
        }
        let now = monotonicNanos()
        session.consume(&pending) { event in
            switch event {
            case .reply(let reply):
                context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
            case .subscribed(let granted):
                subscribed(granted: granted)
            case .message(let payload):
                message(payload, receivedAt: now)
            case .failure(let reason):
                stats.counts.closeReasons[reason, default: 0] += 1
                stats.counts.errors += 1
                context.close(promise: nil)
            }
        }
        if pending.readableBytes == 0 {
            pending.clear()
        } else {
            pending.discardReadBytes()
        }
    }

    func subscribed(granted: Bool) {}

    func message(_ payload: ByteBuffer, receivedAt now: UInt64) {}

    func channelInactive(context: ChannelHandlerContext) {
        stats.counts.disconnects += 1
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        stats.counts.closeReasons["error: \(error)", default: 0] += 1
        context.close(promise: nil)
    }
}

/// One subscriber of a peer protocol: subscribes to one subject, then checks the payload's per-subject seq and
/// records latency per message, as `SubscriberHandler` does for Switchyard's protocol.
final class PeerSubscriberHandler: PeerConnectionHandler {
    private let allowed: EventLoopPromise<Void>
    private var lastSeq: UInt64 = 0

    init(stats: LoopStats, session: PeerSession, subjectIndex: Int, allowed: EventLoopPromise<Void>) {
        self.allowed = allowed
        super.init(stats: stats, session: session, subscribeTo: subjectIndex)
    }

    override func subscribed(granted: Bool) {
        if granted { stats.counts.subscribed += 1 } else { stats.counts.subscribeRefused += 1 }
        allowed.succeed(())
    }

    override func message(_ payload: ByteBuffer, receivedAt now: UInt64) {
        guard let (sentAt, seq) = payload.withUnsafeReadableBytes(PeerPayload.parse) else {
            stats.counts.unparsable += 1
            return
        }
        stats.delivered(sentAt: sentAt, seq: seq, at: now, after: &lastSeq)
    }

    override func channelInactive(context: ChannelHandlerContext) {
        allowed.fail(BenchError("subscriber disconnected before its subscribe was answered"))
        super.channelInactive(context: context)
    }
}

/// The publisher of a peer protocol: publishes at a fixed rate (these protocols have no acknowledgement at QoS 0,
/// so no window), round-robin over the subjects, numbering each subject's messages from 1. Every publish counts
/// as accepted for the expected deliveries.
final class PeerPublisherHandler: PeerConnectionHandler, BenchPublisher {
    private let subjectCount: Int
    private let payloadSize: Int
    private let ratePerSecond: Double
    /// Publishes sent back to back to one subject (`--burst`).
    private let burst: Int
    private var seqs: [UInt64]
    private var nextSubject: Int
    private let publishRun = PublishRun()
    /// Publishes sent or skipped so far (a stall skips what is more than 100 ms behind).
    private var counted: UInt64 = 0

    init(stats: LoopStats, session: PeerSession, subjectCount: Int, firstSubject: Int, payload: Int,
         ratePerSecond: Double, burst: Int) {
        self.subjectCount = subjectCount
        payloadSize = payload
        self.ratePerSecond = ratePerSecond
        self.burst = burst
        seqs = [UInt64](repeating: 0, count: subjectCount)
        nextSubject = firstSubject % max(subjectCount, 1)
        super.init(stats: stats, session: session, subscribeTo: nil)
    }

    override func handlerRemoved(context: ChannelHandlerContext) {
        publishRun.cancel()
        super.handlerRemoved(context: context)
    }

    func run(start: UInt64, stop: UInt64) {
        guard let context else { return }
        publishRun.start(on: context.eventLoop, from: start, until: stop, every: .milliseconds(1)) { [self] in
            pump()
        }
    }

    private func pump() {
        let now = monotonicNanos()
        guard publishRun.isRunning, let context, publishRun.goesOn(at: now) else { return }
        // Whole bursts only: what is owed beyond them goes with the next tick's.
        let owed = publishRun.due(at: now, ratePerSecond: ratePerSecond, sent: &counted).owed
        let count = Int(clamping: owed) / burst * burst
        guard count > 0 else { return }
        for sent in 0..<count {
            let subject = nextSubject
            if (sent + 1) % burst == 0 { nextSubject = nextSubject + 1 == subjectCount ? 0 : nextSubject + 1 }
            seqs[subject] += 1
            let sentAt = monotonicNanos()
            let payload = PeerPayload.make(sentAt: sentAt, seq: seqs[subject], size: payloadSize,
                                           allocator: context.channel.allocator)
            context.write(wrapOutboundOut(session.publish(subjectIndex: subject, payload: payload)), promise: nil)
            counted += 1
            stats.counts.sent += 1
            if stats.inWindow(sentAt) { stats.counts.sentInWindow += 1 }
            if subject < stats.counts.okPerSubject.count { stats.counts.okPerSubject[subject] += 1 }
        }
        context.flush()
    }
}
