import Foundation
import NIOCore
import NIOWebSocket
import SwitchyardCore

/// The limits of an MQTT connection, from the configuration (the same as a WebSocket client's).
struct MQTTSettings: Sendable {
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
    /// The pipeline of a connection to a `ListenMqtt` address (and, behind TLS, a `ListenMqttEncrypted` one):
    /// `MQTTTCPFraming` (the hub's output, as the bytes it carries), the packet framer, then
    /// `MQTTConnectionHandler`.
    static func configureMQTTChannel(_ channel: Channel, settings: MQTTSettings, entitlement: Entitlement,
                                     connections: ConnectionCounter, hub: IngressHub) throws {
        connections.track(channel)
        try channel.pipeline.syncOperations.addHandlers([
            MQTTTCPFraming(),
            ByteToMessageHandler(MQTTFrameDecoder(maxBodySize: settings.maxPacketBodySize)),
            MQTTConnectionHandler(hub: hub, settings: settings, entitlement: entitlement, connections: connections),
        ])
    }

    /// The handlers after `WebSocketProtocolHandler` of a WebSocket at `/mqtt`: binary messages carry the MQTT
    /// byte stream (a packet may span messages). `upgradeGrant`: a token verified with the upgrade request.
    static func mqttOverWebSocketHandlers(settings: MQTTSettings, entitlement: Entitlement, upgradeGrant: TokenGrant?,
                                          hub: IngressHub) -> [ChannelHandler] {
        [
            MQTTWebSocketStream(),
            ByteToMessageHandler(MQTTFrameDecoder(maxBodySize: settings.maxPacketBodySize)),
            MQTTConnectionHandler(hub: hub, settings: settings, entitlement: entitlement, connections: nil,
                                  upgradeGrant: upgradeGrant),
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

/// The last handler of an MQTT connection: waits for CONNECT (within `HandshakeTimeout`, which also covers the
/// verification of its token), lets `MQTTAccess` decide on its password, registers the connection with the hub,
/// then decodes every packet and hands it to the hub. While a token is verified (off the event loop) reads are
/// paused and packets already framed wait, unread by the hub, for the verdict. Owns the timer that ends the
/// connection when its token expires. Malformed input closes the connection (v5: with a DISCONNECT and its
/// reason code first).
final class MQTTConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = MQTTRawPacket
    typealias OutboundOut = WebSocketFrame

    private enum State {
        case awaitingConnect
        /// The CONNECT's token is being verified, or its stored session read; the packets after it wait (at most
        /// `ConnectionAccess.maxHeld`).
        case verifying(MQTTConnect, held: [MQTTRawPacket])
        case connected(ClientConnection)
        case refused
    }

    private let hub: IngressHub
    private let settings: MQTTSettings
    private let entitlement: Entitlement
    private let upgradeGrant: TokenGrant?
    /// Counts the open connections for `MaxConnections`; nil over WebSocket, where the upgrade counted them.
    private let connections: ConnectionCounter?
    private var state = State.awaitingConnect
    private var connectTimer: Scheduled<Void>?
    private var expiryTimer: Scheduled<Void>?

    init(hub: IngressHub, settings: MQTTSettings, entitlement: Entitlement, connections: ConnectionCounter?,
         upgradeGrant: TokenGrant? = nil) {
        self.hub = hub
        self.settings = settings
        self.entitlement = entitlement
        self.connections = connections
        self.upgradeGrant = upgradeGrant
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        connectTimer = context.eventLoop.scheduleTask(in: settings.connectTimeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectTimer?.cancel()
        expiryTimer?.cancel()
    }

    func channelInactive(context: ChannelHandlerContext) {
        expiryTimer?.cancel()
        if case .connected(let connection) = state { hub.disconnect(connection) }
        state = .refused
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .connected(let connection) = state { hub.writabilityChanged(connection) }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let raw = unwrapInboundIn(data)
        switch state {
        case .awaitingConnect:
            connect(context, raw)
        case .verifying(let connect, var held):
            guard held.count < ConnectionAccess.maxHeld else {
                state = .refused
                return context.close(promise: nil)
            }
            held.append(raw)
            state = .verifying(connect, held: held)
        case .connected(let connection):
            read(raw, from: connection)
        case .refused:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if case .connected(let connection) = state {
            hub.fail(connection, error)
        } else {
            state = .refused
            context.close(promise: nil)
        }
    }

    private func read(_ raw: MQTTRawPacket, from connection: ClientConnection) {
        guard !connection.isClosing, let session = connection.mqtt else { return }
        do {
            hub.handle(try MQTTCodec.decode(raw, version: session.version), from: connection)
        } catch {
            hub.fail(connection, error)
        }
    }

    private func connect(_ context: ChannelHandlerContext, _ raw: MQTTRawPacket) {
        let channel = context.channel
        let packet: MQTTPacket
        do {
            packet = try MQTTCodec.decode(raw, version: nil)
        } catch MQTTCodec.ConnectError.unsupportedVersion {
            // Answered in the 3.1.1 format, which every version's client reads: 0x01 unacceptable protocol version.
            return refuse(channel, MQTTConnAck(sessionPresent: false, code: 0x01), version: .v311)
        } catch {
            state = .refused
            return context.close(promise: nil)
        }
        guard case .connect(let connect) = packet else {
            state = .refused
            return context.close(promise: nil)
        }
        if let connections, connections.open > settings.maxConnections {
            let code: UInt8 = connect.version == .v5 ? MQTTReasonCode.serverBusy.rawValue : 0x03
            return refuse(channel, MQTTConnAck(sessionPresent: false, code: code), version: connect.version)
        }
        switch MQTTAccess.decide(password: connect.password, withoutToken: entitlement.withoutToken,
                                 checksTokens: entitlement.checksTokens, upgradeGrant: upgradeGrant) {
        case .admit(let grant):
            admitWithSession(channel, connect, grant, held: [])
        case .refuse(let refusal):
            entitlement.count(refusal)
            refuse(channel, MQTTAccess.connAck(refusing: refusal, version: connect.version), version: connect.version)
        case .verify(let token):
            state = .verifying(connect, held: [])
            try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
            entitlement.verify(token, on: channel.eventLoop).assumeIsolated().whenSuccess { [self] result in
                guard case .verifying(let connect, let held) = state, channel.isActive else { return }
                try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
                switch result {
                case .success(let grant):
                    admitWithSession(channel, connect, grant, held: held)
                case .failure(let refusal):
                    refuse(channel, MQTTAccess.connAck(refusing: refusal, version: connect.version),
                           version: connect.version)
                }
            }
        }
    }

    /// Reads the client's stored session first when it may continue one (off the event loop, reads paused as
    /// while a token is verified), then admits it and processes the packets that waited.
    private func admitWithSession(_ channel: Channel, _ connect: MQTTConnect, _ grant: TokenGrant,
                                  held: [MQTTRawPacket]) {
        guard let loading = hub.loadMQTTSession(for: connect, on: channel.eventLoop) else {
            return admit(channel, connect, grant, stored: nil, held: held)
        }
        state = .verifying(connect, held: held)
        try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
        loading.assumeIsolated().whenSuccess { [self] stored in
            guard case .verifying(let connect, let held) = state, channel.isActive else { return }
            guard !stored.isUnavailable else {
                // The store could not say in time whether there is a session (Kafka mode): not "none".
                let code = connect.version == .v5 ? MQTTReasonCode.serverUnavailable.rawValue : 0x03
                return refuse(channel, MQTTConnAck(sessionPresent: false, code: code), version: connect.version)
            }
            try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
            admit(channel, connect, grant, stored: stored, held: held)
        }
    }

    private func admit(_ channel: Channel, _ connect: MQTTConnect, _ grant: TokenGrant,
                       stored: MQTTSessionStore.Loaded?, held: [MQTTRawPacket]) {
        connectTimer?.cancel()
        connectTimer = nil
        defer {
            if case .connected(let connection) = state {
                for raw in held where !connection.isClosing { read(raw, from: connection) }
            }
        }
        switch hub.connect(channel, connect, permissions: grant.permissions, stored: stored) {
        case .accepted(let connection):
            state = .connected(connection)
            if let expiresAt = grant.expiresAt { watchExpiry(of: connection, at: expiresAt) }
        case .refused(let refusal):
            refuse(channel, refusal, version: connect.version)
        }
    }

    /// Ends the connection when its token expires (MQTT has no way to present a fresh token on it).
    private func watchExpiry(of connection: ClientConnection, at expiresAt: Date) {
        var lifetime = TokenLifetime(expiresAt: expiresAt, notice: 0)
        let delay = TokenLifetime.delay(lifetime.untilNext(now: Date()))
        expiryTimer = connection.channel.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            guard case .connected(let current) = state, current === connection, !connection.isClosing else { return }
            guard lifetime.due(now: Date()) == .expired else { return watchExpiry(of: connection, at: expiresAt) }
            hub.tokenExpired(connection)
        }
    }

    /// Writes a refusing CONNACK and closes.
    private func refuse(_ channel: Channel, _ connack: MQTTConnAck, version: MQTTVersion) {
        state = .refused
        connectTimer?.cancel()
        connectTimer = nil
        let packet = MQTTCodec.encode(.connack(connack), version: version, allocator: channel.allocator)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, data: packet)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
