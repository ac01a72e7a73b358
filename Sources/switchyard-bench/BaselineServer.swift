import IngressStage
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import SwitchyardCore

/// The reference the bench compares Switchyard against: a minimal single-process, single-event-loop WebSocket
/// fan-out server doing the protocol subset the bench uses. Subscribe → `subscribed` ALLOW; publish → seq + 1 for
/// its subject, the message frame encoded once (same layout as ws-ingress) and written to every subscriber of the
/// subject, then `publish_status` OK. Client frames are parsed with ws-ingress's own `ClientFrameParser`, so
/// that the ratio measures the pipeline (processes, nanomsg hops, cache, fanout) rather than a JSON parser.
/// No storage, no recovery, no back-pressure policy. Writes are flushed once per event-loop round.
final class BaselineServer {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: Channel?

    /// Binds `host:port` (0 picks a free port) and returns the port.
    func start(host: String, port: Int) throws -> Int {
        let loop = group.next()
        let hub = BaselineHub(eventLoop: loop)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 4096)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let upgrader = NIOWebSocketServerUpgrader(
                    maxFrameSize: 1 << 20,
                    automaticErrorHandling: true,
                    shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
                    upgradePipelineHandler: { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(BaselineHandler(hub: hub))
                        }
                    })
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                }
            }
        let channel = try bootstrap.bind(host: host, port: port).wait()
        self.channel = channel
        return channel.localAddress?.port ?? port
    }

    func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// The baseline's state; touched only on its single event loop.
// @unchecked Sendable: touched only on its single event loop (handlers, and `flush` through `execute`).
final class BaselineHub: @unchecked Sendable {
    let eventLoop: EventLoop
    let epoch = "baseline-\(UInt32.random(in: 0...UInt32.max))"
    var subscribers: [String: [ObjectIdentifier: Channel]] = [:]
    var seqs: [String: UInt64] = [:]
    var dirty: [Channel] = []
    var dirtyIDs: Set<ObjectIdentifier> = []
    let allocator = ByteBufferAllocator()

    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Writes without flushing; every written channel is flushed once when the event loop has handled all the
    /// reads of this round, so that messages to one subscriber share a `writev` (as ws-ingress flushes once per
    /// batch from the pipeline).
    func write(_ frame: WebSocketFrame, to channel: Channel) {
        channel.write(frame, promise: nil)
        if dirtyIDs.insert(ObjectIdentifier(channel)).inserted {
            if dirty.isEmpty { eventLoop.execute { self.flush() } }
            dirty.append(channel)
        }
    }

    func flush() {
        for channel in dirty { channel.flush() }
        dirty.removeAll(keepingCapacity: true)
        dirtyIDs.removeAll(keepingCapacity: true)
    }

    func remove(_ channel: Channel, subjects: Set<String>) {
        for subject in subjects {
            subscribers[subject]?[ObjectIdentifier(channel)] = nil
            if subscribers[subject]?.isEmpty == true { subscribers[subject] = nil }
        }
    }

    func publish(subject: String, content: String, closure: String?) -> UInt64 {
        let seq = (seqs[subject] ?? 0) + 1
        seqs[subject] = seq
        guard let local = subscribers[subject], !local.isEmpty else { return seq }
        // Same layout as ws-ingress's ServerFrames.message; encoded once for every subscriber.
        var buffer = allocator.buffer(capacity: content.utf8.count + subject.utf8.count + epoch.utf8.count + 128)
        buffer.writeStaticString(#"{"op":"message","subject":"#)
        buffer.writeJSONString(subject)
        buffer.writeStaticString(#","content":"#)
        buffer.writeJSONString(content)
        buffer.writeStaticString(#","type":"update","seq":"#)
        buffer.writeDecimal(seq)
        buffer.writeStaticString(#","epoch":"#)
        buffer.writeJSONString(epoch)
        buffer.writeStaticString(#","retained":true"#)
        if let closure {
            buffer.writeStaticString(#","closure":"#)
            buffer.writeJSONString(closure)
        }
        buffer.writeStaticString("}")
        let frame = WebSocketFrame(fin: true, opcode: .text, data: buffer)
        for channel in local.values { write(frame, to: channel) }
        return seq
    }
}

final class BaselineHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let hub: BaselineHub
    private var subjects: Set<String> = []

    init(hub: BaselineHub) {
        self.hub = hub
    }

    private func reply(_ context: ChannelHandlerContext, _ fields: KeyValuePairs<String, String?>) {
        var buffer = context.channel.allocator.buffer(capacity: 96)
        buffer.writeJSONObject(fields)
        hub.write(WebSocketFrame(fin: true, opcode: .text, data: buffer), to: context.channel)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            handle(context, frame.unmaskedData)
        case .ping:
            hub.write(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData), to: context.channel)
        case .connectionClose:
            hub.remove(context.channel, subjects: subjects)
            subjects.removeAll()
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose,
                                                                 data: ByteBuffer())))
                .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        default:
            break
        }
    }

    private func handle(_ context: ChannelHandlerContext, _ text: ByteBuffer) {
        let request: ClientRequest
        switch ClientFrameParser.parse(text) {
        case .success(let parsed): request = parsed
        case .failure(let error): return reply(context, ["op": "error", "code": error.code, "reason": error.reason])
        }
        switch request {
        case .subscribe(let requested, _, _):
            for subject in requested {
                reply(context, ["op": "subscribed", "subject": subject, "status": "ALLOW"])
                subjects.insert(subject)
                hub.subscribers[subject, default: [:]][ObjectIdentifier(context.channel)] = context.channel
            }
        case .unsubscribe(let requested):
            let removed = Set(requested)
            hub.remove(context.channel, subjects: removed.intersection(subjects))
            subjects.subtract(removed)
        case .publish(let publish):
            _ = hub.publish(subject: publish.subject, content: String(buffer: publish.content), closure: publish.closure)
            if let closure = publish.closure { reply(context, ["op": "publish_status", "closure": closure, "status": "OK"]) }
        case .ping:
            reply(context, ["op": "pong"])
        case .connect:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        hub.remove(context.channel, subjects: subjects)
        subjects.removeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
