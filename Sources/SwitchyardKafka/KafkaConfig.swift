import CRdKafka
import Foundation
import SwitchyardCore

/// A problem in a Kafka `.properties` file: Switchyard's `ConfigError`, so start-up messages read alike
/// (file "(set by Switchyard)" and line 0 for a property set in code).
public typealias KafkaConfigError = ConfigError

/// Which topics a consumer reads: listed names and/or a regular expression that must match a whole topic name.
public struct KafkaTopicSelection: Sendable, Equatable {
    public var names: [String]
    /// Swift `Regex` syntax; matched against the whole topic name (like Java's `Pattern.matches`, which Kafka's
    /// own `subscribe(Pattern)` uses). Topics starting with `__` (Kafka's internal ones) never match a regex.
    public var regex: String?
    /// Topics never consumed even when listed or matched (kafka-in: ws-ingress's MQTT session topic).
    public var excluded: Set<String>

    public init(names: [String] = [], regex: String? = nil, excluded: Set<String> = []) {
        self.names = names
        self.regex = regex
        self.excluded = excluded
    }

    public var isEmpty: Bool { names.isEmpty && regex == nil }
}

/// librdkafka properties from a `.properties` file, with Switchyard's own keys (`topics`, `topics.regex`)
/// separated out.
///
/// File format (Java `.properties`, the way Kafka users write them): `key = value` or `key: value` (the first
/// `=` or `:` separates), whitespace around key and value ignored, lines starting with `#` or `!` are comments,
/// blank lines ignored, a line ending in an odd number of `\` continues on the next line. A `#` after a value
/// is part of the value (as in Java), and no other backslash escapes are interpreted. A key given twice: the
/// later line wins.
public struct KafkaConfig: Sendable {
    /// One librdkafka property and where it came from.
    public struct Property: Sendable, Equatable {
        public var key: String
        public var value: String
        /// 0 for a property set in code.
        public var line: Int
    }

    /// Keys that are Switchyard's, not librdkafka's.
    public static let switchyardKeys: Set<String> = ["topics", "topics.regex"]

    /// The file the properties came from, for error messages.
    public var file: String
    /// librdkafka properties in file order.
    public private(set) var properties: [Property]
    /// What to consume (`topics`, `topics.regex`); empty for a producer's file.
    public var topics: KafkaTopicSelection

    public init(file: String = "(set by Switchyard)", properties: [String: String] = [:],
                topics: KafkaTopicSelection = KafkaTopicSelection()) {
        self.file = file
        self.properties = properties.sorted { $0.key < $1.key }.map { Property(key: $0.key, value: $0.value, line: 0) }
        self.topics = topics
    }

    /// The value of a librdkafka property (the last one set).
    public subscript(key: String) -> String? {
        properties.last { $0.key == key }?.value
    }

    /// Sets (or overrides) a librdkafka property in code.
    public mutating func set(_ key: String, _ value: String) {
        properties.removeAll { $0.key == key }
        properties.append(Property(key: key, value: value, line: 0))
    }

    /// Sets a librdkafka property only when the file did not.
    public mutating func setDefault(_ key: String, _ value: String) {
        if self[key] == nil { set(key, value) }
    }

    /// Loads a `.properties` file.
    public static func load(path: String) throws -> KafkaConfig {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw KafkaConfigError(file: path, line: 0, parameter: "", problem: "cannot read the file: \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw KafkaConfigError(file: path, line: 0, parameter: "", problem: "the file is not UTF-8 text")
        }
        return try parse(text, file: path)
    }

    /// Parses `.properties` text; `file` names it in errors.
    public static func parse(_ text: String, file: String) throws -> KafkaConfig {
        var config = KafkaConfig(file: file)
        // "\r\n" is one Character in Swift: split on it as well as on "\n".
        var lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })[...]
        var lineNumber = 0
        while let first = lines.popFirst() {
            lineNumber += 1
            let startLine = lineNumber
            var logical = String(first.drop { $0 == " " || $0 == "\t" || $0 == "\u{0C}" })
            if logical.isEmpty || logical.hasPrefix("#") || logical.hasPrefix("!") { continue }
            // Continuation: an odd number of trailing backslashes joins the next line (its leading blanks dropped).
            while endsWithOddBackslashes(logical), let next = lines.popFirst() {
                lineNumber += 1
                logical.removeLast()
                logical += next.drop { $0 == " " || $0 == "\t" || $0 == "\u{0C}" }
            }
            if endsWithOddBackslashes(logical) { logical.removeLast() }

            guard let sep = logical.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                let word = logical.trimmingCharacters(in: .whitespaces)
                throw KafkaConfigError(file: file, line: startLine, parameter: word,
                                       problem: "expected 'key = value'")
            }
            let key = logical[..<sep].trimmingCharacters(in: .whitespaces)
            let value = logical[logical.index(after: sep)...].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else {
                throw KafkaConfigError(file: file, line: startLine, parameter: "", problem: "missing key before '\(logical[sep])'")
            }
            guard !key.contains(where: { $0 == " " || $0 == "\t" }) else {
                throw KafkaConfigError(file: file, line: startLine, parameter: key,
                                       problem: "a key cannot contain blanks (expected 'key = value')")
            }
            switch key {
            case "topics":
                var names: [String] = []
                for raw in value.split(separator: ",") {
                    let name = raw.trimmingCharacters(in: .whitespaces)
                    if name.isEmpty { continue }
                    if let problem = Subject.topicNameProblem(name) {
                        throw KafkaConfigError(file: file, line: startLine, parameter: key, problem: problem)
                    }
                    if !names.contains(name) { names.append(name) }
                }
                if names.isEmpty {
                    throw KafkaConfigError(file: file, line: startLine, parameter: key,
                                           problem: "no topic named (expected 'topics = a,b')")
                }
                config.topics.names = names
            case "topics.regex":
                if value.isEmpty {
                    throw KafkaConfigError(file: file, line: startLine, parameter: key, problem: "empty regular expression")
                }
                do {
                    _ = try Regex(value)
                } catch {
                    throw KafkaConfigError(file: file, line: startLine, parameter: key,
                                           problem: "invalid regular expression: \(error)")
                }
                config.topics.regex = value
            default:
                config.properties.removeAll { $0.key == key }
                config.properties.append(Property(key: key, value: value, line: startLine))
            }
        }
        return config
    }

    private static func endsWithOddBackslashes(_ s: String) -> Bool {
        var count = 0
        for c in s.reversed() {
            if c == "\\" { count += 1 } else { break }
        }
        return count % 2 == 1
    }

    /// Creates a librdkafka configuration object with every property applied, in order.
    /// The caller owns the result (pass it to `rd_kafka_new`, or `rd_kafka_conf_destroy` it).
    func makeNativeConf() throws -> OpaquePointer {
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaConfigError(file: file, line: 0, parameter: "", problem: "rd_kafka_conf_new failed")
        }
        do {
            for property in properties {
                try Self.apply(property, to: conf, file: file)
            }
        } catch {
            rd_kafka_conf_destroy(conf)
            throw error
        }
        return conf
    }

    /// Checks every property against librdkafka without creating a client, so start-up can report a bad
    /// property before any stage runs.
    public func validate() throws {
        rd_kafka_conf_destroy(try makeNativeConf())
    }

    /// The features this librdkafka was built with (`builtin.features`, e.g. `gzip,ssl,sasl_plain,...`).
    public static var builtinFeatures: Set<String> {
        guard let conf = rd_kafka_conf_new() else { return [] }
        defer { rd_kafka_conf_destroy(conf) }
        return Set((nativeValue(of: "builtin.features", in: conf) ?? "").split(separator: ",").map(String.init))
    }

    /// The value of a property in a librdkafka configuration object (defaults included), nil if unknown.
    static func nativeValue(of key: String, in conf: OpaquePointer) -> String? {
        var size = 0
        guard rd_kafka_conf_get(conf, key, nil, &size) == RD_KAFKA_CONF_OK, size > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: size)
        guard rd_kafka_conf_get(conf, key, &buffer, &size) == RD_KAFKA_CONF_OK else { return nil }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    static func apply(_ property: Property, to conf: OpaquePointer, file: String) throws {
        var errbuf = [CChar](repeating: 0, count: 512)
        let result = rd_kafka_conf_set(conf, property.key, property.value, &errbuf, errbuf.count)
        guard result == RD_KAFKA_CONF_OK else {
            var message = errbuf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if message.isEmpty {
                message = result == RD_KAFKA_CONF_UNKNOWN ? "unknown property" : "invalid value"
            }
            if result == RD_KAFKA_CONF_INVALID, !message.contains(property.value) {
                message += " (value '\(property.value)')"
            }
            throw KafkaConfigError(file: property.line > 0 ? file : "(set by Switchyard)", line: property.line,
                                   parameter: property.key, problem: message)
        }
    }
}
