import CRdKafka
import NIOConcurrencyHelpers
import NIOCore
import SwitchyardCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An assign-based Kafka consumer: no consumer group is joined and nothing is committed. It reads every
/// partition of the selected topics (every Switchyard node reads everything), finds them through metadata and
/// re-checks periodically, so topics created later (matching the regex or listed) and added partitions are
/// picked up, and a topic deleted and created again (new topic id, new epoch) is re-assigned from the start
/// offset the caller chooses.
///
/// - Records, in batches, and events are delivered on the consumer's own poll thread, never concurrently and in
///   order: a partition's `.partitionEOF` comes after the records before it. Callbacks must not block for long
///   and must not keep the consumer strongly referenced.
/// - Forced properties: `enable.partition.eof = true`, `enable.auto.commit = false`,
///   `enable.auto.offset.store = false`. Defaults unless the file sets them: `group.id = switchyard-assign`
///   (librdkafka's assign API needs one; the group is never joined), `auto.offset.reset = earliest` (a position
///   that is gone, e.g. after the topic was recreated, restarts from the oldest record), `client.id = switchyard`.
// @unchecked Sendable: `client` and `loop` never change after init; the lifecycle is a locked box.
public final class KafkaConsumer: @unchecked Sendable {
    public struct Options: Sendable {
        /// How often metadata is re-checked for new topics and partitions (every second while the cluster does
        /// not answer).
        public var metadataRefresh: Duration = .seconds(5)
        /// Timeout of each metadata / describe request.
        public var metadataTimeout: Duration = .seconds(3)
        /// Most records handed over in one batch.
        public var maxBatch: Int = 1024
        /// Read topic ids (DescribeTopics) to build epochs `<topic-id>.<partition>`, which change when a topic
        /// is recreated. false: epochs are `<topic>.<partition>` and no DescribeTopics request is made; for
        /// librdkafka's mock cluster, which names no controller and so never answers DescribeTopics.
        /// (A broker without DescribeTopics support gets the name-based epochs by itself.)
        public var topicIDs: Bool = true

        public init() {}
    }

    private let client: RdKafkaClient
    private let loop: ConsumerLoop
    private let lifecycle = NIOLockedValueBox<Lifecycle>(.created)
    private enum Lifecycle { case created, running(JoinableThread), closed }

    /// - Parameters:
    ///   - config: librdkafka properties plus, unless `topics` is given, the topic selection from the file.
    ///   - topics: what to consume; defaults to the config's `topics` / `topics.regex`.
    ///   - startOffset: where to start a newly assigned partition (called on the poll thread), e.g.
    ///     `.tail(1000)` to warm a cache with the last records, or `.offset(n)` to resume; nil leaves the partition
    ///     unassigned (asked again at the next metadata check): a deep-recovery reader assigns only the partition
    ///     it needs, and only while its epoch is the expected one.
    ///   - onRecords: a batch of records (at most `options.maxBatch`), in partition order.
    ///   - onEvent: assignment changes, partition EOFs, errors, reachability, logs.
    public init(config: KafkaConfig, topics: KafkaTopicSelection? = nil, options: Options = Options(),
                startOffset: @escaping @Sendable (KafkaPartitionInfo) -> KafkaOffset?,
                onRecords: @escaping @Sendable ([KafkaRecord]) -> Void,
                onEvent: @escaping @Sendable (KafkaEvent) -> Void = { _ in }) throws {
        let selection = topics ?? config.topics
        if selection.isEmpty {
            throw KafkaConfigError(file: config.file, line: 0, parameter: "topics",
                                   problem: "no topics to consume: set 'topics = a,b' or 'topics.regex = ...'")
        }
        var regex: Regex<AnyRegexOutput>?
        if let pattern = selection.regex {
            do {
                regex = try Regex(pattern)
            } catch {
                throw KafkaConfigError(file: config.file, line: 0, parameter: "topics.regex",
                                       problem: "invalid regular expression: \(error)")
            }
        }
        var config = config
        config.setDefault("group.id", "switchyard-assign")
        config.setDefault("auto.offset.reset", "earliest")
        config.setDefault("client.id", "switchyard")
        let client = try RdKafkaClient(
            type: RD_KAFKA_CONSUMER, config: config,
            forced: [("enable.partition.eof", "true"), ("enable.auto.commit", "false"),
                     ("enable.auto.offset.store", "false")],
            events: 0,
            // Nothing is committed and no group is joined: skip the consumer close handshake on destroy.
            destroyFlags: Int32(RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE),
            onEvent: onEvent)
        self.client = client
        guard let queue = rd_kafka_queue_get_consumer(client.handle) else {
            throw KafkaConfigError(file: config.file, line: 0, parameter: "group.id",
                                   problem: "librdkafka gave no consumer queue")
        }
        self.loop = ConsumerLoop(client: client, queue: queue, names: Set(selection.names).subtracting(selection.excluded),
                                 excluded: selection.excluded, regex: regex,
                                 options: options, startOffset: startOffset, onRecords: onRecords)
    }

    deinit {
        close()
    }

    /// Starts the poll thread: the first metadata check and assignment happen at once.
    public func start() {
        lifecycle.withLockedValue { state in
            guard case .created = state else { return }
            let loop = self.loop
            state = .running(JoinableThread(name: "kafka-consumer") { thread in
                while !thread.isStopping { loop.iterate() }
            })
        }
    }

    /// Stops the poll thread. Records not yet handed over are dropped. The librdkafka handle is freed in deinit.
    /// Idempotent; may be called from a callback.
    public func close() {
        let thread: JoinableThread? = lifecycle.withLockedValue { state in
            defer { state = .closed }
            if case .running(let thread) = state { return thread }
            return nil
        }
        thread?.stop()
    }

    /// Asks the poll thread to re-check metadata now (e.g. after creating a topic).
    public func refresh() {
        loop.refreshRequested.withLockedValue { $0 = true }
    }

    /// The partitions currently assigned, with their epochs.
    public var assignment: [KafkaPartitionInfo] {
        loop.assignmentSnapshot.withLockedValue { $0 }
    }

    /// Moves an assigned partition's read position (deep recovery: re-read older records). Records already
    /// fetched past the old position may still be delivered before the re-read ones.
    public func seek(_ partition: KafkaTopicPartition, to offset: KafkaOffset, timeout: Duration = .seconds(5)) throws {
        if case .closed = lifecycle.withLockedValue({ $0 }) {
            throw KafkaError(RD_KAFKA_RESP_ERR__DESTROY, reason: "the consumer is closed")
        }
        let list = rd_kafka_topic_partition_list_new(1)!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let element = rd_kafka_topic_partition_list_add(list, partition.topic, partition.partition)!
        element.pointee.offset = offset.rawValue
        if let error = rd_kafka_seek_partitions(client.handle, list, milliseconds(timeout)) {
            let e = KafkaError(rd_kafka_error_code(error), reason: String(cString: rd_kafka_error_string(error)))
            rd_kafka_error_destroy(error)
            throw e
        }
        let err = list.pointee.elems[0].err
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err) }
    }
}

/// The consumer's poll loop and the state only its thread touches (plus two locked boxes).
// @unchecked Sendable: its `var`s are touched only on the consumer's poll thread; others use the locked boxes.
private final class ConsumerLoop: @unchecked Sendable {
    let client: RdKafkaClient
    let queue: OpaquePointer
    let names: Set<String>
    let excluded: Set<String>
    let regex: Regex<AnyRegexOutput>?
    let options: ConsumerOptions
    let startOffset: @Sendable (KafkaPartitionInfo) -> KafkaOffset?
    let onRecords: @Sendable ([KafkaRecord]) -> Void

    let refreshRequested = NIOLockedValueBox(true)
    let assignmentSnapshot = NIOLockedValueBox<[KafkaPartitionInfo]>([])

    private var assigned: [KafkaTopicPartition: KafkaPartitionInfo] = [:]
    private var nextRefresh = ContinuousClock.now
    private let messages: UnsafeMutablePointer<UnsafeMutablePointer<rd_kafka_message_t>?>
    private var records: [KafkaRecord] = []
    private let allocator = ByteBufferAllocator()

    /// (topic handle, partition) → (topic, info), rebuilt lazily after each assignment change.
    private struct HandleKey: Hashable {
        var rkt: OpaquePointer
        var partition: Int32
    }
    private var byHandle: [HandleKey: KafkaPartitionInfo] = [:]

    typealias ConsumerOptions = KafkaConsumer.Options

    init(client: RdKafkaClient, queue: OpaquePointer, names: Set<String>, excluded: Set<String>,
         regex: Regex<AnyRegexOutput>?, options: ConsumerOptions,
         startOffset: @escaping @Sendable (KafkaPartitionInfo) -> KafkaOffset?,
         onRecords: @escaping @Sendable ([KafkaRecord]) -> Void) {
        self.client = client
        self.queue = queue
        self.names = names
        self.excluded = excluded
        self.regex = regex
        self.options = options
        self.startOffset = startOffset
        self.onRecords = onRecords
        self.messages = .allocate(capacity: max(1, options.maxBatch))
        self.records.reserveCapacity(options.maxBatch)
    }

    deinit {
        messages.deallocate()
        // The queue reference must go before the client destroys the handle.
        rd_kafka_queue_destroy(queue)
    }

    func iterate() {
        let wantRefresh = refreshRequested.withLockedValue { flag -> Bool in
            defer { flag = false }
            return flag
        }
        if wantRefresh || ContinuousClock.now >= nextRefresh {
            refreshAssignment()
            let interval = client.isReachable == true ? options.metadataRefresh : min(options.metadataRefresh, .seconds(1))
            nextRefresh = ContinuousClock.now + interval
        }
        client.serveMainQueue(timeoutMs: 0)
        consume(timeoutMs: 100)
    }

    // MARK: Records

    private func consume(timeoutMs: Int32) {
        // Block for the first message only, then take what is ready: rd_kafka_consume_batch_queue alone would
        // wait for a full batch until its timeout, adding latency under light load.
        guard let first = rd_kafka_consume_queue(queue, timeoutMs) else { return }
        messages[0] = first
        var count = 1
        if options.maxBatch > 1 {
            let n = rd_kafka_consume_batch_queue(queue, 0, messages + 1, options.maxBatch - 1)
            if n > 0 { count += n }
        }
        defer {
            for i in 0..<count { rd_kafka_message_destroy(messages[i]) }
        }
        for i in 0..<count {
            guard let message = messages[i] else { continue }
            let m = message.pointee
            if m.err == RD_KAFKA_RESP_ERR_NO_ERROR {
                guard let rkt = m.rkt, let info = partitionInfo(rkt, m.partition) else { continue }
                records.append(makeRecord(m, message, info))
                continue
            }
            flushRecords()
            let info = m.rkt.flatMap { partitionInfo($0, m.partition) }
            if m.err == RD_KAFKA_RESP_ERR__PARTITION_EOF {
                if let info { client.onEvent(.partitionEOF(info, offset: m.offset)) }
                continue
            }
            let error = KafkaError(m.err, reason: String(cString: rd_kafka_message_errstr(message)))
            if m.err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN {
                client.setReachable(false, reason: error.message)
            }
            if let info {
                client.onEvent(.partitionError(info, error))
            } else {
                client.onEvent(.error(error))
            }
        }
        flushRecords()
    }

    private func flushRecords() {
        guard !records.isEmpty else { return }
        if client.isReachable != true { client.setReachable(true, reason: "records fetched") }
        onRecords(records)
        records.removeAll(keepingCapacity: true)
    }

    private func makeRecord(_ m: rd_kafka_message_t, _ message: UnsafeMutablePointer<rd_kafka_message_t>,
                            _ info: KafkaPartitionInfo) -> KafkaRecord {
        var key: ByteBuffer?
        if let k = m.key {
            var buffer = allocator.buffer(capacity: m.key_len)
            buffer.writeBytes(UnsafeRawBufferPointer(start: k, count: m.key_len))
            key = buffer
        }
        var value = allocator.buffer(capacity: m.len)
        if let p = m.payload, m.len > 0 {
            value.writeBytes(UnsafeRawBufferPointer(start: p, count: m.len))
        }
        var record = KafkaRecord(topic: info.topic, partition: m.partition, offset: m.offset, key: key, value: value,
                                 timestamp: rd_kafka_message_timestamp(message, nil), epoch: info.epoch)
        readHeaders(of: message, into: &record)
        return record
    }

    /// Copies up to `KafkaRecord.maxHeaders` headers of `message` (librdkafka parses them only when asked); a
    /// header whose name is not UTF-8 is counted in `headersNotRead` instead.
    private func readHeaders(of message: UnsafeMutablePointer<rd_kafka_message_t>, into record: inout KafkaRecord) {
        var list: OpaquePointer?
        guard rd_kafka_message_headers(message, &list) == RD_KAFKA_RESP_ERR_NO_ERROR, let list else { return }
        let count = rd_kafka_header_cnt(list)
        record.headersNotRead = max(0, count - KafkaRecord.maxHeaders)
        for index in 0..<min(count, KafkaRecord.maxHeaders) {
            var name: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            guard rd_kafka_header_get_all(list, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR,
                  let name, let validName = String(validatingCString: name) else {
                record.headersNotRead += 1
                continue
            }
            var copy: ByteBuffer?
            if let value {
                var buffer = allocator.buffer(capacity: size)
                buffer.writeBytes(UnsafeRawBufferPointer(start: value, count: size))
                copy = buffer
            }
            record.headers.append(KafkaHeader(name: validName, value: copy))
        }
    }

    private func partitionInfo(_ rkt: OpaquePointer, _ partition: Int32) -> KafkaPartitionInfo? {
        let key = HandleKey(rkt: rkt, partition: partition)
        if let info = byHandle[key] { return info }
        let topic = String(cString: rd_kafka_topic_name(rkt))
        // Not assigned (any more): a stale message; drop it.
        guard let info = assigned[KafkaTopicPartition(topic: topic, partition: partition)] else { return nil }
        byHandle[key] = info
        return info
    }

    // MARK: Assignment

    private func matches(_ topic: String) -> Bool {
        if names.contains(topic) { return true }
        guard let regex, !topic.hasPrefix("__"), !excluded.contains(topic) else { return false }
        return (try? regex.wholeMatch(in: topic)) != nil
    }

    private func refreshAssignment() {
        let timeout = milliseconds(options.metadataTimeout)
        var mdPointer: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(client.handle, 1, nil, &mdPointer, timeout)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let md = mdPointer else {
            if let mdPointer { rd_kafka_metadata_destroy(mdPointer) }
            client.setReachable(false, reason: "metadata request failed: \(KafkaError(err).message)")
            return
        }
        client.setReachable(true, reason: "metadata request answered")

        // Matching topics and their partitions; topics reported with an error keep their current assignment.
        var found: [String: [Int32]] = [:]
        var keep: Set<String> = []
        for t in 0..<Int(md.pointee.topic_cnt) {
            let tm = md.pointee.topics[t]
            let name = String(cString: tm.topic)
            guard matches(name) else { continue }
            if tm.err != RD_KAFKA_RESP_ERR_NO_ERROR || tm.partition_cnt <= 0 {
                keep.insert(name)
                continue
            }
            found[name] = (0..<Int(tm.partition_cnt)).map { tm.partitions[$0].id }.sorted()
        }
        rd_kafka_metadata_destroy(md)

        let ids = options.topicIDs ? describeTopicIDs(Array(found.keys).sorted(), timeoutMs: timeout)
                                   : Dictionary(uniqueKeysWithValues: found.keys.map { ($0, String?.none) })
        var desired: [KafkaTopicPartition: KafkaPartitionInfo] = [:]
        for (topic, partitions) in found {
            guard let idResult = ids[topic] else {
                keep.insert(topic) // id unknown this time: change nothing for this topic
                continue
            }
            for p in partitions {
                let info = KafkaPartitionInfo(topic: topic, partition: p, topicID: idResult,
                                              epoch: KafkaEpoch.make(topic: topic, partition: p, topicID: idResult))
                desired[info.topicPartition] = info
            }
        }

        var revoked: [KafkaPartitionInfo] = []
        for (tp, info) in assigned where !keep.contains(tp.topic) {
            if desired[tp]?.epoch != info.epoch { revoked.append(info) }
        }
        var added: [KafkaPartitionInfo] = []
        for (tp, info) in desired where assigned[tp]?.epoch != info.epoch {
            added.append(info)
        }
        added.sort { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
        let assignments = added.compactMap { info in startOffset(info).map { KafkaPartitionAssignment(info: info, start: $0) } }
        if revoked.isEmpty && assignments.isEmpty { return }
        revoked.sort { ($0.topic, $0.partition) < ($1.topic, $1.partition) }

        if !revoked.isEmpty {
            if let error = changeAssignment(revoked.map { ($0.topicPartition, nil) }, assign: false) {
                client.onEvent(.error(error))
            } else {
                for info in revoked { assigned[info.topicPartition] = nil }
                byHandle.removeAll()
                client.onEvent(.partitionsRevoked(revoked))
            }
        }
        if !assignments.isEmpty {
            if let error = changeAssignment(assignments.map { ($0.info.topicPartition, $0.start) }, assign: true) {
                client.onEvent(.error(error))
            } else {
                for a in assignments { assigned[a.info.topicPartition] = a.info }
                byHandle.removeAll()
                client.onEvent(.partitionsAssigned(assignments))
            }
        }
        let snapshot = assigned.values.sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
        assignmentSnapshot.withLockedValue { $0 = snapshot }
    }

    private func changeAssignment(_ partitions: [(KafkaTopicPartition, KafkaOffset?)], assign: Bool) -> KafkaError? {
        let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (tp, offset) in partitions {
            let element = rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition)!
            if let offset { element.pointee.offset = offset.rawValue }
        }
        let error = assign ? rd_kafka_incremental_assign(client.handle, list)
                           : rd_kafka_incremental_unassign(client.handle, list)
        guard let error else { return nil }
        defer { rd_kafka_error_destroy(error) }
        return KafkaError(rd_kafka_error_code(error), reason: String(cString: rd_kafka_error_string(error)))
    }

    /// Topic ids by name (nil value: the broker reports no id). A topic missing from the result could not be
    /// described this time. A broker without DescribeTopics support gives nil ids for all.
    private func describeTopicIDs(_ topics: [String], timeoutMs: Int32) -> [String: String?] {
        guard !topics.isEmpty else { return [:] }
        let cNames = topics.map { strdup($0) }
        defer { cNames.forEach { free($0) } }
        var pointers: [UnsafePointer<CChar>?] = cNames.map { UnsafePointer($0) }
        let collection = pointers.withUnsafeMutableBufferPointer {
            rd_kafka_TopicCollection_of_topic_names($0.baseAddress, $0.count)
        }
        defer { rd_kafka_TopicCollection_destroy(collection) }
        let options = rd_kafka_AdminOptions_new(client.handle, RD_KAFKA_ADMIN_OP_DESCRIBETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        var errbuf = [CChar](repeating: 0, count: 256)
        _ = rd_kafka_AdminOptions_set_request_timeout(options, timeoutMs, &errbuf, errbuf.count)
        let resultQueue = rd_kafka_queue_new(client.handle)
        defer { rd_kafka_queue_destroy(resultQueue) }

        rd_kafka_DescribeTopics(client.handle, collection, options, resultQueue)
        guard let event = rd_kafka_queue_poll(resultQueue, timeoutMs + 1000) else {
            client.onEvent(.error(KafkaError(RD_KAFKA_RESP_ERR__TIMED_OUT, reason: "DescribeTopics (topic ids) timed out")))
            return [:]
        }
        defer { rd_kafka_event_destroy(event) }
        let err = rd_kafka_event_error(event)
        if err == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION || err == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE {
            return Dictionary(uniqueKeysWithValues: topics.map { ($0, String?.none) })
        }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let result = rd_kafka_event_DescribeTopics_result(event) else {
            let reason = rd_kafka_event_error_string(event).map { String(cString: $0) } ?? ""
            client.onEvent(.error(KafkaError(err, reason: "DescribeTopics (topic ids) failed: \(reason)")))
            return [:]
        }
        var count = 0
        guard let descriptions = rd_kafka_DescribeTopics_result_topics(result, &count) else { return [:] }
        var ids: [String: String?] = [:]
        for i in 0..<count {
            guard let d = descriptions[i] else { continue }
            let name = String(cString: rd_kafka_TopicDescription_name(d))
            if let e = rd_kafka_TopicDescription_error(d), rd_kafka_error_code(e) != RD_KAFKA_RESP_ERR_NO_ERROR {
                client.onEvent(.error(KafkaError(rd_kafka_error_code(e),
                                                 reason: "DescribeTopics '\(name)': \(String(cString: rd_kafka_error_string(e)))")))
                continue
            }
            var id: String?
            if let uuid = rd_kafka_TopicDescription_topic_id(d) {
                id = KafkaEpoch.topicIDString(mostSignificant: rd_kafka_Uuid_most_significant_bits(uuid),
                                              leastSignificant: rd_kafka_Uuid_least_significant_bits(uuid))
            }
            ids[name] = .some(id)
        }
        return ids
    }
}
