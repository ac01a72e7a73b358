#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import SwitchyardCore

/// Monotonic clock in nanoseconds (one process sends and receives, so no wall clock is needed).
@inline(__always)
func monotonicNanos() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// A byte string kept in memory for the life of the process, searched for with `memchr` + `memcmp`.
// @unchecked Sendable: the bytes are written once in init, never freed, and only read after.
struct Needle: @unchecked Sendable {
    let pointer: UnsafeRawPointer
    let count: Int

    init(_ string: StaticString) {
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: string.utf8CodeUnitCount, alignment: 1)
        bytes.copyMemory(from: string.utf8Start, byteCount: string.utf8CodeUnitCount)
        pointer = UnsafeRawPointer(bytes)
        count = string.utf8CodeUnitCount
    }

    /// Whether `bytes` starts with this needle.
    @inline(__always)
    func isPrefix(of bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= count && memcmp(bytes.baseAddress!, pointer, count) == 0
    }

    /// The offset just past the first occurrence of this needle in `bytes`, searching from `from`.
    @inline(__always)
    func end(in bytes: UnsafeRawBufferPointer, from: Int = 0) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        let first = Int32(pointer.load(as: UInt8.self))
        var start = from
        let last = bytes.count - count  // the last offset where the needle fits
        while start <= last {
            guard let hit = memchr(base + start, first, last - start + 1) else { return nil }
            let offset = base.distance(to: UnsafeRawPointer(hit))
            if memcmp(hit, pointer, count) == 0 { return offset + count }
            start = offset + 1
        }
        return nil
    }
}

/// Cheap scanning of the server frames the bench cares about: no JSON parser on the hot path.
enum Scan {
    static let message = Needle(#"{"op":"message""#)
    static let subscribed = Needle(#"{"op":"subscribed""#)
    static let publishStatus = Needle(#"{"op":"publish_status""#)
    static let error = Needle(#"{"op":"error""#)
    static let contentTimestamp = Needle(#""content":"t="#)
    static let seq = Needle(#""seq":"#)
    static let closure = Needle(#""closure":""#)
    static let statusOK = Needle(#""status":"OK""#)
    static let statusAllow = Needle(#""status":"ALLOW""#)

    /// The unsigned decimal at `offset`, if there is at least one digit.
    @inline(__always)
    static func decimal(in bytes: UnsafeRawBufferPointer, at offset: Int) -> (value: UInt64, end: Int)? {
        var index = offset
        var value: UInt64 = 0
        while index < bytes.count {
            let digit = bytes[index] &- UInt8(ascii: "0")
            if digit > 9 { break }
            value = value &* 10 &+ UInt64(digit)
            index += 1
        }
        return index == offset ? nil : (value, index)
    }
}

extension ByteBuffer {
    /// Writes `value` in decimal without going through `String`.
    @inline(__always)
    mutating func writeDecimal(_ value: UInt64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for 20 digits
        let count = withUnsafeMutableBytes(of: &digits) { raw -> Int in
            var remaining = value
            var index = raw.count
            repeat {
                index -= 1
                raw[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remaining % 10)
                remaining /= 10
            } while remaining > 0
            return raw.count - index
        }
        withUnsafeBytes(of: &digits) { raw in
            _ = writeBytes(UnsafeRawBufferPointer(rebasing: raw[(raw.count - count)...]))
        }
    }
}

/// Client → server frames of protocol v1, as the bench sends them.
enum ClientFrames {
    static func subscribe(_ subjects: [String]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeStaticString(#"{"op":"subscribe","subjects":["#)
        for (index, subject) in subjects.enumerated() {
            if index > 0 { buffer.writeStaticString(",") }
            buffer.writeJSONString(subject)
        }
        buffer.writeStaticString("]}")
        return buffer
    }

    /// The bytes of a publish frame up to the timestamp: `{"op":"publish","subject":"/s","content":"t=`.
    static func publishPrefix(subject: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeStaticString(#"{"op":"publish","subject":"#)
        buffer.writeJSONString(subject)
        buffer.writeStaticString(#","content":"t="#)
        return buffer
    }

    /// `prefix` + `<sentAt>` padded with dots to `payload` bytes of content + closure `<sentAt>-<subjectIndex>` +
    /// the options.
    @inline(__always)
    static func publish(prefix: ByteBuffer, sentAt: UInt64, payload: Int, subjectIndex: Int, suffix: ByteBuffer,
                        allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: prefix.readableBytes + payload + 64 + suffix.readableBytes)
        buffer.writeImmutableBuffer(prefix)
        let contentStart = buffer.writerIndex - 2  // "t=" belongs to the content
        buffer.writeDecimal(sentAt)
        let padding = payload - (buffer.writerIndex - contentStart)
        if padding > 0 { buffer.writeRepeatingByte(UInt8(ascii: "."), count: padding) }
        buffer.writeStaticString(#"","closure":""#)
        buffer.writeDecimal(sentAt)
        buffer.writeInteger(UInt8(ascii: "-"))
        buffer.writeDecimal(UInt64(subjectIndex))
        buffer.writeInteger(UInt8(ascii: "\""))
        buffer.writeImmutableBuffer(suffix)
        return buffer
    }
}

/// A small xorshift generator for WebSocket masking keys (the system generator costs a syscall per frame).
struct FastRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}
