import NIOCore
import NIOWebSocket
import SwitchyardCore

/// The limits of an MQTT connection, from the configuration (the same as a WebSocket client's).
struct MQTTSettings {
    /// The largest packet body: a publish at `MessageSizeLimit` with the longest topic and room for properties.
    /// Above it: v5 DISCONNECT 0x95 (Packet too large), then close.
    var maxPacketBodySize: Int
    /// `HandshakeTimeout`: CONNECT must arrive within it.
    var connectTimeout: TimeAmount
    /// `MaxConnections`, counted together with the WebSocket connections.
    var maxConnections: Int

    init(config: SwitchyardConfig) {
        maxPacketBodySize = config.messageSizeLimit + 65_536 + 4096
        connectTimeout = .seconds(Int64(config.handshakeTimeout))
        maxConnections = config.maxConnections
    }
}

extension IngressServer {
    /// The pipeline of a connection to a `ListenMqtt` address: `MQTTTCPFraming` (the hub's output, as the
    /// bytes it carries), the packet framer, then `MQTTConnectionHandler`.
    static func configureMQTTChannel(_ channel: Channel, settings: MQTTSettings, connections: ConnectionCounter,
                                     hub: IngressHub) throws {
        connections.track(channel)
        try channel.pipeline.syncOperations.addHandlers([
            MQTTTCPFraming(),
            ByteToMessageHandler(MQTTFrameDecoder(maxBodySize: settings.maxPacketBodySize)),
            MQTTConnectionHandler(hub: hub, settings: settings, connections: connections),
        ])
    }

    /// The handlers after `WebSocketProtocolHandler` of a WebSocket at `/mqtt`: binary messages carry the MQTT
    /// byte stream (a packet may span messages).
    static func mqttOverWebSocketHandlers(settings: MQTTSettings, hub: IngressHub) -> [ChannelHandler] {
        [
            MQTTWebSocketStream(),
            ByteToMessageHandler(MQTTFrameDecoder(maxBodySize: settings.maxPacketBodySize)),
            MQTTConnectionHandler(hub: hub, settings: settings, connections: nil),
        ]
    }
}

/// Frames the inbound byte stream into packets (`MQTTFraming`); a packet above the bound is an error before
/// its body is read.
struct MQTTFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = MQTTRawPacket

    let maxBodySize: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let packet = try MQTTFraming.next(from: &buffer, maxBodySize: maxBodySize) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(packet))
        return .continue
    }
}

/// On a TCP MQTT connection: the hub writes `WebSocketFrame`s (shared with WebSocket clients); only their bytes go
/// out.
final class MQTTTCPFraming: ChannelOutboundHandler {
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(wrapOutboundOut(unwrapOutboundIn(data).data), promise: promise)
    }
}

/// MQTT over WebSocket: the payloads of binary messages are the MQTT byte stream; a text message is a protocol
/// error (MQTT 5 6.0) and closes the connection.
final class MQTTWebSocketStream: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary: context.fireChannelRead(wrapInboundOut(frame.data))
        case .text: context.close(promise: nil)
        default: break
        }
    }
}

/// The last handler of an MQTT connection: waits for CONNECT (within `HandshakeTimeout`), registers the
/// connection with the hub, then decodes every packet and hands it to the hub. Malformed input closes the
/// connection (v5: with a DISCONNECT and its reason code first).
final class MQTTConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = MQTTRawPacket
    typealias OutboundOut = WebSocketFrame

    private let hub: IngressHub
    private let settings: MQTTSettings
    /// Counts the open connections for `MaxConnections`; nil over WebSocket, where the upgrade counted them.
    private let connections: ConnectionCounter?
    private var connection: ClientConnection?
    private var connectTimer: Scheduled<Void>?
    private var refused = false

    init(hub: IngressHub, settings: MQTTSettings, connections: ConnectionCounter?) {
        self.hub = hub
        self.settings = settings
        self.connections = connections
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        connectTimer = context.eventLoop.scheduleTask(in: settings.connectTimeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectTimer?.cancel()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let connection { hub.disconnect(connection) }
        connection = nil
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if let connection { hub.writabilityChanged(connection) }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let raw = unwrapInboundIn(data)
        guard !refused else { return }
        guard let connection else { return connect(context, raw) }
        guard !connection.isClosing, let session = connection.mqtt else { return }
        do {
            hub.handle(try MQTTCodec.decode(raw, version: session.version), from: connection)
        } catch {
            hub.fail(connection, error)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let connection {
            hub.fail(connection, error)
        } else {
            context.close(promise: nil)
        }
    }

    private func connect(_ context: ChannelHandlerContext, _ raw: MQTTRawPacket) {
        let packet: MQTTPacket
        do {
            packet = try MQTTCodec.decode(raw, version: nil)
        } catch MQTTCodec.ConnectError.unsupportedVersion {
            // Answered in the 3.1.1 format, which every version's client reads: 0x01 unacceptable protocol version.
            return refuse(context, MQTTConnAck(sessionPresent: false, code: 0x01), version: .v311)
        } catch {
            refused = true
            return context.close(promise: nil)
        }
        guard case .connect(let connect) = packet else { return context.close(promise: nil) }
        connectTimer?.cancel()
        connectTimer = nil
        if let connections, connections.open > settings.maxConnections {
            let code: UInt8 = connect.version == .v5 ? MQTTReasonCode.serverBusy.rawValue : 0x03
            return refuse(context, MQTTConnAck(sessionPresent: false, code: code), version: connect.version)
        }
        switch hub.connect(context.channel, connect) {
        case .accepted(let connection):
            self.connection = connection
        case .refused(let refusal):
            refuse(context, refusal, version: connect.version)
        }
    }

    /// Writes a refusing CONNACK and closes.
    private func refuse(_ context: ChannelHandlerContext, _ connack: MQTTConnAck, version: MQTTVersion) {
        refused = true
        let packet = MQTTCodec.encode(.connack(connack), version: version, allocator: context.channel.allocator)
        let channel = context.channel
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, data: packet)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
