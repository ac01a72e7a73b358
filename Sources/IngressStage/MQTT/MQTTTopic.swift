import SwitchyardCore

/// MQTT topic ⇄ Switchyard subject: `vehicles/car66/speed` ⇄ `/vehicles/car66/speed`.
///
/// A topic has a subject when it does not start with `/`, has no empty level, and its first level is a valid
/// Kafka topic name (so it can never be `$SYS/...`: topics starting with `$` are reserved to the server).
enum MQTTTopic {
    enum Refusal: Error, Equatable, CustomStringConvertible {
        /// `$SYS/...` and every other `$` topic: reserved to the server.
        case reserved
        /// `+` or `#` in a topic name (a PUBLISH, a will): only filters may have them.
        case wildcard
        /// No subject for it (leading `/`, empty level, invalid first level, too long).
        case invalid(String)

        var description: String {
            switch self {
            case .reserved: return "topics starting with '$' are reserved"
            case .wildcard: return "a topic name must not contain the wildcards '+' or '#'"
            case .invalid(let problem): return "the topic has no subject: \(problem)"
            }
        }
    }

    /// What a SUBSCRIBE or UNSUBSCRIBE topic filter stands for.
    enum Filter: Equatable {
        case subject(String)
        /// A filter with `+` or `#`: `vehicles/+/speed` is the pattern `/vehicles/+/speed`.
        case pattern(SubjectPattern)
    }

    /// The subject or pattern of a topic filter.
    static func filter(_ filter: String) -> Result<Filter, Refusal> {
        if filter.utf8.first == UInt8(ascii: "$") { return .failure(.reserved) }
        guard filter.utf8.contains(UInt8(ascii: "+")) || filter.utf8.contains(UInt8(ascii: "#")) else {
            return subject(of: filter).map { .subject($0) }
        }
        if filter.utf8.first == UInt8(ascii: "/") { return .failure(.invalid("a topic must not start with '/'")) }
        do {
            return .success(.pattern(try SubjectPattern("/" + filter)))
        } catch {
            return .failure(.invalid(error.description))
        }
    }

    /// The subject of a topic name (or a wildcard-free topic filter).
    static func subject(of topic: String) -> Result<String, Refusal> {
        if topic.utf8.first == UInt8(ascii: "$") { return .failure(.reserved) }
        if topic.utf8.contains(UInt8(ascii: "+")) || topic.utf8.contains(UInt8(ascii: "#")) {
            return .failure(.wildcard)
        }
        if topic.utf8.first == UInt8(ascii: "/") { return .failure(.invalid("a topic must not start with '/'")) }
        let subject = "/" + topic
        if let problem = Subject.validate(subject) { return .failure(.invalid(problem.description)) }
        return .success(subject)
    }

    /// Whether a subject can go to MQTT clients as a topic name: subjects from WebSocket clients and Kafka keys
    /// may hold `+`, `#` or U+0000, which no MQTT topic name may (MQTT 4.7.1, 1.5.4); a wildcard subscription
    /// matching such a subject does not get it.
    static func isTopicName(_ subject: String) -> Bool {
        !subject.utf8.contains { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") || $0 == 0 }
    }

    /// The topic of a (valid) subject.
    static func topic(of subject: String) -> String {
        String(subject.dropFirst())
    }
}
