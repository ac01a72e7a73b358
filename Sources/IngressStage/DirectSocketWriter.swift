import Glibc
import NIOCore

/// The lowest handler of a plain TCP client connection: while NIO holds none of the connection's output, a flush
/// writes what was written since the last one straight to the socket with one `send`/`sendmsg`, and only what the
/// kernel did not take (or everything, on an error) goes on to NIO, which then owns the connection's output until
/// it has written all of it (writability, the watermarks and errors stay NIO's).
///
/// Why: a fan-out delivery is one small write to each of many sockets, and NIO's per-write bookkeeping
/// (`PendingStreamWritesManager`, its flush and lifecycle checks) cost about as much CPU as the kernel's send
/// (docs/BENCHMARKS.md, "Writing to the socket directly"). NIO offers no such path, nor the descriptor of an
/// accepted connection, which `socketDescriptor(of:)` reads by reflection once per connection; where it cannot,
/// the handler is not added and NIO writes everything.
///
/// Never used behind TLS (the bytes here would be plaintext). Writes only while the channel is active: NIO marks
/// it inactive before user code can run after the descriptor's close, so a descriptor number reused by another
/// socket is never written.
final class DirectSocketWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Buffers sent in one `sendmsg` at most; more go in further calls.
    static let buffersPerCall = 64

    private let descriptor: CInt
    /// Written since the last flush while NIO held nothing: the next flush tries the socket first. The first is
    /// held inline: most flushes of a fan-out carry one buffer, and then no array is allocated.
    private var first: (ByteBuffer, EventLoopPromise<Void>?)?
    private var more: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    /// Writes handed to NIO and not yet completed: while any are, every write goes to NIO too, in order.
    private var writesInNIO = 0
    /// The output was shut (`close(mode: .output)`) or the whole channel asked to close: NIO decides from here on.
    private var closing = false

    init(descriptor: CInt) {
        self.descriptor = descriptor
    }

    /// A handler for `channel`'s socket, or nil when its descriptor cannot be found.
    static func forChannel(_ channel: Channel) -> DirectSocketWriter? {
        socketDescriptor(of: channel).map(DirectSocketWriter.init(descriptor:))
    }

    /// This handler's context while it is in the pipeline: `ClientWire` writes and flushes through the handler
    /// directly (it is the next outbound handler after the frame encoder), not through the contexts in between.
    private var context: ChannelHandlerContext?
    /// The channel, kept while the handler is in the pipeline: asked whether it is active on every flush, which
    /// `context.channel` would look up through the pipeline each time.
    private var channel: Channel?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        channel = context.channel
    }

    /// After the channel closed. Writes not flushed by then fail, as NIO fails its own.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        channel = nil
        let unflushed = (first.map { [$0] } ?? []) + more
        first = nil
        more.removeAll()
        for (_, promise) in unflushed { promise?.fail(ChannelError.ioOnClosedChannel) }
    }

    /// True while NIO holds none of the connection's output, so the channel takes more (it is below its low
    /// watermark): `ClientConnection` asks this before every live write instead of the channel.
    var holdsNothingInNIO: Bool { writesInNIO == 0 && !closing }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let data = unwrapOutboundIn(data)
        guard case .byteBuffer(let buffer) = data else {
            handToNIO(context: context)
            return handToNIO(context: context, data, promise: promise)
        }
        write(buffer, promise: promise, context: context)
    }

    /// A write from `ClientWire`, as if it came down the pipeline.
    func write(_ buffer: ByteBuffer) {
        guard let context else { return }
        write(buffer, promise: nil, context: context)
    }

    private func write(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard holdsNothingInNIO else { return handToNIO(context: context, .byteBuffer(buffer), promise: promise) }
        if first == nil { first = (buffer, promise) } else { more.append((buffer, promise)) }
    }

    /// A flush from `ClientWire`, as if it came down the pipeline.
    func flush() {
        guard let context else { return }
        flush(context: context)
    }

    func flush(context: ChannelHandlerContext) {
        guard first != nil else { return context.flush() }
        guard channel?.isActive == true else {
            handToNIO(context: context)
            return context.flush()
        }
        writeToSocket()
        // Whatever the socket did not take, NIO writes when it can (or fails, as it would have).
        if first != nil {
            handToNIO(context: context)
            context.flush()
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        closing = true
        handToNIO(context: context)
        context.close(mode: mode, promise: promise)
    }

    /// Writes the pending buffers until the socket takes no more; completes the promises of those fully written
    /// and leaves the rest (the first one partly written, its reader index moved) pending.
    private func writeToSocket() {
        while let (head, _) = first {
            let offered = more.isEmpty ? head.readableBytes : -1
            let written = more.isEmpty ? writeFirst(head) : writeVector()
            guard written > 0 else { return }
            var left = written
            var taken = 0  // entries fully written: `first`, then `more`'s
            var done: [EventLoopPromise<Void>] = []
            while let (buffer, promise) = taken == 0 ? first : (taken <= more.count ? more[taken - 1] : nil),
                  buffer.readableBytes <= left {
                left -= buffer.readableBytes
                if let promise { done.append(promise) }
                taken += 1
            }
            if taken > more.count {
                first = nil
                more.removeAll()
            } else if taken > 0 {
                first = more[taken - 1]
                more.removeFirst(taken)
            }
            if left > 0 { first!.0.moveReaderIndex(forwardBy: left) }
            // After the state is consistent: a completion may write again.
            for promise in done { promise.succeed(()) }
            if written < offered || left > 0 { return }
        }
    }

    private func writeFirst(_ buffer: ByteBuffer) -> Int {
        buffer.withUnsafeReadableBytes { bytes in
            retryingInterrupted { Glibc.send(descriptor, bytes.baseAddress, bytes.count, noSignal) }
        }
    }

    /// A peer that is gone is an error to pass on (`EPIPE`), not a signal.
    private let noSignal = CInt(MSG_NOSIGNAL)

    /// One `sendmsg` of the first buffers; the bytes the kernel took, or -1.
    private func writeVector() -> Int {
        let count = min(1 + more.count, Self.buffersPerCall)
        return withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { vectors in
            // The buffers' storage stays alive: they are held in `first` and `more` during the call.
            func vector(_ buffer: ByteBuffer) -> iovec {
                buffer.withUnsafeReadableBytes { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress),
                                                       iov_len: $0.count) }
            }
            vectors[0] = vector(first!.0)
            for index in 1..<count { vectors[index] = vector(more[index - 1].0) }
            var message = msghdr()
            message.msg_iov = vectors.baseAddress
            message.msg_iovlen = count
            return retryingInterrupted { Glibc.sendmsg(descriptor, &message, noSignal) }
        }
    }

    private func retryingInterrupted(_ call: () -> Int) -> Int {
        while true {
            let result = call()
            if result >= 0 || errno != EINTR { return result }
        }
    }

    /// Passes what is pending to NIO, in order, unflushed.
    private func handToNIO(context: ChannelHandlerContext) {
        guard let (buffer, promise) = first else { return }
        first = nil
        handToNIO(context: context, .byteBuffer(buffer), promise: promise)
        let rest = more
        more.removeAll()
        for (buffer, promise) in rest { handToNIO(context: context, .byteBuffer(buffer), promise: promise) }
    }

    private func handToNIO(context: ChannelHandlerContext, _ data: IOData, promise: EventLoopPromise<Void>?) {
        writesInNIO += 1
        let tracked = promise ?? context.eventLoop.makePromise()
        tracked.futureResult.assumeIsolated().whenComplete { [self] _ in writesInNIO -= 1 }
        context.write(wrapOutboundOut(data), promise: tracked)
    }
}

/// The file descriptor of an accepted NIO socket channel, read by reflection (NIO keeps it internal:
/// `BaseSocketChannel.socket`, a `BaseSocket`'s `descriptor`); nil for any other channel, or if NIO's layout changes
/// (a unit test notices).
func socketDescriptor(of channel: Channel) -> CInt? {
    func child(_ label: String, of subject: Any) -> Any? {
        var mirror: Mirror? = Mirror(reflecting: subject)
        while let current = mirror {
            if let value = current.children.first(where: { $0.label == label })?.value { return value }
            mirror = current.superclassMirror
        }
        return nil
    }
    guard let socket = child("socket", of: channel),
          let descriptor = child("descriptor", of: socket) as? CInt, descriptor >= 0 else { return nil }
    return descriptor
}
