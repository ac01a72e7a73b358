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

    func testTheOutputQueueKeepsOrderAndIsEmptyAgainAfterItsLastElement() {
        var queue = OutputQueue<Int>()
        XCTAssertTrue(queue.isEmpty)
        XCTAssertNil(queue.popFirst())
        for value in 1...10 { queue.append(value) }
        XCTAssertFalse(queue.isEmpty)
        XCTAssertEqual((1...10).compactMap { _ in queue.popFirst() }, Array(1...10))
        XCTAssertTrue(queue.isEmpty)
        queue.append(11)
        XCTAssertEqual(queue.popFirst(), 11)
        queue.append(12)
        queue.removeAll()
        XCTAssertTrue(queue.isEmpty)
        XCTAssertNil(queue.popFirst())
    }

    func testLiveOutputIsWrittenAndFlushedOnce() throws {
        let (connection, channel) = try makeConnection()
        connection.writeLive(frame("a"))
        connection.writeLive(frame("b"))
        XCTAssertEqual(try written(channel), [], "nothing before the flush")
        XCTAssertTrue(connection.needsFlush)
        connection.flush()
        XCTAssertEqual(try written(channel), ["a", "b"])
        XCTAssertFalse(connection.needsFlush)
    }

    func testClientThatStopsReadingLiveOutputIsTooSlow() throws {
        let (connection, channel) = try makeConnection(backlogLimit: 10_000)
        channel.isWritable = false
        for _ in 0..<5 { connection.writeLive(frame("m", padTo: 2_000)) }
        XCTAssertEqual(connection.leftUnread(now: 0), .accepted, "at the limit")
        connection.writeLive(frame("m", padTo: 10))
        XCTAssertEqual(connection.leftUnread(now: 0), .tooSlow)
    }

    func testABurstThatTheFlushHandsOverIsNotABacklog() throws {
        let (connection, channel) = try makeConnection(backlogLimit: 10_000)
        channel.isWritable = false  // this batch's unflushed writes filled the channel...
        for _ in 0..<10 { connection.writeLive(frame("m", padTo: 2_000)) }
        channel.isWritable = true  // ...and the flush hands them to the kernel
        connection.writabilityChanged(now: 0)
        XCTAssertEqual(connection.leftUnread(now: 0), .accepted)
        XCTAssertEqual(try written(channel).count, 10)
    }

    func testLiveOutputWaitsInTheConnectionWhileTheChannelIsNotWritable() throws {
        let (connection, channel) = try makeConnection()
        connection.writeLive(frame("a"))
        connection.flush()
        channel.isWritable = false
        connection.writeLive(frame("b"))
        connection.writeLive(frame("c"))
        connection.flush()
        XCTAssertEqual(try written(channel), ["a"], "nothing reaches the pipeline of a channel that takes nothing")
        XCTAssertEqual(connection.liveBacklog, 2)
        channel.isWritable = true
        connection.writabilityChanged(now: 0)
        XCTAssertEqual(try written(channel), ["b", "c"], "in order, once the client reads again")
        XCTAssertEqual(connection.liveBacklog, 0)
    }

    func testAClientThatTakesNothingForTheTimeoutIsStalledWhateverItsBacklog() throws {
        let (connection, channel) = try makeConnection()
        let second: UInt64 = 1_000_000_000
        XCTAssertFalse(connection.isStalled(now: 100 * second, timeout: 10 * second), "nothing waits")
        channel.isWritable = false
        connection.writeLive(frame("m"))
        XCTAssertEqual(connection.leftUnread(now: 5 * second), .accepted, "the clock starts after the flush")
        connection.writeLive(frame("m"))
        XCTAssertEqual(connection.leftUnread(now: 9 * second), .accepted)
        XCTAssertFalse(connection.isStalled(now: 14 * second, timeout: 10 * second))
        XCTAssertTrue(connection.isStalled(now: 15 * second, timeout: 10 * second), "10 s since output first waited")

        channel.isWritable = true
        connection.writabilityChanged(now: 15 * second)
        XCTAssertFalse(connection.isStalled(now: 100 * second, timeout: 10 * second), "it read: the stall is over")
    }

    func testTheTimerClosesTheIdleTheStalledAndTheSilentMQTTClient() throws {
        let second: UInt64 = 1_000_000_000
        var config = SwitchyardConfig()
        config.idleTimeout = 300
        config.slowClientTimeout = 10
        let limits = ConnectionLimits(config)

        let (idle, _) = try makeConnection()
        XCTAssertNil(idle.overdue(now: 299 * second, limits: limits))
        XCTAssertEqual(idle.overdue(now: 300 * second, limits: limits), .idle, "no subject, no frame for 300 s")
        idle.subjects = ["/a"]
        XCTAssertNil(idle.overdue(now: 1_000 * second, limits: limits), "a subscriber is never idle")

        let (stalled, channel) = try makeConnection()
        stalled.subjects = ["/a"]
        channel.isWritable = false
        stalled.writeLive(frame("m"))
        _ = stalled.leftUnread(now: 1 * second)
        XCTAssertNil(stalled.overdue(now: 10 * second, limits: limits))
        XCTAssertEqual(stalled.overdue(now: 11 * second, limits: limits), .stalled)

        let device = ClientConnection(id: 2, channel: EmbeddedChannel(), liveBacklogLimit: 1_000, limits: limits,
                                      now: 0, mqtt: MQTTSession(version: .v5, clientID: "d", keepAliveSeconds: 20,
                                                                will: nil))
        device.subjects = ["/a"]
        XCTAssertNil(device.overdue(now: 29 * second, limits: limits))
        XCTAssertEqual(device.overdue(now: 30 * second, limits: limits), .keepAliveExpired, "1.5 × the keepalive")
        device.lastActivity = 25 * second
        XCTAssertNil(device.overdue(now: 30 * second, limits: limits), "a packet restarts the keepalive")
        device.isClosing = true
        XCTAssertNil(device.overdue(now: 1_000 * second, limits: limits), "already closing")
    }

    func testAnAnswerThatWaitsForAClientThatReadsNothingIsAStallToo() throws {
        let (connection, channel) = try makeConnection()
        let second: UInt64 = 1_000_000_000
        channel.isWritable = false
        connection.queueAnswer(frame("answer", padTo: 1_000))
        connection.writeQueued(now: 2 * second)
        XCTAssertTrue(connection.isStalled(now: 12 * second, timeout: 10 * second))
    }

    func testReadingAgainForgivesTheBacklog() throws {
        let (connection, channel) = try makeConnection(backlogLimit: 10_000)
        channel.isWritable = false
        connection.writeLive(frame("m", padTo: 9_000))
        XCTAssertEqual(connection.leftUnread(now: 0), .accepted)
        channel.isWritable = true
        connection.writabilityChanged(now: 0)
        channel.isWritable = false
        connection.writeLive(frame("m", padTo: 9_000))
        XCTAssertEqual(connection.leftUnread(now: 0), .accepted, "what the client took no longer counts")
    }

    /// The crash of issue 7: an answer far larger than the client's buffer limit is written in parts and never
    /// gets its client disconnected; live output waits behind it, in order.
    func testAnswerLargerThanTheBufferIsPacedAndLiveOutputWaitsBehindIt() throws {
        let (connection, channel) = try makeConnection(backlogLimit: 32 * 1024)
        connection.writeLive(frame("before"))
        channel.isWritable = false  // the client's buffer is full
        for index in 0..<100 { connection.queueAnswer(frame("answer\(index)", padTo: 100 * 1024)) }
        connection.writeQueued(now: 0)
        XCTAssertTrue(connection.isPacingAnswer)
        XCTAssertEqual(try written(channel), ["before"], "nothing of the answer while the client's buffer is full")
        connection.writeLive(frame("live1"))
        XCTAssertEqual(connection.leftUnread(now: 0), .accepted, "an answer never counts against the client")
        XCTAssertEqual(try written(channel), [], "live output waits behind the answer")

        channel.isWritable = true
        connection.writabilityChanged(now: 0)
        XCTAssertFalse(connection.isPacingAnswer)
        XCTAssertEqual(try written(channel), (0..<100).map { "answer\($0)" } + ["live1"],
                       "the whole answer, in order, flushed, then the live message")
    }

    func testLiveOutputQueuedBehindAnAnswerStillCounts() throws {
        let (connection, channel) = try makeConnection(backlogLimit: 10_000)
        channel.isWritable = false
        connection.queueAnswer(frame("answer", padTo: 1_000_000))
        connection.writeQueued(now: 0)
        connection.writeLive(frame("live", padTo: 9_000))
        XCTAssertEqual(connection.leftUnread(now: 0), .accepted)
        connection.writeLive(frame("live", padTo: 2_000))
        XCTAssertEqual(connection.leftUnread(now: 0), .tooSlow)
    }

    func testAnswerIsFlushedInParts() throws {
        let (connection, channel) = try makeConnection()
        var flushes = 0
        try channel.pipeline.syncOperations.addHandler(FlushCounter { flushes += 1 })
        for index in 0..<10 { connection.queueAnswer(frame("answer\(index)", padTo: 100 * 1024)) }
        connection.writeQueued(now: 0)
        XCTAssertEqual(try written(channel).count, 10)
        XCTAssertGreaterThanOrEqual(flushes, 10, "every part of about \(ClientConnection.answerChunkBytes) bytes")
    }

    func testAnswerMessagesAreEncodedWhenWritten() throws {
        let (connection, channel) = try makeConnection()
        channel.isWritable = false
        let message = Message(subject: "/a", content: ByteBuffer(string: "hi"), seq: 7, epoch: "E")
        connection.queueAnswer(message, kind: .recovered)
        connection.queueAnswer(frame("status"))
        connection.writeQueued(now: 0)
        XCTAssertEqual(try written(channel), [])
        channel.isWritable = true
        connection.writabilityChanged(now: 0)
        XCTAssertEqual(try written(channel), [
            String(buffer: ServerFrames.message(message, kind: .recovered, allocator: ByteBufferAllocator())),
            "status",
        ])
    }

    func testClosingDropsQueuedOutput() throws {
        let (connection, channel) = try makeConnection()
        channel.isWritable = false
        connection.queueAnswer(frame("answer"))
        connection.writeQueued(now: 0)
        connection.isClosing = true
        connection.discardQueued()
        channel.isWritable = true
        connection.writabilityChanged(now: 0)
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

extension ClientConnection {
    /// A test's live frame, framed once as the hub frames a message.
    func writeLive(_ frame: WebSocketFrame) {
        writeLive(WireFrame(frame, allocator: ByteBufferAllocator()))
    }
}
