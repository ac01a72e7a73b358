import NIOCore
import NIOWebSocket

/// A frame of server output as every copy of it goes out: the frame (for the pipeline) and, for a WebSocket, its
/// bytes on the wire (unmasked header and payload in one buffer), both built once and shared by every receiver.
struct WireFrame {
    let frame: WebSocketFrame
    /// The complete WebSocket frame: what `WebSocketFrameEncoder` would write for `frame`, in one buffer.
    let webSocketBytes: ByteBuffer

    init(_ frame: WebSocketFrame, allocator: ByteBufferAllocator) {
        self.frame = frame
        let length = frame.data.readableBytes
        var bytes = allocator.buffer(capacity: length + 10)
        bytes.writeInteger(UInt8(frame.fin ? 0x80 : 0) | UInt8(webSocketOpcode: frame.opcode))
        switch length {
        case ...125:
            bytes.writeInteger(UInt8(length))
        case ...Int(UInt16.max):
            bytes.writeInteger(UInt8(126))
            bytes.writeInteger(UInt16(length))
        default:
            bytes.writeInteger(UInt8(127))
            bytes.writeInteger(UInt64(length))
        }
        bytes.writeImmutableBuffer(frame.data)
        webSocketBytes = bytes
    }

    init(opcode: WebSocketOpcode, data: ByteBuffer, allocator: ByteBufferAllocator) {
        self.init(WebSocketFrame(fin: true, opcode: opcode, data: data), allocator: allocator)
    }

    /// Bytes of payload: what counts against a client's `ClientBufferLimit`.
    var payloadBytes: Int { frame.data.readableBytes }
}

/// Where a connection's shared output enters its pipeline: right below the handlers that would encode each copy
/// (`WebSocketFrameEncoder`, or `MQTTTCPFraming` on a TCP MQTT connection), so a delivery costs one write into the
/// channel's queue, not a walk through the pipeline and a header buffer per subscriber. Found once per
/// connection; without those handlers (a test's pipeline) frames take the whole pipeline.
///
/// A WebSocket connection's frames are dropped once `WebSocketProtocolHandler` has sent a close frame, as the
/// handler itself drops them (RFC 6455 5.5.1).
struct ClientWire {
    private enum Entry {
        /// Complete WebSocket frames, written by the encoder's context (to the handler after it).
        case webSocket(encoder: ChannelHandlerContext, protocolHandler: WebSocketProtocolHandler?)
        /// The frame's payload (an MQTT packet), written by `MQTTTCPFraming`'s context.
        case tcp(framing: ChannelHandlerContext)
        case pipeline(Channel)
    }

    private let entry: Entry

    /// Looks the entry point up in `channel`'s pipeline (on its event loop).
    init(channel: Channel) {
        let pipeline = channel.pipeline.syncOperations
        if let encoder = try? pipeline.context(handlerType: WebSocketFrameEncoder.self) {
            entry = .webSocket(encoder: encoder,
                               protocolHandler: try? pipeline.handler(type: WebSocketProtocolHandler.self))
        } else if let framing = try? pipeline.context(handlerType: MQTTTCPFraming.self) {
            entry = .tcp(framing: framing)
        } else {
            entry = .pipeline(channel)
        }
    }

    /// Writes `frame` without flushing.
    func write(_ frame: WireFrame) {
        switch entry {
        case .webSocket(let encoder, let protocolHandler):
            guard protocolHandler?.closeSent != true else { return }
            encoder.write(NIOAny(frame.webSocketBytes), promise: nil)
        case .tcp(let framing):
            framing.write(NIOAny(frame.frame.data), promise: nil)
        case .pipeline(let channel):
            channel.write(frame.frame, promise: nil)
        }
    }

    /// Flushes what was written (and whatever the handlers above wrote before).
    func flush() {
        switch entry {
        case .webSocket(let context, _), .tcp(let context):
            context.flush()
        case .pipeline(let channel):
            channel.flush()
        }
    }
}
