import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchyardCore
import XCTest
@testable import IngressStage

/// The client write path on an `EmbeddedChannel`: live output, the slow-client rule, and answers paced by
/// writability.
final class ClientConnectionTests: XCTestCase {
    static let limits = ConnectionLimits(SwitchyardConfig())

    func makeConnection(backlogLimit: Int = 32 * 1024) throws -> (ClientConnection, EmbeddedChannel) {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (ClientConnection(id: 1, channel: channel, liveBacklogLimit: backlogLimit, limits: Self.limits, now: 0),
                channel)
    }

    func frame(_ text: String, padTo size: Int = 0) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text,
                       data: ByteBuffer(string: text + String(repeating: ".", count: max(size - text.utf8.count, 0))))
    }

    /// The text of every frame flushed so far, up to its first dot.
    func written(_ channel: EmbeddedChannel) throws -> [String] {
        var texts: [String] = []
        while let frame = try channel.readOutbound(as: WebSocketFrame.self) {
            let text = String(buffer: frame.data)
            texts.append(String(text.prefix { $0 != "." }))
        }
        return texts
    }

    func testLiveOutputIsWrittenAndFlushedOnce() throws {
        let (connection, channel) = try makeConnection()
        XCTAssertEqual(connection.writeLive(frame("a")), .accepted)
        XCTAssertEqual(connection.writeLive(frame("b")), .accepted)
        XCTAssertEqual(try written(channel), [], "nothing before the flush")
        XCTAssertTrue(connection.needsFlush)
        connection.flush()
        XCTAssertEqual(try written(channel), ["a", "b"])
        XCTAssertFalse(connection.needsFlush)
    }

    func testClientThatStopsReadingLiveOutputIsTooSlow() throws {
        let (connection, channel) = try makeConnection(backlogLimit: 10_000)
        channel.isWritable = false
        for _ in 0..<4 { XCTAssertEqual(connection.writeLive(frame("m", padTo: 2_000)), .accepted) }
        XCTAssertEqual(connection.writeLive(frame("m", padTo: 2_000)), .accepted, "at the limit")
        XCTAssertEqual(connection.writeLive(frame("m", padTo: 10)), .tooSlow)
    }

    func testReadingAgainForgivesTheBacklog() throws {
        let (connection, channel) = try makeConnection(backlogLimit: 10_000)
        channel.isWritable = false
        XCTAssertEqual(connection.writeLive(frame("m", padTo: 9_000)), .accepted)
        channel.isWritable = true
        connection.writabilityChanged()
        channel.isWritable = false
        XCTAssertEqual(connection.writeLive(frame("m", padTo: 9_000)), .accepted)
    }

    /// The crash of issue 7: an answer far larger than the client's buffer limit is written in parts and never
    /// gets its client disconnected; live output waits behind it, in order.
    func testAnswerLargerThanTheBufferIsPacedAndLiveOutputWaitsBehindIt() throws {
        let (connection, channel) = try makeConnection(backlogLimit: 32 * 1024)
        XCTAssertEqual(connection.writeLive(frame("before")), .accepted)
        channel.isWritable = false  // the client's buffer is full
        for index in 0..<100 { connection.queueAnswer(frame("answer\(index)", padTo: 100 * 1024)) }
        connection.writeQueued()
        XCTAssertTrue(connection.isPacingAnswer)
        XCTAssertEqual(try written(channel), ["before"], "nothing of the answer while the client's buffer is full")
        XCTAssertEqual(connection.writeLive(frame("live1")), .accepted, "an answer never counts against the client")
        XCTAssertEqual(try written(channel), [], "live output waits behind the answer")

        channel.isWritable = true
        connection.writabilityChanged()
        XCTAssertFalse(connection.isPacingAnswer)
        XCTAssertEqual(try written(channel), (0..<100).map { "answer\($0)" } + ["live1"],
                       "the whole answer, in order, flushed, then the live message")
    }

    func testLiveOutputQueuedBehindAnAnswerStillCounts() throws {
        let (connection, channel) = try makeConnection(backlogLimit: 10_000)
        channel.isWritable = false
        connection.queueAnswer(frame("answer", padTo: 1_000_000))
        connection.writeQueued()
        XCTAssertEqual(connection.writeLive(frame("live", padTo: 9_000)), .accepted)
        XCTAssertEqual(connection.writeLive(frame("live", padTo: 2_000)), .tooSlow)
    }

    func testAnswerIsFlushedInParts() throws {
        let (connection, channel) = try makeConnection()
        var flushes = 0
        try channel.pipeline.syncOperations.addHandler(FlushCounter { flushes += 1 })
        for index in 0..<10 { connection.queueAnswer(frame("answer\(index)", padTo: 100 * 1024)) }
        connection.writeQueued()
        XCTAssertEqual(try written(channel).count, 10)
        XCTAssertGreaterThanOrEqual(flushes, 10, "every part of about \(ClientConnection.answerChunkBytes) bytes")
    }

    func testAnswerMessagesAreEncodedWhenWritten() throws {
        let (connection, channel) = try makeConnection()
        channel.isWritable = false
        let message = Message(subject: "/a", content: ByteBuffer(string: "hi"), seq: 7, epoch: "E")
        connection.queueAnswer(message, kind: .recovered)
        connection.queueAnswer(frame("status"))
        connection.writeQueued()
        XCTAssertEqual(try written(channel), [])
        channel.isWritable = true
        connection.writabilityChanged()
        XCTAssertEqual(try written(channel), [
            String(buffer: ServerFrames.message(message, kind: .recovered, allocator: ByteBufferAllocator())),
            "status",
        ])
    }

    func testClosingDropsQueuedOutput() throws {
        let (connection, channel) = try makeConnection()
        channel.isWritable = false
        connection.queueAnswer(frame("answer"))
        connection.writeQueued()
        connection.isClosing = true
        connection.discardQueued()
        channel.isWritable = true
        connection.writabilityChanged()
        XCTAssertEqual(try written(channel), [])
        XCTAssertFalse(connection.isPacingAnswer)
    }
}

/// Counts flushes that pass.
private final class FlushCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    let onFlush: () -> Void
    init(onFlush: @escaping () -> Void) { self.onFlush = onFlush }
    func flush(context: ChannelHandlerContext) {
        onFlush()
        context.flush()
    }
}
