import Foundation
import Logging

/// A problem in a configuration file, named by file, line and parameter so an operator can fix it at once.
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let parameter: String
    public let problem: String

    public init(file: String, line: Int, parameter: String, problem: String) {
        self.file = file
        self.line = line
        self.parameter = parameter
        self.problem = problem
    }

    public var description: String {
        if line > 0 { return "\(file):\(line): parameter '\(parameter)': \(problem)" }
        if parameter.isEmpty { return "\(file): \(problem)" }
        return "\(file): parameter '\(parameter)': \(problem)"
    }
}

/// One address to listen on, from `Listen = host:port, ...`.
public struct ListenAddress: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

public enum ClusterEngine: String, Sendable {
    case none
    case kafka
}

/// `Entitlement`: who may subscribe and publish.
public enum EntitlementMode: String, Sendable {
    /// Everyone may do everything; tokens are ignored.
    case none
    /// Everyone may subscribe; publishing needs `EntitlementAllowToken`.
    case basic
    /// Every connection presents a JWT whose `permissions` claim says what it may do.
    case jwt
}

/// `switchyard.conf`: `Parameter = Value` lines, `#` comments. Paths are relative to the file's folder.
public struct SwitchyardConfig: Sendable {
    /// The absolute path of the file this was read from.
    public var file: String = ""
    /// `Listen`: WebSocket/HTTP addresses. Default `*:8800` (all interfaces).
    public var listen: [ListenAddress] = [ListenAddress(host: "0.0.0.0", port: 8800)]
    /// `ClusterEngine`: `none` runs standalone; `kafka` adds the Kafka stages.
    public var clusterEngine: ClusterEngine = .none
    /// `MaxCachedMessagesPerSubject`: history kept per subject for recovery. Default 1000.
    public var maxCachedMessagesPerSubject: Int = 1000
    /// `CacheExpireTime`: seconds a message stays in the history. Default 180.
    public var cacheExpireTime: Int = 180
    /// `CacheMaxBytes`: content bytes (history and snapshots) one cache instance holds; beyond it the least
    /// recently used subjects are dropped. Default 1 GiB.
    public var cacheMaxBytes: Int = 1024 * 1024 * 1024
    /// `CacheMaxSubjects`: subjects one cache instance keeps state for; a new one beyond it drops the least
    /// recently used. Default 1,000,000.
    public var cacheMaxSubjects: Int = 1_000_000
    /// `MaxDeepRecoveries`: Kafka reads for recoveries older than the cache that run at once per node (as many
    /// more wait); beyond them a recovery is answered `DATA_RESYNC` at once. Default 4.
    public var maxDeepRecoveries: Int = 4
    /// `RunDir`: nanomsg ipc files, pid and stats files. Default `var/run`.
    public var runDir: String = "var/run"
    /// `LogFolder`: one log file per stage instance. Default `var/log`.
    public var logFolder: String = "var/log"
    /// `LogLevel`: TRACE, DEBUG, INFO, WARN or ERROR. Default INFO.
    public var logLevel: Logger.Level = .info
    /// `LogRotateLimit`: bytes after which a stage's log file is rotated (one old file is kept). Default 100 MiB.
    public var logRotateLimit: Int = 100 * 1024 * 1024
    /// `KafkaConsumerConfig` / `KafkaProducerConfig`: librdkafka properties files.
    public var kafkaConsumerConfig: String = "kafka/consumer.properties"
    public var kafkaProducerConfig: String = "kafka/producer.properties"
    /// `MessageSizeLimit`: the largest publish content in bytes. Default 128 KiB.
    public var messageSizeLimit: Int = 128 * 1024
    /// `ClientBufferLimit`: bytes queued for one client that is not reading before it is disconnected. Default 4 MiB.
    public var clientBufferLimit: Int = 4 * 1024 * 1024
    /// `HandshakeTimeout`: seconds a new connection may take to complete its WebSocket upgrade (or its plain HTTP
    /// request) before it is closed. Default 10.
    public var handshakeTimeout: Int = 10
    /// `MaxConnections`: open TCP connections one ws-ingress instance accepts upgrades for; beyond it an upgrade
    /// is answered HTTP 503. Default 10000 (a process may hold 20,000 open files here).
    public var maxConnections: Int = 10_000
    /// `PublishTimeout`: seconds until a publish that was not acknowledged is answered `FAILED`. Default 10.
    public var publishTimeout: Int = 10
    /// `MaxSubjectsPerConnection`: subjects one connection may subscribe to; more get `subscribed` DENY.
    /// Default 1000.
    public var maxSubjectsPerConnection: Int = 1000
    /// `SubscribeRateLimit`: subjects per second one connection may subscribe to (burst: the larger of this and
    /// `MaxSubjectsPerConnection`); more get `RATE_LIMITED`. Default 1000.
    public var subscribeRateLimit: Int = 1000
    /// `PublishRateLimit`: publishes per second one connection may send (burst: one second's worth); more get
    /// `RATE_LIMITED` (or `publish_status` FAILED). Default 100,000.
    public var publishRateLimit: Int = 100_000
    /// `PingRateLimit`: pings per second one connection may send (WebSocket ping frames and `{"op":"ping"}`, each
    /// kind apart; burst: one second's worth). A ping beyond it is not answered; 1,000 within 10 s close it (1008).
    public var pingRateLimit: Int = 10
    /// `SlowClientTimeout`: seconds a client may take none of its waiting output before it is disconnected as
    /// slow (1008), whatever its backlog. 0: never (only `ClientBufferLimit` applies). Default 10.
    public var slowClientTimeout: Int = 10
    /// `ClientSendBuffer`: the kernel's send buffer of each client socket (SO_SNDBUF; Linux doubles it), which
    /// bounds what the kernel holds for a client that does not read. 0: the kernel's autotuning (up to
    /// `net.ipv4.tcp_wmem`, 4 MiB by default). Default 64 KiB.
    public var clientSendBuffer: Int = 65536
    /// `MaxSubscribesInFlight`: subscribes of one connection sent to the pipeline at once; the rest wait, in
    /// order, in the ingress. Default 64.
    public var maxSubscribesInFlight: Int = 64
    /// `MaxPendingSubscribeBytes`: live message bytes one subscribe may hold while it waits for its answer; past
    /// it they are dropped and the cache is asked again. Default 16 MiB.
    public var maxPendingSubscribeBytes: Int = 16 * 1024 * 1024
    /// `IdleTimeout`: seconds after which a connection with no subscription that sent nothing is closed
    /// (`1001 idle`); 0 never. Default 300.
    public var idleTimeout: Int = 300
    /// `AllowedOrigins`: web origins whose pages may connect; an upgrade with another `Origin` gets HTTP 403, one
    /// without `Origin` (not a browser) is allowed. Default any (`*`).
    public var allowedOrigins: AllowedOrigins = .any
    /// `MonitorListen`: the private listener of ws-ingress instance 0 for `/metrics`, `/health` and `/ready`;
    /// `none` disables it. Default `127.0.0.1:8801`.
    public var monitorListen: ListenAddress? = ListenAddress(host: "127.0.0.1", port: 8801)
    /// `ListenEncrypted`: TLS (wss/https) addresses serving the same endpoint as `Listen`; absent or `none`: no
    /// TLS listener (default).
    public var listenEncrypted: [ListenAddress] = []
    /// `TLSCertificateFile`: the PEM certificate chain (the server's certificate first, then its intermediates);
    /// required with `ListenEncrypted`. No default.
    public var tlsCertificateFile: String?
    /// `TLSKeyFile`: the unencrypted PEM private key of that certificate. No default.
    public var tlsKeyFile: String?
    // Entitlement (docs/OPERATIONS.md "Entitlement").
    /// `Entitlement`: `none`, `basic` or `jwt`. Default `none`.
    public var entitlement: EntitlementMode = .none
    /// `EntitlementAllowToken`: the token that lets a connection publish when `Entitlement = basic`. No default:
    /// required in that mode.
    public var entitlementAllowToken: String?
    /// `JwtSecret`: the HMAC key of HS256/384/512 tokens. No default.
    public var jwtSecret: String?
    /// `JwtPublicKeyFile`: a PEM public key (RSA: RS256/384/512; EC P-256: ES256; P-384: ES384), relative to the
    /// file's folder. No default.
    public var jwtPublicKeyFile: String?
    /// The text of `JwtPublicKeyFile`, read with the configuration (ws-ingress parses the key at start-up).
    public var jwtPublicKeyPEM: String?
    /// `JwtIssuer` / `JwtAudience`: when set, a token's `iss` must equal it / its `aud` must include it.
    public var jwtIssuer: String?
    public var jwtAudience: String?
    /// `TokenExpireNotice`: seconds before a token's `exp` that the client is told `TOKEN_TO_EXPIRE`. Default 60.
    public var tokenExpireNotice: Int = 60
    // MQTT (docs/MQTT.md)
    /// `ListenMqtt`: MQTT 3.1.1 / 5.0 over TCP addresses of ws-ingress, e.g. `*:1883`; empty (the default): off.
    /// MQTT over WebSocket is always on at path `/mqtt` of the `Listen` addresses.
    public var listenMqtt: [ListenAddress] = []
    /// `ListenMqttEncrypted`: MQTT over TLS addresses, e.g. `*:8883`, with the certificate of `TLSCertificateFile`
    /// and `TLSKeyFile` (reloaded with it); empty (the default): off.
    public var listenMqttEncrypted: [ListenAddress] = []
    /// `MqttSessionExpiry`: seconds a persistent MQTT session (3.1.1 clean session off, v5 Session Expiry
    /// Interval > 0) is kept after its connection ends; the most a v5 client may ask for. 0: no session is kept.
    /// Default 86400 (1 day).
    public var mqttSessionExpiry: Int = 86_400
    /// `MqttMaxSessions`: persistent MQTT sessions kept in `RunDir/mqtt-sessions/` (Kafka mode: held by each
    /// ws-ingress instance from the session topic). Default 100000.
    public var mqttMaxSessions: Int = 100_000
    /// `MaxPatternsPerIngress`: distinct wildcard patterns (`+`, `#`) one ws-ingress instance holds subscriptions
    /// to; a SUBSCRIBE to one more gets SUBACK `0x80` (v5 `0x97`). Every pattern is kept by every fanout shard and
    /// looked at for every message. Default 10,000.
    public var maxPatternsPerIngress: Int = 10_000
    /// `MqttSessionTopic`: Kafka mode: the compacted Kafka topic that holds the persistent MQTT sessions of every
    /// node (created if missing). Default `switchyard-mqtt-sessions`.
    public var mqttSessionTopic: String = "switchyard-mqtt-sessions"
    /// `IngressInstances`, `CacheInstances`, `FanoutInstances`, `KafkaOutInstances`: how many instances of each
    /// stage run (router and kafka-in always run one: `StageName.instanceLimit`).
    public var instances: [String: Int] = ["ws-ingress": 1, "router": 1, "cache": 1, "fanout": 1,
                                           "kafka-in": 1, "kafka-out": 1]

    public init() {}

    /// The line each parameter was set on, for problems found after parsing (e.g. in a file a parameter names).
    public var parameterLines: [String: Int] = [:]

    /// The folder the file lives in: relative paths in it are resolved against this.
    public var folder: String { (file as NSString).deletingLastPathComponent }

    /// Reads and checks a configuration file.
    public static func load(path: String) throws -> SwitchyardConfig {
        let absolute = Self.absolutePath(path, relativeTo: FileManager.default.currentDirectoryPath)
        guard let data = FileManager.default.contents(atPath: absolute),
              let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(file: absolute, line: 0, parameter: "", problem: "cannot read the configuration file")
        }
        return try parse(text, file: absolute)
    }

    /// Parses configuration text; `file` names it in errors and anchors relative paths.
    public static func parse(_ text: String, file: String) throws -> SwitchyardConfig {
        var config = SwitchyardConfig()
        config.file = file
        var seen: [String: Int] = [:]
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let lineNumber = index + 1
            var line = Substring(rawLine)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw ConfigError(file: file, line: lineNumber, parameter: trimmed,
                                  problem: "expected 'Parameter = Value'")
            }
            let name = trimmed[..<equals].trimmingCharacters(in: .whitespaces)
            let value = trimmed[trimmed.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            func fail(_ problem: String) -> ConfigError {
                ConfigError(file: file, line: lineNumber, parameter: name, problem: problem)
            }
            if let previous = seen[name] { throw fail("already set on line \(previous)") }
            seen[name] = lineNumber
            if value.isEmpty { throw fail("missing value") }
            try config.apply(name: name, value: value, fail: fail)
        }
        config.parameterLines = seen
        if let monitor = config.monitorListen, config.listen.contains(where: { $0.port == monitor.port }) {
            throw ConfigError(file: file, line: seen["MonitorListen"] ?? 0, parameter: "MonitorListen",
                              problem: "port \(monitor.port) is also in Listen: the monitor needs a port of its own")
        }
        try config.checkEncryptedListener()
        try config.checkEntitlement(seen: seen)
        let listenPorts = Set(config.listen.map(\.port)).union(config.monitorListen.map { [$0.port] } ?? [])
        if let clash = config.listenMqtt.first(where: { listenPorts.contains($0.port) }) {
            throw ConfigError(file: file, line: seen["ListenMqtt"] ?? 0, parameter: "ListenMqtt",
                              problem: "port \(clash.port) is also in Listen or MonitorListen: MQTT needs a port of its own")
        }
        try config.checkMQTTEncryptedListener()
        config.runDir = absolutePath(config.runDir, relativeTo: config.folder)
        config.logFolder = absolutePath(config.logFolder, relativeTo: config.folder)
        config.kafkaConsumerConfig = absolutePath(config.kafkaConsumerConfig, relativeTo: config.folder)
        config.kafkaProducerConfig = absolutePath(config.kafkaProducerConfig, relativeTo: config.folder)
        config.tlsCertificateFile = config.tlsCertificateFile.map { absolutePath($0, relativeTo: config.folder) }
        config.tlsKeyFile = config.tlsKeyFile.map { absolutePath($0, relativeTo: config.folder) }
        if let keyFile = config.jwtPublicKeyFile {
            let path = absolutePath(keyFile, relativeTo: config.folder)
            guard let data = FileManager.default.contents(atPath: path), let pem = String(data: data, encoding: .utf8),
                  pem.contains("-----BEGIN ") else {
                throw ConfigError(file: file, line: seen["JwtPublicKeyFile"] ?? 0, parameter: "JwtPublicKeyFile",
                                  problem: "cannot read a PEM key from \(path)")
            }
            config.jwtPublicKeyFile = path
            config.jwtPublicKeyPEM = pem
        }
        return config
    }

    private mutating func apply(name: String, value: String, fail: (String) -> ConfigError) throws {
        func integer(_ range: ClosedRange<Int>) throws -> Int {
            guard let number = Int(value), range.contains(number) else {
                throw fail("'\(value)' is not a whole number in \(range.lowerBound)...\(range.upperBound)")
            }
            return number
        }
        func setInstances(of stage: StageName) throws {
            guard let count = Int(value) else { throw fail("'\(value)' is not a whole number") }
            if let refusal = stage.instanceLimit.refusal(stage, count: count) { throw fail(refusal) }
            instances[stage.rawValue] = count
        }
        switch name {
        case "Listen":
            listen = try addresses(value, fail: fail)
        case "ClusterEngine":
            guard let engine = ClusterEngine(rawValue: value.lowercased()) else {
                throw fail("'\(value)' is not one of none, kafka")
            }
            clusterEngine = engine
        case "MaxCachedMessagesPerSubject": maxCachedMessagesPerSubject = try integer(0...10_000_000)
        case "CacheExpireTime": cacheExpireTime = try integer(1...31_536_000)
        case "CacheMaxBytes": cacheMaxBytes = try integer(1024 * 1024...1 << 50)
        case "CacheMaxSubjects": cacheMaxSubjects = try integer(1...100_000_000)
        case "MaxDeepRecoveries": maxDeepRecoveries = try integer(1...64)
        case "RunDir": runDir = value
        case "LogFolder": logFolder = value
        case "LogLevel":
            guard let level = Logger.Level(configName: value) else {
                throw fail("'\(value)' is not one of \(Logger.Level.configNames)")
            }
            logLevel = level
        case "LogRotateLimit": logRotateLimit = try integer(4096...Int(Int32.max))
        case "KafkaConsumerConfig": kafkaConsumerConfig = value
        case "KafkaProducerConfig": kafkaProducerConfig = value
        case "MessageSizeLimit": messageSizeLimit = try integer(1...64 * 1024 * 1024)
        case "ClientBufferLimit": clientBufferLimit = try integer(4096...1024 * 1024 * 1024)
        case "HandshakeTimeout": handshakeTimeout = try integer(1...3600)
        case "MaxConnections": maxConnections = try integer(1...1_000_000)
        case "PublishTimeout": publishTimeout = try integer(1...3600)
        case "MaxSubjectsPerConnection": maxSubjectsPerConnection = try integer(1...1_000_000)
        case "SubscribeRateLimit": subscribeRateLimit = try integer(1...10_000_000)
        case "PublishRateLimit": publishRateLimit = try integer(1...10_000_000)
        case "PingRateLimit": pingRateLimit = try integer(1...1_000_000)
        case "SlowClientTimeout": slowClientTimeout = try integer(0...86_400)
        case "ClientSendBuffer": clientSendBuffer = try integer(0...64 * 1024 * 1024)
        case "MaxSubscribesInFlight": maxSubscribesInFlight = try integer(1...100_000)
        case "MaxPendingSubscribeBytes": maxPendingSubscribeBytes = try integer(65_536...1024 * 1024 * 1024)
        case "IdleTimeout": idleTimeout = try integer(0...86_400)
        case "AllowedOrigins":
            guard let origins = AllowedOrigins(parsing: value) else {
                throw fail("'\(value)' is not '*' or a list of scheme://host[:port] (e.g. https://app.example.com)")
            }
            allowedOrigins = origins
        case "MonitorListen":
            if value.lowercased() == "none" {
                monitorListen = nil
            } else {
                guard let address = ListenAddress(parsing: value) else {
                    throw fail("'\(value)' is not host:port (e.g. 127.0.0.1:8801) or none")
                }
                monitorListen = address
            }
        case "IngressInstances": try setInstances(of: .ingress)
        case "CacheInstances": try setInstances(of: .cache)
        case "FanoutInstances": try setInstances(of: .fanout)
        case "KafkaOutInstances": try setInstances(of: .kafkaOut)
        case "ListenEncrypted":
            listenEncrypted = value.lowercased() == "none" ? [] : try addresses(value, fail: fail)
        case "TLSCertificateFile": tlsCertificateFile = value
        case "TLSKeyFile": tlsKeyFile = value
        case "Entitlement":
            guard let mode = EntitlementMode(rawValue: value.lowercased()) else {
                throw fail("'\(value)' is not one of none, basic, jwt")
            }
            entitlement = mode
        case "EntitlementAllowToken": entitlementAllowToken = value
        case "JwtSecret":
            // RFC 7518 3.2: an HMAC key at least as long as the hash (HS256: 32 bytes; 48 and 64 add HS384, HS512).
            guard value.utf8.count >= 32 else { throw fail("a secret of at least 32 bytes is needed (HS256)") }
            jwtSecret = value
        case "JwtPublicKeyFile": jwtPublicKeyFile = value
        case "JwtIssuer": jwtIssuer = value
        case "JwtAudience": jwtAudience = value
        case "TokenExpireNotice": tokenExpireNotice = try integer(0...86_400)
        case "ListenMqtt":
            listenMqtt = value.lowercased() == "none" ? [] : try addresses(value, fail: fail)
        case "ListenMqttEncrypted":
            listenMqttEncrypted = value.lowercased() == "none" ? [] : try addresses(value, fail: fail)
        case "MqttSessionExpiry": mqttSessionExpiry = try integer(0...31_536_000)
        case "MqttMaxSessions": mqttMaxSessions = try integer(1...10_000_000)
        case "MaxPatternsPerIngress": maxPatternsPerIngress = try integer(1...1_000_000)
        case "MqttSessionTopic":
            if let problem = Subject.topicNameProblem(value) { throw fail(problem) }
            mqttSessionTopic = value
        default:
            throw fail("unknown parameter")
        }
    }

    /// `host:port, host:port, ...` of `Listen` and `ListenEncrypted`.
    private func addresses(_ value: String, fail: (String) -> ConfigError) throws -> [ListenAddress] {
        try value.split(separator: ",").map { entry in
            guard let address = ListenAddress(parsing: entry.trimmingCharacters(in: .whitespaces)) else {
                throw fail("'\(entry)' is not host:port (e.g. *:8800 or 127.0.0.1:8800)")
            }
            return address
        }
    }

    /// A TLS listener needs a certificate and key, and ports of its own.
    private func checkEncryptedListener() throws {
        guard !listenEncrypted.isEmpty else { return }
        func fail(_ problem: String) -> ConfigError {
            ConfigError(file: file, line: parameterLines["ListenEncrypted"] ?? 0, parameter: "ListenEncrypted",
                        problem: problem)
        }
        let missing = [("TLSCertificateFile", tlsCertificateFile), ("TLSKeyFile", tlsKeyFile)]
            .filter { $0.1 == nil }.map(\.0)
        if !missing.isEmpty { throw fail("needs \(missing.joined(separator: " and "))") }
        for address in listenEncrypted {
            if listen.contains(where: { $0.port == address.port }) {
                throw fail("port \(address.port) is also in Listen: TLS needs a port of its own")
            }
            if monitorListen?.port == address.port {
                throw fail("port \(address.port) is also MonitorListen's: TLS needs a port of its own")
            }
        }
    }

    /// MQTT over TLS needs the certificate and key of `ListenEncrypted`, and ports no other listener has.
    private func checkMQTTEncryptedListener() throws {
        guard !listenMqttEncrypted.isEmpty else { return }
        func fail(_ problem: String) -> ConfigError {
            ConfigError(file: file, line: parameterLines["ListenMqttEncrypted"] ?? 0, parameter: "ListenMqttEncrypted",
                        problem: problem)
        }
        let missing = [("TLSCertificateFile", tlsCertificateFile), ("TLSKeyFile", tlsKeyFile)]
            .filter { $0.1 == nil }.map(\.0)
        if !missing.isEmpty { throw fail("needs \(missing.joined(separator: " and "))") }
        let others = [("Listen", listen), ("ListenEncrypted", listenEncrypted), ("ListenMqtt", listenMqtt),
                      ("MonitorListen", monitorListen.map { [$0] } ?? [])]
        for address in listenMqttEncrypted {
            if let (name, _) = others.first(where: { $0.1.contains { $0.port == address.port } }) {
                throw fail("port \(address.port) is also in \(name): MQTT over TLS needs a port of its own")
            }
        }
    }

    /// The keys each `Entitlement` mode needs (the key file itself is read by ws-ingress at start-up).
    private func checkEntitlement(seen: [String: Int]) throws {
        func fail(_ parameter: String, _ problem: String) -> ConfigError {
            ConfigError(file: file, line: seen[parameter] ?? 0, parameter: parameter, problem: problem)
        }
        switch entitlement {
        case .none:
            break
        case .basic:
            guard entitlementAllowToken != nil else {
                throw fail("Entitlement",
                           "Entitlement = basic needs EntitlementAllowToken (the token that may publish)")
            }
        case .jwt:
            guard jwtSecret != nil || jwtPublicKeyFile != nil else {
                throw fail("Entitlement", "Entitlement = jwt needs JwtSecret or JwtPublicKeyFile")
            }
            guard jwtSecret == nil || jwtPublicKeyFile == nil else {
                throw fail("JwtPublicKeyFile", "give JwtSecret or JwtPublicKeyFile, not both")
            }
        }
    }

    static func absolutePath(_ path: String, relativeTo folder: String) -> String {
        let joined = path.hasPrefix("/") ? path : (folder as NSString).appendingPathComponent(path)
        return (joined as NSString).standardizingPath
    }

    /// What the supervisor needs to know, as JSON (`--print-config`): the files and folders, the instance counts,
    /// the stages this engine runs in display order with the instance counts each can run (and why), and every
    /// stage's start order.
    public func supervisorJSON() -> String {
        let object: [String: Any] = [
            "configFile": file,
            "listen": listen.map(\.description),
            "clusterEngine": clusterEngine.rawValue,
            "runDir": runDir,
            "logFolder": logFolder,
            "logLevel": logLevel.configName,
            "instances": instances,
            "stages": StageName.running(clusterEngine).map { stage -> [String: Any] in
                let limit = stage.instanceLimit
                return ["name": stage.rawValue, "minInstances": limit.range.lowerBound,
                        "maxInstances": limit.range.upperBound, "why": limit.reason]
            },
            "startOrder": StageName.startOrder.map(\.rawValue),
        ]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

extension ListenAddress {
    /// Parses `host:port`, `*:port` (all interfaces) or `[v6]:port`.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "*" { host = "0.0.0.0" }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }
}
