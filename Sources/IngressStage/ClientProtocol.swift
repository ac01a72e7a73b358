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

/// Parses client frames (JSON text, one object per frame, `op` first).
public enum ClientFrameParser {
    public static func parse(_ text: ByteBuffer) -> Result<ClientRequest, ClientFrameError> {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(text.readableBytesView), options: [])
        } catch {
            return .failure(.invalidJSON("the frame is not valid JSON"))
        }
        guard let fields = object as? [String: Any] else { return .failure(.invalidJSON("the frame is not a JSON object")) }
        guard let op = fields["op"] as? String else { return .failure(.invalidFrame("missing string field 'op'")) }
        do {
            switch op {
            case "connect":
                return .success(.connect(token: try optional(fields, "token", as: String.self)))
            case "subscribe":
                let subjects = try subjectList(fields)
                let history = try optionalCount(fields, "history") ?? 0
                var recover: [String: RecoveryPosition] = [:]
                if let positions = fields["recover"] {
                    guard let positions = positions as? [String: Any] else {
                        throw ClientFrameError.invalidFrame("'recover' must be an object of subject → {epoch, seq}")
                    }
                    for (subject, value) in positions {
                        guard let position = value as? [String: Any], let epoch = position["epoch"] as? String,
                              let seq = unsignedInteger(position["seq"]) else {
                            throw ClientFrameError.invalidFrame("recover['\(subject)'] must be {\"epoch\": string, \"seq\": unsigned integer}")
                        }
                        recover[subject] = RecoveryPosition(epoch: epoch, seq: seq)
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

    private static func publish(_ fields: [String: Any]) throws -> ClientPublish {
        guard let subject = fields["subject"] as? String else {
            throw ClientFrameError.invalidFrame("publish needs a string field 'subject'")
        }
        guard let content = fields["content"] as? String else {
            throw ClientFrameError.invalidFrame("publish needs a string field 'content'")
        }
        let binary: Bool
        switch try optional(fields, "encoding", as: String.self) {
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
        switch try optional(fields, "qos", as: String.self) {
        case nil, "GUARANTEED": guaranteed = true
        case "STANDARD": guaranteed = false
        case let other?: throw ClientFrameError.invalidFrame("unknown qos '\(other)' (STANDARD or GUARANTEED)")
        }
        return ClientPublish(subject: subject, content: bytes, closure: try optional(fields, "closure", as: String.self),
                             retained: try optional(fields, "retained", as: Bool.self) ?? true,
                             guaranteed: guaranteed, binary: binary)
    }

    private static func subjectList(_ fields: [String: Any]) throws -> [String] {
        guard let subjects = fields["subjects"] as? [Any], let strings = subjects as? [String], !strings.isEmpty else {
            throw ClientFrameError.invalidFrame("'subjects' must be a non-empty array of strings")
        }
        return strings
    }

    private static func optional<T>(_ fields: [String: Any], _ name: String, as type: T.Type) throws -> T? {
        guard let value = fields[name], !(value is NSNull) else { return nil }
        if T.self == Bool.self {
            // JSON numbers would also cast to Bool: accept only true and false.
            guard let number = value as? NSNumber, isBoolean(number) else {
                throw ClientFrameError.invalidFrame("'\(name)' must be true or false")
            }
            return number.boolValue as? T
        }
        guard let typed = value as? T else { throw ClientFrameError.invalidFrame("'\(name)' has the wrong type") }
        return typed
    }

    /// Foundation marks JSON booleans with the Objective-C type code of `char`.
    private static func isBoolean(_ number: NSNumber) -> Bool { String(cString: number.objCType) == "c" }

    private static func optionalCount(_ fields: [String: Any], _ name: String) throws -> Int? {
        guard let value = fields[name] else { return nil }
        guard let count = unsignedInteger(value), count <= UInt64(Int32.max) else {
            throw ClientFrameError.invalidFrame("'\(name)' must be a non-negative integer")
        }
        return Int(count)
    }

    private static func unsignedInteger(_ value: Any?) -> UInt64? {
        guard let number = value as? NSNumber, !isBoolean(number) else { return nil }
        let double = number.doubleValue
        guard double >= 0, double == double.rounded(.down), double < 1.8e19 else { return nil }
        return number.uint64Value
    }
}
