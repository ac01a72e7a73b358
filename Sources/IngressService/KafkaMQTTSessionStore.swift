import Foundation
import IngressStage
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchyardCore
import SwitchyardKafka

/// Persistent MQTT sessions in Kafka mode (docs/MQTT.md, "Persistent sessions"): a compacted topic
/// (`MqttSessionTopic`) keyed by client identifier, whose values are `MQTTSessionRecord` JSON and whose
/// tombstones delete. Every ws-ingress instance of every node reads the whole topic from its beginning (assigned,
/// no consumer group) into an in-memory `MQTTSessionTable` and keeps reading, so any node can take a session up.
/// Saves are produced with `acks = all` (idempotent) through the Kafka settings of `KafkaProducerConfig`; reading
/// uses those of `KafkaConsumerConfig`. A CONNECT waits for the first catch-up up to `catchUpWait`, then is told
/// the store is unavailable. librdkafka's poll threads do the I/O; nothing here blocks an event loop.
public final class KafkaMQTTSessionStore: MQTTSessionStorage {
    /// Partitions of the topic when this store creates it.
    public static let partitions: Int32 = 8
    /// The record header naming the instance and write that produced a record: `<instance token>/<write id>`.
    static let writerHeader = "switchyard-session-writer"
    /// A record value larger than this is not read (a session of `MaxSubjectsPerConnection` subjects fits).
    static let maxRecordBytes = 16 << 20

    private struct Waiter {
        var id: UInt64
        var clientID: String
        var promise: EventLoopPromise<MQTTSessionLoaded>
    }

    private struct State {
        var table: MQTTSessionTable
        var catchUp = MQTTSessionCatchUp()
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
        /// Write id → client, until its delivery report.
        var inFlight: [UInt64: String] = [:]
        /// Sessions other writers saved (their generation) or deleted (`UInt64.max`) since the catch-up and the
        /// last `takeOvers`; at most `MqttMaxSessions` clients.
        var takeOvers: [String: UInt64] = [:]
    }

    private let topic: String
    /// Tells this instance's records from others' (`writerHeader`).
    private let token = UUID().uuidString
    private let catchUpWait: TimeAmount
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let producer: KafkaProducer
    private let consumer: KafkaConsumer
    /// Creates the topic if it is missing, trying again while that fails; ends once it exists.
    private let topicCreator: JoinableThread

    /// The store of Kafka mode for ws-ingress (`IngressServer.main`); nil in standalone mode (the files).
    public static func make(_ context: StageContext) throws -> (any MQTTSessionStorage)? {
        let config = context.config
        guard config.clusterEngine == .kafka, config.mqttSessionExpiry > 0 else { return nil }
        // The CONNECT must have its answer before `HandshakeTimeout` closes the connection.
        let wait = TimeAmount.milliseconds(Int64(max(config.handshakeTimeout, 2)) * 500)
        return try KafkaMQTTSessionStore(producerConfig: try KafkaConfig.load(path: config.kafkaProducerConfig),
                                         consumerConfig: try KafkaConfig.load(path: config.kafkaConsumerConfig),
                                         topic: config.mqttSessionTopic, maxSessions: config.mqttMaxSessions,
                                         catchUpWait: wait, logger: context.logger)
    }

    /// Starts reading the topic at once and creates it (if missing) in the background. `topicIDs`: see
    /// `KafkaConsumer.Options` (false for librdkafka's mock cluster).
    public init(producerConfig: KafkaConfig, consumerConfig: KafkaConfig, topic: String, maxSessions: Int,
                catchUpWait: TimeAmount, topicIDs: Bool = true, logger: Logger) throws {
        self.topic = topic
        self.catchUpWait = catchUpWait
        self.logger = logger
        let state = NIOLockedValueBox(State(table: MQTTSessionTable(maxSessions: maxSessions)))
        self.state = state
        var producerConfig = producerConfig
        producerConfig.set("acks", "all")  // and so idempotent (KafkaProducer)
        let producer = try KafkaProducer(
            config: producerConfig, nullKeyPartition: nil,
            onDelivery: { reports in Self.delivered(reports, state: state, logger: logger) },
            onEvent: { event in Self.log(event, logger: logger) })
        self.producer = producer
        var options = KafkaConsumer.Options()
        options.topicIDs = topicIDs
        let token = self.token
        let consumer = try KafkaConsumer(
            config: consumerConfig, topics: KafkaTopicSelection(names: [topic]), options: options,
            startOffset: { _ in .beginning },
            onRecords: { records in Self.read(records, token: token, state: state, logger: logger) },
            onEvent: { event in
                Self.caughtUp(after: event, state: state, logger: logger)
                Self.log(event, logger: logger)
            })
        self.consumer = consumer
        consumer.start()
        topicCreator = JoinableThread(name: "mqtt-sess-topic") { thread in
            var attempt = 0
            while !thread.isStopping {
                attempt += 1
                if Self.createTopic(topic, attempt: attempt, producer: producer, state: state, logger: logger) {
                    consumer.refresh()
                    return
                }
                for _ in 0..<(Self.topicRetrySeconds * 10) where !thread.isStopping {
                    Thread.sleep(forTimeInterval: 0.1)
                }
            }
        }
    }

    /// Seconds between attempts to create the topic while that fails (Kafka down, no `Create` ACL).
    static let topicRetrySeconds = 5

    /// Creates the topic unless it exists (blocks up to a few seconds); false when that failed. A CONNECT waits
    /// for the topic to be read, so it must come to exist: `topicCreator` tries until then.
    private static func createTopic(_ topic: String, attempt: Int, producer: KafkaProducer,
                                    state: NIOLockedValueBox<State>, logger: Logger) -> Bool {
        switch producer.createTopic(topic, partitions: partitions, configs: ["cleanup.policy": "compact"],
                                    timeout: .seconds(3)) {
        case .success(.created):
            logger.info("MQTT session topic created", metadata: ["topic": "\(topic)"])
            let waiters = state.withLockedValue { $0.catchUp.topicCreated() ? takeWaiters(&$0) : [] }
            for (waiter, loaded) in waiters { waiter.promise.succeed(loaded) }
            return true
        case .success(.existed):
            return true
        case .failure(let error):
            logger.log(level: attempt == 1 ? .warning : .debug,
                       "MQTT session topic not created yet; trying again every \(topicRetrySeconds) s",
                       metadata: ["topic": "\(topic)", "error": "\(error)", "attempt": "\(attempt)"])
            return false
        }
    }

    deinit {
        topicCreator.stop()
        consumer.close()
        producer.close(flushTimeout: .zero)
    }

    // MARK: MQTTSessionStorage

    public func load(_ clientID: String, on eventLoop: EventLoop) -> EventLoopFuture<MQTTSessionLoaded> {
        let now = Date().timeIntervalSince1970
        let promise = eventLoop.makePromise(of: MQTTSessionLoaded.self)
        // The answer now, or (nil) the id of the waiter answered after the catch-up.
        let (answer, waiting) = state.withLockedValue { state -> (MQTTSessionLoaded?, UInt64) in
            guard state.catchUp.isDone else {
                state.nextID += 1
                state.waiters.append(Waiter(id: state.nextID, clientID: clientID, promise: promise))
                return (nil, state.nextID)
            }
            return (state.table.load(clientID, now: now), 0)
        }
        if let answer {
            promise.succeed(answer)
        } else {
            eventLoop.scheduleTask(in: catchUpWait) { [state, logger, topic] in
                let late = state.withLockedValue { state -> Waiter? in
                    guard let index = state.waiters.firstIndex(where: { $0.id == waiting }) else { return nil }
                    return state.waiters.remove(at: index)
                }
                guard let late else { return }
                logger.warning("MQTT session topic not read to its end in time: CONNECT answered Server unavailable",
                               metadata: ["topic": "\(topic)", "client": "\(clientID)"])
                late.promise.succeed(.unavailable)
            }
        }
        return promise.futureResult
    }

    public func save(_ record: MQTTSessionRecord) {
        write(record.clientID, record)
    }

    public func delete(_ clientID: String) {
        write(clientID, nil)
    }

    public func sweep() {
        let expired = state.withLockedValue { $0.table.removeExpired(now: Date().timeIntervalSince1970) }
        for clientID in expired { write(clientID, nil) }
    }

    /// Nothing to write: the new connection's save of its generation (within 250 ms), or a clean session's
    /// tombstone, is the announcement, read by every instance of every node.
    public func announceTakeOver(of clientID: String, generation: UInt64) {}

    public func takeOvers(on eventLoop: EventLoop) -> EventLoopFuture<[String: UInt64]> {
        eventLoop.makeSucceededFuture(state.withLockedValue { state in
            defer { state.takeOvers = [:] }
            return state.takeOvers
        })
    }

    public func close() {
        topicCreator.requestStop()
        if !producer.flush(timeout: .seconds(2)) {
            logger.warning("MQTT sessions not all written to Kafka at shutdown",
                           metadata: ["outstanding": "\(producer.outstanding)"])
        }
        consumer.close()
    }

    // MARK: Writing

    private func write(_ clientID: String, _ record: MQTTSessionRecord?) {
        var value: ByteBuffer?
        if let record {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            guard let data = try? encoder.encode(record) else { return }
            value = ByteBuffer(bytes: data)
        }
        let (id, written) = state.withLockedValue { state in
            state.nextID += 1
            let written = state.table.write(clientID, record, id: state.nextID, isCaughtUp: state.catchUp.isDone)
            if written == .applied { state.inFlight[state.nextID] = clientID }
            return (state.nextID, written)
        }
        switch written {
        case .applied:
            break
        case .nothingToDelete:
            return
        case .noRoom:
            return logger.warning("MQTT session not kept: MqttMaxSessions reached", metadata: ["client": "\(clientID)"])
        case .takenOver:
            return logger.info("MQTT session not saved: a connection on another node took it up",
                               metadata: ["client": "\(clientID)"])
        }
        let header = KafkaHeader(name: Self.writerHeader, value: ByteBuffer(string: "\(token)/\(id)"))
        let result = producer.produce(topic: topic, key: ByteBuffer(string: clientID), value: value,
                                      headers: [header], id: id)
        guard result != .queued else { return }
        state.withLockedValue { state in
            state.inFlight[id] = nil
            state.table.writeFailed(clientID, id: id)
        }
        logger.error("MQTT session not written to Kafka", metadata: ["client": "\(clientID)", "result": "\(result)"])
    }

    private static func delivered(_ reports: [KafkaDeliveryReport], state: NIOLockedValueBox<State>, logger: Logger) {
        let failed = state.withLockedValue { state -> [(String, KafkaError)] in
            var failed: [(String, KafkaError)] = []
            for report in reports {
                guard let clientID = state.inFlight.removeValue(forKey: report.id) else { continue }
                if let error = report.error {
                    state.table.writeFailed(clientID, id: report.id)
                    failed.append((clientID, error))
                }
            }
            return failed
        }
        for (clientID, error) in failed {
            logger.error("MQTT session not written to Kafka", metadata: ["client": "\(clientID)", "error": "\(error)"])
        }
    }

    // MARK: Reading

    private static func read(_ records: [KafkaRecord], token: String, state: NIOLockedValueBox<State>,
                             logger: Logger) {
        let now = Date().timeIntervalSince1970
        var decoded: [(String, MQTTSessionRecord?, UInt64?)] = []
        for record in records {
            guard let key = record.key, let clientID = key.getString(at: key.readerIndex, length: key.readableBytes),
                  !clientID.isEmpty else { continue }
            var session: MQTTSessionRecord?
            if record.value.readableBytes > 0 {
                guard record.value.readableBytes <= maxRecordBytes,
                      let parsed = try? JSONDecoder().decode(MQTTSessionRecord.self, from: Data(record.value.readableBytesView)),
                      parsed.clientID == clientID, parsed.hasKnownVersion else {
                    logger.warning("MQTT session record unreadable; skipped",
                                   metadata: ["client": "\(clientID)", "partition": "\(record.partition)",
                                              "offset": "\(record.offset)"])
                    continue
                }
                session = parsed
            }
            decoded.append((clientID, session, ownWriteID(of: record, token: token)))
        }
        state.withLockedValue { state in
            for (clientID, session, ownID) in decoded {
                state.table.read(clientID, session, ownID: ownID, now: now)
                // Records read during the catch-up are history: no connection can be older than them.
                guard ownID == nil, state.catchUp.isDone,
                      state.takeOvers[clientID] != nil || state.takeOvers.count < state.table.maxSessions else { continue }
                let generation = session.map { $0.generation ?? 0 } ?? .max
                state.takeOvers[clientID] = max(state.takeOvers[clientID] ?? 0, generation)
            }
        }
    }

    /// The id of this instance's write that `record` is; nil for another writer's.
    private static func ownWriteID(of record: KafkaRecord, token: String) -> UInt64? {
        guard let header = record.headers.first(where: { $0.name == writerHeader }), let value = header.value,
              let text = value.getString(at: value.readerIndex, length: value.readableBytes) else { return nil }
        let parts = text.split(separator: "/")
        guard parts.count == 2, parts[0] == token else { return nil }
        return UInt64(parts[1])
    }

    private static func caughtUp(after event: KafkaEvent, state: NIOLockedValueBox<State>, logger: Logger) {
        let waiters = state.withLockedValue { state -> [(Waiter, MQTTSessionLoaded)] in
            let done: Bool
            switch event {
            case .partitionsAssigned(let assignments): done = state.catchUp.assigned(assignments.map(\.info.partition))
            case .partitionEOF(let info, _): done = state.catchUp.reachedEnd(of: info.partition)
            default: done = false
            }
            return done ? takeWaiters(&state) : []
        }
        for (waiter, loaded) in waiters { waiter.promise.succeed(loaded) }
    }

    /// The CONNECTs that waited for the catch-up, with what they find.
    private static func takeWaiters(_ state: inout State) -> [(Waiter, MQTTSessionLoaded)] {
        let now = Date().timeIntervalSince1970
        defer { state.waiters.removeAll() }
        return state.waiters.map { ($0, state.table.load($0.clientID, now: now)) }
    }

    private static func log(_ event: KafkaEvent, logger: Logger) {
        switch event {
        case .error(let error) where error.isFatal:
            logger.error("MQTT session topic: fatal Kafka client error; sessions are not saved",
                         metadata: ["error": "\(error)"])
        case .error(let error):
            // Transient (librdkafka retries); reachability changes are logged at warning.
            logger.debug("MQTT session topic: Kafka error", metadata: ["error": "\(error)"])
        case .reachability(let reachable, let reason):
            if reachable {
                logger.info("MQTT session topic: Kafka reachable", metadata: ["reason": "\(reason)"])
            } else {
                logger.warning("MQTT session topic: Kafka unreachable", metadata: ["reason": "\(reason)"])
            }
        case .partitionError(let info, let error):
            logger.warning("MQTT session topic: partition error", metadata: ["partition": "\(info)", "error": "\(error)"])
        case .log(let level, let facility, let message) where level <= 4:
            logger.warning("librdkafka", metadata: ["facility": "\(facility)", "message": "\(message)"])
        default:
            break
        }
    }
}
