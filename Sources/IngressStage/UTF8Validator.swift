import NIOCore

/// Checks UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF) incrementally, so a text
/// message can be checked fragment by fragment and a code point may be split between fragments.
struct UTF8Validator {
    /// Continuation bytes the current code point still needs.
    private var pending = 0
    /// The range the next continuation byte must fall in (narrower than 0x80...0xBF right after some leads).
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    /// True when no code point is left unfinished.
    var isComplete: Bool { pending == 0 }

    /// Feeds more bytes; false as soon as they cannot be UTF-8 (the validator is then of no further use).
    mutating func consume(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { consume($0) }
    }

    mutating func consume(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        while index < bytes.count {
            // ASCII, the bulk of JSON, eight bytes at a time.
            if pending == 0, bytes.count - index >= 8,
               bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                index += 8
                continue
            }
            let byte = bytes[index]
            index += 1
            if pending == 0 {
                if byte < 0x80 { continue }
                switch byte {
                case 0xC2...0xDF: expect(1, 0x80, 0xBF)
                case 0xE0: expect(2, 0xA0, 0xBF)
                case 0xE1...0xEC, 0xEE...0xEF: expect(2, 0x80, 0xBF)
                case 0xED: expect(2, 0x80, 0x9F)  // U+D800...U+DFFF are surrogates
                case 0xF0: expect(3, 0x90, 0xBF)
                case 0xF1...0xF3: expect(3, 0x80, 0xBF)
                case 0xF4: expect(3, 0x80, 0x8F)  // nothing above U+10FFFF
                default: return false
                }
            } else {
                guard byte >= lower && byte <= upper else { return false }
                expect(pending - 1, 0x80, 0xBF)
            }
        }
        return true
    }

    private mutating func expect(_ count: Int, _ lower: UInt8, _ upper: UInt8) {
        pending = count
        self.lower = lower
        self.upper = upper
    }

    /// Whether a whole buffer is UTF-8.
    static func isValid(_ buffer: ByteBuffer) -> Bool {
        var validator = UTF8Validator()
        return validator.consume(buffer) && validator.isComplete
    }
}
