import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchyardCore
import XCTest
@testable import IngressStage

/// `WireFrame` and `ClientWire`: a frame built once goes out below the frame encoder as the encoder would have
/// written it, in order with what the pipeline writes, and not after a close frame.
final class ClientWireTests: XCTestCase {
    let allocator = ByteBufferAllocator()

    /// What NIO's encoder writes for `frame`, as one buffer.
    func encodedByNIO(_ frame: WebSocketFrame) throws -> ByteBuffer {
        let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())
        try channel.writeAndFlush(frame).wait()
        var bytes = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
        return bytes
    }

    func testAWireFrameIsTheFrameAsTheEncoderWritesItForEveryLengthClass() throws {
        for (length, opcode) in [(0, WebSocketOpcode.text), (125, .text), (126, .binary), (65_535, .text),
                                 (65_536, .binary)] {
            let data = ByteBuffer(repeating: UInt8(ascii: "x"), count: length)
            let frame = WebSocketFrame(fin: true, opcode: opcode, data: data)
            XCTAssertEqual(WireFrame(frame, allocator: allocator).webSocketBytes, try encodedByNIO(frame),
                           "\(length) bytes")
            XCTAssertEqual(WireFrame(frame, allocator: allocator).payloadBytes, length)
        }
    }

    /// A client's pipeline after the upgrade: encoder, protocol handler, and a last handler.
    func makeWebSocketChannel() throws -> (EmbeddedChannel, ClientWire) {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([
            WebSocketFrameEncoder(), WebSocketProtocolHandler(maxMessageSize: 1024, pingsPerSecond: 5),
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, ClientWire(channel: channel))
    }

    func outbound(_ channel: EmbeddedChannel) throws -> ByteBuffer {
        var bytes = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
        return bytes
    }

    func testSharedFramesGoBelowTheEncoderInOrderWithPipelineWritesAndOnlyOnFlush() throws {
        let (channel, wire) = try makeWebSocketChannel()
        let shared = WireFrame(opcode: .text, data: ByteBuffer(string: "shared"), allocator: allocator)
        let reply = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "reply"))
        wire.write(shared)
        channel.write(reply, promise: nil)
        wire.write(shared)
        XCTAssertEqual(try outbound(channel).readableBytes, 0, "nothing before the flush")
        wire.flush()
        let expected = shared.webSocketBytes + (try encodedByNIO(reply)) + shared.webSocketBytes
        XCTAssertEqual(try outbound(channel), expected)
        XCTAssertEqual(shared.webSocketBytes.readableBytes, 8, "one frame's bytes shared, not consumed")
    }

    func testNothingGoesOutAfterTheCloseFrame() throws {
        let (channel, wire) = try makeWebSocketChannel()
        channel.write(WebSocketFrame(fin: true, opcode: .connectionClose, data: ByteBuffer(bytes: [0x03, 0xE8])),
                      promise: nil)
        wire.write(WireFrame(opcode: .text, data: ByteBuffer(string: "late"), allocator: allocator))
        wire.flush()
        XCTAssertEqual(Array(try outbound(channel).readableBytesView), [0x88, 0x02, 0x03, 0xE8])
    }

    func testOnATCPMQTTConnectionOnlyThePacketGoesOut() throws {
        let channel = EmbeddedChannel(handler: MQTTTCPFraming())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let wire = ClientWire(channel: channel)
        wire.write(WireFrame(opcode: .binary, data: ByteBuffer(bytes: [0x30, 0x00]), allocator: allocator))
        wire.flush()
        XCTAssertEqual(Array(try outbound(channel).readableBytesView), [0x30, 0x00])
    }

    func testWithoutTheEncoderFramesTakeThePipeline() throws {
        let channel = EmbeddedChannel()
        let wire = ClientWire(channel: channel)
        wire.write(WireFrame(opcode: .text, data: ByteBuffer(string: "m"), allocator: allocator))
        wire.flush()
        XCTAssertEqual(try channel.readOutbound(as: WebSocketFrame.self)?.data, ByteBuffer(string: "m"))
    }
}

private func + (lhs: ByteBuffer, rhs: ByteBuffer) -> ByteBuffer {
    var sum = lhs
    var rhs = rhs
    sum.writeBuffer(&rhs)
    return sum
}
