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
        try Data(#"{"cache": 0, "router": 2, "fanout": 3, "kafka-in": -1}"#.utf8)
            .write(to: URL(fileURLWithPath: folder + "/topology.json"))
        let held = Topology.load(config: config)
        XCTAssertEqual([held.count(.cache), held.count(.router), held.count(.fanout), held.count(.kafkaIn)], [2, 1, 3, 1],
                       "counts a stage cannot run leave the configured ones")
    }

    func testTopologyAddressesFollowItsCountsAndFolder() {
        var topology = Topology(runDir: "/r", instances: ["fanout": 2])
        for stage in StageName.allCases {
            XCTAssertEqual(StageName.allCases[stage.index], stage)
            XCTAssertEqual(topology.address(stage, 0), "ipc:///r/\(stage.rawValue)-0.ipc")
        }
        XCTAssertEqual(topology.count(.fanout), 2)
        XCTAssertEqual(topology.address(.fanout, 1), "ipc:///r/fanout-1.ipc")
        XCTAssertEqual(topology.address(.fanout, 5), "ipc:///r/fanout-5.ipc", "an instance beyond the count still has one")
        topology.instances["fanout"] = 3
        topology.runDir = "/s"
        XCTAssertEqual(topology.count(.fanout), 3)
        XCTAssertEqual(topology.address(.fanout, 2), "ipc:///s/fanout-2.ipc")
        XCTAssertEqual(topology, Topology(runDir: "/s", instances: ["fanout": 3]))
    }

    func testInstanceCountsAreHeldToWhatEachStageCanRun() throws {
        let config = try SwitchyardConfig.parse("KafkaOutInstances = 3\nFanoutInstances = 64", file: "/x.conf")
        XCTAssertEqual(config.instances["kafka-out"], 3)
        XCTAssertEqual(config.instances["fanout"], 64)
        for (line, said) in [("CacheInstances = 0", "cache runs 1-64 instances, not 0: "),
                             ("IngressInstances = 65", "ws-ingress runs 1-64 instances, not 65: "),
                             ("KafkaOutInstances = -1", "kafka-out runs 1-64 instances, not -1: "),
                             ("FanoutInstances = two", "'two' is not a whole number")] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(line, file: "/x.conf"), line) { error in
                XCTAssertTrue("\(error)".contains(said), "\(error)")
            }
        }
        XCTAssertEqual(StageName.router.instanceLimit.range, 1...1)
        XCTAssertEqual(StageName.kafkaIn.instanceLimit.range, 1...1)
        XCTAssertNil(StageName.cache.instanceLimit.refusal(.cache, count: 64))
        XCTAssertEqual(StageName.router.instanceLimit.refusal(.router, count: 2)?.hasPrefix(
            "router runs exactly 1 instance, not 2: "), true)
    }

    func testPrintConfigGivesTheStagesTheirLimitsAndTheStartOrder() throws {
        func printed(_ text: String) throws -> [String: Any] {
            let json = try SwitchyardConfig.parse(text, file: "/x.conf").supervisorJSON()
            return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        }
        let standalone = try printed("")
        let stages = try XCTUnwrap(standalone["stages"] as? [[String: Any]])
        XCTAssertEqual(stages.map { $0["name"] as? String }, ["ws-ingress", "router", "cache", "fanout"])
        XCTAssertEqual(stages[1]["maxInstances"] as? Int, 1)
        XCTAssertEqual(stages[2]["maxInstances"] as? Int, 64)
        XCTAssertEqual(stages[2]["minInstances"] as? Int, 1)
        XCTAssertEqual(standalone["startOrder"] as? [String],
                       ["fanout", "cache", "router", "kafka-out", "kafka-in", "ws-ingress"])
        let kafka = try XCTUnwrap(try printed("ClusterEngine = kafka")["stages"] as? [[String: Any]])
        XCTAssertEqual(kafka.map { $0["name"] as? String },
                       ["ws-ingress", "router", "cache", "fanout", "kafka-out", "kafka-in"])
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

    func testEncryptedListenerNeedsCertificateKeyAndItsOwnPort() throws {
        let defaults = try SwitchyardConfig.parse("", file: "/x.conf")
        XCTAssertEqual(defaults.listenEncrypted, [])
        XCTAssertNil(defaults.tlsCertificateFile)
        let set = try SwitchyardConfig.parse("""
            ListenEncrypted = *:8443, [::1]:9443
            TLSCertificateFile = tls/chain.pem
            TLSKeyFile = /etc/keys/server.key
            """, file: "/etc/sy/switchyard.conf")
        XCTAssertEqual(set.listenEncrypted, [ListenAddress(host: "0.0.0.0", port: 8443),
                                             ListenAddress(host: "::1", port: 9443)])
        XCTAssertEqual(set.tlsCertificateFile, "/etc/sy/tls/chain.pem")  // relative to the file's folder
        XCTAssertEqual(set.tlsKeyFile, "/etc/keys/server.key")
        XCTAssertEqual(set.parameterLines["TLSKeyFile"], 3)
        XCTAssertEqual(try SwitchyardConfig.parse("ListenEncrypted = none", file: "/x.conf").listenEncrypted, [])

        let problems = [
            ("ListenEncrypted = *:8443\nTLSKeyFile = k.pem", 1, "needs TLSCertificateFile"),
            ("TLSCertificateFile = c.pem\nListenEncrypted = *:8443", 2, "needs TLSKeyFile"),
            ("TLSCertificateFile = c.pem\nTLSKeyFile = k.pem\nListenEncrypted = *:8800", 3, "also in Listen"),
            ("TLSCertificateFile = c.pem\nTLSKeyFile = k.pem\nListenEncrypted = *:8801", 3, "MonitorListen"),
            ("ListenEncrypted = 8443", 1, "not host:port"),
        ]
        for (text, line, problem) in problems {
            XCTAssertThrowsError(try SwitchyardConfig.parse(text, file: "/x.conf"), text) {
                let error = $0 as? ConfigError
                XCTAssertEqual(error?.line, line, text)
                XCTAssertEqual(error?.parameter, "ListenEncrypted", text)
                XCTAssertTrue(error?.problem.contains(problem) == true, "\(text): \(String(describing: error))")
            }
        }
    }

    func testEntitlement() throws {
        let defaults = try SwitchyardConfig.parse("", file: "/x.conf")
        XCTAssertEqual(defaults.entitlement, .none)
        XCTAssertEqual(defaults.tokenExpireNotice, 60)
        let basic = try SwitchyardConfig.parse("Entitlement = Basic\nEntitlementAllowToken = t0k", file: "/x.conf")
        XCTAssertEqual(basic.entitlement, .basic)
        XCTAssertEqual(basic.entitlementAllowToken, "t0k")
        let secret = String(repeating: "k", count: 32)
        let jwt = try SwitchyardConfig.parse("Entitlement = JWT\nJwtSecret = \(secret)\nJwtIssuer = i\nJwtAudience = a\n"
                                             + "TokenExpireNotice = 5", file: "/x.conf")
        XCTAssertEqual(jwt.entitlement, .jwt)
        XCTAssertEqual(jwt.jwtSecret, secret)
        XCTAssertEqual(jwt.jwtIssuer, "i")
        XCTAssertEqual(jwt.jwtAudience, "a")
        XCTAssertEqual(jwt.tokenExpireNotice, 5)
        XCTAssertEqual(jwt.parameterLines["JwtSecret"], 2)

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sy-config-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        try pem.write(to: folder.appendingPathComponent("key.pem"), atomically: true, encoding: .utf8)
        let file = folder.appendingPathComponent("s.conf").path
        let keyed = try SwitchyardConfig.parse("Entitlement = jwt\nJwtPublicKeyFile = key.pem", file: file)
        XCTAssertEqual(keyed.jwtPublicKeyFile, folder.appendingPathComponent("key.pem").path)
        XCTAssertEqual(keyed.jwtPublicKeyPEM, pem)

        for (bad, line, parameter) in [("Entitlement = open", 1, "Entitlement"),
                                       ("Entitlement = basic", 1, "Entitlement"),
                                       ("\nEntitlement = jwt", 2, "Entitlement"),
                                       ("Entitlement = jwt\nJwtSecret = \(secret)\nJwtPublicKeyFile = key.pem", 3, "JwtPublicKeyFile"),
                                       ("Entitlement = jwt\nJwtSecret = \(secret.dropLast())", 2, "JwtSecret"),
                                       ("Entitlement = jwt\nJwtPublicKeyFile = missing.pem", 2, "JwtPublicKeyFile"),
                                       ("TokenExpireNotice = -1", 1, "TokenExpireNotice")] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(bad, file: file), bad) { error in
                XCTAssertEqual((error as? ConfigError)?.line, line, bad)
                XCTAssertEqual((error as? ConfigError)?.parameter, parameter, bad)
            }
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

    func testMqttSessionBoundsHaveDefaultsAndRanges() throws {
        let defaults = try SwitchyardConfig.parse("", file: "/x.conf")
        XCTAssertEqual(defaults.mqttSessionExpiry, 86_400)
        XCTAssertEqual(defaults.mqttMaxSessions, 100_000)
        let set = try SwitchyardConfig.parse("MqttSessionExpiry = 0\nMqttMaxSessions = 1", file: "/x.conf")
        XCTAssertEqual(set.mqttSessionExpiry, 0, "no session kept")
        XCTAssertEqual(set.mqttMaxSessions, 1)
        for bad in ["MqttSessionExpiry = -1", "MqttSessionExpiry = 31536001", "MqttMaxSessions = 0",
                    "MqttMaxSessions = 10000001", "MqttMaxSessions = many"] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(bad, file: "/x.conf"), bad)
        }
    }

    func testMqttSessionTopicIsAKafkaTopicName() throws {
        XCTAssertEqual(try SwitchyardConfig.parse("", file: "/x.conf").mqttSessionTopic, "switchyard-mqtt-sessions")
        XCTAssertEqual(try SwitchyardConfig.parse("MqttSessionTopic = node.sessions_1", file: "/x.conf").mqttSessionTopic,
                       "node.sessions_1")
        for bad in ["MqttSessionTopic = a/b", "MqttSessionTopic = ..", "MqttSessionTopic = " + String(repeating: "x", count: 250)] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(bad, file: "/x.conf"), bad)
        }
    }

    func testListenMqttEncryptedNeedsTheCertificateAndAPortOfItsOwn() throws {
        XCTAssertEqual(try SwitchyardConfig.parse("", file: "/x.conf").listenMqttEncrypted, [], "off by default")
        let tls = "TLSCertificateFile = c.pem\nTLSKeyFile = k.pem\n"
        XCTAssertEqual(try SwitchyardConfig.parse(tls + "ListenMqttEncrypted = *:8883", file: "/x.conf").listenMqttEncrypted,
                       [ListenAddress(host: "0.0.0.0", port: 8883)])
        XCTAssertEqual(try SwitchyardConfig.parse("ListenMqttEncrypted = none", file: "/x.conf").listenMqttEncrypted, [])
        for (text, line, problem) in [
            ("ListenMqttEncrypted = *:8883\nTLSKeyFile = k.pem", 1, "needs TLSCertificateFile"),
            ("ListenMqttEncrypted = *:8883", 1, "needs TLSCertificateFile and TLSKeyFile"),
            (tls + "ListenMqttEncrypted = *:8800", 3, "also in Listen:"),
            (tls + "ListenEncrypted = *:8443\nListenMqttEncrypted = *:8443", 4, "also in ListenEncrypted"),
            (tls + "ListenMqtt = *:1883\nListenMqttEncrypted = *:1883", 4, "also in ListenMqtt"),
            (tls + "ListenMqttEncrypted = *:8801", 3, "also in MonitorListen"),
            ("ListenMqttEncrypted = 8883", 1, "not host:port"),
        ] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(text, file: "/x.conf"), text) { error in
                let error = error as? ConfigError
                XCTAssertEqual(error?.line, line, text)
                XCTAssertEqual(error?.parameter, "ListenMqttEncrypted", text)
                XCTAssertTrue(error?.problem.contains(problem) == true, "\(text): \(String(describing: error))")
            }
        }
    }
}
