import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchyardCore

/// The ingress's two nanomsg directions, each on a `JoinableThread` of its own so the event loop never blocks:
/// batches received on the ingress's PULL socket are decoded off the loop and handed over with a bounded number
/// in flight; envelopes for the router are batched on the loop (one batch per loop tick) and sent by a sender
/// thread from a bounded queue. When that queue is empty (an idle pipe), the loop sends the batch itself with a
/// non-blocking `nn_send` instead, saving the sender thread's wake-up on the way of every lone publish; with a
/// backlog, or when nanomsg cannot take the batch at once, it queues behind the others (order kept).
// @unchecked Sendable: `pending`, `flushScheduled`, `deliver` only on `eventLoop`; `queue` only under `queueCondition`;
// `threads` only on the thread that calls `start` and `stop`.
final class BackplaneLink: @unchecked Sendable {
    /// Outgoing batches that may wait for the router before the ingress calls itself congested.
    static let maxQueuedBatches = 256
    /// Received batches that may wait for the event loop before the receiver stops reading.
    static let maxBatchesInFlight = 32

    private let eventLoop: EventLoop
    private let logger: Logger
    private let metrics: StageMetrics
    private let inbound: NanomsgSocket
    /// The PUSH socket to the router: used by the sender thread, and by the loop while the queue is empty.
    private let outbound: NanomsgSocket
    private let running = NIOLockedValueBox(true)
    /// The receiver and the sender, once started.
    private var threads: [JoinableThread] = []

    // Loop-owned batching state.
    private var pending = BatchWriter()
    private var flushScheduled = false
    /// Set by `start` before the receiver thread exists.
    private var deliver: ([Envelope]) -> Void = { _ in }

    // Sender queue, shared with the sender thread.
    private let queueCondition = NSCondition()
    private var queue: [ByteBuffer] = []
    private let inFlight = DispatchSemaphore(value: BackplaneLink.maxBatchesInFlight)

    init(eventLoop: EventLoop, inboundAddress: String, routerAddress: String, logger: Logger,
         metrics: StageMetrics) throws {
        self.eventLoop = eventLoop
        self.logger = logger
        self.metrics = metrics
        inbound = try NanomsgSocket.pipeline(.pull, inboundAddress, timeoutMilliseconds: 200)
        outbound = try NanomsgSocket.pipeline(.push, routerAddress, timeoutMilliseconds: 500)
    }

    /// Starts both threads. `deliver` runs on the event loop with each received batch.
    func start(deliver: @escaping ([Envelope]) -> Void) {
        self.deliver = deliver
        threads = [
            JoinableThread(name: "ingress-receive") { [self] _ in receiveLoop() },
            JoinableThread(name: "ingress-send") { [self] _ in sendLoop() },
        ]
    }

    /// Stops both threads and waits for them to return (a receive or send timeout at most), so that the event
    /// loop, shut down next, is handed no batch it can no longer run. Call off the event loop, while it still
    /// runs: the receiver may be waiting for it to take a batch.
    func stop() {
        running.withLockedValue { $0 = false }
        queueCondition.lock()
        queueCondition.broadcast()
        queueCondition.unlock()
        for thread in threads { thread.stop() }
    }

    private var isRunning: Bool { running.withLockedValue { $0 } }

    /// True while the router is not keeping up: new publishes are refused rather than queued without bound.
    var isCongested: Bool {
        queueCondition.lock()
        defer { queueCondition.unlock() }
        return queue.count >= Self.maxQueuedBatches
    }

    var queuedBatches: Int {
        queueCondition.lock()
        defer { queueCondition.unlock() }
        return queue.count
    }

    /// Queues an envelope for the router; must be called on the event loop. Envelopes queued in one loop tick
    /// leave as one batch.
    func send(_ envelope: Envelope) {
        eventLoop.assertInEventLoop()
        pending.append(envelope)
        if pending.byteCount >= Outbox.batchBytes {
            flushPending()
        } else if !flushScheduled {
            flushScheduled = true
            eventLoop.execute { [self] in flushPending() }
        }
    }

    private func flushPending() {
        flushScheduled = false
        guard !pending.isEmpty else { return }
        let count = pending.count
        let batch = pending.finish()
        metrics.countOut(count)
        queueCondition.lock()
        defer { queueCondition.unlock() }
        // Nothing queued means nothing in flight either (the sender thread removes a batch only once it is sent),
        // so sending here keeps the order.
        if queue.isEmpty && sendsWithoutWaiting(batch) { return }
        queue.append(batch)
        queueCondition.signal()
    }

    /// Sends on the event loop without blocking: false when nanomsg cannot take the batch at once (no router
    /// connected, its buffers full) or the send failed; the sender thread then takes it, waits and logs.
    private func sendsWithoutWaiting(_ batch: ByteBuffer) -> Bool {
        (try? outbound.send(batch, wait: false)) ?? false
    }

    private func sendLoop() {
        var warned = false
        while true {
            queueCondition.lock()
            while queue.isEmpty && isRunning { queueCondition.wait() }
            guard isRunning, let batch = queue.first else {
                queueCondition.unlock()
                return
            }
            queueCondition.unlock()
            do {
                if try outbound.send(batch) {
                    queueCondition.lock()
                    queue.removeFirst()
                    queueCondition.unlock()
                    if warned {
                        logger.info("router is taking messages again")
                        warned = false
                    }
                } else if !warned {
                    logger.warning("router is not taking messages; queueing", metadata: ["queued": "\(queuedBatches)"])
                    warned = true
                }
            } catch let error as NanomsgError where error.isTerminating {
                return
            } catch {
                logger.error("send to router failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func receiveLoop() {
        while isRunning {
            let batch: ByteBuffer
            do {
                guard let received = try inbound.receive() else { continue }
                batch = received
            } catch let error as NanomsgError where error.isTerminating {
                return
            } catch {
                logger.error("receive failed", metadata: ["error": "\(error)"])
                continue
            }
            guard let envelopes = EnvelopeCodec.decodeReceived(batch, logger: logger, metrics: metrics) else { continue }
            guard isRunning else { return }
            inFlight.wait()
            eventLoop.execute { [self] in
                deliver(envelopes)
                inFlight.signal()
            }
        }
    }
}
