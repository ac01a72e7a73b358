import Foundation

/// A frame from the server (protocol v1, docs/PROTOCOL.md). Every field but `op` is optional: which ones are
/// present depends on `op`. Unknown fields are ignored, so later protocol versions still decode.
public struct ServerFrame: Decodable, Equatable, Sendable {
    public var op: String
    public var subject: String?
    public var content: String?
    public var type: String?
    public var seq: UInt64?
    public var epoch: String?
    public var closure: String?
    public var retained: Bool?
    public var encoding: String?
    public var qos: String?
    public var status: String?
    public var reason: String?
    public var code: String?

    public init(op: String, subject: String? = nil, content: String? = nil, type: String? = nil,
                seq: UInt64? = nil, epoch: String? = nil, closure: String? = nil, status: String? = nil,
                reason: String? = nil, code: String? = nil) {
        self.op = op
        self.subject = subject
        self.content = content
        self.type = type
        self.seq = seq
        self.epoch = epoch
        self.closure = closure
        self.status = status
        self.reason = reason
        self.code = code
    }

    /// Decodes one text frame; nil for anything that is not a JSON object with a string `op` (or whose `seq` is
    /// not an unsigned integer).
    public static func decode(_ text: String) -> ServerFrame? {
        try? JSONDecoder().decode(ServerFrame.self, from: Data(text.utf8))
    }
}

/// Where a subscriber is in a subject's stream: the last message it processed.
public struct StreamPosition: Equatable, Sendable {
    public var epoch: String
    public var seq: UInt64

    public init(epoch: String, seq: UInt64) {
        self.epoch = epoch
        self.seq = seq
    }
}

/// A frame to the server, written as JSON with `op` first.
public enum ClientRequest: Equatable, Sendable {
    case connect(token: String)
    case subscribe(subjects: [String], history: Int, recover: [String: StreamPosition])
    case publish(subject: String, content: String, closure: String?, retained: Bool?, qos: String?, base64: Bool)
    case ping

    public var json: String {
        var object = JSONObjectWriter(op: opName)
        switch self {
        case .connect(let token):
            object.add("token", string: token)
        case .subscribe(let subjects, let history, let recover):
            object.add("subjects", raw: "[" + subjects.map(jsonString).joined(separator: ",") + "]")
            if history > 0 { object.add("history", raw: String(history)) }
            if !recover.isEmpty {
                let entries = recover.sorted { $0.key < $1.key }.map { subject, position in
                    jsonString(subject) + ":{\"epoch\":" + jsonString(position.epoch) + ",\"seq\":\(position.seq)}"
                }
                object.add("recover", raw: "{" + entries.joined(separator: ",") + "}")
            }
        case .publish(let subject, let content, let closure, let retained, let qos, let base64):
            object.add("subject", string: subject)
            object.add("content", string: content)
            if let closure { object.add("closure", string: closure) }
            if let retained { object.add("retained", raw: retained ? "true" : "false") }
            if let qos { object.add("qos", string: qos) }
            if base64 { object.add("encoding", string: "base64") }
        case .ping:
            break
        }
        return object.text + "}"
    }

    private var opName: String {
        switch self {
        case .connect: return "connect"
        case .subscribe: return "subscribe"
        case .publish: return "publish"
        case .ping: return "ping"
        }
    }
}

/// Appends `"key":value` members to a JSON object that starts with `"op"`.
private struct JSONObjectWriter {
    private(set) var text: String

    init(op: String) { text = "{\"op\":" + jsonString(op) }

    mutating func add(_ key: String, string value: String) { add(key, raw: jsonString(value)) }

    mutating func add(_ key: String, raw value: String) { text += "," + jsonString(key) + ":" + value }
}

/// `value` as a JSON string literal, escaped by Foundation's encoder.
public func jsonString(_ value: String) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .withoutEscapingSlashes
    // Encoding a String cannot fail.
    return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
}
