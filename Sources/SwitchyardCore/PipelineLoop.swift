import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOConcurrencyHelpers

/// A stage that reacts to envelopes: the router, the cache and the fanout.
public protocol EnvelopeHandler: AnyObject {
    /// Handles one envelope; anything to send goes through `outbox` and leaves after the whole batch.
    func handle(_ envelope: Envelope, outbox: Outbox)
    /// Called about every 100 ms, also when nothing arrives (expiry, timeouts). `now` is
    /// `monotonicNanoseconds()`: for intervals and deadlines, never for timestamps.
    func tick(now: UInt64, outbox: Outbox)
    /// Called on the loop's thread after the topology was re-read (SIGHUP).
    func topologyChanged(_ topology: Topology, outbox: Outbox)
    /// Called once before the loop runs, after every ingress was told the stage is up.
    func started(outbox: Outbox)
    /// Called once after the loop stopped (SIGTERM), before the process exits: finish what is in flight.
    func stopping(outbox: Outbox)
    /// True for a stage that says itself when it is ready (`StageContext.setReady`), e.g. after a warm-up;
    /// otherwise it is ready as soon as its loop runs.
    var reportsReadinessItself: Bool { get }
}

extension EnvelopeHandler {
    public func tick(now: UInt64, outbox: Outbox) {}
    public func started(outbox: Outbox) {}
    public func stopping(outbox: Outbox) {}
    public var reportsReadinessItself: Bool { false }
    public func topologyChanged(_ topology: Topology, outbox: Outbox) {}
}

/// How hard to try delivering to a destination.
public enum Delivery {
    /// The next stage of the pipeline: wait for it (backpressure) while the stage runs.
    case pipeline
    /// To one ingress (answers, and the fanout's messages): give up after one send timeout, so a vanished ingress
    /// never stalls the stage; an ingress detects what it missed by the messages' previous seq and repairs it.
    case reply
    /// A notice that matters only to a peer that is up now (`PeerUp`): wait only for the connection to form.
    case bestEffort
}

/// Batches outgoing envelopes per destination and sends each batch as one nanomsg message.
///
/// Not thread-safe: each thread that sends owns an outbox of its own.
public final class Outbox {
    private final class Destination {
        let socket: NanomsgSocket
        /// The strictest delivery any envelope of the pending batch asked for.
        var delivery = Delivery.bestEffort
        var batch = BatchWriter()
        /// While a reply destination is unreachable, sends do not wait for it.
        var unreachableUntil: UInt64 = 0
        var dropped = 0

        init(socket: NanomsgSocket) { self.socket = socket }
    }

    public static let batchBytes = 16 * 1024
    private static let sendTimeoutMilliseconds = 1000
    private static let bestEffortTimeoutMilliseconds = 100
    private static let unreachablePause: UInt64 = 5_000_000_000

    private var destinations: [String: Destination] = [:]
    private var order: [String] = []
    private let logger: Logger
    private let metrics: StageMetrics
    private let isRunning: () -> Bool

    /// - Parameter isRunning: while true, a pipeline send keeps waiting for its peer.
    public init(logger: Logger, metrics: StageMetrics, isRunning: @escaping () -> Bool) {
        self.logger = logger
        self.metrics = metrics
        self.isRunning = isRunning
    }

    /// Queues an envelope for `address`; a batch is sent with the strictest delivery of its envelopes.
    /// Returns false when the envelope was dropped: no connection, or too large for the envelope format (logged).
    @discardableResult
    public func send(_ envelope: Envelope, to address: String, delivery: Delivery = .pipeline) -> Bool {
        guard let destination = destination(address) else { return false }
        do {
            try destination.batch.encode(envelope)
        } catch {
            logger.error("envelope cannot be encoded; dropped",
                         metadata: ["envelope": "\(envelope.kindName)", "error": "\(error)"])
            metrics.addToGauge("droppedEnvelopes", 1)
            return false
        }
        if delivery == .pipeline || (delivery == .reply && destination.delivery == .bestEffort) {
            destination.delivery = delivery
        }
        if destination.batch.byteCount >= Self.batchBytes { flush(address, destination) }
        return true
    }

    /// Sends every pending batch. Pipeline batches wait for their peer; reply batches give up on a dead one.
    public func flush() {
        for address in order {
            guard let destination = destinations[address], !destination.batch.isEmpty else { continue }
            flush(address, destination)
        }
    }

    private func flush(_ address: String, _ destination: Destination) {
        let count = destination.batch.count
        let batch = destination.batch.finish()
        let delivery = destination.delivery
        destination.delivery = .bestEffort
        do {
            switch delivery {
            case .pipeline:
                var warned = false
                while try !destination.socket.send(batch) {
                    guard isRunning() else { return }
                    if !warned {
                        logger.warning("next stage is not taking messages; waiting", metadata: ["peer": "\(address)"])
                        warned = true
                    }
                }
                if warned { logger.info("next stage is taking messages again", metadata: ["peer": "\(address)"]) }
            case .reply:
                let now = monotonicNanoseconds()
                let wait = now >= destination.unreachableUntil
                if try destination.socket.send(batch, wait: wait) {
                    destination.unreachableUntil = 0
                } else {
                    destination.dropped += count
                    destination.unreachableUntil = now + Self.unreachablePause
                    logger.warning("reply destination unreachable; answers dropped",
                                   metadata: ["peer": "\(address)", "dropped": "\(destination.dropped)"])
                    return
                }
            case .bestEffort:
                try destination.socket.setSendTimeout(milliseconds: Self.bestEffortTimeoutMilliseconds)
                defer { try? destination.socket.setSendTimeout(milliseconds: Self.sendTimeoutMilliseconds) }
                guard try destination.socket.send(batch) else {
                    logger.debug("peer not up; notice dropped", metadata: ["peer": "\(address)"])
                    return
                }
            }
            metrics.countOut(count)
        } catch {
            logger.error("send failed", metadata: ["peer": "\(address)", "error": "\(error)"])
        }
    }

    private func destination(_ address: String) -> Destination? {
        if let existing = destinations[address] { return existing }
        do {
            let socket = try NanomsgSocket.pipeline(.push, address, timeoutMilliseconds: Self.sendTimeoutMilliseconds)
            let destination = Destination(socket: socket)
            destinations[address] = destination
            order.append(address)
            return destination
        } catch {
            logger.error("cannot connect", metadata: ["peer": "\(address)", "error": "\(error)"])
            return nil
        }
    }
}

/// Runs a stage that receives batches on its PULL socket and hands each envelope to its handler, on one thread.
// @unchecked Sendable: `handler` and `outbox` only on the thread running `withOutbox` and `run`; the rest is locked.
public final class PipelineLoop: @unchecked Sendable {
    private let context: StageContext
    private let handler: EnvelopeHandler
    private let inbound: NanomsgSocket
    private let running = NIOLockedValueBox(true)
    private let topologyChanged = NIOLockedValueBox(false)
    private var outbox: Outbox!
    private let hopTime: CoreMetrics.Timer
    /// When each batch of the current round arrived (`monotonicNanoseconds`); only on the loop's thread.
    private var receivedAt: [UInt64] = []

    public init(context: StageContext, handler: EnvelopeHandler) throws {
        self.context = context
        self.handler = handler
        inbound = try NanomsgSocket.pipeline(.pull, context.inboundAddress, timeoutMilliseconds: 100)
        hopTime = context.metrics.makeTimer(MetricName.hopSeconds)
        receivedAt.reserveCapacity(Self.batchesPerFlush)
        outbox = Outbox(logger: context.logger, metrics: context.metrics, isRunning: { [running] in
            running.withLockedValue { $0 }
        })
    }

    public var isRunning: Bool { running.withLockedValue { $0 } }

    public func stop() { running.withLockedValue { $0 = false } }

    /// Lets the handler see a re-read topology on the loop's own thread.
    public func noteTopologyChange() { topologyChanged.withLockedValue { $0 = true } }

    /// Gives the handler's start-up sends (e.g. a `PeerUp`) a way out before the loop runs.
    public func withOutbox(_ body: (Outbox) -> Void) {
        body(outbox)
        outbox.flush()
    }

    /// Receives and handles batches until `stop()`.
    public func run() {
        let logger = context.logger
        var lastTick: UInt64 = 0
        while isRunning {
            do {
                // Drain what is already queued before flushing, so outgoing batches grow with the load.
                var wait = true
                var drained = 0
                while drained < Self.batchesPerFlush, let batch = try inbound.receive(wait: wait) {
                    receivedAt.append(monotonicNanoseconds())
                    handle(batch)
                    wait = false
                    drained += 1
                }
                // Batches that were already waiting behind the first: how far behind the stage is.
                context.metrics.setGauge("queueDepth", max(0, drained - 1))
            } catch let error as NanomsgError where error.isTerminating {
                break
            } catch {
                logger.error("receive failed", metadata: ["error": "\(error)"])
            }
            if topologyChanged.withLockedValue({ changed in defer { changed = false }; return changed }) {
                handler.topologyChanged(context.topology, outbox: outbox)
            }
            let now = monotonicNanoseconds()
            if elapsedNanoseconds(from: lastTick, to: now) >= 100_000_000 {
                handler.tick(now: now, outbox: outbox)
                lastTick = now
            }
            outbox.flush()
            recordHopTimes()
        }
    }

    private static let batchesPerFlush = 64

    /// Each batch of the round: its arrival → the round's sends done.
    private func recordHopTimes() {
        guard !receivedAt.isEmpty else { return }
        let sent = monotonicNanoseconds()
        for arrival in receivedAt {
            hopTime.recordNanoseconds(Int64(clamping: elapsedNanoseconds(from: arrival, to: sent)))
        }
        receivedAt.removeAll(keepingCapacity: true)
    }

    private func handle(_ batch: ByteBuffer) {
        guard let envelopes = EnvelopeCodec.decodeReceived(batch, logger: context.logger, metrics: context.metrics)
        else { return }
        for envelope in envelopes { handler.handle(envelope, outbox: outbox) }
    }

    /// The whole life of a router, cache or fanout instance: bind, tell the ingresses it is up (so they
    /// re-announce their interest), handle envelopes until SIGTERM.
    /// A handler that cannot be made (e.g. bad Kafka properties) stops the stage with exit status 2.
    public static func runStage(_ stage: StageName, makeHandler: (StageContext) throws -> EnvelopeHandler) -> Never {
        let context = StageContext.bootstrap(stage)
        let handler: EnvelopeHandler
        do {
            handler = try makeHandler(context)
        } catch {
            context.logger.error("cannot start", metadata: ["error": "\(error)"])
            FileHandle.standardError.write(Data("\(stage.rawValue): \(error)\n".utf8))
            exit(2)
        }
        let loop: PipelineLoop
        do {
            loop = try PipelineLoop(context: context, handler: handler)
        } catch {
            context.logger.error("cannot start",
                                 metadata: ["error": "\(error)", "address": "\(context.inboundAddress)"])
            exit(1)
        }
        context.start(onStop: { loop.stop() }, onTopologyChange: { _ in loop.noteTopologyChange() })
        loop.withOutbox { outbox in
            let topology = context.topology
            let peerUp = Envelope.peerUp(PeerUp(stage: stage.rawValue, instance: UInt32(context.instance)))
            for ingress in 0..<topology.count(.ingress) {
                outbox.send(peerUp, to: topology.address(.ingress, ingress), delivery: .bestEffort)
            }
            handler.started(outbox: outbox)
        }
        if !handler.reportsReadinessItself {
            context.setReady(true)
            context.logger.info("ready", metadata: ["address": "\(context.inboundAddress)", "pid": "\(getpid())"])
        }
        loop.run()
        loop.withOutbox { handler.stopping(outbox: $0) }
        // nanomsg sends from threads of its own and does not linger on exit: give the last batches a moment.
        Thread.sleep(forTimeInterval: 0.2)
        context.logger.info("stopped")
        exit(0)
    }
}
