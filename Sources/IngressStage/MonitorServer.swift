import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchyardCore

/// The private monitor listener (`MonitorListen`), bound by ws-ingress instance 0 only: `/metrics` (every stage
/// instance's figures as Prometheus text), `/health` (liveness) and `/ready` (200 or 503 with the reasons).
///
/// Not shared with SO_REUSEPORT: one process answers, whatever `IngressInstances` says, and a second binder of
/// the port fails at once instead of silently splitting the requests.
enum MonitorServer {
    /// Seconds a monitor connection may take to send its request.
    static let requestTimeout: TimeAmount = .seconds(10)

    static func bind(_ address: ListenAddress, group: EventLoopGroup, config: SwitchyardConfig) throws -> Channel {
        try ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(HandshakeTimeoutHandler(timeout: requestTimeout))
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandler(MonitorHTTPHandler(config: config))
                }
            }
            .bind(host: address.host, port: address.port).wait()
    }
}

/// Answers one monitor request and closes. Reading the run dir's files is file I/O: done off the event loop.
final class MonitorHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart

    private let config: SwitchyardConfig

    init(config: SwitchyardConfig) {
        self.config = config
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        let config = self.config
        switch path {
        case "/health":
            respondAndClose(context, head, .ok, "ok\n")
        case "/metrics":
            answerOffLoop(context, head) {
                (.ok, PrometheusExposition.render(runDir: config.runDir), "text/plain; version=0.0.4")
            }
        case "/ready":
            answerOffLoop(context, head) {
                let problems = Readiness.check(config: config)
                return problems.isEmpty
                    ? (.ok, "ready\n", "text/plain; charset=utf-8")
                    : (.serviceUnavailable, "not ready:\n" + problems.joined(separator: "\n") + "\n",
                       "text/plain; charset=utf-8")
            }
        default:
            respondAndClose(context, head, .notFound, "not found: /metrics, /health, /ready\n")
        }
    }

    private func answerOffLoop(_ context: ChannelHandlerContext, _ head: HTTPRequestHead,
                               _ answer: @escaping @Sendable () -> (HTTPResponseStatus, String, String)) {
        let loop = context.eventLoop
        let bound = NIOLoopBound(context, eventLoop: loop)
        DispatchQueue.global().async {
            let (status, body, contentType) = answer()
            loop.execute { respondAndClose(bound.value, head, status, body, contentType: contentType) }
        }
    }
}
