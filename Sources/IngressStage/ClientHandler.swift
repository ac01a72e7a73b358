import Foundation
import NIOCore
import NIOWebSocket

/// The last handler of a WebSocket connection: hands each complete text message to the hub (`WebSocketProtocolHandler`
/// before it has dealt with fragments, control frames and protocol violations), once `ConnectionAccess` lets it
/// through: under `Entitlement = jwt` a token first, and while a token is verified the frames after it wait.
/// Owns the connection's one entitlement timer: the deadline for the first `connect`, then the token's lifetime.
final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame

    private let hub: IngressHub
    private let entitlement: Entitlement
    private var connection: ClientConnection?
    private var access: ConnectionAccess
    private var lifetime: TokenLifetime?
    private let tokenDeadline: TimeAmount
    private var timer: Scheduled<Void>?

    /// `grant`: what a token given with the upgrade request allows. `tokenDeadline`: how long a connection that
    /// must still send its token may take to send it (`HandshakeTimeout`).
    init(hub: IngressHub, entitlement: Entitlement, grant: TokenGrant? = nil,
         tokenDeadline: TimeAmount = .seconds(10)) {
        self.hub = hub
        self.entitlement = entitlement
        self.tokenDeadline = tokenDeadline
        access = ConnectionAccess(initial: grant?.permissions ?? entitlement.withoutToken,
                                  checksTokens: entitlement.checksTokens)
        lifetime = grant?.expiresAt.map { TokenLifetime(expiresAt: $0, notice: entitlement.expireNotice) }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let connection = hub.connect(context.channel)
        connection.permissions = access.permissions
        self.connection = connection
        if access.state == .awaitingToken {
            let seconds = tokenDeadline.nanoseconds / 1_000_000_000
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: tokenDeadline) { [self] in
                guard access.state != .granted, let connection = self.connection else { return }
                entitlement.count(.missing)
                hub.close(connection, code: .policyViolation, reason: "no token within \(seconds) s")
            }
        } else {
            scheduleLifetimeEvent(on: context.eventLoop)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        if let connection { hub.disconnect(connection) }
        connection = nil
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if let connection { hub.writabilityChanged(connection) }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = unwrapInboundIn(data)
        guard let connection, !connection.isClosing else { return }
        switch message.opcode {
        case .text:
            route(ClientFrameParser.parse(message.data), from: connection)
        case .binary:
            let error = ClientFrameError(code: "INVALID_FRAME", reason: "binary frames are not supported; send JSON text")
            route(.failure(error), from: connection)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func route(_ frame: ConnectionAccess.Frame, from connection: ClientConnection) {
        switch access.receive(frame) {
        case .process(let request):
            hub.handle(request, from: connection)
        case .reject(let error):
            hub.reject(error, from: connection)
        case .hold:
            break
        case .verify(let token):
            let channel = connection.channel
            try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
            entitlement.verify(token, on: channel.eventLoop).assumeIsolated().whenSuccess { [self] result in
                try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
                verified(result, for: connection)
            }
        case .refuse(let refusal):
            entitlement.count(refusal)
            hub.close(connection, code: .policyViolation, reason: refusal.reason)
        case .closeTooManyHeld:
            hub.close(connection, code: .policyViolation,
                      reason: "more than \(ConnectionAccess.maxHeld) frames sent while the token was verified")
        }
    }

    private func verified(_ result: Result<TokenGrant, TokenRefusal>, for connection: ClientConnection) {
        guard self.connection === connection, !connection.isClosing else { return }
        switch access.verified(result) {
        case .refused(let refusal):
            hub.close(connection, code: .policyViolation, reason: refusal.reason)
        case .granted(let grant, let held):
            hub.replacePermissions(of: connection, with: grant.permissions)
            lifetime = grant.expiresAt.map { TokenLifetime(expiresAt: $0, notice: entitlement.expireNotice) }
            scheduleLifetimeEvent(on: connection.channel.eventLoop)
            for frame in held where !connection.isClosing { route(frame, from: connection) }
        }
    }

    /// Replaces the timer with one for the token's next lifetime event (none for a token that does not expire).
    private func scheduleLifetimeEvent(on eventLoop: EventLoop) {
        timer?.cancel()
        timer = nil
        guard let lifetime else { return }
        let delay = TokenLifetime.delay(lifetime.untilNext(now: Date()))
        timer = eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            guard let connection, !connection.isClosing, self.lifetime != nil else { return }
            switch self.lifetime?.due(now: Date()) {
            case .expiresSoon?:
                hub.tokenStatus("TOKEN_TO_EXPIRE", to: connection)
            case .expired?:
                hub.tokenExpired(connection)
                return
            case nil:
                break
            }
            scheduleLifetimeEvent(on: eventLoop)
        }
    }
}
