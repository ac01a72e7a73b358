import NIOCore
import NIOHTTP1
import NIOWebSocket
import SwitchyardCore

/// The limits of the client edge of one ingress, from the configuration.
struct EdgeSettings {
    /// The largest WebSocket frame or reassembled message: room for a base64-encoded publish at
    /// `MessageSizeLimit` and its JSON. Above it: close 1009.
    var maxFrameSize: Int
    /// `HandshakeTimeout`.
    var handshakeTimeout: TimeAmount
    /// `MaxConnections`.
    var maxConnections: Int
    /// `AllowedOrigins`.
    var allowedOrigins: AllowedOrigins

    init(config: SwitchyardConfig) {
        maxFrameSize = min(config.messageSizeLimit * 2 + 64 * 1024, Int(UInt32.max))
        handshakeTimeout = .seconds(Int64(config.handshakeTimeout))
        maxConnections = config.maxConnections
        allowedOrigins = config.allowedOrigins
    }
}

extension IngressServer {
    /// Builds the whole pipeline of an accepted client connection, on its event loop: HTTP with the handshake
    /// timeout and connection limit, the WebSocket upgrade, then the WebSocket protocol and `ClientHandler`.
    ///
    /// At path `/mqtt`, `ClientHandler` gives way to the MQTT handlers (MQTT over WebSocket, subprotocol `mqtt`).
    ///
    /// Before the upgrade: `HandshakeTimeoutHandler`, NIO's HTTP server handlers (400 for requests that do not
    /// parse), `HTTPServerUpgradeHandler`, `UpgradeRefusalHandler` (400/403/426/503 for refused upgrades),
    /// `PlainHTTPHandler`. After it: NIO's frame encoder and decoder (close 1009 for a frame above the limit, 1002
    /// for bad control frames), `WebSocketProtocolHandler`, `ClientHandler`.
    static func configureClientChannel(_ channel: Channel, settings: EdgeSettings, connections: ConnectionCounter,
                                       hub: IngressHub) throws {
        connections.track(channel)
        let maxConnections = settings.maxConnections
        let maxFrameSize = settings.maxFrameSize
        let allowedOrigins = settings.allowedOrigins
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: maxFrameSize,
            automaticErrorHandling: true,
            shouldUpgrade: { channel, head in
                let decision = UpgradeDecision.decide(head, openConnections: connections.open,
                                                      maxConnections: maxConnections, allowedOrigins: allowedOrigins)
                return channel.eventLoop.makeSucceededFuture(
                    decision == .upgrade ? UpgradeDecision.responseHeaders(for: head) : nil)
            },
            upgradePipelineHandler: { channel, head in
                channel.eventLoop.makeCompletedFuture {
                    let client: [ChannelHandler] = UpgradeDecision.isMQTT(head)
                        ? mqttOverWebSocketHandlers(settings: hub.mqttSettings, hub: hub) : [ClientHandler(hub: hub)]
                    try channel.pipeline.syncOperations.addHandlers(
                        [WebSocketProtocolHandler(maxMessageSize: maxFrameSize) as ChannelHandler] + client)
                }
            })
        let timeout = HandshakeTimeoutHandler(timeout: settings.handshakeTimeout)
        let refusal = UpgradeRefusalHandler(connections: connections, maxConnections: maxConnections,
                                            allowedOrigins: allowedOrigins)
        let plainHTTP = PlainHTTPHandler()
        let pipeline = channel.pipeline.syncOperations
        try pipeline.addHandler(timeout)
        try pipeline.configureHTTPServerPipeline(
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                for handler: RemovableChannelHandler in [timeout, refusal, plainHTTP] {
                    context.pipeline.syncOperations.removeHandler(handler, promise: nil)
                }
            }))
        try pipeline.addHandlers([refusal, plainHTTP])
    }
}
