#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOWebSocket
import XCTest
@testable import IngressStage

/// `DirectSocketWriter` on real loopback sockets: every byte arrives once and in order whether the socket or NIO
/// writes it (the kernel's buffers kept small, the client reading late), promises complete, and a closed channel
/// is never written.
final class DirectSocketWriterTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var server: Channel!
    /// The accepted connection, once there is one.
    let accepted = NIOLockedValueBox<Channel?>(nil)
    var client: CInt = -1

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let accepted = self.accepted
        server = try await ServerBootstrap(group: group)
            .childChannelOption(ChannelOptions.socketOption(.so_sndbuf), value: 4096)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let writer = try XCTUnwrap(DirectSocketWriter.forChannel(channel))
                    try channel.pipeline.syncOperations.addHandler(writer)
                    accepted.withLockedValue { $0 = channel }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var small: CInt = 4096
        setsockopt(client, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<CInt>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(server.localAddress!.port!).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        XCTAssertEqual(connected, 0)
        let deadline = Date().addingTimeInterval(5)
        while accepted.withLockedValue({ $0 }) == nil, Date() < deadline { usleep(1000) }
    }

    override func tearDown() async throws {
        if client >= 0 { close(client) }
        try await server.close()
        try await group.shutdownGracefully()
    }

    var channel: Channel { accepted.withLockedValue { $0 }! }

    /// Reads `count` bytes from the client socket (or what comes before end of stream).
    func readAll(_ count: Int) -> [UInt8] {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while received.count < count {
            let n = read(client, &chunk, chunk.count)
            guard n > 0 else { break }
            received.append(contentsOf: chunk[0..<n])
        }
        return received
    }

    func testTheDescriptorFoundIsTheConnectionsSocket() throws {
        let descriptor = try XCTUnwrap(socketDescriptor(of: channel))
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let found = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(descriptor, $0, &length) }
        }
        XCTAssertEqual(found, 0)
        XCTAssertEqual(Int(UInt16(bigEndian: address.sin_port)), channel.remoteAddress?.port)
        XCTAssertNil(socketDescriptor(of: EmbeddedChannel()), "not a socket channel")
    }

    func testEveryByteArrivesOnceInOrderWhenTheSocketTakesOnlyPartAndPromisesComplete() throws {
        // Far more than the small buffers hold, in buffers of many sizes, flushed in groups, partly with promises.
        let chunks = (0..<3000).map { index in
            (0..<(1 + (index * 7919) % 3000)).map { UInt8(truncatingIfNeeded: index &+ $0) }
        }
        let expected = Array(chunks.joined())
        let buffers = chunks.map { ByteBuffer(bytes: $0) }
        let channel = self.channel
        let completed = NIOLockedValueBox(0)
        let failed = NIOLockedValueBox(0)
        try channel.eventLoop.submit {
            for (index, buffer) in buffers.enumerated() {
                if index % 5 == 0 {
                    let promise = channel.eventLoop.makePromise(of: Void.self)
                    promise.futureResult.whenComplete { result in
                        switch result {
                        case .success: completed.withLockedValue { $0 += 1 }
                        case .failure: failed.withLockedValue { $0 += 1 }
                        }
                    }
                    channel.write(buffer, promise: promise)
                } else {
                    channel.write(buffer, promise: nil)
                }
                if index % 7 == 6 { channel.flush() }
            }
            channel.flush()
        }.wait()
        usleep(50_000)  // the kernel's buffers fill; the rest waits in NIO
        let received = readAll(expected.count)
        XCTAssertEqual(received.count, expected.count)
        XCTAssertTrue(received == expected, "bytes reordered, lost or doubled")
        let deadline = Date().addingTimeInterval(5)
        while completed.withLockedValue({ $0 }) < 600, Date() < deadline { usleep(1000) }
        XCTAssertEqual(completed.withLockedValue { $0 }, 600)
        XCTAssertEqual(failed.withLockedValue { $0 }, 0)
    }

    func testClientWireWritesThroughTheWriterInOrderWithThePipelinesWrites() throws {
        let channel = self.channel
        let shared = WireFrame(opcode: .text, data: ByteBuffer(string: "shared"), allocator: ByteBufferAllocator())
        let reply = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "reply"))
        let writable = try channel.eventLoop.submit {
            try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
            let wire = ClientWire(channel: channel)
            wire.write(shared)
            channel.write(reply, promise: nil)
            wire.write(shared)
            wire.flush()
            return wire.isWritable
        }.wait()
        XCTAssertTrue(writable)
        let expected = Array(buffer: shared.webSocketBytes) + [0x81, 5] + Array("reply".utf8)
            + Array(buffer: shared.webSocketBytes)
        XCTAssertEqual(readAll(expected.count), expected)
    }

    func testWritesPendingAtTheCloseOrAfterItFail() throws {
        let channel = self.channel
        let unflushed = channel.eventLoop.submit { channel.write(ByteBuffer(string: "unflushed")) }
        try channel.close().wait()
        XCTAssertThrowsError(try unflushed.wait().wait(), "a write pending at the close fails, as with NIO alone")
        let late = channel.eventLoop.submit { channel.writeAndFlush(ByteBuffer(string: "late")) }
        XCTAssertThrowsError(try late.wait().wait())
        XCTAssertEqual(readAll(1), [], "the client sees the end of the stream, nothing written")
    }

    func testAWriteLeftUnflushedWhenTheChannelClosesUnderneathFails() throws {
        let channel = self.channel
        let outcome = NIOLockedValueBox<Result<Void, Error>?>(nil)
        try channel.eventLoop.submit {
            channel.write(ByteBuffer(string: "unflushed")).whenComplete { result in outcome.withLockedValue { $0 = result } }
        }.wait()
        close(client)  // the client goes away; the server reads the end of the stream and closes
        client = -1
        let deadline = Date().addingTimeInterval(5)
        while outcome.withLockedValue({ $0 }) == nil, Date() < deadline { usleep(1000) }
        guard case .failure = outcome.withLockedValue({ $0 }) else {
            return XCTFail("not failed (left pending for ever?): \(String(describing: outcome.withLockedValue { $0 }))")
        }
    }
}
