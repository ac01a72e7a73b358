import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import SwitchyardCore

/// TLS in front of a listener's pipeline, whose certificate can be read again for new connections
/// (`ServerTLS` in IngressService).
public protocol ListenerTLS: AnyObject, Sendable {
    /// Adds the TLS handlers to an accepted connection, before the rest of its pipeline.
    func addHandlers(to channel: Channel) throws
    /// Reads the certificate and key again; connections accepted from then on use them. False (the current ones
    /// kept) when they cannot be used.
    @discardableResult
    func reload() -> Bool
}

/// The ws-ingress stage: WebSocket (and a little HTTP) on one event loop, the pipeline over nanomsg.
///
/// One event loop per process keeps the subscription index lock-free; more connections or cores are served by
/// more ingress instances sharing the listening port (SO_REUSEPORT).
// @unchecked Sendable: `serverChannels` only on the main thread; signal handlers hop onto `eventLoop` or call `tls`.
public final class IngressServer: @unchecked Sendable {
    private let context: StageContext
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let eventLoop: EventLoop
    private let link: BackplaneLink
    private let hub: IngressHub
    /// Persistent MQTT sessions (`RunDir/mqtt-sessions/`, or the Kafka session topic); nil when
    /// `MqttSessionExpiry` is 0.
    private let sessionStore: (any MQTTSessionStorage)?
    /// The certificate of the `ListenEncrypted` and `ListenMqttEncrypted` listeners; nil without them.
    private let tls: (any ListenerTLS)?
    private let entitlement: Entitlement
    private var serverChannels: [Channel] = []

    /// `tls` for the encrypted listeners, `verifier` for `Entitlement = jwt` and `sessions` (Kafka mode: the Kafka
    /// session store; nil: the files in `RunDir/mqtt-sessions/`) come from IngressService.
    public init(context: StageContext, tls: (any ListenerTLS)?, verifier: (any TokenVerifying)?,
                sessions: (any MQTTSessionStorage)? = nil) throws {
        self.context = context
        eventLoop = group.next()
        let topology = context.topology
        link = try BackplaneLink(eventLoop: eventLoop, inboundAddress: context.inboundAddress,
                                 routerAddress: topology.address(.router, 0), logger: context.logger,
                                 metrics: context.metrics)
        hub = IngressHub(instance: UInt32(context.instance), inboundAddress: context.inboundAddress,
                         config: context.config, logger: context.logger, metrics: context.metrics, link: link)
        sessionStore = context.config.mqttSessionExpiry > 0
            ? sessions ?? MQTTSessionStore(runDir: context.config.runDir, maxSessions: context.config.mqttMaxSessions,
                                           logger: context.logger)
            : nil
        hub.mqttSessionStore = sessionStore
        self.tls = tls
        entitlement = Entitlement(config: context.config, verifier: verifier, metrics: context.metrics)
    }

    /// Starts serving; returns once every listening address is bound.
    public func start() throws {
        link.start { [hub] envelopes in hub.handle(envelopes) }
        let hub = self.hub
        // Before any client can subscribe (one event loop): the fanouts forget what a previous process of this
        // instance left behind.
        eventLoop.execute { hub.announceStart() }
        let logger = context.logger
        let settings = EdgeSettings(config: context.config, entitlement: entitlement)
        let connections = ConnectionCounter(metrics: context.metrics)
        let configureClient: @Sendable (Channel) throws -> Void = { channel in
            try Self.configureClientChannel(channel, settings: settings, connections: connections, hub: hub)
        }
        for address in context.config.listen {
            serverChannels.append(try bind(address, writesDirectly: true, configureClient))
            logger.info("listening", metadata: ["address": "\(address)"])
        }
        let mqttSettings = hub.mqttSettings
        let policy = entitlement
        let configureMQTT: @Sendable (Channel) throws -> Void = { channel in
            try Self.configureMQTTChannel(channel, settings: mqttSettings, entitlement: policy,
                                          connections: connections, hub: hub)
        }
        for address in context.config.listenMqtt {
            serverChannels.append(try bind(address, writesDirectly: true, configureMQTT))
            logger.info("MQTT listening", metadata: ["address": "\(address)"])
        }
        if let tls {
            for address in context.config.listenEncrypted {
                serverChannels.append(try bind(address, writesDirectly: false) { channel in
                    try tls.addHandlers(to: channel)
                    try configureClient(channel)
                })
                logger.info("listening (TLS)", metadata: ["address": "\(address)"])
            }
            // The same certificate, and its reload, in front of the MQTT pipeline.
            for address in context.config.listenMqttEncrypted {
                serverChannels.append(try bind(address, writesDirectly: false) { channel in
                    try tls.addHandlers(to: channel)
                    try configureMQTT(channel)
                })
                logger.info("MQTT listening (TLS)", metadata: ["address": "\(address)"])
            }
        }
        let tlsListeners = context.config.listenEncrypted.count + context.config.listenMqttEncrypted.count
        context.metrics.setGauge("tlsListeners", tls == nil ? 0 : tlsListeners)
        if entitlement.mode != .none {
            logger.info("entitlement", metadata: ["mode": "\(entitlement.mode.rawValue)",
                                                  "tokenExpireNotice": "\(context.config.tokenExpireNotice)"])
        }
        if context.instance == 0, let address = context.config.monitorListen {
            serverChannels.append(try MonitorServer.bind(address, group: group, config: context.config))
            logger.info("monitor listening", metadata: ["address": "\(address)", "paths": "/metrics /health /ready"])
        }
        eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(250), delay: .milliseconds(250)) { [hub] _ in
            hub.tick()
        }
        if let sessions = sessionStore {
            // Expired sessions are removed at start and every 10 minutes (off the event loop).
            eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .minutes(10)) { _ in sessions.sweep() }
            // Connections taken over on another instance or node are closed within about a second.
            eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [hub, eventLoop] _ in
                sessions.takeOvers(on: eventLoop).whenSuccess { hub.closeTakenOverMQTTConnections($0) }
            }
        }
    }

    /// Binds one client listener (SO_REUSEPORT: every ingress instance binds the same addresses);
    /// `configureClient` builds each accepted connection's pipeline. `writesDirectly`: a plain (not TLS)
    /// listener's connections get `DirectSocketWriter` at the bottom of their pipeline.
    private func bind(_ address: ListenAddress, writesDirectly: Bool,
                      _ configureClient: @escaping @Sendable (Channel) throws -> Void) throws -> Channel {
        let logger = context.logger
        let sendBuffer = context.config.clientSendBuffer
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 4096)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.socket(SocketOptionLevel(SOL_SOCKET), SO_REUSEPORT), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptErrorLogger(logger: logger))
                }
            }
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.recvAllocator, value: Self.clientReceiveBuffers)
            .childChannelOption(ChannelOptions.writeBufferWaterMark, value: ConnectionLimits(context.config).channelWaterMark)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if writesDirectly, let writer = DirectSocketWriter.forChannel(channel) {
                        try channel.pipeline.syncOperations.addHandler(writer)
                    }
                    try configureClient(channel)
                }
            }
        return try (sendBuffer > 0 ? bootstrap.childChannelOption(ChannelOptions.socketOption(.so_sndbuf),
                                                                  value: SocketOptionValue(sendBuffer))
                                   : bootstrap)
            .bind(host: address.host, port: address.port).wait()
    }

    /// The receive buffers of a client connection. NIO keeps a connection's last receive buffer for its next read,
    /// at the size the allocator last chose: its default (2 KiB to start) would pin 2 KiB for every idle
    /// subscriber. Starting at 256 bytes, a busy connection's buffer still doubles on every full read, to 64 KiB.
    static let clientReceiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)

    /// `./switchyard reload ws-ingress` (SIGUSR2): new connections (wss and MQTT over TLS) get the certificate and key read anew from
    /// their files; open connections keep theirs. Blocks on file I/O, off the event loop.
    func reloadTLS() {
        guard let tls else {
            context.logger.warning("nothing to reload: no TLS listener (ListenEncrypted, ListenMqttEncrypted)")
            return
        }
        tls.reload()
    }

    /// Shards may have moved: the pipeline must learn this ingress's interest again. Every stage reloads the
    /// topology on its own, so a cache may still route this announcement by the old shard map; announcing (and
    /// repairing) again once they all have makes sure the new shards know every subject and nothing is missed.
    func topologyChanged() {
        eventLoop.execute { [hub] in hub.reannounce(because: "topology changed") }
        eventLoop.scheduleTask(in: Self.topologySettleTime) { [hub] in
            hub.reannounce(because: "topology changed (settled)")
        }
    }

    /// How long after a topology change every stage is expected to have reloaded it.
    static let topologySettleTime = TimeAmount.seconds(1)

    /// Closes every client with a "reconnect" close code, waits (up to 2 s) for the close frames to leave, and
    /// stops.
    public func shutdown() {
        let closing = eventLoop.submit { [hub, serverChannels, logger = context.logger] in
            logger.info("closing client connections", metadata: ["connections": "\(hub.connectionCount)"])
            for channel in serverChannels { channel.close(promise: nil) }
            return hub.closeAll(reason: "service restart: reconnect")
        }
        let deadline = DispatchTime.now() + 2
        let closed = DispatchGroup()
        func awaitClosed(_ futures: [EventLoopFuture<Void>]) -> Bool {
            for future in futures {
                closed.enter()
                future.whenComplete { _ in closed.leave() }
            }
            return closed.wait(timeout: deadline) == .success
        }
        // Then the connections whose upgrade completed after closeAll (accepted before the listeners closed).
        let allClosed = awaitClosed((try? closing.wait()) ?? [])
            && awaitClosed((try? eventLoop.submit { [hub] in hub.lateRestartCloses }.wait()) ?? [])
        if !allClosed {
            context.logger.warning("some clients did not take their close frame in time")
        }
        if !entitlement.awaitVerifications(timeout: 2) {
            context.logger.warning("token verifications still running at shutdown")
        }
        sessionStore?.close()  // the sessions saved as their connections closed are written
        link.stop()
        try? group.syncShutdownGracefully()
    }

    /// The whole life of a ws-ingress instance.
    /// `makeTLS`, `makeVerifier` and `makeSessions` build the TLS of the encrypted listeners, the JWT verifier and the
    /// session store of Kafka mode (IngressService); a `ConfigError` from any stops start-up with exit status 2, like
    /// one from the configuration.
    public static func main(makeTLS: (StageContext) throws -> (any ListenerTLS)?,
                            makeVerifier: (SwitchyardConfig) throws -> (any TokenVerifying)?,
                            makeSessions: (StageContext) throws -> (any MQTTSessionStorage)?) -> Never {
        let context = StageContext.bootstrap(.ingress)
        let server: IngressServer
        do {
            server = try IngressServer(context: context, tls: try makeTLS(context),
                                       verifier: try makeVerifier(context.config), sessions: try makeSessions(context))
            try server.start()
        } catch let error as ConfigError {
            // Exit status 2: the supervisor reports the configuration and does not restart us.
            context.logger.error("configuration refused", metadata: ["error": "\(error)"])
            FileHandle.standardError.write(Data("ws-ingress: \(error)\n".utf8))
            exit(2)
        } catch {
            context.logger.error("cannot start", metadata: ["error": "\(error)"])
            exit(1)
        }
        let stopped = DispatchSemaphore(value: 0)
        context.start(onStop: { stopped.signal() }, onTopologyChange: { _ in server.topologyChanged() },
                      onReload: { server.reloadTLS() })
        context.setReady(true)
        context.logger.info("ready", metadata: ["address": "\(context.inboundAddress)", "pid": "\(getpid())"])
        stopped.wait()
        server.shutdown()
        context.logger.info("stopped")
        exit(0)
    }
}

/// Answers plain HTTP requests (those that are not a WebSocket upgrade): `GET /health`, the demo page and the
/// JavaScript client, and 404 elsewhere. `/metrics` and `/ready` are served only by the private monitor listener.
final class PlainHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        switch path {
        case "/health":
            respondAndClose(context, head, .ok, "ok\n")
        case "/" where head.headers.contains(name: "upgrade"), "/ws":
            respondAndClose(context, head, .upgradeRequired, "connect with a WebSocket client\n")
        default:
            // A browser at `/` gets the live demo page; the JavaScript client is at /switchyard.js.
            if let file = StaticFile.at(path) {
                serve(file, context: context, request: head)
            } else {
                respondAndClose(context, head, .notFound, "not found\n")
            }
        }
    }
}

/// Writes a whole HTTP response with a text body and closes the connection.
func respondAndClose(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus,
                     _ body: String, contentType: String = "text/plain; charset=utf-8") {
    var headers = HTTPHeaders()
    headers.add(name: "Content-Type", value: contentType)
    headers.add(name: "Content-Length", value: String(body.utf8.count))
    headers.add(name: "Connection", value: "close")
    let head = HTTPResponseHead(version: request.version, status: status, headers: headers)
    context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
    context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
    context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).assumeIsolated()
        .whenComplete { _ in context.close(promise: nil) }
}
