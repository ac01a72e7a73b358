/// A subject such as `/vehicles/car66/speed`: starts with `/`, one or more non-empty segments, no trailing `/`.
/// The first segment doubles as the Kafka topic, so it must be a valid Kafka topic name.
public enum Subject {
    public static let maxLength = 4096
    public static let maxTopicLength = 249

    public enum ValidationError: Error, Equatable, CustomStringConvertible {
        case empty
        case tooLong
        case missingLeadingSlash
        case emptySegment
        case trailingSlash
        case invalidTopicName

        public var description: String {
            switch self {
            case .empty: return "subject is empty"
            case .tooLong: return "subject is longer than \(Subject.maxLength) bytes"
            case .missingLeadingSlash: return "subject must start with '/'"
            case .emptySegment: return "subject has an empty segment"
            case .trailingSlash: return "subject must not end with '/'"
            case .invalidTopicName:
                return "first segment must be 1-\(Subject.maxTopicLength) characters of [a-zA-Z0-9._-], not . or .."
            }
        }
    }

    /// Checks `subject` and returns nil when it is valid.
    public static func validate(_ subject: String) -> ValidationError? {
        let bytes = subject.utf8
        guard let first = bytes.first else { return .empty }
        guard bytes.count <= maxLength else { return .tooLong }
        guard first == UInt8(ascii: "/") else { return .missingLeadingSlash }
        guard bytes.count > 1 else { return .emptySegment }
        if bytes.last == UInt8(ascii: "/") { return .trailingSlash }
        var previousWasSlash = true  // the leading slash
        for byte in bytes.dropFirst() {
            let isSlash = byte == UInt8(ascii: "/")
            if isSlash && previousWasSlash { return .emptySegment }
            previousWasSlash = isSlash
        }
        guard topicNameProblem(kafkaMapping(subject).topic) == nil else { return .invalidTopicName }
        return nil
    }

    /// Why `name` is not a valid Kafka topic name (1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`), or nil
    /// when it is: the one check for a subject's first segment and for the topics kafka-in is configured with.
    public static func topicNameProblem<Name: StringProtocol>(_ name: Name) -> String? {
        if name.isEmpty { return "empty topic name" }
        if name.utf8.count > maxTopicLength { return "topic name '\(name)' is longer than \(maxTopicLength) characters" }
        if name == "." || name == ".." { return "'\(name)' is not a valid topic name" }
        guard name.utf8.allSatisfy(isTopicByte) else { return "topic name '\(name)' may only contain [a-zA-Z0-9._-]" }
        return nil
    }

    /// Splits a valid subject into its Kafka topic and key: `/a/b/c` → (`a`, `b/c`), `/a` → (`a`, nil).
    public static func kafkaMapping(_ subject: String) -> (topic: Substring, key: Substring?) {
        let body = subject.dropFirst()
        guard let slash = body.firstIndex(of: "/") else { return (body, nil) }
        return (body[..<slash], body[body.index(after: slash)...])
    }

    /// The subject a Kafka record is delivered on: topic `a`, key `b/c` → `/a/b/c`; a null key → `/a`.
    public static func fromKafka(topic: String, key: String?) -> String {
        guard let key, !key.isEmpty else { return "/" + topic }
        return "/" + topic + "/" + key
    }

    private static func isTopicByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    /// A stable hash of the subject (FNV-1a), used to pick the shard of a stage; equal on every node and run.
    public static func shardHash(_ subject: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in subject.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return hash
    }

    public static func shard(of subject: String, count: Int) -> Int {
        precondition(count > 0)
        return Int(shardHash(subject) % UInt64(count))
    }
}
