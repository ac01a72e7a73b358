import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchyardCore
import SwitchyardKafka

/// Consumes the configured topics — every partition, on every node — and turns each record into a message on
/// `/topic/key` (`/topic` for a null key) with seq = offset and epoch = the partition's epoch, for the router.
///
/// At start it reads the last `MaxCachedMessagesPerSubject` records of each partition so the caches are warm at
/// once, and again when a cache restarts (`peerUp` from a cache). Its own inbound socket also takes deep
/// recoveries from the caches: a position older than a cache holds is read back from Kafka, on a
/// `DeepRecoveryWorker` (never on the pipeline thread), which answers through an outbox of its own.
// @unchecked Sendable: IUOs set once in init; `recordOutbox`, `previousOffsets` only on the poll thread; rest locked.
public final class KafkaIn: EnvelopeHandler, @unchecked Sendable {
    private let context: StageContext
    private let consumerConfig: KafkaConfig
    private var consumer: KafkaConsumer!
    private let recordOutbox: Outbox
    private let running = NIOLockedValueBox(true)
    /// Partitions assigned by the first metadata pass start at the warm-up tail; later ones (a topic created or
    /// recreated while running) start at their beginning, since all of their records are new.
    private let initialAssignmentDone = NIOLockedValueBox(false)
    private let deepReader: DeepRecoveryReader
    private var deepRecoveries: DeepRecoveryWorker!
    /// The deep recovery workers' way out, shared by them under its lock.
    private let replyOutbox: NIOLockedValueBox<Outbox>
    private let checkpoint: OffsetCheckpoint
    /// Touched only on the consumer's poll thread.
    private let previousOffsets = PreviousOffsets()
    private let warmUp = NIOLockedValueBox(WarmUp(now: monotonicNanoseconds()))
    /// A consumed batch: its arrival from the consumer → handed to the router.
    private let hopTime: CoreMetrics.Timer
    /// A consumed batch's first record: its timestamp → handed to the router.
    private let consumeTime: CoreMetrics.Timer

    public init(context: StageContext) throws {
        self.context = context
        hopTime = context.metrics.makeTimer(MetricName.hopSeconds)
        consumeTime = context.metrics.makeTimer(MetricName.kafkaConsumeSeconds)
        consumerConfig = try KafkaConfig.load(path: context.config.kafkaConsumerConfig)
        try consumerConfig.validate()
        let running = self.running
        recordOutbox = Outbox(logger: context.logger, metrics: context.metrics,
                              isRunning: { running.withLockedValue { $0 } })
        deepReader = DeepRecoveryReader(config: consumerConfig, isStopping: { [context] in context.isStopping })
        replyOutbox = NIOLockedValueBox(Outbox(logger: context.logger, metrics: context.metrics,
                                               isRunning: { running.withLockedValue { $0 } }))
        let warmUp = Int64(context.config.maxCachedMessagesPerSubject)
        let checkpoint = OffsetCheckpoint(file: (context.config.runDir as NSString)
            .appendingPathComponent(OffsetCheckpointFile.name(instance: context.instance)))
        self.checkpoint = checkpoint
        let resumed: [String: Int64]
        do {
            resumed = try checkpoint.load()
        } catch {
            context.logger.warning("offset checkpoint unreadable; starting from the warm-up tail",
                                   metadata: ["problem": "\(error)"])
            resumed = [:]
        }
        if !resumed.isEmpty {
            context.logger.info("resuming from the last run's offsets", metadata: ["partitions": "\(resumed.count)"])
        }
        var topics = consumerConfig.topics
        topics.excluded = [context.config.mqttSessionTopic]  // ws-ingress's MQTT sessions are not messages
        consumer = try KafkaConsumer(
            config: consumerConfig, topics: topics,
            startOffset: { [initialAssignmentDone] partition in
                // Where the last run stopped (minus the warm-up window, for caches that restarted too), so a
                // restart skips nothing; else the warm-up tail; topics that appear later from their beginning.
                if let next = resumed[partition.epoch] { return .offset(max(0, max(0, next) - warmUp)) }
                return initialAssignmentDone.withLockedValue { $0 } ? .beginning : .tail(warmUp)
            },
            onRecords: { [weak self] records in self?.forward(records) },
            onEvent: { [weak self] event in self?.report(event) })
        deepRecoveries = DeepRecoveryWorker(
            maxRunning: context.config.maxDeepRecoveries,
            perform: { [weak self] read, request in
                self?.deepRecovery(request, read) ?? Self.reply(to: request, .resync)
            },
            answer: { [weak self] reply, requests in self?.answer(reply, to: requests) })
        consumer.start()
    }

    // MARK: Records → router (the consumer's poll thread)

    private func forward(_ records: [KafkaRecord]) {
        let arrival = monotonicNanoseconds()
        let router = context.topology.address(.router, 0)
        var skipped = 0
        var droppedHeaders = 0
        for record in records {
            guard var message = Self.message(from: record, droppedHeaders: &droppedHeaders) else {
                skipped += 1
                continue
            }
            message.previousSeq = previousOffsets.previous(of: message)
            recordOutbox.send(.message(message), to: router)
        }
        context.metrics.countReceivedBatch(records.count)
        context.logger.debug("records forwarded", metadata: ["records": "\(records.count - skipped)"])
        if skipped > 0 {
            context.logger.warning("records whose key makes no valid subject skipped",
                                   metadata: ["count": "\(skipped)"])
            context.metrics.addToGauge("skippedRecords", skipped)
        }
        if droppedHeaders > 0 {
            context.logger.debug("record headers dropped (not UTF-8, or past the bounds)",
                                 metadata: ["count": "\(droppedHeaders)"])
            context.metrics.addToGauge("droppedHeaders", droppedHeaders)
        }
        recordOutbox.flush()
        recordLatencies(of: records, arrival: arrival)
        checkpoint.advance(records)
    }

    /// Once per batch (the per-record path stays free of it): the hop, and the first record's timestamp → now.
    private func recordLatencies(of records: [KafkaRecord], arrival: UInt64) {
        hopTime.recordNanoseconds(Int64(clamping: elapsedNanoseconds(from: arrival, to: monotonicNanoseconds())))
        guard let first = records.first else { return }
        let age = elapsedNanoseconds(from: Self.timestamp(of: first), to: wallClockNanoseconds())
        consumeTime.recordNanoseconds(Int64(clamping: age))
    }

    /// The message a record becomes; nil when its key does not make a valid subject (not UTF-8, `a//b`, ...).
    /// Headers that cannot be kept (see `headers(of:)`) are added to `droppedHeaders`.
    static func message(from record: KafkaRecord) -> Message? {
        var droppedHeaders = 0
        return message(from: record, droppedHeaders: &droppedHeaders)
    }

    static func message(from record: KafkaRecord, droppedHeaders: inout Int) -> Message? {
        var key: String?
        if let keyBytes = record.key {
            guard let text = String(validating: keyBytes.readableBytesView, as: UTF8.self) else { return nil }
            key = text
        }
        let subject = Subject.fromKafka(topic: record.topic, key: key)
        guard Subject.validate(subject) == nil else { return nil }
        var flags: MessageFlags = [.retained, .guaranteed]
        if String(validating: record.value.readableBytesView, as: UTF8.self) == nil { flags.insert(.binary) }
        guard let seq = UInt64(exactly: record.offset) else { return nil }
        var message = Message(subject: subject, content: record.value, seq: seq, epoch: record.epoch,
                              flags: flags, timestamp: timestamp(of: record))
        if !record.headers.isEmpty || record.headersNotRead > 0 {
            let (headers, dropped) = headers(of: record)
            message.headers = headers
            droppedHeaders += dropped
        }
        return message
    }

    /// A record's headers as a message's (docs/MQTT.md): a null value becomes empty; a header whose value is not
    /// UTF-8 or whose name or value holds U+0000 (which MQTT strings cannot carry) is dropped, as the consumer
    /// dropped one whose name is not UTF-8; of the rest, those before the first past `MessageHeader.maxCount` /
    /// `.maxBytes` are kept. Returns them and how many were dropped.
    static func headers(of record: KafkaRecord) -> (headers: [MessageHeader], dropped: Int) {
        var candidates: [MessageHeader] = []
        for header in record.headers {
            let value = header.value.map { String(validating: $0.readableBytesView, as: UTF8.self) } ?? ""
            guard let value, !header.name.utf8.contains(0), !value.utf8.contains(0) else { continue }
            candidates.append(MessageHeader(header.name, value))
        }
        let (kept, pastBounds) = MessageHeader.bounded(candidates)
        return (kept, record.headersNotRead + record.headers.count - candidates.count + pastBounds)
    }

    /// The record's timestamp in nanoseconds; the arrival time when it has none or one too far out to count in
    /// nanoseconds (beyond the year 2554).
    static func timestamp(of record: KafkaRecord) -> UInt64 {
        guard let milliseconds = UInt64(exactly: record.timestamp) else { return wallClockNanoseconds() }
        let (nanoseconds, overflow) = milliseconds.multipliedReportingOverflow(by: 1_000_000)
        return overflow ? wallClockNanoseconds() : nanoseconds
    }

    public var reportsReadinessItself: Bool { true }

    private func noteWarmUp(_ event: WarmUp.Event) {
        let now = monotonicNanoseconds()
        if warmUp.withLockedValue({ $0.note(event, now: now) }) { becomeReady() }
    }

    private func becomeReady() {
        let reason = warmUp.withLockedValue { $0.reason }
        context.setReady(true)
        context.logger.info("ready", metadata: ["address": "\(context.inboundAddress)", "warm-up": "\(reason)"])
    }

    private func report(_ event: KafkaEvent) {
        let logger = context.logger
        switch event {
        case .reachability(let reachable, let reason):
            noteWarmUp(.reachable(reachable))
            if reachable {
                logger.info("Kafka reachable", metadata: ["reason": "\(reason)"])
                context.metrics.setState("ok")
            } else {
                logger.warning("Kafka unreachable; consuming resumes when it is back",
                               metadata: ["reason": "\(reason)"])
                context.metrics.setState("kafka unreachable")
            }
        case .partitionsAssigned(let assignments):
            initialAssignmentDone.withLockedValue { $0 = true }
            noteWarmUp(.assigned(assignments.map(\.info.topicPartition)))
            logger.info("partitions assigned",
                        metadata: ["partitions": .string(assignments.map(\.description).joined(separator: ", "))])
            context.metrics.setGauge("partitions", consumer?.assignment.count ?? assignments.count)
        case .partitionsRevoked(let partitions):
            logger.info("partitions revoked",
                        metadata: ["partitions": .string(partitions.map(\.description).joined(separator: ", "))])
        case .partitionEOF(let partition, let offset):
            logger.debug("caught up", metadata: ["partition": "\(partition)", "next": "\(offset)"])
            noteWarmUp(.caughtUp(partition.topicPartition))
        case .partitionError(let partition, let error):
            logger.warning("partition error", metadata: ["partition": "\(partition)", "error": "\(error)"])
        case .error(let error) where error.isFatal:
            // The client is unusable: exit, and the supervisor starts a fresh one.
            logger.error("fatal Kafka client error; exiting", metadata: ["error": "\(error)"])
            exit(3)
        case .error(let error):
            logger.warning("Kafka client error", metadata: ["error": "\(error)"])
        case .log(let level, let facility, let message):
            if level <= 4 {
                logger.warning("librdkafka", metadata: ["facility": "\(facility)", "message": "\(message)"])
            }
        }
    }

    // MARK: Requests from the caches (the pipeline loop's thread)

    public func handle(_ envelope: Envelope, outbox: Outbox) {
        switch envelope {
        case .subscribe(let request):
            let admission = deepRecoveries.submit(request)
            context.metrics.setGauge("deepRecoveriesInFlight", deepRecoveries.inFlight)
            if admission == .refused {
                context.logger.debug("deep recovery refused: too many in flight",
                                     metadata: ["subject": "\(request.subject)"])
                context.metrics.addToGauge("deepRecoveriesRefused", 1)
                outbox.send(.subscribeReply(Self.reply(to: request, .resync)), to: request.replyTo, delivery: .reply)
            }
        case .peerUp(let peer) where peer.stage == StageName.cache.rawValue:
            rewarm(because: "\(peer.stage)-\(peer.instance) started")
        default:
            context.logger.warning("unexpected envelope for kafka-in dropped",
                                   metadata: ["envelope": "\(envelope.kindName)"])
        }
    }

    /// Reads the recent records of every partition again, for a cache that starts empty. Caches that have them
    /// already pass them on no further.
    private func rewarm(because reason: String) {
        let tail = Int64(context.config.maxCachedMessagesPerSubject)
        let partitions = consumer.assignment
        context.logger.info("warming the caches again",
                            metadata: ["reason": "\(reason)", "partitions": "\(partitions.count)"])
        for partition in partitions {
            do {
                try consumer.seek(partition.topicPartition, to: .tail(tail))
            } catch {
                context.logger.warning("cannot re-read partition",
                                       metadata: ["partition": "\(partition)", "error": "\(error)"])
            }
        }
    }

    // MARK: Deep recoveries (worker threads)

    static func reply(to request: Subscribe, _ status: SubscribeReply.Status, _ messages: [Message] = [],
                      epoch: String = "", lastSeq: UInt64 = 0) -> SubscribeReply {
        SubscribeReply(requestID: request.requestID, subject: request.subject, kind: .recovered, status: status,
                       messages: messages, epoch: epoch, lastSeq: lastSeq)
    }

    /// Reads what the subscriber missed from Kafka; a resync when Kafka cannot tell all of it.
    private func deepRecovery(_ request: Subscribe, _ read: DeepRecoveryQueue.Read) -> SubscribeReply {
        guard let position = Int64(exactly: read.after), position < Int64.max else {
            // No Kafka offset is that large: the position was never real.
            context.logger.info("deep recovery: not a Kafka offset",
                                metadata: ["subject": "\(read.subject)", "after": "\(read.after)"])
            return Self.reply(to: request, .resync)
        }
        let (topic, key) = Subject.kafkaMapping(read.subject)
        guard let partition = assignedPartition(topic: String(topic), epoch: read.epoch) else {
            context.logger.info("deep recovery: epoch unknown",
                                metadata: ["subject": "\(read.subject)", "epoch": "\(read.epoch)"])
            return Self.reply(to: request, .resync)
        }
        let started = monotonicNanoseconds()
        let outcome = deepReader.read(partition, after: position, key: key.map(String.init))
        let milliseconds = elapsedNanoseconds(from: started, to: monotonicNanoseconds()) / 1_000_000
        switch outcome {
        case .records(let records, let end):
            let messages = records.compactMap(Self.message(from:))
            context.logger.info("deep recovery", metadata: ["subject": "\(read.subject)", "after": "\(read.after)",
                                                            "messages": "\(messages.count)", "ms": "\(milliseconds)"])
            return Self.reply(to: request, .sync, messages, epoch: read.epoch,
                              lastSeq: max(read.after, end > 0 ? UInt64(end - 1) : 0))
        case .unavailable(let reason):
            context.logger.info("deep recovery not possible",
                                metadata: ["subject": "\(read.subject)", "after": "\(read.after)",
                                           "reason": "\(reason)", "ms": "\(milliseconds)"])
            return Self.reply(to: request, .resync)
        }
    }

    /// Sends one read's reply to every request it answers.
    private func answer(_ reply: SubscribeReply, to requests: [Subscribe]) {
        replyOutbox.withLockedValue { outbox in
            for request in requests {
                var answer = reply
                answer.requestID = request.requestID
                if !outbox.send(.subscribeReply(answer), to: request.replyTo, delivery: .reply) {
                    outbox.send(.subscribeReply(Self.reply(to: request, .resync)), to: request.replyTo,
                                delivery: .reply)
                }
            }
            outbox.flush()
        }
    }

    /// The partition with `epoch`; an epoch not assigned yet may belong to a topic another node saw first, so
    /// metadata is checked again before giving up.
    private func assignedPartition(topic: String, epoch: String) -> KafkaPartitionInfo? {
        func find() -> KafkaPartitionInfo? { consumer.assignment.first { $0.topic == topic && $0.epoch == epoch } }
        if let partition = find() { return partition }
        consumer.refresh()
        let deadline = monotonicNanoseconds() + Self.unknownEpochWait
        while monotonicNanoseconds() < deadline, !context.isStopping {
            usleep(100_000)
            if let partition = find() { return partition }
        }
        return nil
    }

    static let unknownEpochWait: UInt64 = 2_000_000_000

    public func tick(now: UInt64, outbox: Outbox) {
        context.metrics.setGauge("partitions", consumer.assignment.count)
        context.metrics.setGauge("deepRecoveriesInFlight", deepRecoveries.inFlight)
        if warmUp.withLockedValue({ $0.tick(now: now) }) { becomeReady() }
    }

    /// The stage stops (SIGTERM): deep recoveries give up, and the consumer leaves the cluster cleanly.
    public func stopping(outbox: Outbox) {
        running.withLockedValue { $0 = false }
        deepRecoveries.stop()
        consumer.close()
    }
}
