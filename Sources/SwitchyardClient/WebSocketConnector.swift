import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Why a WebSocket connection could not be made.
public struct WebSocketConnectError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Sends the HTTP upgrade request and reports a refused upgrade; removed once the upgrade is done.
final class UpgradeRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let host: String
    private let path: String
    private let subprotocol: String?
    private let upgraded: EventLoopPromise<Void>

    init(host: String, path: String, subprotocol: String?, upgraded: EventLoopPromise<Void>) {
        self.host = host
        self.path = path
        self.subprotocol = subprotocol
        self.upgraded = upgraded
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Content-Length", value: "0")
        if let subprotocol { headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Only reached when the server answered without upgrading.
        if case .head(let head) = unwrapInboundIn(data) {
            upgraded.fail(WebSocketConnectError("WebSocket upgrade refused: HTTP \(head.status.code)"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        upgraded.fail(WebSocketConnectError("connection closed during the WebSocket upgrade"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        upgraded.fail(error)
        context.close(promise: nil)
    }
}

/// Opens client WebSocket connections with SwiftNIO (used by switchyard-bench and switchyard-cli).
public enum WebSocketConnector {
    /// Connects to `host:port`, upgrades to WebSocket on `path`, then adds the handler `makeHandler` returns.
    /// The future completes once the handler is in place; it fails when the connection or the upgrade takes
    /// longer than `connectTimeout`. `subprotocol` is offered in `Sec-WebSocket-Protocol` (e.g. `mqtt`).
    public static func connect(on eventLoop: EventLoop, host: String, port: Int, path: String,
                               subprotocol: String? = nil,
                               source: SocketAddress? = nil, maxFrameSize: Int = 1 << 22,
                               connectTimeout: TimeAmount = .seconds(10),
                               makeHandler: @escaping @Sendable (Channel) -> ChannelHandler) -> EventLoopFuture<Channel> {
        let upgraded = eventLoop.makePromise(of: Void.self)
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        if let source { bootstrap = bootstrap.bind(to: source) }
        bootstrap = bootstrap.channelInitializer { channel in
            // Runs on the channel's loop, as the upgrade's completion handler that removes it.
            let requestHandler = NIOLoopBound(UpgradeRequestHandler(host: "\(host):\(port)", path: path,
                                                                    subprotocol: subprotocol, upgraded: upgraded),
                                              eventLoop: channel.eventLoop)
            let upgrader = NIOWebSocketClientUpgrader(
                maxFrameSize: maxFrameSize,
                automaticErrorHandling: true,
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(makeHandler(channel))
                        upgraded.succeed(())
                    }
                })
            let configuration: NIOHTTPClientUpgradeConfiguration = (
                upgraders: [upgrader],
                completionHandler: { context in
                    context.pipeline.syncOperations.removeHandler(requestHandler.value, promise: nil)
                })
            return channel.eventLoop.makeCompletedFuture {
                // Bytes that arrive with the 101 answer are the server's first frames (NATS sends INFO at once):
                // forwarded to the WebSocket decoder, not dropped.
                try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes,
                                                                          withClientUpgrade: configuration)
                try channel.pipeline.syncOperations.addHandler(requestHandler.value)
            }
        }
        return bootstrap.connect(host: host, port: port).flatMap { channel in
            // A server that accepts the connection but never answers the upgrade must not hold us forever.
            let deadline = channel.eventLoop.scheduleTask(in: connectTimeout) {
                upgraded.fail(WebSocketConnectError("no answer to the WebSocket upgrade within \(connectTimeout)"))
            }
            upgraded.futureResult.whenComplete { _ in deadline.cancel() }
            return upgraded.futureResult.map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }.flatMapErrorThrowing { error in
            upgraded.fail(error)
            throw error
        }
    }
}
