import Foundation

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
    public var logLevel: LogLevel = .info
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
    // MQTT (docs/MQTT.md)
    /// `ListenMqtt`: MQTT 3.1.1 / 5.0 over TCP addresses of ws-ingress, e.g. `*:1883`; empty (the default): off.
    /// MQTT over WebSocket is always on at path `/mqtt` of the `Listen` addresses. (`ListenMqttEncrypted`, MQTT
    /// over TLS, follows once ws-ingress has its TLS context: docs/MQTT.md.)
    public var listenMqtt: [ListenAddress] = []

    /// `IngressInstances`, `CacheInstances`, `FanoutInstances`: how many instances of each stage run.
    public var instances: [String: Int] = ["ws-ingress": 1, "router": 1, "cache": 1, "fanout": 1,
                                           "kafka-in": 1, "kafka-out": 1]

    public init() {}

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
        if let monitor = config.monitorListen, config.listen.contains(where: { $0.port == monitor.port }) {
            throw ConfigError(file: file, line: seen["MonitorListen"] ?? 0, parameter: "MonitorListen",
                              problem: "port \(monitor.port) is also in Listen: the monitor needs a port of its own")
        }
        let listenPorts = Set(config.listen.map(\.port)).union(config.monitorListen.map { [$0.port] } ?? [])
        if let clash = config.listenMqtt.first(where: { listenPorts.contains($0.port) }) {
            throw ConfigError(file: file, line: seen["ListenMqtt"] ?? 0, parameter: "ListenMqtt",
                              problem: "port \(clash.port) is also in Listen or MonitorListen: MQTT needs a port of its own")
        }
        config.runDir = absolutePath(config.runDir, relativeTo: config.folder)
        config.logFolder = absolutePath(config.logFolder, relativeTo: config.folder)
        config.kafkaConsumerConfig = absolutePath(config.kafkaConsumerConfig, relativeTo: config.folder)
        config.kafkaProducerConfig = absolutePath(config.kafkaProducerConfig, relativeTo: config.folder)
        return config
    }

    private mutating func apply(name: String, value: String, fail: (String) -> ConfigError) throws {
        func integer(_ range: ClosedRange<Int>) throws -> Int {
            guard let number = Int(value), range.contains(number) else {
                throw fail("'\(value)' is not a whole number in \(range.lowerBound)...\(range.upperBound)")
            }
            return number
        }
        switch name {
        case "Listen":
            listen = try value.split(separator: ",").map { entry in
                guard let address = ListenAddress(parsing: entry.trimmingCharacters(in: .whitespaces)) else {
                    throw fail("'\(entry)' is not host:port (e.g. *:8800 or 127.0.0.1:8800)")
                }
                return address
            }
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
            guard let level = LogLevel(name: value) else { throw fail("'\(value)' is not one of \(LogLevel.names)") }
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
        case "ListenMqtt":
            listenMqtt = value.lowercased() == "none" ? [] : try value.split(separator: ",").map { entry in
                guard let address = ListenAddress(parsing: entry.trimmingCharacters(in: .whitespaces)) else {
                    throw fail("'\(entry)' is not host:port (e.g. *:1883) or none")
                }
                return address
            }
        case "IngressInstances": instances["ws-ingress"] = try integer(1...64)
        case "CacheInstances": instances["cache"] = try integer(1...64)
        case "FanoutInstances": instances["fanout"] = try integer(1...64)
        default:
            throw fail("unknown parameter")
        }
    }

    static func absolutePath(_ path: String, relativeTo folder: String) -> String {
        let joined = path.hasPrefix("/") ? path : (folder as NSString).appendingPathComponent(path)
        return (joined as NSString).standardizingPath
    }

    /// What the supervisor needs to know, as JSON (`--print-config`).
    public func supervisorJSON() -> String {
        let object: [String: Any] = [
            "configFile": file,
            "listen": listen.map(\.description),
            "clusterEngine": clusterEngine.rawValue,
            "runDir": runDir,
            "logFolder": logFolder,
            "logLevel": logLevel.name,
            "instances": instances,
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
