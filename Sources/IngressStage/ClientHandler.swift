import NIOCore
import NIOWebSocket

/// The last handler of a WebSocket connection: answers control frames and hands text frames to the hub.
final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

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
        let frame = unwrapInboundIn(data)
        guard let connection, !connection.isClosing else { return }
        switch frame.opcode {
        case .text:
            guard frame.fin else {
                return reject(context, reason: "fragmented frames are not supported")
            }
            switch ClientFrameParser.parse(frame.unmaskedData) {
            case .success(let request): hub.handle(request, from: connection)
            case .failure(let error): hub.reject(error, from: connection)
            }
        case .binary:
            hub.reject(ClientFrameError(code: "INVALID_FRAME", reason: "binary frames are not supported; send JSON text"),
                       from: connection)
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)),
                                  promise: nil)
        case .connectionClose:
            // Echo the client's close code, then close.
            var data = frame.unmaskedData
            let code = data.readSlice(length: 2) ?? ByteBuffer()
            hub.disconnect(connection)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: code)))
                .whenComplete { _ in context.close(promise: nil) }
        case .continuation:
            reject(context, reason: "fragmented frames are not supported")
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func reject(_ context: ChannelHandlerContext, reason: String) {
        guard let connection else { return }
        hub.close(connection, code: .unacceptableData, reason: reason)
    }
}
