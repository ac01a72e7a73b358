import NIOCore
import NIOHTTP1
import NIOWebSocket
import SwitchyardCore

/// The limits of the client edge of one ingress, from the configuration.
struct EdgeSettings: Sendable {
    /// The largest WebSocket frame or reassembled message: room for a base64-encoded publish at
    /// `MessageSizeLimit` and its JSON. Above it: close 1009.
    var maxFrameSize: Int
    /// `HandshakeTimeout`.
    var handshakeTimeout: TimeAmount
    /// `MaxConnections`.
    var maxConnections: Int
    /// `AllowedOrigins`.
    var allowedOrigins: AllowedOrigins
    /// `PingRateLimit`.
    var pingsPerSecond: Int
    /// `Entitlement` and its key.
    var entitlement: Entitlement

    /// `entitlement` nil: the configuration's mode without a JWT key (under `jwt` every token is then refused).
    init(config: SwitchyardConfig, entitlement: Entitlement? = nil) {
        self.entitlement = entitlement ?? Entitlement(config: config, verifier: nil)
        maxFrameSize = min(config.messageSizeLimit * 2 + 64 * 1024, Int(UInt32.max))
        handshakeTimeout = .seconds(Int64(config.handshakeTimeout))
        maxConnections = config.maxConnections
        allowedOrigins = config.allowedOrigins
        pingsPerSecond = config.pingRateLimit
    }
}

extension IngressServer {
    /// Builds the whole pipeline of an accepted client connection, on its event loop: HTTP with the handshake
    /// timeout and connection limit, the WebSocket upgrade, then the WebSocket protocol and `ClientHandler`.
    ///
    /// At path `/mqtt`, `ClientHandler` gives way to the MQTT handlers (MQTT over WebSocket, subprotocol `mqtt`).
    ///
    /// Before the upgrade: `HandshakeTimeoutHandler`, NIO's HTTP server handlers (400 for requests that do not
    /// parse), `HTTPServerUpgradeHandler` (which verifies a token given with the request), `UpgradeRefusalHandler`
    /// (400/401/403/426/503 for refused upgrades),
    /// `PlainHTTPHandler`. After it: NIO's frame encoder and decoder, `WebSocketProtocolHandler` (which also closes
    /// with 1009 for a frame above the limit, 1002 for bad control frames, when the decoder refuses them),
    /// `ClientHandler`.
    static func configureClientChannel(_ channel: Channel, settings: EdgeSettings, connections: ConnectionCounter,
                                       hub: IngressHub) throws {
        connections.track(channel)
        let maxConnections = settings.maxConnections
        let maxFrameSize = settings.maxFrameSize
        let allowedOrigins = settings.allowedOrigins
        let pingsPerSecond = settings.pingsPerSecond
        let entitlement = settings.entitlement
        let handshakeTimeout = settings.handshakeTimeout
        let access = UpgradeAccess()
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: maxFrameSize,
            automaticErrorHandling: false,  // WebSocketProtocolHandler answers the decoder's errors
            shouldUpgrade: { channel, head in
                let decision = UpgradeDecision.decide(head, openConnections: connections.open,
                                                      maxConnections: maxConnections, allowedOrigins: allowedOrigins)
                guard decision == .upgrade, entitlement.checksTokens, let token = Entitlement.token(in: head) else {
                    return channel.eventLoop.makeSucceededFuture(
                        decision == .upgrade ? UpgradeDecision.responseHeaders(for: head) : nil)
                }
                // A token with the request is verified before the upgrade: a refused one gets HTTP 401.
                return entitlement.verify(token, on: channel.eventLoop).map { result in
                    switch result {
                    case .success(let grant):
                        access.grant = grant
                        return UpgradeDecision.responseHeaders(for: head)
                    case .failure(let refusal):
                        access.refusal = refusal
                        return nil
                    }
                }
            },
            upgradePipelineHandler: { channel, head in
                channel.eventLoop.makeCompletedFuture {
                    let client: [ChannelHandler] = UpgradeDecision.isMQTT(head)
                        ? mqttOverWebSocketHandlers(settings: hub.mqttSettings, entitlement: entitlement,
                                                    upgradeGrant: access.grant, hub: hub)
                        : [ClientHandler(hub: hub, entitlement: entitlement, grant: access.grant,
                                         tokenDeadline: handshakeTimeout)]
                    try channel.pipeline.syncOperations.addHandlers(
                        [WebSocketProtocolHandler(maxMessageSize: maxFrameSize, pingsPerSecond: pingsPerSecond)
                            as ChannelHandler] + client)
                }
            })
        let timeout = HandshakeTimeoutHandler(timeout: settings.handshakeTimeout)
        let refusal = UpgradeRefusalHandler(connections: connections, maxConnections: maxConnections,
                                            allowedOrigins: allowedOrigins, access: access)
        let plainHTTP = PlainHTTPHandler()
        let pipeline = channel.pipeline.syncOperations
        let removedOnUpgrade = NIOLoopBound([timeout, refusal, plainHTTP] as [RemovableChannelHandler],
                                            eventLoop: channel.eventLoop)
        try pipeline.addHandler(timeout)
        try pipeline.configureHTTPServerPipeline(
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                for handler in removedOnUpgrade.value {
                    context.pipeline.syncOperations.removeHandler(handler, promise: nil)
                }
            }))
        try pipeline.addHandlers([refusal, plainHTTP])
    }
}
