import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// What the connections of one event loop measured. Touched only on that loop; copied out with `submit`.
// @unchecked Sendable: touched only on its event loop; other threads reach it with `submit`.
final class LoopStats: @unchecked Sendable {
    /// The measurement window (monotonic nanoseconds): latencies count for messages sent inside it, rates for
    /// frames received inside it.
    var windowStart: UInt64 = .max
    var windowEnd: UInt64 = .max
    /// Subscribers' end-to-end latency and publishers' ack latency (kept here, copied only when asked for).
    var latency = Histogram()
    var ackLatency = Histogram()
    /// Every counter (its histograms stay nil here).
    var counts = StatsSnapshot()

    init(subjects: Int) {
        counts.okPerSubject = [UInt64](repeating: 0, count: subjects)
    }

    func snapshot(histograms: Bool) -> StatsSnapshot {
        var copy = counts
        if histograms {
            copy.latency = latency
            copy.ackLatency = ackLatency
        }
        return copy
    }

    @inline(__always)
    func inWindow(_ time: UInt64) -> Bool { time >= windowStart && time < windowEnd }

    /// Counts one message a subscriber read at `now`, sent at `sentAt` with `seq`: its latency, and a gap or a
    /// duplicate against the subscriber's `lastSeq` (which it advances).
    func delivered(sentAt: UInt64, seq: UInt64, at now: UInt64, after lastSeq: inout UInt64) {
        counts.delivered += 1
        if inWindow(now) { counts.deliveredInWindow += 1 }
        if inWindow(sentAt) { latency.record(now &- sentAt) }
        if seq == lastSeq &+ 1 {
            lastSeq = seq
        } else if seq > lastSeq {
            counts.gaps += seq - lastSeq - 1
            lastSeq = seq
        } else {
            counts.duplicates += 1
        }
    }
}

/// The counters of one loop, or of several merged.
struct StatsSnapshot {
    var latency: Histogram?
    var ackLatency: Histogram?
    var delivered: UInt64 = 0
    var deliveredInWindow: UInt64 = 0
    var gaps: UInt64 = 0
    var duplicates: UInt64 = 0
    var subscribed = 0
    var subscribeRefused = 0
    var unparsable: UInt64 = 0
    var sent: UInt64 = 0
    var sentInWindow: UInt64 = 0
    var acksOK: UInt64 = 0
    var acksFailed: UInt64 = 0
    var acksOKInWindow: UInt64 = 0
    var inflight = 0
    var okPerSubject: [UInt64] = []
    var failureReasons: [String: Int] = [:]
    var errors: UInt64 = 0
    var disconnects = 0
    var closeReasons: [String: Int] = [:]

    /// The fields merged by adding them up.
    private static let counters: [WritableKeyPath<StatsSnapshot, UInt64> & Sendable] = [
        \.delivered, \.deliveredInWindow, \.gaps, \.duplicates, \.unparsable, \.sent, \.sentInWindow, \.acksOK,
        \.acksFailed, \.acksOKInWindow, \.errors,
    ]
    private static let counts: [WritableKeyPath<StatsSnapshot, Int> & Sendable] = [
        \.subscribed, \.subscribeRefused, \.inflight, \.disconnects,
    ]

    static func merged(_ parts: [StatsSnapshot]) -> StatsSnapshot {
        var result = StatsSnapshot()
        for part in parts {
            if let latency = part.latency {
                if result.latency == nil { result.latency = Histogram() }
                result.latency!.merge(latency)
            }
            if let ackLatency = part.ackLatency {
                if result.ackLatency == nil { result.ackLatency = Histogram() }
                result.ackLatency!.merge(ackLatency)
            }
            for counter in counters { result[keyPath: counter] += part[keyPath: counter] }
            for count in counts { result[keyPath: count] += part[keyPath: count] }
            if result.okPerSubject.count < part.okPerSubject.count {
                result.okPerSubject += [UInt64](repeating: 0, count: part.okPerSubject.count - result.okPerSubject.count)
            }
            for (index, count) in part.okPerSubject.enumerated() { result.okPerSubject[index] += count }
            result.failureReasons.merge(part.failureReasons, uniquingKeysWith: +)
            result.closeReasons.merge(part.closeReasons, uniquingKeysWith: +)
        }
        return result
    }
}

/// The common part of the bench's WebSocket handlers: ping/pong, close frames, disconnect accounting.
class BenchConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let stats: LoopStats
    var random: FastRandom
    var closing = false
    private var sawClose = false

    init(stats: LoopStats, seed: UInt64) {
        self.stats = stats
        random = FastRandom(seed: seed)
    }

    func frame(_ data: ByteBuffer, opcode: WebSocketOpcode = .text) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(using: &random), data: data)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            text(context: context, frame.unmaskedData)
        case .ping:
            context.writeAndFlush(wrapOutboundOut(self.frame(frame.unmaskedData, opcode: .pong)), promise: nil)
        case .connectionClose:
            if !closing {
                var data = frame.unmaskedData
                let code = data.readInteger(as: UInt16.self).map(String.init) ?? "none"
                let reason = data.readString(length: data.readableBytes) ?? ""
                stats.counts.closeReasons["\(code) \(reason)", default: 0] += 1
                sawClose = true
            }
            closing = true
            context.close(promise: nil)
        default:
            break
        }
    }

    func text(context: ChannelHandlerContext, _ data: ByteBuffer) {}

    // Declared here so that subclasses can override them: a protocol requirement's witness is chosen where the
    // conformance is declared, so a subclass-only method would never be called.
    func handlerAdded(context: ChannelHandlerContext) {}

    func handlerRemoved(context: ChannelHandlerContext) {}

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !closing {
            stats.counts.disconnects += 1
            if !sawClose { stats.counts.closeReasons["connection lost", default: 0] += 1 }
        } else if sawClose {
            stats.counts.disconnects += 1
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if !closing { stats.counts.closeReasons["error: \(error)", default: 0] += 1 }
        context.close(promise: nil)
    }
}

/// One subscriber connection: subscribes to its subjects, then checks seqs and records latency per message.
final class SubscriberHandler: BenchConnectionHandler {
    private let subjects: [String]
    private let allowed: EventLoopPromise<Void>
    private var pendingAllows: Int
    /// Last seq seen; the bench gives every subscriber one subject, so one counter suffices.
    private var lastSeq: UInt64 = 0

    init(stats: LoopStats, subjects: [String], allowed: EventLoopPromise<Void>, seed: UInt64) {
        self.subjects = subjects
        self.allowed = allowed
        pendingAllows = subjects.count
        super.init(stats: stats, seed: seed)
    }

    override func handlerAdded(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(frame(ClientFrames.subscribe(subjects))), promise: nil)
    }

    override func text(context: ChannelHandlerContext, _ data: ByteBuffer) {
        let now = monotonicNanos()
        let stats = self.stats
        let handled: Bool = data.withUnsafeReadableBytes { bytes in
            if Scan.message.isPrefix(of: bytes) {
                guard let timestampAt = Scan.contentTimestamp.end(in: bytes),
                      let (sentAt, afterTimestamp) = Scan.decimal(in: bytes, at: timestampAt),
                      let seqAt = Scan.seq.end(in: bytes, from: afterTimestamp),
                      let (seq, _) = Scan.decimal(in: bytes, at: seqAt) else {
                    stats.counts.unparsable += 1
                    return true
                }
                stats.delivered(sentAt: sentAt, seq: seq, at: now, after: &lastSeq)
                return true
            }
            if Scan.subscribed.isPrefix(of: bytes) {
                if Scan.statusAllow.end(in: bytes) != nil {
                    stats.counts.subscribed += 1
                } else {
                    stats.counts.subscribeRefused += 1
                }
                pendingAllows -= 1
                if pendingAllows == 0 { allowed.succeed(()) }
                return true
            }
            if Scan.error.isPrefix(of: bytes) { stats.counts.errors += 1 }
            return false
        }
        _ = handled
    }

    override func channelInactive(context: ChannelHandlerContext) {
        allowed.fail(BenchError("subscriber disconnected before its subscribe was answered"))
        super.channelInactive(context: context)
    }
}

/// One publisher connection: keeps at most `window` publishes with a closure unanswered, optionally at a rate.
final class PublisherHandler: BenchConnectionHandler {
    private let prefixes: [ByteBuffer]
    private let suffix: ByteBuffer
    private let payload: Int
    private let window: Int
    private let ratePerSecond: Double
    /// Publishes sent back to back to one subject (`--burst`).
    private let burst: Int
    private let firstSubject: Int
    private var context: ChannelHandlerContext?
    private var nextSubject = 0
    private let publishRun = PublishRun()
    private var sentHere: UInt64 = 0
    private var inflightHere = 0
    /// Sends that a rate-limited publisher could not make because its window was full.
    private(set) var behind: UInt64 = 0

    init(stats: LoopStats, subjects: [String], firstSubject: Int, payload: Int, window: Int, ratePerSecond: Double,
         burst: Int, suffix: ByteBuffer, seed: UInt64) {
        self.burst = burst
        prefixes = subjects.map(ClientFrames.publishPrefix(subject:))
        self.firstSubject = firstSubject
        self.suffix = suffix
        self.payload = payload
        self.window = window
        self.ratePerSecond = ratePerSecond
        nextSubject = firstSubject % max(subjects.count, 1)
        super.init(stats: stats, seed: seed)
    }

    override func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    override func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        publishRun.cancel()
    }

    /// Starts publishing at `start` (monotonic) until `stop`. Call on the channel's event loop.
    func run(start: UInt64, stop: UInt64) {
        guard let context else { return }
        // The timer both paces a rate-limited publisher and notices the end when no ack arrives.
        let period: TimeAmount = ratePerSecond > 0 ? .milliseconds(1) : .milliseconds(20)
        publishRun.start(on: context.eventLoop, from: start, until: stop, every: period) { [self] in
            pump()
            self.context?.flush()
        }
    }

    private func pump() {
        let now = monotonicNanos()
        guard publishRun.isRunning, let context, publishRun.goesOn(at: now) else { return }
        var budget = Int.max
        if ratePerSecond > 0 {
            // Do not burst more than 100 ms worth after a stall; count what was skipped.
            let (owed, skipped) = publishRun.due(at: now, ratePerSecond: ratePerSecond, sent: &sentHere)
            if owed == 0 { return }
            behind += skipped
            budget = Int(clamping: owed)
        }
        var sentNow = 0
        // Whole bursts only, each within the window and the rate's budget.
        while inflightHere + burst <= window && sentNow + burst <= budget {
            let subject = nextSubject
            nextSubject += 1
            if nextSubject == prefixes.count { nextSubject = 0 }
            for _ in 0..<burst {
                let sentAt = monotonicNanos()
                let data = ClientFrames.publish(prefix: prefixes[subject], sentAt: sentAt, payload: payload,
                                                subjectIndex: subject, suffix: suffix,
                                                allocator: context.channel.allocator)
                context.write(wrapOutboundOut(frame(data)), promise: nil)
                inflightHere += 1
                sentHere += 1
                sentNow += 1
                stats.counts.inflight += 1
                stats.counts.sent += 1
                if stats.inWindow(sentAt) { stats.counts.sentInWindow += 1 }
            }
        }
    }

    override func text(context: ChannelHandlerContext, _ data: ByteBuffer) {
        let now = monotonicNanos()
        let stats = self.stats
        let isAck: Bool = data.withUnsafeReadableBytes { bytes in
            guard Scan.publishStatus.isPrefix(of: bytes) else {
                if Scan.error.isPrefix(of: bytes) { stats.counts.errors += 1 }
                return false
            }
            guard let closureAt = Scan.closure.end(in: bytes),
                  let (sentAt, dash) = Scan.decimal(in: bytes, at: closureAt),
                  dash < bytes.count, bytes[dash] == UInt8(ascii: "-"),
                  let (subject, _) = Scan.decimal(in: bytes, at: dash + 1) else {
                stats.counts.unparsable += 1
                return true
            }
            if Scan.statusOK.end(in: bytes) != nil {
                stats.counts.acksOK += 1
                if Int(subject) < stats.counts.okPerSubject.count { stats.counts.okPerSubject[Int(subject)] += 1 }
                if stats.inWindow(now) { stats.counts.acksOKInWindow += 1 }
                if stats.inWindow(sentAt) { stats.ackLatency.record(now &- sentAt) }
            } else {
                stats.counts.acksFailed += 1
                let status = String(decoding: bytes, as: UTF8.self)
                stats.counts.failureReasons[String(status.prefix(200)), default: 0] += 1
            }
            return true
        }
        if isAck {
            inflightHere -= 1
            stats.counts.inflight -= 1
            pump()
        }
    }

    override func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        context.fireChannelReadComplete()
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
