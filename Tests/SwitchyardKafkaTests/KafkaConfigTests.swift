import XCTest
@testable import SwitchyardKafka
import SwitchyardCore

final class KafkaConfigTests: XCTestCase {
    func testParsesPropertiesWithSwitchyardKeys() throws {
        let text = """
        # comment
        ! another comment

          bootstrap.servers = 127.0.0.1:9092\r
        topics = vehicles, notifications ,vehicles
        topics.regex = ^veh.*
        sasl.jaas.config=a=b c
        client.id: my-client
        statistics.interval.ms = 1000
        statistics.interval.ms = 2000
        """
        let config = try KafkaConfig.parse(text, file: "consumer.properties")
        XCTAssertEqual(config["bootstrap.servers"], "127.0.0.1:9092")
        XCTAssertEqual(config.topics.names, ["vehicles", "notifications"])
        XCTAssertEqual(config.topics.regex, "^veh.*")
        XCTAssertEqual(config["sasl.jaas.config"], "a=b c")
        XCTAssertEqual(config["client.id"], "my-client")
        XCTAssertEqual(config["statistics.interval.ms"], "2000")
        XCTAssertNil(config["topics"], "Switchyard's keys are not passed to librdkafka")
        XCTAssertEqual(config.properties.map(\.key), ["bootstrap.servers", "sasl.jaas.config", "client.id",
                                                      "statistics.interval.ms"])
        XCTAssertEqual(config.properties.first { $0.key == "client.id" }?.line, 8)
        XCTAssertEqual(config.properties.first { $0.key == "statistics.interval.ms" }?.line, 10)
    }

    func testContinuationLinesKeepTheFirstLineNumber() throws {
        let text = "a.b = 1\nbootstrap.servers = host1:9092,\\\n    host2:9092\nx.y = 2\n"
        let config = try KafkaConfig.parse(text, file: "p.properties")
        XCTAssertEqual(config["bootstrap.servers"], "host1:9092,host2:9092")
        XCTAssertEqual(config.properties.map(\.line), [1, 2, 4])
    }

    func testMalformedLineNamesFileAndLine() {
        let text = "bootstrap.servers = x\n\n# ok\nthis line has no separator\n"
        XCTAssertThrowsError(try KafkaConfig.parse(text, file: "kafka/consumer.properties")) { error in
            let e = error as? KafkaConfigError
            XCTAssertEqual(e?.file, "kafka/consumer.properties")
            XCTAssertEqual(e?.line, 4)
            XCTAssertEqual(e?.description.hasPrefix("kafka/consumer.properties:4: parameter 'this line has no separator'"), true,
                           "\(String(describing: e))")
        }
        XCTAssertThrowsError(try KafkaConfig.parse("bad key = 1", file: "f")) { error in
            XCTAssertEqual((error as? KafkaConfigError)?.line, 1)
        }
        XCTAssertThrowsError(try KafkaConfig.parse("= 1", file: "f")) { error in
            XCTAssertEqual((error as? KafkaConfigError)?.line, 1)
        }
    }

    func testInvalidTopicsAndRegexAreReportedWithLine() {
        XCTAssertThrowsError(try KafkaConfig.parse("\ntopics = good, bad/name", file: "c.properties")) { error in
            let e = error as? KafkaConfigError
            XCTAssertEqual(e?.line, 2)
            XCTAssertEqual(e?.parameter, "topics")
            XCTAssertTrue(e?.problem.contains("bad/name") ?? false)
        }
        XCTAssertThrowsError(try KafkaConfig.parse("topics = ,", file: "c.properties")) { error in
            XCTAssertEqual((error as? KafkaConfigError)?.parameter, "topics")
        }
        XCTAssertThrowsError(try KafkaConfig.parse("a = b\n\n\ntopics.regex = ve(h", file: "c.properties")) { error in
            let e = error as? KafkaConfigError
            XCTAssertEqual(e?.line, 4)
            XCTAssertEqual(e?.parameter, "topics.regex")
        }
        XCTAssertNil(Subject.topicNameProblem("a-b_c.9"))
        XCTAssertNotNil(Subject.topicNameProblem(String(repeating: "a", count: 250)))
        XCTAssertNotNil(Subject.topicNameProblem(".."))
    }

    func testUnknownPropertyNamesFileLineKeyAndLibrdkafkaMessage() throws {
        let config = try KafkaConfig.parse("bootstrap.servers = 127.0.0.1:9092\nno.such.property = 1\n",
                                           file: "kafka/producer.properties")
        XCTAssertThrowsError(try config.validate()) { error in
            let e = error as? KafkaConfigError
            XCTAssertEqual(e?.line, 2)
            XCTAssertEqual(e?.parameter, "no.such.property")
            XCTAssertTrue(e?.problem.contains("No such configuration property") ?? false, "\(String(describing: e))")
            XCTAssertEqual(e?.description.hasPrefix("kafka/producer.properties:2: parameter 'no.such.property': "), true)
        }
    }

    func testBadValueFailsProducerCreationWithLine() throws {
        let config = try KafkaConfig.parse("# producer\nacks = banana\n", file: "producer.properties")
        XCTAssertThrowsError(try KafkaProducer(config: config, onDelivery: { _ in })) { error in
            let e = error as? KafkaConfigError
            XCTAssertEqual(e?.line, 2)
            XCTAssertEqual(e?.parameter, "acks")
            XCTAssertTrue(e?.problem.contains("Invalid value") ?? false, "\(String(describing: e))")
            XCTAssertTrue(e?.problem.contains("banana") ?? false, "\(String(describing: e))")
        }
    }

    func testConsumerNeedsTopics() throws {
        let config = try KafkaConfig.parse("bootstrap.servers = 127.0.0.1:1\n", file: "consumer.properties")
        XCTAssertThrowsError(try KafkaConsumer(config: config, startOffset: { _ in .beginning }, onRecords: { _ in })) { error in
            XCTAssertEqual((error as? KafkaConfigError)?.parameter, "topics")
        }
    }

    func testLoadMissingFile() {
        XCTAssertThrowsError(try KafkaConfig.load(path: "/nonexistent/x.properties")) { error in
            XCTAssertEqual((error as? KafkaConfigError)?.file, "/nonexistent/x.properties")
        }
    }

    func testEpochFormat() {
        // Kafka prints topic ids as base64url without padding (22 characters for 16 bytes).
        let id = KafkaEpoch.topicIDString(mostSignificant: 0x01A2_0F05_F912_7411, leastSignificant: -0x504D_435C_F76D_C46C)
        XCTAssertEqual(id, "AaIPBfkSdBGvsryjCJI7lA")
        XCTAssertNil(KafkaEpoch.topicIDString(mostSignificant: 0, leastSignificant: 0))
        XCTAssertEqual(KafkaEpoch.make(topic: "t", partition: 3, topicID: "AaIPBfkSdBGvsryjCJI7lA"), "AaIPBfkSdBGvsryjCJI7lA.3")
        XCTAssertEqual(KafkaEpoch.make(topic: "t", partition: 3, topicID: nil), "t.3")
        XCTAssertEqual(KafkaEpoch.base64URLNoPadding([0xFB, 0xFF]), "-_8")
    }
}

final class KafkaSecurityTests: XCTestCase {
    /// SASL_SSL clusters (Confluent Cloud, Azure Event Hubs, MSK) need TLS and these SASL mechanisms.
    func testLibrdkafkaIsBuiltWithTLSAndSASL() {
        let features = KafkaConfig.builtinFeatures
        for feature in ["ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer"] {
            XCTAssertTrue(features.contains(feature), "builtin.features lacks \(feature): \(features.sorted())")
        }
    }

    func testTheProducerIsIdempotentUnlessThePropertiesSayOtherwise() throws {
        func producer(_ properties: [String: String]) throws -> KafkaProducer {
            var config = KafkaConfig(properties: properties.merging(["test.mock.num.brokers": "1"]) { mine, _ in mine })
            config.set("log_level", "3")
            return try KafkaProducer(config: config, onDelivery: { _ in })
        }
        XCTAssertEqual(try producer([:]).effectiveProperty("enable.idempotence"), "true")
        XCTAssertEqual(try producer(["enable.idempotence": "false"]).effectiveProperty("enable.idempotence"), "false")
        XCTAssertEqual(try producer(["acks": "1"]).effectiveProperty("enable.idempotence"), "false")
        XCTAssertEqual(try producer([:]).effectiveProperty("partitioner"), "murmur2_random")
    }
}
