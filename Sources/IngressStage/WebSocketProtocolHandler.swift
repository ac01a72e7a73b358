import NIOCore
import NIOWebSocket

/// The WebSocket protocol of one client connection, between NIO's frame decoder and `ClientHandler`: applies
/// `WebSocketReceiver`'s verdict on each frame, so only complete messages (one unmasked frame each, `fin` set,
/// text or binary) travel on. Answers pings up to `PingRateLimit` a second (pongs are flushed once per read burst,
/// and dropped while the client is not reading, so a ping flood cannot grow our queue; a flood closes with 1008),
/// answers a client's close, and closes with 1002, 1007 or 1009 on a violation. Once a close frame has gone out,
/// later outgoing frames are dropped (RFC 6455 5.5.1). It also answers the frame decoder's own refusals (close
/// 1009 or 1002), so the upgrader adds no error handler of its own: one handler fewer per connection.
final class WebSocketProtocolHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// How long a connection we are failing waits for the client's close frame before it is closed anyway.
    static let closeHandshakeTimeout = TimeAmount.seconds(1)

    private var receiver: WebSocketReceiver
    /// A close frame has gone out: later frames are dropped (`ClientWire` asks too).
    private(set) var closeSent = false
    private var needsFlush = false
    /// Pings answered; one beyond it is not (RFC 6455 5.5.3 lets an endpoint answer only the latest ping).
    private var pingRate: TokenBucket
    private var pingStrikes = RateLimitStrikes()

    init(maxMessageSize: Int, pingsPerSecond: Int) {
        receiver = WebSocketReceiver(maxMessageSize: maxMessageSize)
        pingRate = TokenBucket(perSecond: pingsPerSecond, burst: pingsPerSecond, now: NIODeadline.now().uptimeNanoseconds)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch receiver.receive(unwrapInboundIn(data)) {
        case .message(let opcode, let payload):
            context.fireChannelRead(wrapInboundOut(WebSocketFrame(fin: true, opcode: opcode, data: payload)))
        case .ping(let payload):
            guard !closeSent else { return }
            let now = NIODeadline.now().uptimeNanoseconds
            guard pingRate.take(1, now: now) else {
                if pingStrikes.refused(now: now) {
                    fail(context, code: .policyViolation, reason: "ping flood: at most \(pingRate.perSecond) pings per second")
                }
                return
            }
            guard context.channel.isWritable else { return }
            context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: payload)), promise: nil)
            needsFlush = true
        case .close(let payload):
            answerClose(context, payload: payload)
        case .fail(let code, let reason):
            fail(context, code: code, reason: reason)
        case .none:
            break
        }
    }

    /// NIO's frame decoder refuses a frame above the frame limit (1009) and a control frame that is fragmented or
    /// longer than 125 bytes (1002); it decodes nothing more after that.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let refusal = error as? NIOWebSocketError else { return context.fireErrorCaught(error) }
        switch refusal {
        case .invalidFrameLength:
            fail(context, code: .messageTooLarge, reason: "frame larger than \(receiver.maxMessageSize) bytes")
        case .fragmentedControlFrame, .multiByteControlFrameLength:
            fail(context, code: .protocolError, reason: "control frames must be whole and at most 125 bytes")
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closeSent else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        if unwrapOutboundIn(data).opcode == .connectionClose { closeSent = true }
        context.write(data, promise: promise)
    }

    /// The client closes: echo its code (or its empty payload), then close the connection; if we had closed
    /// first, this is the answer we were waiting for.
    private func answerClose(_ context: ChannelHandlerContext, payload: ByteBuffer) {
        guard !closeSent else { return context.close(promise: nil) }
        closeSent = true
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)
        context.writeAndFlush(wrapOutboundOut(frame)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    /// Fails the connection: a close frame with the code and reason, then only our side is shut, so frames the
    /// client is still sending do not make the kernel reset the connection (and lose the close frame); the
    /// connection closes on the client's answer, or after `closeHandshakeTimeout`.
    private func fail(_ context: ChannelHandlerContext, code: WebSocketErrorCode, reason: String) {
        guard !closeSent else { return context.close(promise: nil) }
        closeSent = true
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)))
            .assumeIsolated()
            .whenComplete { _ in
                context.close(mode: .output, promise: nil)
                channel.eventLoop.scheduleTask(in: Self.closeHandshakeTimeout) { channel.close(promise: nil) }
            }
    }
}
