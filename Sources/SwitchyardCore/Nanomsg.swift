import CNanomsg
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

public struct NanomsgError: Error, CustomStringConvertible {
    public let operation: String
    public let code: Int32

    init(_ operation: String, code: Int32 = nn_errno()) {
        self.operation = operation
        self.code = code
    }

    public var description: String { "\(operation): \(String(cString: nn_strerror(code)))" }

    /// The library is shutting down (`nn_term`), or the socket was closed.
    public var isTerminating: Bool { code == SY_ETERM || code == SY_EBADF }
}

/// One nanomsg socket: PULL to receive batches, PUSH to send them. The socket is closed when the owner goes away.
///
/// Blocking calls (`receive`, `send`) must run on a thread of their own, never on an event loop.
/// Sendable: its only state is the immutable descriptor, and nanomsg's socket calls are thread-safe.
public final class NanomsgSocket: Sendable {
    public enum Kind: Sendable {
        case push
        case pull
    }

    /// `NN_MSG`, `(size_t) -1`: nanomsg allocates the received message (size_t is imported as Int).
    private static let allocateMessage = -1
    private let fd: Int32

    public init(_ kind: Kind) throws {
        fd = nn_socket(SY_AF_SP, kind == .push ? SY_NN_PUSH : SY_NN_PULL)
        guard fd >= 0 else { throw NanomsgError("nn_socket") }
        // Frames are checked by the codec; the library's own 1 MiB receive limit would silently drop big batches.
        try setOption(SY_NN_RCVMAXSIZE, -1)
        try setOption(SY_NN_LINGER, 1000)
        try setOption(SY_NN_RECONNECT_IVL, 50)
        try setOption(SY_NN_RECONNECT_IVL_MAX, 1000)
    }

    deinit {
        nn_close(fd)
    }

    /// A socket of the pipeline: a stage's inbound PULL socket bound to `address`, or a PUSH socket connected to a
    /// peer's `address`. 1 MiB of buffer; a receive or send waits at most `timeoutMilliseconds` (so a receiving
    /// thread notices a stop, and a send to a peer that is gone or not keeping up gives up).
    public static func pipeline(_ kind: Kind, _ address: String, timeoutMilliseconds: Int) throws -> NanomsgSocket {
        let socket = try NanomsgSocket(kind)
        let isPull = kind == .pull
        try socket.setOption(isPull ? SY_NN_RCVBUF : SY_NN_SNDBUF, Int32(bufferBytes))
        try socket.setOption(isPull ? SY_NN_RCVTIMEO : SY_NN_SNDTIMEO, Int32(clamping: timeoutMilliseconds))
        if isPull { try socket.bind(address) } else { try socket.connect(address) }
        return socket
    }

    /// Send and receive buffers of the pipeline's sockets.
    private static let bufferBytes = 1024 * 1024

    public func bind(_ url: String) throws {
        if url.hasPrefix("ipc://") {
            // A stale socket file from a crashed predecessor would make the bind fail.
            unlink(String(url.dropFirst("ipc://".count)))
        }
        guard nn_bind(fd, url) >= 0 else { throw NanomsgError("nn_bind \(url)") }
    }

    public func connect(_ url: String) throws {
        guard nn_connect(fd, url) >= 0 else { throw NanomsgError("nn_connect \(url)") }
    }

    public func setSendTimeout(milliseconds: Int) throws { try setOption(SY_NN_SNDTIMEO, Int32(milliseconds)) }

    /// Receives one message; nil when the receive timeout passed first (or at once, with `wait: false`).
    public func receive(wait: Bool = true, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer? {
        var pointer: UnsafeMutableRawPointer? = nil
        while true {
            let size = withUnsafeMutablePointer(to: &pointer) { nn_recv(fd, $0, Self.allocateMessage, wait ? 0 : SY_NN_DONTWAIT) }
            if size >= 0, let pointer {
                defer { nn_freemsg(pointer) }
                var buffer = allocator.buffer(capacity: Int(size))
                buffer.writeBytes(UnsafeRawBufferPointer(start: pointer, count: Int(size)))
                return buffer
            }
            let code = nn_errno()
            if code == SY_EINTR { continue }
            if code == SY_ETIMEDOUT || code == SY_EAGAIN { return nil }
            throw NanomsgError("nn_recv", code: code)
        }
    }

    /// Sends one message. Returns false when it could not be sent within the send timeout (or at once, with
    /// `wait: false`): the peer is gone or not keeping up.
    public func send(_ message: ByteBuffer, wait: Bool = true) throws -> Bool {
        while true {
            let sent = message.withUnsafeReadableBytes { bytes in
                nn_send(fd, bytes.baseAddress, bytes.count, wait ? 0 : SY_NN_DONTWAIT)
            }
            if sent >= 0 { return true }
            let code = nn_errno()
            if code == SY_EINTR { continue }
            if code == SY_ETIMEDOUT || code == SY_EAGAIN { return false }
            throw NanomsgError("nn_send", code: code)
        }
    }

    private func setOption(_ option: Int32, _ value: Int32) throws {
        var value = value
        guard nn_setsockopt(fd, SY_NN_SOL_SOCKET, option, &value, MemoryLayout<Int32>.size) >= 0 else {
            throw NanomsgError("nn_setsockopt \(option)")
        }
    }
}
