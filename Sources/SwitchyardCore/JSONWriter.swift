import NIOCore

/// JSON text written straight into a `ByteBuffer`, without `JSONSerialization`: the server frames of ws-ingress
/// and of the bench's baseline server.
extension ByteBuffer {
    /// Writes a JSON object of string fields in the given order; nil fields are left out.
    public mutating func writeJSONObject(_ fields: KeyValuePairs<String, String?>) {
        writeStaticString("{")
        var first = true
        for (key, value) in fields {
            guard let value else { continue }
            if !first { writeStaticString(",") }
            first = false
            writeJSONString(key)
            writeStaticString(":")
            writeJSONString(value)
        }
        writeStaticString("}")
    }

    /// Writes `string` as a JSON string literal.
    public mutating func writeJSONString(_ string: String) {
        writeStaticString("\"")
        writeJSONEscaped(string.utf8)
        writeStaticString("\"")
    }

    /// Writes UTF-8 bytes escaped for a JSON string (quotes, backslashes and control characters); runs that need
    /// no escaping are copied whole.
    public mutating func writeJSONEscaped<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        let copied: Void? = bytes.withContiguousStorageIfAvailable { writeJSONEscaped(UnsafeRawBufferPointer($0)) }
        if copied == nil { Array(bytes).withUnsafeBytes { writeJSONEscaped($0) } }
    }

    private mutating func writeJSONEscaped(_ bytes: UnsafeRawBufferPointer) {
        var runStart = 0
        for (index, byte) in bytes.enumerated() where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<index]))
            runStart = index + 1
            switch byte {
            case UInt8(ascii: "\""): writeStaticString("\\\"")
            case UInt8(ascii: "\\"): writeStaticString("\\\\")
            case UInt8(ascii: "\n"): writeStaticString("\\n")
            case UInt8(ascii: "\r"): writeStaticString("\\r")
            case UInt8(ascii: "\t"): writeStaticString("\\t")
            default:
                writeStaticString("\\u00")
                writeInteger(Self.hexDigits[Int(byte >> 4)])
                writeInteger(Self.hexDigits[Int(byte & 0xF)])
            }
        }
        writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart...]))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
