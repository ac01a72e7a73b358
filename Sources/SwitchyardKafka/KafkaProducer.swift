import CRdKafka
import NIOConcurrencyHelpers
import NIOCore
import SwitchyardCore

/// What `KafkaProducer.produce` did with a record.
public enum KafkaProduceResult: Sendable, Equatable {
    /// Queued; its delivery report will follow.
    case queued
    /// librdkafka's local queue is full (`queue.buffering.max.messages` / `.kbytes`): backpressure. Nothing was
    /// queued and no delivery report will follow; retry after some delivery reports arrived.
    case queueFull
    /// Refused at once (message too large, unknown partition, producer closed, ...); no delivery report follows.
    case failed(KafkaError)
}

/// A Kafka producer: one librdkafka handle, one poll thread that delivers delivery reports in batches.
///
/// - `produce` may be called from any thread; it never blocks.
/// - Delivery reports and events are delivered on the producer's own poll thread, never concurrently. The
///   callbacks must not block for long and must not keep the producer strongly referenced (that would keep it
///   alive forever; capture it weakly if needed).
/// - Defaults (unless the properties file sets them): `partitioner = murmur2_random` (the Java client's, so a
///   key lands on the same partition whichever client produced it), `client.id = switchyard`, and
///   `enable.idempotence = true` (a retried batch is not stored twice and records of a partition keep their order;
///   it needs `acks = all`, so it is not set when the file asks for `acks = 0` or `1`).
/// - A record with a null key goes to partition `nullKeyPartition` (default 0), so a single-segment subject
///   keeps its order and one epoch; nil lets the partitioner spread null keys.
// @unchecked Sendable: `thread` is set once in init (JoinableThread is Sendable); topics and `closed` are in a locked box.
public final class KafkaProducer: @unchecked Sendable {
    private let client: RdKafkaClient
    private var thread: JoinableThread?
    private let nullKeyPartition: Int32?

    private struct State {
        var topics: [String: OpaquePointer] = [:]
        var closed = false
    }
    private let state = NIOLockedValueBox(State())

    /// - Parameters:
    ///   - config: librdkafka properties (`bootstrap.servers`, ...); Switchyard's `topics` keys are ignored.
    ///   - nullKeyPartition: partition for null-key records; nil to let the partitioner choose.
    ///   - onDelivery: a batch of delivery reports, in the order librdkafka reports them.
    ///   - onEvent: logs, client errors, reachability changes.
    public init(config: KafkaConfig, nullKeyPartition: Int32? = 0,
                onDelivery: @escaping @Sendable ([KafkaDeliveryReport]) -> Void,
                onEvent: @escaping @Sendable (KafkaEvent) -> Void = { _ in }) throws {
        var config = config
        config.setDefault("partitioner", "murmur2_random")
        config.setDefault("client.id", "switchyard")
        if !["0", "1"].contains(config["acks"] ?? config["request.required.acks"] ?? "all") {
            config.setDefault("enable.idempotence", "true")
        }
        self.client = try RdKafkaClient(type: RD_KAFKA_PRODUCER, config: config, forced: [],
                                        events: SY_RD_KAFKA_EVENT_DR, onEvent: onEvent)
        self.nullKeyPartition = nullKeyPartition

        let client = self.client
        let loop = ProducerLoop(client: client, onDelivery: onDelivery)
        self.thread = JoinableThread(name: "kafka-producer") { thread in
            while !thread.isStopping { loop.iterate() }
        }
    }

    deinit {
        close(flushTimeout: .zero)
    }

    /// The value of a librdkafka property as this producer runs with it.
    public func effectiveProperty(_ key: String) -> String? {
        client.effectiveProperty(key)
    }

    /// Queues one record. `id` comes back in its delivery report. Key, value and headers are copied.
    /// A nil key or value is a null one (a null value is a tombstone in a compacted topic); an empty buffer is an
    /// empty (not null) key or value; a header with a nil value has a null value.
    public func produce(topic: String, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer?,
                        headers: [KafkaHeader] = [], id: UInt64) -> KafkaProduceResult {
        state.withLockedValue { state -> KafkaProduceResult in
            if state.closed {
                return .failed(KafkaError(RD_KAFKA_RESP_ERR__DESTROY, reason: "the producer is closed"))
            }
            let rkt: OpaquePointer
            if let existing = state.topics[topic] {
                rkt = existing
            } else {
                guard let created = rd_kafka_topic_new(client.handle, topic, nil) else {
                    return .failed(KafkaError(rd_kafka_last_error(), reason: "cannot use topic '\(topic)'"))
                }
                state.topics[topic] = created
                rkt = created
            }
            let partition = key == nil ? (nullKeyPartition ?? SY_RD_KAFKA_PARTITION_UA) : SY_RD_KAFKA_PARTITION_UA
            // librdkafka reads a NULL pointer as a null key/value; a zero-length buffer may have no base address.
            let opaque = UnsafeMutableRawPointer(bitPattern: UInt(truncatingIfNeeded: id))
            let err = withUnsafeBytes(of: UInt8(0)) { empty -> rd_kafka_resp_err_t in
                let valuePtr = value.map { UnsafeMutableRawPointer(mutating: $0.baseAddress ?? empty.baseAddress!) }
                let keyPtr = key.map { $0.baseAddress ?? empty.baseAddress! }
                guard !headers.isEmpty else {
                    let rc = rd_kafka_produce(rkt, partition, SY_RD_KAFKA_MSG_F_COPY, valuePtr, value?.count ?? 0,
                                              keyPtr, key?.count ?? 0, opaque)
                    return rc == 0 ? RD_KAFKA_RESP_ERR_NO_ERROR : rd_kafka_last_error()
                }
                let recordHeaders = Self.makeHeaders(headers)
                let err = sy_rd_kafka_produce_with_headers(client.handle, rkt, partition, valuePtr, value?.count ?? 0,
                                                           keyPtr, key?.count ?? 0, recordHeaders, opaque)
                // librdkafka owns the headers once the record is queued.
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { rd_kafka_headers_destroy(recordHeaders) }
                return err
            }
            if err == RD_KAFKA_RESP_ERR_NO_ERROR { return .queued }
            if err == RD_KAFKA_RESP_ERR__QUEUE_FULL { return .queueFull }
            return .failed(KafkaError(err))
        }
    }

    /// Queues one record from `ByteBuffer`s (see `produce(topic:key:value:headers:id:)`).
    public func produce(topic: String, key: ByteBuffer?, value: ByteBuffer?, headers: [KafkaHeader] = [],
                        id: UInt64) -> KafkaProduceResult {
        func withKey(_ v: UnsafeRawBufferPointer?) -> KafkaProduceResult {
            guard let key else { return produce(topic: topic, key: nil, value: v, headers: headers, id: id) }
            return key.withUnsafeReadableBytes { k in produce(topic: topic, key: k, value: v, headers: headers, id: id) }
        }
        guard let value else { return withKey(nil) }
        return value.withUnsafeReadableBytes { v in withKey(v) }
    }

    /// Creates `name` with `partitions` partitions, the broker's default replication and the topic `configs`
    /// (e.g. `cleanup.policy = compact`); a broker that refuses the configs gets the topic without them. Blocks up
    /// to about twice `timeout`: call it off any event loop. Returns `.created`, `.existed`, or the error.
    public func createTopic(_ name: String, partitions: Int32, configs: [String: String],
                            timeout: Duration) -> Result<KafkaTopicCreation, KafkaError> {
        let result = KafkaAdmin.createTopic(client.handle, name, partitions: partitions, configs: configs,
                                            timeout: timeout)
        guard case .failure(let error) = result, !configs.isEmpty,
              [RD_KAFKA_RESP_ERR_INVALID_CONFIG.rawValue, RD_KAFKA_RESP_ERR_POLICY_VIOLATION.rawValue,
               RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION.rawValue].contains(error.code) else { return result }
        return KafkaAdmin.createTopic(client.handle, name, partitions: partitions, configs: [:], timeout: timeout)
    }

    /// A librdkafka header list with copies of `headers`, for `rd_kafka_producev`.
    private static func makeHeaders(_ headers: [KafkaHeader]) -> OpaquePointer {
        let list: OpaquePointer = rd_kafka_headers_new(headers.count)  // never NULL: librdkafka aborts out of memory
        for header in headers {
            let nameSize = header.name.utf8.count
            header.name.withCString { name in
                guard let value = header.value else {
                    _ = rd_kafka_header_add(list, name, nameSize, nil, 0)
                    return
                }
                withUnsafeBytes(of: UInt8(0)) { empty in
                    value.withUnsafeReadableBytes { bytes in
                        _ = rd_kafka_header_add(list, name, nameSize, bytes.baseAddress ?? empty.baseAddress!, bytes.count)
                    }
                }
            }
        }
        return list
    }

    /// librdkafka's `rd_kafka_outq_len`: records queued or in flight whose delivery reports have not been
    /// handled yet, plus other events not yet served. 0 once everything was delivered and reported.
    public var outstanding: Int {
        Int(rd_kafka_outq_len(client.handle))
    }

    /// Waits until every queued record's delivery report was handled, or the timeout passed (returns false).
    /// Must not be called from a delivery callback (the poll thread itself): returns false at once there.
    @discardableResult
    public func flush(timeout: Duration) -> Bool {
        if thread?.isCurrent ?? true { return outstanding == 0 }
        return rd_kafka_flush(client.handle, milliseconds(timeout)) == RD_KAFKA_RESP_ERR_NO_ERROR
    }

    /// Stops producing: flushes up to `flushTimeout`, stops the poll thread (reports not yet handled are
    /// dropped) and releases topic handles. The librdkafka handle itself is freed in deinit. Idempotent.
    public func close(flushTimeout: Duration = .seconds(5)) {
        let alreadyClosed = state.withLockedValue { state -> Bool in
            defer { state.closed = true }
            return state.closed
        }
        if alreadyClosed { return }
        if flushTimeout > .zero { flush(timeout: flushTimeout) }
        thread?.stop()
        let topics = state.withLockedValue { state -> [OpaquePointer] in
            defer { state.topics.removeAll() }
            return Array(state.topics.values)
        }
        for rkt in topics { rd_kafka_topic_destroy(rkt) }
    }
}

/// The producer's poll loop, run on its own thread; holds no reference to the `KafkaProducer`.
// @unchecked Sendable: created in `KafkaProducer.init`, then touched only on the producer's poll thread.
private final class ProducerLoop: @unchecked Sendable {
    let client: RdKafkaClient
    let onDelivery: @Sendable ([KafkaDeliveryReport]) -> Void
    let messages = UnsafeMutablePointer<UnsafePointer<rd_kafka_message_t>?>.allocate(capacity: 1024)
    var topicNames: [OpaquePointer: String] = [:]
    var reports: [KafkaDeliveryReport] = []
    var nextProbe = ContinuousClock.now

    init(client: RdKafkaClient, onDelivery: @escaping @Sendable ([KafkaDeliveryReport]) -> Void) {
        self.client = client
        self.onDelivery = onDelivery
    }

    deinit {
        messages.deallocate()
    }

    func iterate() {
        client.serveMainQueue(timeoutMs: 100) { event in self.handleDeliveryReports(event) }
        // While the cluster is not known to answer, probe it now and then so recovery is reported even when
        // nothing is produced.
        if client.isReachable != true, ContinuousClock.now >= nextProbe {
            if let error = client.probe(timeoutMs: 1000) {
                client.setReachable(false, reason: "metadata request failed: \(error.message)")
            } else {
                client.setReachable(true, reason: "metadata request answered")
            }
            nextProbe = ContinuousClock.now + .seconds(1)
        }
    }

    private func handleDeliveryReports(_ event: OpaquePointer) {
        reports.removeAll(keepingCapacity: true)
        var delivered = false
        while true {
            let n = rd_kafka_event_message_array(event, messages, 1024)
            if n == 0 { break }
            for i in 0..<n {
                guard let msg = messages[i]?.pointee else { continue }
                let topic = topicName(msg.rkt)
                let id = UInt64(UInt(bitPattern: msg._private))
                if msg.err == RD_KAFKA_RESP_ERR_NO_ERROR {
                    delivered = true
                    reports.append(KafkaDeliveryReport(id: id, topic: topic, partition: msg.partition,
                                                       offset: msg.offset, error: nil))
                } else {
                    reports.append(KafkaDeliveryReport(id: id, topic: topic, partition: msg.partition,
                                                       offset: -1, error: KafkaError(msg.err)))
                }
            }
        }
        if delivered { client.setReachable(true, reason: "records delivered") }
        if !reports.isEmpty { onDelivery(reports) }
    }

    private func topicName(_ rkt: OpaquePointer?) -> String {
        guard let rkt else { return "" }
        if let name = topicNames[rkt] { return name }
        let name = String(cString: rd_kafka_topic_name(rkt))
        topicNames[rkt] = name
        return name
    }
}

/// What `KafkaProducer.createTopic` found.
public enum KafkaTopicCreation: Sendable, Equatable {
    case created
    /// The topic was there already (its settings left as they are).
    case existed
}

/// librdkafka's admin API (CreateTopics), on a client's handle.
enum KafkaAdmin {
    static func createTopic(_ handle: OpaquePointer, _ name: String, partitions: Int32, configs: [String: String],
                            timeout: Duration) -> Result<KafkaTopicCreation, KafkaError> {
        var errbuf = [CChar](repeating: 0, count: 512)
        guard let topic = rd_kafka_NewTopic_new(name, partitions, -1, &errbuf, errbuf.count) else {
            let message = errbuf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            return .failure(KafkaError(RD_KAFKA_RESP_ERR__INVALID_ARG, reason: message))
        }
        defer { rd_kafka_NewTopic_destroy(topic) }
        for (key, value) in configs.sorted(by: { $0.key < $1.key }) {
            _ = rd_kafka_NewTopic_set_config(topic, key, value)
        }
        guard let queue = rd_kafka_queue_new(handle) else {
            return .failure(KafkaError(RD_KAFKA_RESP_ERR__FAIL, reason: "no queue for CreateTopics"))
        }
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(handle, RD_KAFKA_ADMIN_OP_CREATETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        _ = rd_kafka_AdminOptions_set_request_timeout(options, milliseconds(timeout), &errbuf, errbuf.count)
        var topics: [OpaquePointer?] = [topic]
        rd_kafka_CreateTopics(handle, &topics, 1, options, queue)
        guard let event = rd_kafka_queue_poll(queue, milliseconds(timeout) &+ 1000) else {
            return .failure(KafkaError(RD_KAFKA_RESP_ERR__TIMED_OUT, reason: "CreateTopics '\(name)' timed out"))
        }
        defer { rd_kafka_event_destroy(event) }
        let err = rd_kafka_event_error(event)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let result = rd_kafka_event_CreateTopics_result(event) else {
            return .failure(KafkaError(err, reason: rd_kafka_event_error_string(event).map { String(cString: $0) }))
        }
        var count = 0
        guard let results = rd_kafka_CreateTopics_result_topics(result, &count), count > 0,
              let first = results[0] else {
            return .failure(KafkaError(RD_KAFKA_RESP_ERR__FAIL, reason: "CreateTopics '\(name)': no result"))
        }
        let topicError = rd_kafka_topic_result_error(first)
        if topicError == RD_KAFKA_RESP_ERR_NO_ERROR { return .success(.created) }
        if topicError == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS { return .success(.existed) }
        return .failure(KafkaError(topicError, reason: rd_kafka_topic_result_error_string(first).map { String(cString: $0) }))
    }
}
