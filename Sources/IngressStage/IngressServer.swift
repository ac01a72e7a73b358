import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import SwitchyardCore

/// The ws-ingress stage: WebSocket (and a little HTTP) on one event loop, the pipeline over nanomsg.
///
/// One event loop per process keeps the subscription index lock-free; more connections or cores are served by
/// more ingress instances sharing the listening port (SO_REUSEPORT).
public final class IngressServer {
    private let context: StageContext
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let eventLoop: EventLoop
    private let link: BackplaneLink
    private let hub: IngressHub
    private var serverChannels: [Channel] = []

    public init(context: StageContext) throws {
        self.context = context
        eventLoop = group.next()
        let topology = context.topology
        link = try BackplaneLink(eventLoop: eventLoop, inboundAddress: context.inboundAddress,
                                 routerAddress: topology.address(.router, 0), logger: context.logger,
                                 metrics: context.metrics)
        hub = IngressHub(instance: UInt32(context.instance), inboundAddress: context.inboundAddress,
                         config: context.config, logger: context.logger, metrics: context.metrics, link: link)
    }

    /// Starts serving; returns once every listening address is bound.
    public func start() throws {
        try link.start { [hub] envelopes in hub.handle(envelopes) }
        let hub = self.hub
        let logger = context.logger
        let settings = EdgeSettings(config: context.config)
        let connections = ConnectionCounter(metrics: context.metrics)
        let highWatermark = max(context.config.clientBufferLimit / 2, 8192)
        let group = self.group
        let bootstrap = { (configure: @escaping @Sendable (Channel) throws -> Void) in ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 4096)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.socket(SocketOptionLevel(SOL_SOCKET), SO_REUSEPORT), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptErrorLogger(logger: logger))
                }
            }
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.writeBufferWaterMark,
                                value: .init(low: highWatermark / 2, high: highWatermark))
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try configure(channel) } }
        }
        let webSocket = bootstrap { channel in
            try Self.configureClientChannel(channel, settings: settings, connections: connections, hub: hub)
        }
        for address in context.config.listen {
            let channel = try webSocket.bind(host: address.host, port: address.port).wait()
            serverChannels.append(channel)
            logger.info("listening", ["address": address])
        }
        let mqttSettings = hub.mqttSettings
        let mqtt = bootstrap { channel in
            try Self.configureMQTTChannel(channel, settings: mqttSettings, connections: connections, hub: hub)
        }
        for address in context.config.listenMqtt {
            serverChannels.append(try mqtt.bind(host: address.host, port: address.port).wait())
            logger.info("MQTT listening", ["address": address])
        }
        if context.instance == 0, let address = context.config.monitorListen {
            serverChannels.append(try MonitorServer.bind(address, group: group, config: context.config))
            logger.info("monitor listening", ["address": address, "paths": "/metrics /health /ready"])
        }
        eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(250), delay: .milliseconds(250)) { [hub] _ in
            hub.tick()
        }
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
        context.logger.info("closing client connections", ["connections": hub.connectionCount])
        let closing = eventLoop.submit { [hub, serverChannels] in
            for channel in serverChannels { channel.close(promise: nil) }
            return hub.closeAll(reason: "service restart: reconnect")
        }
        let closed = DispatchGroup()
        for future in (try? closing.wait()) ?? [] {
            closed.enter()
            future.whenComplete { _ in closed.leave() }
        }
        if closed.wait(timeout: .now() + 2) == .timedOut {
            context.logger.warn("some clients did not take their close frame in time")
        }
        link.stop()
        try? group.syncShutdownGracefully()
    }

    /// The whole life of a ws-ingress instance.
    public static func main() -> Never {
        let context = StageContext.bootstrap(.ingress)
        let server: IngressServer
        do {
            server = try IngressServer(context: context)
            try server.start()
        } catch {
            context.logger.error("cannot start", ["error": error])
            exit(1)
        }
        let stopped = DispatchSemaphore(value: 0)
        context.start(onStop: { stopped.signal() }, onTopologyChange: { _ in server.topologyChanged() })
        context.setReady(true)
        context.logger.info("ready", ["address": context.inboundAddress, "pid": getpid()])
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
    context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in context.close(promise: nil) }
}
