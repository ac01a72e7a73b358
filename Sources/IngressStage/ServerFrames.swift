import Foundation
import NIOCore
import SwitchyardCore

/// Encodes server → client frames of protocol v1 as JSON text, straight into a `ByteBuffer`.
///
/// A message frame is encoded once per ingress and the same bytes go to every subscriber.
public enum ServerFrames {
    public static func message(_ message: Message, kind: MessageKind, allocator: ByteBufferAllocator) -> ByteBuffer {
        let binary = message.flags.contains(.binary)
        var buffer = allocator.buffer(capacity: message.content.readableBytes * (binary ? 4 : 1) / (binary ? 3 : 1)
                                      + message.subject.utf8.count + message.epoch.utf8.count + 128)
        buffer.writeStaticString(#"{"op":"message","subject":"#)
        buffer.writeJSONString(message.subject)
        buffer.writeStaticString(#","content":""#)
        if binary {
            buffer.writeString(Data(message.content.readableBytesView).base64EncodedString())
        } else {
            buffer.writeJSONEscaped(message.content.readableBytesView)
        }
        buffer.writeStaticString("\"")
        if binary { buffer.writeStaticString(#","encoding":"base64""#) }
        buffer.writeStaticString(#","type":""#)
        buffer.writeString(kind.protocolName)
        buffer.writeStaticString(#"","seq":"#)
        buffer.writeString(String(message.seq))
        buffer.writeStaticString(#","epoch":"#)
        buffer.writeJSONString(message.epoch)
        buffer.writeStaticString(message.flags.contains(.retained) ? #","retained":true"# : #","retained":false"#)
        if !message.closure.isEmpty {
            buffer.writeStaticString(#","closure":"#)
            buffer.writeJSONString(message.closure)
        }
        if !message.flags.contains(.guaranteed) { buffer.writeStaticString(#","qos":"STANDARD""#) }
        buffer.writeStaticString("}")
        return buffer
    }

    public static func subscribed(_ subject: String, status: String, reason: String? = nil) -> ByteBuffer {
        object(["op": "subscribed", "subject": subject, "status": status, "reason": reason])
    }

    public static func status(_ subject: String, status: String) -> ByteBuffer {
        object(["op": "status", "subject": subject, "status": status])
    }

    /// A status of the whole connection (no subject): `TOKEN_TO_EXPIRE`, `TOKEN_EXPIRED`.
    public static func connectionStatus(_ status: String) -> ByteBuffer {
        object(["op": "status", "status": status])
    }

    public static func publishStatus(closure: String, status: String, reason: String? = nil) -> ByteBuffer {
        object(["op": "publish_status", "closure": closure, "status": status, "reason": reason])
    }

    public static func error(_ error: ClientFrameError) -> ByteBuffer {
        object(["op": "error", "code": error.code, "reason": error.reason])
    }

    public static let pong: ByteBuffer = object(["op": "pong"])

    private static func object(_ fields: KeyValuePairs<String, String?>) -> ByteBuffer {
        // Sized up front (names, values, quotes and separators; escapes may still grow it) so that writing it
        // does not reallocate as it goes.
        var capacity = 2
        for (key, value) in fields { capacity += key.utf8.count + (value?.utf8.count ?? 0) + 6 }
        var buffer = ByteBufferAllocator().buffer(capacity: capacity)
        buffer.writeJSONObject(fields)
        return buffer
    }
}
