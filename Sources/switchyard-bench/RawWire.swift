import NIOCore

/// The floor program's protocol (scripts/bench-floor.c) over plain TCP: fixed 110-byte records, each shaped as
/// an unmasked WebSocket text frame (`0x81`, length 108) with a 108-byte payload. A subscriber sends one record
/// `sub=<subject>;` and gets one record `ok` back; a publisher sends records `s=<subject>;<content>`, which the
/// floor writes unchanged to every subscriber of the subject (one `write()` per delivery, or several coalesced).
struct RawSession: PeerSession {
    static let recordSize = 110
    static let payloadSize = recordSize - 2

    private var awaitingOK = false

    mutating func opening(subscribeTo subjectIndex: Int?) -> ByteBuffer {
        guard let subjectIndex else { return ByteBuffer() }
        awaitingOK = true
        var body = ByteBuffer()
        body.writeString("sub=\(subjectIndex);")
        return Self.record(&body)
    }

    func publish(subjectIndex: Int, payload: ByteBuffer) -> ByteBuffer {
        var body = ByteBuffer()
        body.writeString("s=\(subjectIndex);")
        body.writeImmutableBuffer(payload)
        return Self.record(&body)
    }

    var keepalive: (every: TimeAmount, bytes: ByteBuffer)? { nil }

    mutating func consume(_ buffer: inout ByteBuffer, _ event: (PeerEvent) -> Void) {
        while let record = buffer.readSlice(length: Self.recordSize) {
            let payload = record.getSlice(at: record.readerIndex + 2, length: Self.payloadSize) ?? ByteBuffer()
            if awaitingOK {
                awaitingOK = false
                event(.subscribed(granted: payload.getString(at: payload.readerIndex, length: 3) == "ok;"))
            } else {
                event(.message(payload))
            }
        }
    }

    /// `body` cut or padded with dots to the payload size, behind the frame header.
    private static func record(_ body: inout ByteBuffer) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(recordSize)
        out.writeBytes([0x81, UInt8(payloadSize)])
        var slice = body.readSlice(length: min(body.readableBytes, payloadSize)) ?? ByteBuffer()
        out.writeBuffer(&slice)
        out.writeRepeatingByte(UInt8(ascii: "."), count: recordSize - out.readableBytes)
        return out
    }
}
