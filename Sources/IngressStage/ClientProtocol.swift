import Foundation
import NIOCore
import SwitchyardCore

/// A client's position in a subject, for recovery.
public struct RecoveryPosition: Equatable, Sendable {
    public var epoch: String
    public var seq: UInt64
}

/// A publish as the client sent it.
public struct ClientPublish: Equatable, Sendable {
    public var subject: String
    public var content: ByteBuffer
    public var closure: String?
    public var retained: Bool
    public var guaranteed: Bool
    public var binary: Bool
}

/// One client → server frame of protocol v1.
public enum ClientRequest: Equatable, Sendable {
    case connect(token: String?)
    case subscribe(subjects: [String], history: Int, recover: [String: RecoveryPosition])
    case unsubscribe(subjects: [String])
    case publish(ClientPublish)
    case ping
}

/// Why a frame could not be understood; sent back as `{"op":"error","code":...,"reason":...}`.
public struct ClientFrameError: Error, Equatable, Sendable {
    public var code: String
    public var reason: String

    static func invalidJSON(_ reason: String) -> Self { Self(code: "INVALID_JSON", reason: reason) }
    static func unknownOp(_ op: String) -> Self { Self(code: "UNKNOWN_OP", reason: "unknown op '\(op)'") }
    static func invalidFrame(_ reason: String) -> Self { Self(code: "INVALID_FRAME", reason: reason) }
}

/// Parses client frames (JSON text, one object per frame, `op` first) with `ClientJSONReader`.
public enum ClientFrameParser {
    private typealias Fields = [ClientJSONMember]

    public static func parse(_ text: ByteBuffer) -> Result<ClientRequest, ClientFrameError> {
        let fields: Fields
        switch ClientJSONReader.parse(text) {
        case .failure:
            return .failure(.invalidJSON("the frame is not valid JSON"))
        case .success(.object(let members)):
            fields = members
        case .success:
            return .failure(.invalidJSON("the frame is not a JSON object"))
        }
        guard let op = fields["op"]?.string else { return .failure(.invalidFrame("missing string field 'op'")) }
        do {
            switch op {
            case "connect":
                return .success(.connect(token: try optionalString(fields, "token")))
            case "subscribe":
                let subjects = try subjectList(fields)
                let history = try optionalCount(fields, "history") ?? 0
                var recover: [String: RecoveryPosition] = [:]
                if let positions = fields["recover"] {
                    guard case .object(let positions) = positions else {
                        throw ClientFrameError.invalidFrame("'recover' must be an object of subject → {epoch, seq}")
                    }
                    for member in positions {
                        guard case .object(let position) = member.value, let epoch = position["epoch"]?.string,
                              case .number(let number) = position["seq"], let seq = number.unsignedInteger else {
                            throw ClientFrameError.invalidFrame("recover['\(member.name)'] must be {\"epoch\": string, \"seq\": unsigned integer}")
                        }
                        recover[member.name] = RecoveryPosition(epoch: epoch, seq: seq)
                    }
                }
                return .success(.subscribe(subjects: subjects, history: history, recover: recover))
            case "unsubscribe":
                return .success(.unsubscribe(subjects: try subjectList(fields)))
            case "publish":
                return .success(.publish(try publish(fields)))
            case "ping":
                return .success(.ping)
            default:
                return .failure(.unknownOp(op))
            }
        } catch let error as ClientFrameError {
            return .failure(error)
        } catch {
            return .failure(.invalidFrame("\(error)"))
        }
    }

    private static func publish(_ fields: Fields) throws -> ClientPublish {
        guard let subject = fields["subject"]?.string else {
            throw ClientFrameError.invalidFrame("publish needs a string field 'subject'")
        }
        guard let content = fields["content"]?.string else {
            throw ClientFrameError.invalidFrame("publish needs a string field 'content'")
        }
        let binary: Bool
        switch try optionalString(fields, "encoding") {
        case nil, "utf8", "text": binary = false
        case "base64": binary = true
        case let other?: throw ClientFrameError.invalidFrame("unknown encoding '\(other)' (use base64)")
        }
        var bytes = ByteBuffer()
        if binary {
            guard let decoded = Data(base64Encoded: content) else {
                throw ClientFrameError.invalidFrame("'content' is not valid base64")
            }
            bytes.writeBytes(decoded)
        } else {
            bytes.writeString(content)
        }
        let guaranteed: Bool
        switch try optionalString(fields, "qos") {
        case nil, "GUARANTEED": guaranteed = true
        case "STANDARD": guaranteed = false
        case let other?: throw ClientFrameError.invalidFrame("unknown qos '\(other)' (STANDARD or GUARANTEED)")
        }
        return ClientPublish(subject: subject, content: bytes, closure: try optionalString(fields, "closure"),
                             retained: try optionalBool(fields, "retained") ?? true,
                             guaranteed: guaranteed, binary: binary)
    }

    private static func subjectList(_ fields: Fields) throws -> [String] {
        guard case .array(let subjects) = fields["subjects"], !subjects.isEmpty else {
            throw ClientFrameError.invalidFrame("'subjects' must be a non-empty array of strings")
        }
        return try subjects.map {
            guard let subject = $0.string else {
                throw ClientFrameError.invalidFrame("'subjects' must be a non-empty array of strings")
            }
            return subject
        }
    }

    /// A field that may be absent or null, else a string.
    private static func optionalString(_ fields: Fields, _ name: String) throws -> String? {
        switch fields[name] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        default: throw ClientFrameError.invalidFrame("'\(name)' has the wrong type")
        }
    }

    /// A field that may be absent or null, else `true` or `false` (not a number).
    private static func optionalBool(_ fields: Fields, _ name: String) throws -> Bool? {
        switch fields[name] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        default: throw ClientFrameError.invalidFrame("'\(name)' must be true or false")
        }
    }

    private static func optionalCount(_ fields: Fields, _ name: String) throws -> Int? {
        guard let value = fields[name] else { return nil }
        guard case .number(let number) = value, let count = number.unsignedInteger, count <= UInt64(Int32.max) else {
            throw ClientFrameError.invalidFrame("'\(name)' must be a non-negative integer")
        }
        return Int(count)
    }
}
