import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import SwitchyardCore

/// Whether an HTTP request may become a WebSocket connection, and the HTTP answer when it may not (RFC 6455 4.2).
enum UpgradeDecision: Equatable {
    case upgrade
    /// Not a WebSocket upgrade, or not on a WebSocket path: answered as plain HTTP.
    case notWebSocket
    /// 400: a malformed upgrade (method, HTTP version, `Connection`, `Sec-WebSocket-Key`, missing version).
    case badRequest(String)
    /// 426 with `Sec-WebSocket-Version: 13`.
    case unsupportedVersion
    /// 403: the `Origin` header names a web origin not in `AllowedOrigins`.
    case forbiddenOrigin
    /// 503 with `Retry-After`: the ingress holds `MaxConnections` connections.
    case overloaded

    /// The paths clients connect to: protocol v1 at `/` and `/ws`, MQTT over WebSocket at `mqttPath`.
    static let webSocketPaths: Set<Substring> = ["/", "/ws", mqttPath]
    static let mqttPath: Substring = "/mqtt"

    static func path(of head: HTTPRequestHead) -> Substring {
        head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    }

    static func isMQTT(_ head: HTTPRequestHead) -> Bool { path(of: head) == mqttPath }

    /// The headers of the upgrade's answer: at `/mqtt`, the subprotocol `mqtt` when the client offers it.
    static func responseHeaders(for head: HTTPRequestHead) -> HTTPHeaders {
        var headers = HTTPHeaders()
        let offered = head.headers[canonicalForm: "sec-websocket-protocol"].map { $0.lowercased() }
        if isMQTT(head) && offered.contains("mqtt") { headers.add(name: "Sec-WebSocket-Protocol", value: "mqtt") }
        return headers
    }

    /// `openConnections` counts this request's own connection.
    static func decide(_ head: HTTPRequestHead, openConnections: Int, maxConnections: Int,
                       allowedOrigins: AllowedOrigins) -> UpgradeDecision {
        let headers = head.headers
        guard headers[canonicalForm: "upgrade"].contains(where: { $0.lowercased() == "websocket" }) else {
            return .notWebSocket
        }
        guard webSocketPaths.contains(path(of: head)) else { return .notWebSocket }
        guard head.method == .GET else { return .badRequest("a WebSocket upgrade must be a GET") }
        // An upgrade request has no body (RFC 6455 4.1). NIO's upgrade handler would wait for one to end while
        // holding the connection's HTTP handlers in a reference cycle that outlives a connection closed before
        // it ends (fuzzing/leaks/ws-chain-upgrade-with-chunked-body).
        guard !headers.contains(name: "transfer-encoding"),
              headers[canonicalForm: "content-length"].allSatisfy({ $0 == "0" }) else {
            return .badRequest("a WebSocket upgrade request has no body")
        }
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return .badRequest("a WebSocket upgrade needs HTTP/1.1")
        }
        guard headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" }) else {
            return .badRequest("a WebSocket upgrade needs 'Connection: Upgrade'")
        }
        let versions = headers[canonicalForm: "sec-websocket-version"]
        guard !versions.isEmpty else { return .badRequest("Sec-WebSocket-Version is missing") }
        guard versions == ["13"] else { return .unsupportedVersion }
        let keys = headers[canonicalForm: "sec-websocket-key"]
        guard keys.count == 1, let key = Data(base64Encoded: String(keys[0])), key.count == 16 else {
            return .badRequest("Sec-WebSocket-Key must be one base64-encoded 16-byte value")
        }
        let origins = headers["origin"]  // raw values: an empty or comma-joined Origin is not an origin
        guard origins.count <= 1, allowedOrigins.allows(origins.first) else { return .forbiddenOrigin }
        guard openConnections <= maxConnections else { return .overloaded }
        return .upgrade
    }
}

/// The open TCP connections of one ingress, for `MaxConnections`, also published as the gauge `tcpConnections`.
/// Touched only on the ingress's event loop.
// @unchecked Sendable: touched only on the ingress's one event loop (channel initializers, close futures).
final class ConnectionCounter: @unchecked Sendable {
    private(set) var open = 0
    private let metrics: StageMetrics?

    init(metrics: StageMetrics? = nil) {
        self.metrics = metrics
    }

    /// Counts `channel` until it closes.
    func track(_ channel: Channel) {
        add(1)
        channel.closeFuture.assumeIsolated().whenComplete { [self] _ in add(-1) }
    }

    private func add(_ delta: Int) {
        open += delta
        metrics?.setGauge("tcpConnections", open)
    }
}

/// Answers a WebSocket upgrade that `NIOWebSocketServerUpgrader` refused (its `shouldUpgrade` said no, or the
/// request failed its own checks): 400, 401 (its token was refused), 403, 426 or 503, then closes. Other requests
/// pass on to plain HTTP handling. Sits after `HTTPServerUpgradeHandler`, so it only sees requests that are not
/// upgraded.
final class UpgradeRefusalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Seconds a client told 503 should wait before it tries again.
    static let retryAfterSeconds = 5

    private let connections: ConnectionCounter
    private let maxConnections: Int
    private let allowedOrigins: AllowedOrigins
    private let access: UpgradeAccess?
    /// True from the head of a refused request to its end: its other parts are dropped.
    private var refusing = false

    /// `access`: the upgrade's verdict on a token that came with the request (refused: 401).
    init(connections: ConnectionCounter, maxConnections: Int, allowedOrigins: AllowedOrigins,
         access: UpgradeAccess? = nil) {
        self.connections = connections
        self.maxConnections = maxConnections
        self.allowedOrigins = allowedOrigins
        self.access = access
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        guard case .head(let head) = part else {
            if !refusing { context.fireChannelRead(data) }
            if case .end = part { refusing = false }
            return
        }
        if let refusal = access?.refusal {
            access?.refusal = nil
            return refuse(context, head, .unauthorized, refusal.reason, extra: ("WWW-Authenticate", "Bearer"))
        }
        switch UpgradeDecision.decide(head, openConnections: connections.open, maxConnections: maxConnections,
                                      allowedOrigins: allowedOrigins) {
        case .notWebSocket:
            context.fireChannelRead(data)
        case .badRequest(let reason):
            refuse(context, head, .badRequest, reason)
        case .forbiddenOrigin:
            refuse(context, head, .forbidden, "this origin may not connect (AllowedOrigins)")
        case .unsupportedVersion:
            refuse(context, head, .upgradeRequired, "only WebSocket version 13 is supported",
                   extra: ("Sec-WebSocket-Version", "13"))
        case .overloaded, .upgrade:  // `.upgrade` here: refused a moment ago for the connection count
            refuse(context, head, .serviceUnavailable, "too many connections: try again later",
                   extra: ("Retry-After", String(Self.retryAfterSeconds)))
        }
    }

    /// The upgrader reports what `decide` already answers.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if error is NIOWebSocketUpgradeError { return }
        context.fireErrorCaught(error)
    }

    private func refuse(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus,
                        _ reason: String, extra: (String, String)? = nil) {
        refusing = true
        let body = reason + "\n"
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Connection", value: "close")
        if let (name, value) = extra { headers.add(name: name, value: value) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
                      promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

/// Closes a connection that has not completed its WebSocket upgrade (or been answered as plain HTTP) within
/// `HandshakeTimeout`: a client that connects and sends nothing, or sends its request slowly (slowloris), holds
/// a file descriptor only that long. Removed from the pipeline when the upgrade completes.
final class HandshakeTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Never

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }
}

/// Logs errors of a listening socket (e.g. `EMFILE` when the process runs out of file descriptors). NIO's own
/// `AcceptBackoffHandler`, after this one, pauses accepting for a moment; nothing here is fatal.
final class AcceptErrorLogger: ChannelInboundHandler {
    typealias InboundIn = Channel

    private let logger: Logger
    private var lastLogged: NIODeadline = .distantPast

    init(logger: Logger) {
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let now = NIODeadline.now()
        if now - lastLogged >= .seconds(1) {  // at most once a second: accept retries in a loop
            lastLogged = now
            logger.warning("cannot accept a connection", metadata: ["error": "\(error)"])
        }
        context.fireErrorCaught(error)
    }
}
