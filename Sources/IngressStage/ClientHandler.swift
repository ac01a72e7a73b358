import NIOCore
import NIOWebSocket

/// The last handler of a WebSocket connection: hands each complete text message to the hub (`WebSocketProtocolHandler`
/// before it has dealt with fragments, control frames and protocol violations).
final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame

    private let hub: IngressHub
    private var connection: ClientConnection?

    init(hub: IngressHub) {
        self.hub = hub
    }

    func handlerAdded(context: ChannelHandlerContext) {
        connection = hub.connect(context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
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
            switch ClientFrameParser.parse(message.data) {
            case .success(let request): hub.handle(request, from: connection)
            case .failure(let error): hub.reject(error, from: connection)
            }
        case .binary:
            hub.reject(ClientFrameError(code: "INVALID_FRAME", reason: "binary frames are not supported; send JSON text"),
                       from: connection)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
