import NIOCore
import NIOPosix
import NIOWebSocket

/// A `ws://host:port/path?query` address (TLS is not spoken here).
public struct WebSocketURL: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// The request target: path and query.
    public var target: String

    /// Parses `text`; nil when it is not a `ws://` URL with a host and a valid port (default 80).
    public init?(_ text: String) {
        guard text.hasPrefix("ws://") else { return nil }
        let rest = text.dropFirst("ws://".count)
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var target = String(rest[authorityEnd...])
        if target.isEmpty || target.hasPrefix("?") { target = "/" + target }
        var host = Substring(authority)
        var port = 80
        if authority.hasPrefix("[") {  // [::1]:8800
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let number = Int(after.dropFirst()) else { return nil }
                port = number
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            guard let number = Int(authority[authority.index(after: colon)...]) else { return nil }
            port = number
        }
        guard !host.isEmpty, (1...65535).contains(port) else { return nil }
        self.host = String(host)
        self.port = port
        self.target = target
    }

    public var description: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "ws://\(shownHost):\(port)\(target)"
    }
}

/// Why a connection ended, as far as the client could see.
public struct ConnectionEnd: Sendable, CustomStringConvertible {
    /// The server's close code, if it sent a close frame.
    public var closeCode: UInt16?
    public var reason: String

    public init(closeCode: UInt16?, reason: String) {
        self.closeCode = closeCode
        self.reason = reason
    }

    public var description: String {
        closeCode.map { "closed by the server with \($0)\(reason.isEmpty ? "" : " (\(reason))")" } ?? reason
    }
}

/// The client end of one WebSocket connection to Switchyard: decodes the server's text frames, answers pings,
/// echoes the server's close, detects a dead connection, and reports the end of the connection once.
///
/// Keepalive: after `keepalive` without a frame from the server it sends `{"op":"ping"}`; when nothing comes
/// back within another `keepalive` the connection is taken for dead and closed.
public final class ServerConnectionHandler: ChannelInboundHandler {
    public typealias InboundIn = WebSocketFrame
    public typealias OutboundOut = WebSocketFrame

    private let onFrame: (ServerFrame) -> Void
    private let onEnd: (ConnectionEnd) -> Void
    private let keepalive: TimeAmount
    private var pingSent = false
    private var closeCode: UInt16?
    private var closeReason = ""
    private var ended = false

    /// `onFrame` gets every decodable server frame and `onEnd` the end of the connection, both on its event loop.
    public init(keepalive: TimeAmount = .seconds(15), onFrame: @escaping (ServerFrame) -> Void,
                onEnd: @escaping (ConnectionEnd) -> Void) {
        self.keepalive = keepalive
        self.onFrame = onFrame
        self.onEnd = onEnd
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        let idle = IdleStateHandler(readTimeout: keepalive)
        try? context.pipeline.syncOperations.addHandler(idle, position: .before(self))
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case IdleStateHandler.IdleStateEvent.read = event else {
            return context.fireUserInboundEventTriggered(event)
        }
        if pingSent {
            end(ConnectionEnd(closeCode: nil, reason: "no answer to ping"))
            context.close(promise: nil)
        } else {
            pingSent = true
            let ping = ByteBuffer(string: ClientRequest.ping.json)
            context.writeAndFlush(wrapOutboundOut(.clientFrame(.text, ping)), promise: nil)
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pingSent = false
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            var data = frame.unmaskedData
            if let text = data.readString(length: data.readableBytes), let decoded = ServerFrame.decode(text) {
                onFrame(decoded)
            }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(.clientFrame(.pong, frame.unmaskedData)), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            closeCode = data.readInteger(as: UInt16.self)
            closeReason = data.readString(length: data.readableBytes) ?? ""
            var echo = context.channel.allocator.buffer(capacity: 2)
            echo.writeInteger(closeCode ?? 1000)
            context.writeAndFlush(wrapOutboundOut(.clientFrame(.connectionClose, echo))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        default:
            break
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        end(ConnectionEnd(closeCode: closeCode, reason: closeCode == nil ? "connection lost" : closeReason))
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        end(ConnectionEnd(closeCode: closeCode, reason: "connection error: \(error)"))
        context.close(promise: nil)
    }

    private func end(_ end: ConnectionEnd) {
        guard !ended else { return }
        ended = true
        onEnd(end)
    }
}

extension WebSocketFrame {
    /// A client frame: clients mask every frame (RFC 6455 section 5.3).
    public static func clientFrame(_ opcode: WebSocketOpcode, _ data: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)
    }
}

extension Channel {
    /// Sends `request` as one masked text frame.
    @discardableResult
    public func send(_ request: ClientRequest) -> EventLoopFuture<Void> {
        writeAndFlush(WebSocketFrame.clientFrame(.text, ByteBuffer(string: request.json)))
    }
}

extension Channel {
    /// Sends a normal close frame (1000), then closes the connection; completes once it is closed.
    public func closeWebSocket() -> EventLoopFuture<Void> {
        var code = allocator.buffer(capacity: 2)
        code.writeInteger(UInt16(1000))
        writeAndFlush(WebSocketFrame.clientFrame(.connectionClose, code)).whenComplete { _ in
            self.close(promise: nil)
        }
        return closeFuture
    }
}
