import NIOCore
import NIOWebSocket

/// The RFC 6455 rules for frames a client sends, as a state machine without a socket: checks masks, reserved bits,
/// opcodes, control frames, close codes and UTF-8, and reassembles fragmented messages (control frames may come
/// between the fragments) up to a size limit.
///
/// NIO's `WebSocketFrameDecoder` already refuses frames above the frame limit and control frames that are
/// fragmented or longer than 125 bytes. `NIOWebSocketFrameAggregator` is not used: it checks none of the rules
/// above, answers no violation with a close code, and holds every fragment as a slice of its read buffer (so a
/// message of many small fragments can pin far more memory than its size); this copies fragments into one buffer.
struct WebSocketReceiver {
    /// What the connection should do about one frame.
    enum Outcome: Equatable {
        /// A complete text message (valid UTF-8) or binary message, unmasked.
        case message(WebSocketOpcode, ByteBuffer)
        /// Answer with a pong carrying this payload.
        case ping(ByteBuffer)
        /// The client closes: answer with a close frame carrying this payload (its code, or nothing), then close.
        case close(ByteBuffer)
        /// The client broke the protocol: close with this code and reason.
        case fail(WebSocketErrorCode, String)
        /// Nothing to do (a fragment was kept, a pong arrived, or the conversation is over).
        case none
    }

    private enum State {
        case idle
        /// A fragmented message is open: its opcode, its bytes so far, and its UTF-8 check (text only).
        case assembling(WebSocketOpcode, ByteBuffer, UTF8Validator?)
        /// A close was received or the connection failed: nothing more is read.
        case closed
    }

    /// The largest message, whole or reassembled, in bytes.
    let maxMessageSize: Int
    private var state = State.idle
    /// One for every connection (an allocator is four function pointers: 32 bytes a connection otherwise).
    private static let allocator = ByteBufferAllocator()

    init(maxMessageSize: Int) {
        self.maxMessageSize = maxMessageSize
    }

    mutating func receive(_ frame: WebSocketFrame) -> Outcome {
        if case .closed = state { return .none }
        let outcome = check(frame)
        if case .fail = outcome { state = .closed }
        if case .close = outcome { state = .closed }
        return outcome
    }

    private mutating func check(_ frame: WebSocketFrame) -> Outcome {
        guard frame.maskKey != nil else { return .fail(.protocolError, "client frames must be masked") }
        guard !frame.rsv1 && !frame.rsv2 && !frame.rsv3 else {
            return .fail(.protocolError, "reserved bits set without a negotiated extension")
        }
        if frame.opcode.isControlOpcode && (!frame.fin || frame.length > 125) {
            return .fail(.protocolError, "control frames must be whole and at most 125 bytes")
        }
        switch frame.opcode {
        case .text, .binary:
            if case .assembling = state {
                return .fail(.protocolError, "a new message began before the fragmented one ended")
            }
            return frame.fin ? whole(frame) : begin(frame)
        case .continuation:
            guard case .assembling(let opcode, var buffer, var utf8) = state else {
                return .fail(.protocolError, "a continuation frame with no message to continue")
            }
            state = .idle  // lets `buffer` grow without a copy
            return append(frame, to: opcode, &buffer, &utf8)
        case .ping:
            return .ping(frame.payloadUnmasked)
        case .pong:
            return .none
        case .connectionClose:
            return close(frame.payloadUnmasked)
        default:
            return .fail(.protocolError, "reserved opcode \(UInt8(webSocketOpcode: frame.opcode))")
        }
    }

    private func whole(_ frame: WebSocketFrame) -> Outcome {
        guard frame.length <= maxMessageSize else { return tooLarge }
        let data = frame.payloadUnmasked
        if frame.opcode == .text && !UTF8Validator.isValid(data) { return invalidText }
        return .message(frame.opcode, data)
    }

    private mutating func begin(_ frame: WebSocketFrame) -> Outcome {
        guard frame.length <= maxMessageSize else { return tooLarge }
        var buffer = Self.allocator.buffer(capacity: min(frame.length * 2, maxMessageSize))
        var utf8: UTF8Validator? = frame.opcode == .text ? UTF8Validator() : nil
        return append(frame, to: frame.opcode, &buffer, &utf8)
    }

    /// Adds a fragment to the open message; delivers the message on the last fragment.
    private mutating func append(_ frame: WebSocketFrame, to opcode: WebSocketOpcode, _ buffer: inout ByteBuffer,
                                 _ utf8: inout UTF8Validator?) -> Outcome {
        guard frame.length <= maxMessageSize - buffer.readableBytes else { return tooLarge }
        var data = frame.payloadUnmasked
        if utf8 != nil, !utf8!.consume(data) { return invalidText }
        buffer.writeBuffer(&data)
        guard frame.fin else {
            state = .assembling(opcode, buffer, utf8)
            return .none
        }
        if let utf8, !utf8.isComplete { return invalidText }
        return .message(opcode, buffer)
    }

    private func close(_ payload: ByteBuffer) -> Outcome {
        guard payload.readableBytes > 0 else { return .close(payload) }
        var reason = payload
        guard let code = reason.readInteger(as: UInt16.self) else {
            return .fail(.protocolError, "a close payload must hold a 2-byte code")
        }
        guard Self.isAcceptableCloseCode(code) else {
            return .fail(.protocolError, "close code \(code) must not be sent")
        }
        guard UTF8Validator.isValid(reason) else { return .fail(.protocolError, "the close reason is not UTF-8") }
        return .close(payload.getSlice(at: payload.readerIndex, length: 2) ?? payload)
    }

    /// Close codes an endpoint may send (RFC 6455 7.4, IANA registry): not 1004-1006 or 1015 (reserved, or only
    /// for reporting), not the unassigned 1016-2999, not outside 1000-4999.
    static func isAcceptableCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }

    private var tooLarge: Outcome { .fail(.messageTooLarge, "message larger than \(maxMessageSize) bytes") }
    private var invalidText: Outcome { .fail(.dataInconsistentWithMessage, "text message is not valid UTF-8") }
}

extension WebSocketFrame {
    /// The payload with the client's mask removed, eight bytes at a time (NIO's `unmaskedData` XORs byte by byte:
    /// 3 % of ws-ingress's samples on a publish-heavy run).
    var payloadUnmasked: ByteBuffer {
        guard let key = maskKey else { return data }
        var key64: UInt64 = 0
        withUnsafeMutableBytes(of: &key64) { word in
            for index in word.indices { word[index] = key[index % 4] }
        }
        var payload = data
        payload.withUnsafeMutableReadableBytes { bytes in
            var index = 0
            while bytes.count - index >= 8 {
                let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                bytes.storeBytes(of: word ^ key64, toByteOffset: index, as: UInt64.self)
                index += 8
            }
            while index < bytes.count {
                bytes[index] ^= key[index % 4]
                index += 1
            }
        }
        return payload
    }
}
