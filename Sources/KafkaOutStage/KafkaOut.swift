import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchyardCore
import SwitchyardKafka

/// Produces publishes to Kafka — `/vehicles/car66/speed` → topic `vehicles`, key `car66/speed`; `/vehicles` →
/// null key — and acknowledges each publish from its delivery report, straight to the publisher's ingress.
///
/// Publishes arrive on the pipeline loop's thread; delivery reports on the producer's poll thread, which owns an
/// outbox of its own for the acknowledgements. A full producer queue stops the loop (and so the reading of
/// nanomsg) until reports free space: backpressure, not a busy spin.
// @unchecked Sendable: `nextID` only on the pipeline thread, `ackOutbox` only on the poll thread; the rest locked.
public final class KafkaOut: EnvelopeHandler, @unchecked Sendable {
    /// Who waits for a record's delivery report.
    private struct Waiting {
        let requestID: UInt64
        let replyTo: String
        /// When it was produced (`monotonicNanoseconds`).
        let producedAt: UInt64
    }

    private let context: StageContext
    private var producer: KafkaProducer!
    private let waiting = NIOLockedValueBox<[UInt64: Waiting]>([:])
    private let space = NSCondition()
    private var nextID: UInt64 = 0
    private let ackOutbox: Outbox
    private let stallWatch: NIOLockedValueBox<ProducerStallWatch>
    /// A publish that wants an acknowledgement: produced → its delivery report.
    private let produceTime: CoreMetrics.Timer

    public init(context: StageContext) throws {
        self.context = context
        var config = try KafkaConfig.load(path: context.config.kafkaProducerConfig)
        // A record Kafka did not take before the publisher's timeout fails for good (FAILED), rather than being
        // stored after the publisher was told it failed.
        config.setDefault("message.timeout.ms", String(max(1, context.config.publishTimeout - 1) * 1000))
        try config.validate()
        // librdkafka's default is 300000; the file's value was checked by `validate`.
        let timeoutMilliseconds = config["message.timeout.ms"].flatMap { UInt64($0) } ?? 300_000
        stallWatch = NIOLockedValueBox(ProducerStallWatch(messageTimeoutMilliseconds: timeoutMilliseconds))
        ackOutbox = Outbox(logger: context.logger, metrics: context.metrics, isRunning: { true })
        produceTime = context.metrics.makeTimer(MetricName.kafkaProduceSeconds)
        producer = try KafkaProducer(
            config: config,
            onDelivery: { [weak self] reports in self?.delivered(reports) },
            onEvent: { [weak self] event in self?.report(event) })
    }

    public func handle(_ envelope: Envelope, outbox: Outbox) {
        guard case .publish(let publish) = envelope else {
            context.logger.warning("unexpected envelope for kafka-out dropped",
                                   metadata: ["envelope": "\(envelope.kindName)"])
            return
        }
        let (topic, key) = Subject.kafkaMapping(publish.message.subject)
        guard topic != context.config.mqttSessionTopic else {
            // ws-ingress's own topic of MQTT sessions: a publish must not write (forge) a session.
            context.logger.warning("publish to the MQTT session topic refused",
                                   metadata: ["subject": "\(publish.message.subject)"])
            if publish.message.flags.contains(.wantsAck) {
                outbox.send(.publishAck(PublishAck(requestID: publish.requestID, status: .failed,
                                                   reason: "the subject is reserved (MqttSessionTopic)")),
                            to: publish.replyTo, delivery: .reply)
            }
            return
        }
        nextID += 1
        let id = nextID
        if publish.message.flags.contains(.wantsAck) {
            let waiter = Waiting(requestID: publish.requestID, replyTo: publish.replyTo,
                                 producedAt: monotonicNanoseconds())
            waiting.withLockedValue { $0[id] = waiter }
        }
        let keyBuffer = key.map { ByteBuffer(string: String($0)) }
        let headers = publish.message.headers.isEmpty ? [] : publish.message.headers.map {
            KafkaHeader(name: $0.name, value: ByteBuffer(string: $0.value))
        }
        let giveUp = monotonicNanoseconds() + UInt64(context.config.publishTimeout) * 1_000_000_000
        while true {
            var result = producer.produce(topic: String(topic), key: keyBuffer, value: publish.message.content,
                                          headers: headers, id: id)
            if result == .queueFull && monotonicNanoseconds() > giveUp {
                result = .failed(KafkaError(code: KafkaError.queueFullCode, name: "QUEUE_FULL",
                                            message: "the producer queue stayed full"))
            }
            switch result {
            case .queued:
                return
            case .queueFull:
                space.lock()
                _ = space.wait(until: Date().addingTimeInterval(0.1))
                space.unlock()
            case .failed(let error):
                context.logger.warning("publish refused by the producer",
                                       metadata: ["subject": "\(publish.message.subject)", "error": "\(error)"])
                if let waiter = waiting.withLockedValue({ $0.removeValue(forKey: id) }) {
                    outbox.send(.publishAck(PublishAck(requestID: waiter.requestID, status: .failed,
                                                       reason: "Kafka refused it: \(error)")),
                                to: waiter.replyTo, delivery: .reply)
                }
                return
            }
        }
    }

    /// On the producer's poll thread: acknowledge each report's publish, and wake a loop waiting for space.
    private func delivered(_ reports: [KafkaDeliveryReport]) {
        let waiters = waiting.withLockedValue { waiting in reports.map { waiting.removeValue(forKey: $0.id) } }
        var stalled = false
        let now = monotonicNanoseconds()
        for (report, waiter) in zip(reports, waiters) {
            if let error = report.error {
                context.logger.warning("delivery failed", metadata: ["topic": "\(report.topic)", "error": "\(error)"])
                stalled = stalled || stallWatch.withLockedValue {
                    $0.isStalled(afterFailure: error, now: monotonicNanoseconds())
                }
            }
            guard let waiter else { continue }
            produceTime.recordNanoseconds(Int64(clamping: elapsedNanoseconds(from: waiter.producedAt, to: now)))
            let ack = report.error.map {
                PublishAck(requestID: waiter.requestID, status: .failed, reason: "Kafka delivery failed: \($0)")
            } ?? PublishAck(requestID: waiter.requestID, status: .ok)
            ackOutbox.send(.publishAck(ack), to: waiter.replyTo, delivery: .reply)
        }
        if stalled { exitForAFreshProducer() }
        ackOutbox.flush()
        space.lock()
        space.broadcast()
        space.unlock()
    }

    /// A record timed out while Kafka answered all along: this producer will not deliver again (see
    /// `ProducerStallWatch`). Every publish still waiting is answered FAILED (none of them is known to be stored),
    /// and the stage exits; the supervisor starts a fresh producer at once.
    private func exitForAFreshProducer() -> Never {
        let pending = waiting.withLockedValue { waiting in
            defer { waiting.removeAll() }
            return Array(waiting.values)
        }
        context.logger.error("records time out although Kafka answers: the producer is stuck; exiting for a fresh one",
                             metadata: ["pendingPublishes": "\(pending.count)"])
        for waiter in pending {
            ackOutbox.send(.publishAck(PublishAck(requestID: waiter.requestID, status: .failed,
                                                  reason: "Kafka delivery failed: kafka-out restarts its producer")),
                           to: waiter.replyTo, delivery: .reply)
        }
        ackOutbox.flush()
        // nanomsg sends from threads of its own: give the answers a moment to leave.
        Thread.sleep(forTimeInterval: 0.2)
        exit(3)
    }

    private func report(_ event: KafkaEvent) {
        switch event {
        case .reachability(let reachable, let reason):
            stallWatch.withLockedValue { $0.reachabilityChanged(reachable, now: monotonicNanoseconds()) }
            if reachable {
                context.logger.info("Kafka reachable", metadata: ["reason": "\(reason)"])
                context.metrics.setState("ok")
            } else {
                context.logger.warning("Kafka unreachable; publishes wait, then fail",
                                       metadata: ["reason": "\(reason)"])
                context.metrics.setState("kafka unreachable")
            }
        case .error(let error) where error.isFatal:
            // The producer is unusable (e.g. an idempotence failure): exit, and the supervisor starts a fresh one.
            context.logger.error("fatal Kafka client error; exiting", metadata: ["error": "\(error)"])
            exit(3)
        case .error(let error):
            context.logger.warning("Kafka client error", metadata: ["error": "\(error)"])
        case .log(let level, let facility, let message):
            if level <= 4 {
                context.logger.warning("librdkafka", metadata: ["facility": "\(facility)", "message": "\(message)"])
            } else {
                context.logger.debug("librdkafka",
                                     metadata: ["facility": "\(facility)", "message": "\(message)"])  // `debug = ...`
            }
        case .partitionsAssigned, .partitionsRevoked, .partitionEOF, .partitionError:
            break
        }
    }

    /// Waits for the delivery reports of what is in flight (their acks go out from the producer's thread), so
    /// a restart does not turn stored publishes into FAILED ones.
    public func stopping(outbox: Outbox) {
        let outstanding = producer.outstanding
        let flushed = producer.flush(timeout: .seconds(3))
        context.logger.info("producer flushed", metadata: ["records": "\(outstanding)", "complete": "\(flushed)"])
    }

    public func tick(now: UInt64, outbox: Outbox) {
        context.metrics.setGauge("producerQueue", producer.outstanding)
        context.metrics.setGauge("pendingAcks", waiting.withLockedValue { $0.count })
    }
}
