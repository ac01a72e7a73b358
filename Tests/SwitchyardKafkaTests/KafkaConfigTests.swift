import XCTest
@testable import SwitchyardKafka

final class KafkaConfigTests: XCTestCase {
    func testParsesPropertiesWithSwitchyardKeys() throws {
        let text = """
        # comment
        ! another comment

        bootstrap.servers = 127.0.0.1:9092
        topics = vehicles, notifications
        """
        let config = try KafkaConfig.parse(text, file: "consumer.properties")
        XCTAssertEqual(config["bootstrap.servers"], "127.0.0.1:9092")
        XCTAssertEqual(config.topics.names, ["vehicles", "notifications"])
    }
}
