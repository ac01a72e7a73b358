import NIOCore

/// A JSON value of a client frame.
///
/// Client frames are read by `ClientJSONReader`, not `JSONSerialization`: Foundation builds bridged `Any`
/// dictionaries and `NSNumber`s for every frame, which a publish-heavy run measured at about a third of
/// ws-ingress's CPU (docs/BENCHMARKS.md, "WebSocket → Kafka saturated").
enum ClientJSONValue: Equatable {
    /// Members in the order written (a frame has a handful: a linear search is cheaper than hashing each name);
    /// `member(_:)` finds one.
    case object([ClientJSONMember])
    case array([ClientJSONValue])
    case string(String)
    case number(ClientJSONNumber)
    case bool(Bool)
    case null

    var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}

struct ClientJSONMember: Equatable {
    let name: String
    let value: ClientJSONValue
}

extension [ClientJSONMember] {
    /// The value of member `name`; of a name given twice the last counts (as with `JSONSerialization`).
    subscript(name: String) -> ClientJSONValue? {
        last { $0.name == name }?.value
    }
}

/// A JSON number: its value as a `Double`, and exactly when it is written as a non-negative integer that fits.
struct ClientJSONNumber: Equatable {
    let double: Double
    /// Set for `0`, `42`, ... up to `UInt64.max` written without fraction or exponent.
    let exactUnsigned: UInt64?

    /// A non-negative whole number (`41`, `41.0`, `4.1e1`) below 1.8e19, or nil.
    var unsignedInteger: UInt64? {
        if let exactUnsigned { return exactUnsigned }
        guard double >= 0, double == double.rounded(.down), double < 1.8e19 else { return nil }
        return UInt64(double)
    }
}

/// Why a frame is not JSON (`INVALID_JSON`).
struct ClientJSONError: Error, Equatable {
    let reason: String
}

/// A strict RFC 8259 reader of one JSON text: no trailing commas, comments, single quotes, unescaped control
/// characters, lone UTF-16 surrogates or trailing content; nesting at most `maxDepth` deep (a client frame needs
/// three levels), so hostile input cannot exhaust the stack. The bytes are a text frame's, already checked to be
/// UTF-8 by the WebSocket layer.
struct ClientJSONReader {
    static let maxDepth = 32

    static func parse(_ buffer: ByteBuffer) -> Result<ClientJSONValue, ClientJSONError> {
        buffer.withUnsafeReadableBytes { bytes in
            var reader = ClientJSONReader(bytes: bytes)
            do {
                reader.skipWhitespace()
                let value = try reader.value(depth: 0)
                reader.skipWhitespace()
                guard reader.index == bytes.count else { throw reader.error("content after the JSON value") }
                return .success(value)
            } catch let error as ClientJSONError {
                return .failure(error)
            } catch {
                return .failure(ClientJSONError(reason: "\(error)"))
            }
        }
    }

    private let bytes: UnsafeRawBufferPointer
    private var index = 0

    private init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private func error(_ what: String) -> ClientJSONError {
        ClientJSONError(reason: "\(what) at byte \(index)")
    }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
    }

    private mutating func expect(_ literal: StaticString, _ value: ClientJSONValue) throws -> ClientJSONValue {
        let expected = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        guard bytes.count - index >= expected.count,
              expected.indices.allSatisfy({ bytes[index + $0] == expected[$0] }) else {
            throw error("unexpected characters")
        }
        index += expected.count
        return value
    }

    private mutating func value(depth: Int) throws -> ClientJSONValue {
        guard let byte = current else { throw error("unexpected end") }
        switch byte {
        case UInt8(ascii: "{"): return try object(depth: depth + 1)
        case UInt8(ascii: "["): return try array(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): return try expect("true", .bool(true))
        case UInt8(ascii: "f"): return try expect("false", .bool(false))
        case UInt8(ascii: "n"): return try expect("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw error("unexpected character")
        }
    }

    private mutating func object(depth: Int) throws -> ClientJSONValue {
        guard depth <= Self.maxDepth else { throw error("nested more than \(Self.maxDepth) levels") }
        index += 1  // {
        var members: [ClientJSONMember] = []
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            index += 1
            return .object(members)
        }
        while true {
            guard current == UInt8(ascii: "\"") else { throw error("expected a member name") }
            let name = try string()
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':'") }
            index += 1
            skipWhitespace()
            members.append(ClientJSONMember(name: name, value: try value(depth: depth)))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","):
                index += 1
                skipWhitespace()
            case UInt8(ascii: "}"):
                index += 1
                return .object(members)
            default:
                throw error("expected ',' or '}'")
            }
        }
    }

    private mutating func array(depth: Int) throws -> ClientJSONValue {
        guard depth <= Self.maxDepth else { throw error("nested more than \(Self.maxDepth) levels") }
        index += 1  // [
        var elements: [ClientJSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            index += 1
            return .array(elements)
        }
        while true {
            elements.append(try value(depth: depth))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","):
                index += 1
                skipWhitespace()
            case UInt8(ascii: "]"):
                index += 1
                return .array(elements)
            default:
                throw error("expected ',' or ']'")
            }
        }
    }

    /// A string from its opening quote; without escapes it is one copy of the bytes.
    private mutating func string() throws -> String {
        index += 1  // "
        let start = index
        while let byte = current, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") {
            guard byte >= 0x20 else { throw error("control character in a string") }
            index += 1
        }
        guard let stop = current else { throw error("unterminated string") }
        if stop == UInt8(ascii: "\"") {
            index += 1
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index - 1]), as: UTF8.self)
        }
        var unescaped = Array(bytes[start..<index])
        while true {
            guard let byte = current else { throw error("unterminated string") }
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: unescaped, as: UTF8.self)
            case UInt8(ascii: "\\"):
                try escape(into: &unescaped)
            case ..<0x20:
                throw error("control character in a string")
            default:
                unescaped.append(byte)
            }
        }
    }

    /// One escape after its backslash, appended as UTF-8.
    private mutating func escape(into out: inout [UInt8]) throws {
        guard let byte = current else { throw error("unterminated string") }
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(byte)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = UInt32(try hex4())
            if (0xD800..<0xDC00).contains(scalar) {
                guard current == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u")
                else { throw error("lone UTF-16 surrogate") }
                index += 2
                let low = UInt32(try hex4())
                guard (0xDC00..<0xE000).contains(low) else { throw error("lone UTF-16 surrogate") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(scalar) {
                throw error("lone UTF-16 surrogate")
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
            out.append(contentsOf: unicode.utf8)
        default:
            throw error("invalid escape")
        }
    }

    private mutating func hex4() throws -> UInt16 {
        guard bytes.count - index >= 4 else { throw error("short \\u escape") }
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("invalid \\u escape")
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    private mutating func number() throws -> ClientJSONNumber {
        let start = index
        let negative = current == UInt8(ascii: "-")
        if negative { index += 1 }
        var exact: UInt64? = 0
        guard let first = current, isDigit(first) else { throw error("invalid number") }
        if first == UInt8(ascii: "0") {
            index += 1
        } else {
            while let byte = current, isDigit(byte) {
                exact = exact.flatMap { value in
                    let (times10, overflow) = value.multipliedReportingOverflow(by: 10)
                    let (sum, overflow2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
                    return overflow || overflow2 ? nil : sum
                }
                index += 1
            }
        }
        var isInteger = true
        if current == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard let byte = current, isDigit(byte) else { throw error("invalid number") }
            while let byte = current, isDigit(byte) { index += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard let byte = current, isDigit(byte) else { throw error("invalid number") }
            while let byte = current, isDigit(byte) { index += 1 }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let double = Double(text) else { throw error("invalid number") }
        return ClientJSONNumber(double: double, exactUnsigned: isInteger && !negative ? exact : nil)
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
}
