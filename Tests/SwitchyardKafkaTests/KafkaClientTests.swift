import NIOConcurrencyHelpers
import NIOCore
import XCTest
@testable import SwitchyardKafka
import SwitchyardKafkaTesting

/// Collects what callbacks deliver on the clients' poll threads.
// @unchecked Sendable: the items are touched only through `box`'s lock (the tests' element types are values).
final class Collector<T>: @unchecked Sendable {
    private let box = NIOLockedValueBox<[T]>([])
    func append(_ items: [T]) { box.withLockedValue { $0.append(contentsOf: items) } }
    func append(_ item: T) { box.withLockedValue { $0.append(item) } }
    var items: [T] { box.withLockedValue { $0 } }
}

/// Polls `condition` until it holds or `timeout` passes.
func waitUntil(_ what: String, timeout: Duration = .seconds(15), file: StaticString = #filePath, line: UInt = #line,
               _ condition: () -> Bool) {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now >= deadline {
            XCTFail("timed out waiting for \(what)", file: file, line: line)
            return
        }
        Thread.sleep(forTimeInterval: 0.02)
    }
}

final class KafkaClientTests: XCTestCase {
    func quiet(_ config: inout KafkaConfig) {
        config.set("log_level", "3")
    }

    /// The mock cluster cannot answer DescribeTopics (it names no controller): name-based epochs.
    var mockOptions: KafkaConsumer.Options {
        var options = KafkaConsumer.Options()
        options.topicIDs = false
        return options
    }

    func producerConfig(_ cluster: KafkaMockCluster) -> KafkaConfig {
        var config = KafkaConfig(properties: ["bootstrap.servers": cluster.bootstrapServers, "linger.ms": "1"])
        quiet(&config)
        return config
    }

    func testProduceDeliveryReportsThenConsumeFromBeginning() throws {
        let cluster = try KafkaMockCluster(brokers: 3)
        try cluster.createTopic("vehicles", partitions: 3)

        let reports = Collector<KafkaDeliveryReport>()
        let producer = try KafkaProducer(config: producerConfig(cluster), onDelivery: { reports.append($0) })
        var sent: [UInt64: (key: String?, value: String)] = [:]
        for i in 0..<30 {
            let key: String? = i % 10 == 9 ? nil : "car\(i % 5)/speed"
            let value = "v\(i)"
            sent[UInt64(i + 100)] = (key, value)
            let result = producer.produce(topic: "vehicles", key: key.map { Array($0.utf8) }, value: Array(value.utf8),
                                          id: UInt64(i + 100))
            XCTAssertEqual(result, .queued)
        }
        XCTAssertTrue(producer.flush(timeout: .seconds(10)))
        XCTAssertEqual(producer.outstanding, 0)
        let delivered = reports.items
        XCTAssertEqual(Set(delivered.map(\.id)), Set(sent.keys))
        XCTAssertTrue(delivered.allSatisfy { $0.error == nil && $0.topic == "vehicles" && $0.offset >= 0 })
        // Offsets within a partition are 0, 1, 2, ... in produce order.
        for p in Set(delivered.map(\.partition)) {
            let offsets = delivered.filter { $0.partition == p }.sorted { $0.id < $1.id }.map(\.offset)
            XCTAssertEqual(offsets, Array(0..<Int64(offsets.count)))
        }
        // Null keys all go to partition 0; a key always to the same partition.
        XCTAssertTrue(delivered.filter { sent[$0.id]!.key == nil }.allSatisfy { $0.partition == 0 })
        var partitionOfKey: [String: Int32] = [:]
        for r in delivered { if let k = sent[r.id]!.key { XCTAssertEqual(partitionOfKey.updateValue(r.partition, forKey: k) ?? r.partition, r.partition) } }

        // Consume everything back from the beginning; partition EOF tells when each partition is caught up.
        let records = Collector<KafkaRecord>()
        let events = Collector<KafkaEvent>()
        var consumerConfig = try KafkaConfig.parse("bootstrap.servers = \(cluster.bootstrapServers)\ntopics = vehicles\n",
                                                   file: "consumer.properties")
        quiet(&consumerConfig)
        let consumer = try KafkaConsumer(config: consumerConfig, options: mockOptions, startOffset: { _ in .beginning },
                                         onRecords: { records.append($0) }, onEvent: { events.append($0) })
        consumer.start()
        waitUntil("EOF on all 3 partitions") {
            Set(events.items.compactMap { if case .partitionEOF(let info, _) = $0 { return info.partition } else { return nil } }).count == 3
        }
        let got = records.items
        XCTAssertEqual(got.count, 30)
        for r in got {
            let report = delivered.first { $0.partition == r.partition && $0.offset == r.offset }!
            let expected = sent[report.id]!
            XCTAssertEqual(r.topic, "vehicles")
            XCTAssertEqual(r.key.map { String(buffer: $0) }, expected.key)
            XCTAssertEqual(String(buffer: r.value), expected.value)
            XCTAssertGreaterThan(r.timestamp, 0)
        }
        let assigned = events.items.compactMap { if case .partitionsAssigned(let a) = $0 { return a } else { return nil } }.flatMap { $0 }
        XCTAssertEqual(assigned.map(\.info.partition).sorted(), [0, 1, 2])
        XCTAssertEqual(consumer.assignment.count, 3)
        for a in assigned {
            XCTAssertEqual(a.start, .beginning)
            XCTAssertEqual(a.info.epoch, "vehicles.\(a.info.partition)")
            XCTAssertTrue(got.filter { $0.partition == a.info.partition }.allSatisfy { $0.epoch == a.info.epoch })
        }
        XCTAssertTrue(events.items.contains(.reachability(reachable: true, reason: "metadata request answered")))
        consumer.close()
        producer.close()
    }

    func testHeadersAreProducedAndConsumedInOrderWithNullValues() throws {
        let cluster = try KafkaMockCluster(brokers: 1)
        try cluster.createTopic("h", partitions: 1)
        let producer = try KafkaProducer(config: producerConfig(cluster), onDelivery: { _ in })
        let headers = [KafkaHeader(name: "unit", value: ByteBuffer(string: "km/h")),
                       KafkaHeader(name: "unit", value: ByteBuffer()), KafkaHeader(name: "null", value: nil),
                       KafkaHeader(name: "bin", value: ByteBuffer(bytes: [0xff, 0x00, 0xfe]))]
        XCTAssertEqual(producer.produce(topic: "h", key: ByteBuffer(string: "k"), value: ByteBuffer(string: "v"),
                                        headers: headers, id: 1), .queued)
        let many = (0..<(KafkaRecord.maxHeaders + 3)).map { KafkaHeader(name: "h\($0)", value: nil) }
        XCTAssertEqual(producer.produce(topic: "h", key: nil, value: ByteBuffer(string: "w"), headers: many, id: 2), .queued)
        XCTAssertEqual(producer.produce(topic: "h", key: nil, value: ByteBuffer(string: "x"), id: 3), .queued)
        XCTAssertTrue(producer.flush(timeout: .seconds(10)))

        let records = Collector<KafkaRecord>()
        var consumerConfig = KafkaConfig(properties: ["bootstrap.servers": cluster.bootstrapServers],
                                         topics: KafkaTopicSelection(names: ["h"]))
        quiet(&consumerConfig)
        let consumer = try KafkaConsumer(config: consumerConfig, options: mockOptions, startOffset: { _ in .beginning },
                                         onRecords: { records.append($0) })
        consumer.start()
        waitUntil("the three records") { records.items.count == 3 }
        let got = records.items
        XCTAssertEqual(got.first?.headers, headers)
        XCTAssertEqual(got.first?.headersNotRead, 0)
        XCTAssertEqual(got.dropFirst().first?.headers, Array(many.prefix(KafkaRecord.maxHeaders)))
        XCTAssertEqual(got.dropFirst().first?.headersNotRead, 3)
        XCTAssertEqual(got.last?.headers, [])
        consumer.close()
        producer.close()
    }

    func testTailStartSeekAndNewTopicsByRegex() throws {
        let cluster = try KafkaMockCluster(brokers: 1)
        try cluster.createTopic("veh.a", partitions: 1)
        let producer = try KafkaProducer(config: producerConfig(cluster), onDelivery: { _ in })
        for i in 0..<10 {
            XCTAssertEqual(producer.produce(topic: "veh.a", key: Array("k".utf8), value: Array("a\(i)".utf8), id: 0), .queued)
        }
        XCTAssertTrue(producer.flush(timeout: .seconds(10)))

        let records = Collector<KafkaRecord>()
        let events = Collector<KafkaEvent>()
        var config = KafkaConfig(properties: ["bootstrap.servers": cluster.bootstrapServers])
        quiet(&config)
        var options = mockOptions
        options.metadataRefresh = .milliseconds(200)
        let consumer = try KafkaConsumer(config: config, topics: KafkaTopicSelection(regex: "veh\\..*", excluded: ["veh.sessions"]),
                                         options: options,
                                         startOffset: { _ in .tail(3) },
                                         onRecords: { records.append($0) }, onEvent: { events.append($0) })
        consumer.start()
        waitUntil("the last 3 records of veh.a") { records.items.count == 3 }
        XCTAssertEqual(records.items.map(\.offset), [7, 8, 9])

        // Deep recovery: re-read from offset 2.
        waitUntil("EOF on veh.a") { events.items.contains { if case .partitionEOF(_, 10) = $0 { return true } else { return false } } }
        try consumer.seek(KafkaTopicPartition(topic: "veh.a", partition: 0), to: .offset(2))
        waitUntil("re-read from offset 2") { records.items.count == 3 + 8 }
        XCTAssertEqual(records.items.dropFirst(3).map(\.offset), Array(2...9))

        // Back to the tail (what a warm-up after a cache restart does).
        try consumer.seek(KafkaTopicPartition(topic: "veh.a", partition: 0), to: .tail(2))
        waitUntil("re-read of the last 2") { records.items.count == 3 + 8 + 2 }
        XCTAssertEqual(records.items.suffix(2).map(\.offset), [8, 9])

        // A topic created later that matches the regex is picked up; one that doesn't match, or is excluded, is not.
        try cluster.createTopic("veh.b", partitions: 2)
        try cluster.createTopic("other", partitions: 1)
        try cluster.createTopic("veh.sessions", partitions: 1)
        XCTAssertEqual(producer.produce(topic: "veh.sessions", key: nil, value: Array("s0".utf8), id: 0), .queued)
        XCTAssertEqual(producer.produce(topic: "veh.b", key: nil, value: Array("b0".utf8), id: 0), .queued)
        XCTAssertEqual(producer.produce(topic: "other", key: nil, value: Array("o0".utf8), id: 0), .queued)
        XCTAssertTrue(producer.flush(timeout: .seconds(10)))
        waitUntil("the record of veh.b") { records.items.contains { $0.topic == "veh.b" } }
        XCTAssertEqual(Set(consumer.assignment.map(\.topic)), ["veh.a", "veh.b"])
        XCTAssertFalse(records.items.contains { $0.topic == "other" })
        let b0 = records.items.first { $0.topic == "veh.b" }!
        XCTAssertNil(b0.key)
        XCTAssertEqual(b0.partition, 0)
        consumer.close()

        // A one-partition reader (deep recovery): nil leaves the other partitions unassigned.
        let single = Collector<KafkaRecord>()
        let singleEvents = Collector<KafkaEvent>()
        let reader = try KafkaConsumer(config: config, topics: KafkaTopicSelection(names: ["veh.b"]), options: options,
                                       startOffset: { $0.partition == 0 ? .offset(0) : nil },
                                       onRecords: { single.append($0) }, onEvent: { singleEvents.append($0) })
        reader.start()
        waitUntil("EOF of veh.b[0]") { singleEvents.items.contains { if case .partitionEOF(let info, 1) = $0 { return info.partition == 0 } else { return false } } }
        XCTAssertEqual(reader.assignment.map(\.partition), [0])
        XCTAssertEqual(single.items.map(\.offset), [0])
    }

    func testQueueFullIsBackpressure() throws {
        // Nothing listens on port 1: records stay queued, so the 6th does not fit.
        var config = KafkaConfig(properties: ["bootstrap.servers": "127.0.0.1:1", "queue.buffering.max.messages": "5",
                                              "message.timeout.ms": "1000"])
        quiet(&config)
        let reports = Collector<KafkaDeliveryReport>()
        let events = Collector<KafkaEvent>()
        let producer = try KafkaProducer(config: config, onDelivery: { reports.append($0) }, onEvent: { events.append($0) })
        for i in 0..<5 {
            XCTAssertEqual(producer.produce(topic: "t", key: nil, value: [1, 2, 3], id: UInt64(i)), .queued)
        }
        XCTAssertEqual(producer.produce(topic: "t", key: nil, value: [4], id: 5), .queueFull)
        XCTAssertGreaterThanOrEqual(producer.outstanding, 5)
        // They time out and are reported as failed; then there is room again.
        waitUntil("5 failed delivery reports") { reports.items.count == 5 }
        XCTAssertTrue(reports.items.allSatisfy { $0.error?.name == "_MSG_TIMED_OUT" })
        waitUntil("room in the queue") { producer.outstanding == 0 }
        XCTAssertEqual(producer.produce(topic: "t", key: nil, value: [4], id: 6), .queued)
        waitUntil("unreachable") { events.items.contains { if case .reachability(false, _) = $0 { return true } else { return false } } }
        producer.close(flushTimeout: .zero)
    }

    func testMessageTooLargeFailsAtOnce() throws {
        let cluster = try KafkaMockCluster(brokers: 1)
        var config = producerConfig(cluster)
        config.set("message.max.bytes", "1000")
        let producer = try KafkaProducer(config: config, onDelivery: { _ in })
        let result = producer.produce(topic: "t", key: nil, value: [UInt8](repeating: 0, count: 5000), id: 1)
        guard case .failed(let error) = result else { return XCTFail("\(result)") }
        XCTAssertEqual(error.name, "MSG_SIZE_TOO_LARGE", "\(error)")
        producer.close()
        if case .failed = producer.produce(topic: "t", key: nil, value: [1], id: 2) {} else { XCTFail("closed producer accepted a record") }
    }

    func testProducerWithTestMockProperty() throws {
        // librdkafka's own mock switch: the producer gets a private 3-broker mock cluster.
        var config = KafkaConfig(properties: ["test.mock.num.brokers": "3"])
        quiet(&config)
        let reports = Collector<KafkaDeliveryReport>()
        let producer = try KafkaProducer(config: config, onDelivery: { reports.append($0) })
        var buffer = ByteBuffer()
        buffer.writeString("hello")
        XCTAssertEqual(producer.produce(topic: "mocked", key: ByteBuffer(string: "k"), value: buffer, id: 42), .queued)
        XCTAssertTrue(producer.flush(timeout: .seconds(10)))
        XCTAssertEqual(reports.items.map(\.id), [42])
        XCTAssertNil(reports.items.first?.error)
        XCTAssertEqual(reports.items.first?.offset, 0)
    }
}
