import NIOCore
import NIOWebSocket

/// A frame of server output as every copy of it goes out: its WebSocket bytes on the wire (unmasked header and
/// payload in one buffer), built once and shared by every receiver; the payload alone (what an MQTT connection
/// over TCP sends) is a view into the same buffer.
struct WireFrame {
    let opcode: WebSocketOpcode
    /// The complete WebSocket frame: what `WebSocketFrameEncoder` would write for a final frame of `opcode`.
    let webSocketBytes: ByteBuffer
    /// Bytes of the WebSocket header before the payload.
    private let headerLength: Int

    init(opcode: WebSocketOpcode, data: ByteBuffer, allocator: ByteBufferAllocator) {
        self.opcode = opcode
        let length = data.readableBytes
        var bytes = allocator.buffer(capacity: length + 10)
        bytes.writeInteger(0x80 | UInt8(webSocketOpcode: opcode))
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
        headerLength = bytes.readableBytes
        bytes.writeImmutableBuffer(data)
        webSocketBytes = bytes
    }

    /// `frame` (final, unmasked, no extension bits: what the hub writes) as it goes out.
    init(_ frame: WebSocketFrame, allocator: ByteBufferAllocator) {
        self.init(opcode: frame.opcode, data: frame.data, allocator: allocator)
    }

    private init(opcode: WebSocketOpcode, webSocketBytes: ByteBuffer, headerLength: Int) {
        self.opcode = opcode
        self.webSocketBytes = webSocketBytes
        self.headerLength = headerLength
    }

    /// The payload: a view into `webSocketBytes`, no copy.
    var payload: ByteBuffer {
        webSocketBytes.getSlice(at: webSocketBytes.readerIndex + headerLength, length: payloadBytes) ?? ByteBuffer()
    }

    /// Bytes of payload: what counts against a client's `ClientBufferLimit`.
    var payloadBytes: Int { webSocketBytes.readableBytes - headerLength }

    var frame: WebSocketFrame { WebSocketFrame(fin: true, opcode: opcode, data: payload) }

    /// A copy (one buffer) with `value` written at `offset` bytes into the payload: a QoS 1 MQTT PUBLISH's own
    /// packet identifier in a packet shared by every subscriber.
    func setting(_ value: UInt16, atPayloadOffset offset: Int) -> WireFrame {
        var bytes = webSocketBytes
        bytes.setInteger(value, at: bytes.readerIndex + headerLength + offset)
        return WireFrame(opcode: opcode, webSocketBytes: bytes, headerLength: headerLength)
    }
}

/// Where a connection's shared output enters its pipeline: right below the handlers that would encode each copy
/// (`WebSocketFrameEncoder`, or `MQTTTCPFraming` on a TCP MQTT connection), so a delivery costs one write into the
/// channel's queue, not a walk through the pipeline and a header buffer per subscriber. Found once per
/// connection; without those handlers (a test's pipeline) frames take the whole pipeline. On a plain listener the
/// next handler down is the connection's `DirectSocketWriter` (nothing lies between after the upgrade): writes and
/// flushes are handed to it directly.
///
/// A WebSocket connection's frames are dropped once `WebSocketProtocolHandler` has sent a close frame, as the
/// handler itself drops them (RFC 6455 5.5.1).
struct ClientWire {
    private enum Entry {
        /// Complete WebSocket frames, written by the encoder's context (to the handler after it).
        case webSocket
        /// The frame's payload (an MQTT packet), written by `MQTTTCPFraming`'s context.
        case tcp
        case pipeline
    }

    private let entry: Entry
    /// The context that writes: the encoder's or the framing's; nil for `.pipeline`.
    private let context: ChannelHandlerContext?
    private let protocolHandler: WebSocketProtocolHandler?
    /// The connection's lowest handler on a plain listener, right below the entry: writes and flushes go to it
    /// directly.
    private let socketWriter: DirectSocketWriter?
    private let channel: Channel

    /// Looks the entry point up in `channel`'s pipeline (on its event loop).
    init(channel: Channel) {
        self.channel = channel
        let pipeline = channel.pipeline.syncOperations
        if let encoder = try? pipeline.context(handlerType: WebSocketFrameEncoder.self) {
            entry = .webSocket
            context = encoder
            protocolHandler = try? pipeline.handler(type: WebSocketProtocolHandler.self)
        } else if let framing = try? pipeline.context(handlerType: MQTTTCPFraming.self) {
            entry = .tcp
            context = framing
            protocolHandler = nil
        } else {
            entry = .pipeline
            context = nil
            protocolHandler = nil
        }
        socketWriter = entry == .pipeline ? nil : try? pipeline.handler(type: DirectSocketWriter.self)
    }

    /// Whether live output may be written now: while the socket writer holds nothing in NIO, without asking the
    /// channel.
    var isWritable: Bool { socketWriter?.holdsNothingInNIO == true || channel.isWritable }

    /// Writes `frame` without flushing.
    func write(_ frame: WireFrame) {
        switch entry {
        case .webSocket:
            guard protocolHandler?.closeSent != true else { return }
            if let socketWriter { return socketWriter.write(frame.webSocketBytes) }
            context?.write(NIOAny(frame.webSocketBytes), promise: nil)
        case .tcp:
            if let socketWriter { return socketWriter.write(frame.payload) }
            context?.write(NIOAny(frame.payload), promise: nil)
        case .pipeline:
            channel.write(frame.frame, promise: nil)
        }
    }

    /// Flushes what was written (and whatever the handlers above wrote before).
    func flush() {
        if let socketWriter { return socketWriter.flush() }
        if let context { context.flush() } else { channel.flush() }
    }
}
