import NIOCore

/// The NATS client protocol the bench speaks (over WebSocket): after the server's INFO, CONNECT
/// `{"verbose":false,"pedantic":false}`, then for a subscriber SUB and a PING whose PONG confirms the SUB (the
/// server handles a connection's commands in order). Publishes with PUB; reads MSG, PING (answered PONG),
/// PONG, +OK and -ERR.
struct NATSSession: PeerSession {
    /// The longest control line the bench accepts (INFO is the longest, a few hundred bytes).
    static let maxLine = 64 * 1024

    private let subjects: [String]
    private var subscribeTo: Int?
    private var awaitingSubscribePong = false
    private static let crlf = Needle("\r\n")

    init(subjects: [String]) {
        self.subjects = subjects
    }

    mutating func opening(subscribeTo subjectIndex: Int?) -> ByteBuffer {
        subscribeTo = subjectIndex
        return ByteBuffer()  // the server speaks first (INFO)
    }

    func publish(subjectIndex: Int, payload: ByteBuffer) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(payload.readableBytes + subjects[subjectIndex].utf8.count + 24)
        out.writeStaticString("PUB ")
        out.writeString(subjects[subjectIndex])
        out.writeStaticString(" ")
        out.writeDecimal(UInt64(payload.readableBytes))
        out.writeStaticString("\r\n")
        out.writeImmutableBuffer(payload)
        out.writeStaticString("\r\n")
        return out
    }

    var keepalive: (every: TimeAmount, bytes: ByteBuffer)? { nil }  // the server pings; PONG answers it

    mutating func consume(_ buffer: inout ByteBuffer, _ event: (PeerEvent) -> Void) {
        while buffer.readableBytes > 0 {
            let lineEnd: Int? = buffer.withUnsafeReadableBytes { Self.crlf.end(in: $0) }
            guard let lineEnd else {
                if buffer.readableBytes > Self.maxLine {
                    event(.failure("NATS line longer than \(Self.maxLine) bytes"))
                    buffer.clear()
                }
                return
            }
            let line = buffer.getSlice(at: buffer.readerIndex, length: lineEnd - 2) ?? ByteBuffer()
            if line.readableBytes >= 4, line.getString(at: line.readerIndex, length: 4) == "MSG " {
                // MSG <subject> <sid> [reply-to] <#bytes>, then the payload and CRLF.
                guard let count = Self.lastDecimal(line) else {
                    event(.failure("malformed MSG line"))
                    buffer.clear()
                    return
                }
                guard buffer.readableBytes >= lineEnd + count + 2 else { return }
                buffer.moveReaderIndex(forwardBy: lineEnd)
                if let payload = buffer.readSlice(length: count) { event(.message(payload)) }
                buffer.moveReaderIndex(forwardBy: 2)
                continue
            }
            buffer.moveReaderIndex(forwardBy: lineEnd)
            let text = String(buffer: line)
            if text.hasPrefix("INFO ") {
                var out = ByteBuffer()
                out.writeStaticString("CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"switchyard-bench\"}\r\n")
                if let subscribeTo {
                    out.writeString("SUB \(subjects[subscribeTo]) 1\r\nPING\r\n")
                    awaitingSubscribePong = true
                }
                event(.reply(out))
            } else if text == "PING" {
                event(.reply(ByteBuffer(string: "PONG\r\n")))
            } else if text == "PONG" {
                if awaitingSubscribePong {
                    awaitingSubscribePong = false
                    event(.subscribed(granted: true))
                }
            } else if text.hasPrefix("-ERR") {
                event(.failure(text))
            }
            // +OK and anything else: nothing to do.
        }
    }

    /// The decimal number that ends `line`.
    private static func lastDecimal(_ line: ByteBuffer) -> Int? {
        line.withUnsafeReadableBytes { bytes -> Int? in
            var start = bytes.count
            while start > 0, bytes[start - 1] >= UInt8(ascii: "0"), bytes[start - 1] <= UInt8(ascii: "9") { start -= 1 }
            guard start < bytes.count, bytes.count - start <= 9, let (value, _) = Scan.decimal(in: bytes, at: start)
            else { return nil }
            return Int(value)
        }
    }
}
