import XCTest
@testable import SwitchyardCore

final class ConfigTests: XCTestCase {
    func testDefaultsAndTheShippedFormat() throws {
        let text = """
            Listen = *:8800                     # WebSocket/HTTP
            ClusterEngine = none                # none | kafka
            MaxCachedMessagesPerSubject = 1000
            CacheExpireTime = 180
            RunDir = var/run
            LogFolder = var/log
            LogLevel = INFO
            KafkaConsumerConfig = kafka/consumer.properties
            KafkaProducerConfig = kafka/producer.properties
            """
        let config = try SwitchyardConfig.parse(text, file: "/etc/sy/switchyard.conf")
        XCTAssertEqual(config.listen, [ListenAddress(host: "0.0.0.0", port: 8800)])
        XCTAssertEqual(config.clusterEngine, .none)
        XCTAssertEqual(config.runDir, "/etc/sy/var/run")
        XCTAssertEqual(config.kafkaConsumerConfig, "/etc/sy/kafka/consumer.properties")
        XCTAssertEqual(config.maxCachedMessagesPerSubject, 1000)
        XCTAssertEqual(config.logLevel, .info)
    }

    func testWindowsLineEndings() throws {
        let config = try SwitchyardConfig.parse("LogLevel = DEBUG\r\nCacheExpireTime = 5\r\n", file: "/x.conf")
        XCTAssertEqual(config.logLevel, .debug)
        XCTAssertEqual(config.cacheExpireTime, 5)
        XCTAssertThrowsError(try SwitchyardConfig.parse("LogLevel = DEBUG\r\nNope = 1\r\n", file: "/x.conf")) {
            XCTAssertEqual(($0 as? ConfigError)?.line, 2)
        }
    }

    func testTheBackStagesBoundsHaveDefaultsAndRanges() throws {
        let defaults = try SwitchyardConfig.parse("", file: "/x.conf")
        XCTAssertEqual(defaults.cacheMaxBytes, 1 << 30)
        XCTAssertEqual(defaults.cacheMaxSubjects, 1_000_000)
        XCTAssertEqual(defaults.maxDeepRecoveries, 4)
        let set = try SwitchyardConfig.parse("CacheMaxBytes = 1048576\nCacheMaxSubjects = 5\nMaxDeepRecoveries = 1",
                                             file: "/x.conf")
        XCTAssertEqual([set.cacheMaxBytes, set.cacheMaxSubjects, set.maxDeepRecoveries], [1_048_576, 5, 1])
        for bad in ["CacheMaxBytes = 1000", "CacheMaxBytes = 99999999999999999999", "CacheMaxSubjects = 0",
                    "MaxDeepRecoveries = 0", "MaxDeepRecoveries = 65", "MaxDeepRecoveries = four"] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(bad, file: "/x.conf"), bad)
        }
    }

    func testSeveralListenAddresses() throws {
        let config = try SwitchyardConfig.parse("Listen = 127.0.0.1:1, [::1]:2", file: "/x.conf")
        XCTAssertEqual(config.listen, [ListenAddress(host: "127.0.0.1", port: 1), ListenAddress(host: "::1", port: 2)])
    }

    func testErrorsNameFileLineAndParameter() {
        let cases: [(String, Int, String)] = [
            ("# comment\nFoo = 1", 2, "Foo"),
            ("Listen = nowhere", 1, "Listen"),
            ("\n\nCacheExpireTime = soon", 3, "CacheExpireTime"),
            ("ClusterEngine = zookeeper", 1, "ClusterEngine"),
            ("LogLevel = LOUD", 1, "LogLevel"),
            ("MaxCachedMessagesPerSubject = -1", 1, "MaxCachedMessagesPerSubject"),
            ("RunDir =", 1, "RunDir"),
            ("LogLevel = INFO\nLogLevel = DEBUG", 2, "LogLevel"),
            ("just words", 1, "just words"),
        ]
        for (text, line, parameter) in cases {
            XCTAssertThrowsError(try SwitchyardConfig.parse(text, file: "/a/b.conf"), text) { error in
                guard let error = error as? ConfigError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.line, line, text)
                XCTAssertEqual(error.parameter, parameter, text)
                XCTAssertTrue(error.description.hasPrefix("/a/b.conf:\(line): parameter '\(parameter)'"),
                              error.description)
            }
        }
    }

    func testTopologyAddressesAndOverride() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var config = try SwitchyardConfig.parse("CacheInstances = 2", file: folder + "/s.conf")
        config.runDir = folder
        XCTAssertEqual(Topology.load(config: config).count(.cache), 2)
        try Data(#"{"cache": 4, "ws-ingress": 3}"#.utf8).write(to: URL(fileURLWithPath: folder + "/topology.json"))
        let topology = Topology.load(config: config)
        XCTAssertEqual(topology.count(.cache), 4)
        XCTAssertEqual(topology.count(.ingress), 3)
        XCTAssertEqual(topology.address(.cache, 1), "ipc://\(folder)/cache-1.ipc")
    }

    func testPerConnectionLimits() throws {
        let defaults = SwitchyardConfig()
        XCTAssertEqual(defaults.maxSubjectsPerConnection, 1000)
        XCTAssertEqual(defaults.subscribeRateLimit, 1000)
        XCTAssertEqual(defaults.publishRateLimit, 100_000)
        XCTAssertEqual(defaults.maxSubscribesInFlight, 64)
        XCTAssertEqual(defaults.maxPendingSubscribeBytes, 16 * 1024 * 1024)
        XCTAssertEqual(defaults.idleTimeout, 300)
        let config = try SwitchyardConfig.parse("""
            MaxSubjectsPerConnection = 10
            SubscribeRateLimit = 20
            PublishRateLimit = 30
            MaxSubscribesInFlight = 4
            MaxPendingSubscribeBytes = 65536
            IdleTimeout = 0
            """, file: "/x.conf")
        XCTAssertEqual(config.maxSubjectsPerConnection, 10)
        XCTAssertEqual(config.subscribeRateLimit, 20)
        XCTAssertEqual(config.publishRateLimit, 30)
        XCTAssertEqual(config.maxSubscribesInFlight, 4)
        XCTAssertEqual(config.maxPendingSubscribeBytes, 65536)
        XCTAssertEqual(config.idleTimeout, 0)
        for bad in ["MaxSubjectsPerConnection = 0", "PublishRateLimit = -1", "MaxSubscribesInFlight = 0",
                    "MaxPendingSubscribeBytes = 1024", "IdleTimeout = 86401", "SubscribeRateLimit = many"] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(bad, file: "/x.conf"), bad)
        }
    }

    func testAllowedOriginsAndMonitorListen() throws {
        let defaults = try SwitchyardConfig.parse("", file: "/x.conf")
        XCTAssertEqual(defaults.allowedOrigins, .any)
        XCTAssertEqual(defaults.monitorListen, ListenAddress(host: "127.0.0.1", port: 8801))
        let set = try SwitchyardConfig.parse("AllowedOrigins = https://a.example, http://b.example:8080\n"
                                             + "MonitorListen = 10.0.0.1:9100", file: "/x.conf")
        XCTAssertEqual(set.allowedOrigins.origins, ["https://a.example", "http://b.example:8080"])
        XCTAssertEqual(set.monitorListen, ListenAddress(host: "10.0.0.1", port: 9100))
        XCTAssertNil(try SwitchyardConfig.parse("MonitorListen = none", file: "/x.conf").monitorListen)
        for bad in ["AllowedOrigins = a.example", "MonitorListen = nowhere", "MonitorListen = *:8800"] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(bad, file: "/x.conf"), bad)
        }
    }

    func testListenMqtt() throws {
        XCTAssertEqual(try SwitchyardConfig.parse("", file: "/x.conf").listenMqtt, [], "off by default")
        XCTAssertEqual(try SwitchyardConfig.parse("ListenMqtt = *:1883, 127.0.0.1:1884", file: "/x.conf").listenMqtt,
                       [ListenAddress(host: "0.0.0.0", port: 1883), ListenAddress(host: "127.0.0.1", port: 1884)])
        XCTAssertEqual(try SwitchyardConfig.parse("ListenMqtt = none", file: "/x.conf").listenMqtt, [])
        for bad in ["ListenMqtt = 1883", "ListenMqtt = *:8800", "ListenMqtt = *:8801", "ListenMqtt ="] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(bad, file: "/x.conf"), bad)
        }
    }
}
