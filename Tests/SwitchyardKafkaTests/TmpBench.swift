import XCTest
import NIOConcurrencyHelpers
@testable import SwitchyardKafka

final class TmpBench: XCTestCase {
    func testThroughput() throws {
        let cluster = try KafkaMockCluster(brokers: 1)
        try cluster.createTopic("bench", partitions: 4)
        let delivered = NIOLockedValueBox(0)
        var config = KafkaConfig(properties: ["bootstrap.servers": cluster.bootstrapServers, "linger.ms": "5", "log_level": "3"])
        config.set("queue.buffering.max.messages", "100000")
        let producer = try KafkaProducer(config: config, onDelivery: { r in delivered.withLockedValue { $0 += r.count } })
        let n = 200_000
        let value = [UInt8](repeating: 65, count: 100)
        let t0 = ContinuousClock.now
        var full = 0
        for i in 0..<n {
            while producer.produce(topic: "bench", key: Array("key\(i % 1000)".utf8), value: value, id: UInt64(i)) == .queueFull {
                full += 1; Thread.sleep(forTimeInterval: 0.001)
            }
        }
        XCTAssertTrue(producer.flush(timeout: .seconds(60)))
        let t1 = ContinuousClock.now
        print("produce+DR: \(n) in \(t1 - t0), queueFull retries \(full), delivered \(delivered.withLockedValue { $0 })")
        let count = NIOLockedValueBox(0)
        let eofs = NIOLockedValueBox(Set<Int32>())
        var options = KafkaConsumer.Options(); options.topicIDs = false
        let consumer = try KafkaConsumer(config: KafkaConfig(properties: ["bootstrap.servers": cluster.bootstrapServers, "log_level": "3"]),
                                         topics: .init(names: ["bench"]), options: options, startOffset: { _ in .beginning },
                                         onRecords: { r in count.withLockedValue { $0 += r.count } },
                                         onEvent: { e in if case .partitionEOF(let i, _) = e { eofs.withLockedValue { _ = $0.insert(i.partition) } } })
        let t2 = ContinuousClock.now
        consumer.start()
        waitUntil("all", timeout: .seconds(120)) { count.withLockedValue { $0 } == n && eofs.withLockedValue { $0.count } == 4 }
        print("consume: \(n) in \(ContinuousClock.now - t2)")
    }
}
