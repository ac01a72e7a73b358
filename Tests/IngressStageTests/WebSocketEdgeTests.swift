import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOWebSocket
import SwitchyardCore
import XCTest
@testable import IngressStage

/// Collects the messages `WebSocketProtocolHandler` passes on.
final class MessageSink: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    var messages: [WebSocketFrame] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        messages.append(unwrapInboundIn(data))
    }
}

final class WebSocketProtocolHandlerTests: XCTestCase {
    var channel: EmbeddedChannel!
    var sink: MessageSink!

    override func setUp() {
        sink = MessageSink()
        channel = EmbeddedChannel(handlers: [WebSocketProtocolHandler(maxMessageSize: 1024, pingsPerSecond: 5), sink])
    }

    func receive(_ frames: WebSocketFrame...) throws {
        for frame in frames { try channel.writeInbound(frame) }
        channel.pipeline.fireChannelReadComplete()
    }

    func written() throws -> [WebSocketFrame] {
        var frames: [WebSocketFrame] = []
        while let frame = try channel.readOutbound(as: WebSocketFrame.self) { frames.append(frame) }
        return frames
    }

    func closeCode(_ frame: WebSocketFrame?) -> UInt16? {
        guard let frame, frame.opcode == .connectionClose else { return nil }
        return frame.data.getInteger(at: frame.data.readerIndex, as: UInt16.self)
    }

    func testFragmentsReachTheNextHandlerAsOneMessageAndPingsAreAnswered() throws {
        try receive(clientFrame(.text, "{\"op\":", fin: false), clientFrame(.ping, "p1"),
                    clientFrame(.continuation, "\"ping\"}"))
        XCTAssertEqual(sink.messages.map(\.opcode), [.text])
        XCTAssertEqual(sink.messages.first?.fin, true)
        XCTAssertEqual(sink.messages.first?.data, ByteBuffer(string: "{\"op\":\"ping\"}"))
        let out = try written()
        XCTAssertEqual(out.map(\.opcode), [.pong])
        XCTAssertEqual(out.first?.data, ByteBuffer(string: "p1"))
        XCTAssertNil(out.first?.maskKey)
    }

    func testTheDecodersRefusalsCloseWith1009And1002() throws {
        channel.pipeline.fireErrorCaught(NIOWebSocketError.invalidFrameLength)
        XCTAssertEqual(closeCode(try written().first), 1009)
        setUp()
        channel.pipeline.fireErrorCaught(NIOWebSocketError.multiByteControlFrameLength)
        XCTAssertEqual(closeCode(try written().first), 1002)
        setUp()
        channel.pipeline.fireErrorCaught(NIOWebSocketError.fragmentedControlFrame)
        XCTAssertEqual(closeCode(try written().first), 1002)
    }

    func testPongsAreFlushedOncePerReadBurst() throws {
        // (`writeInbound` ends a read burst after each frame)
        channel.pipeline.fireChannelRead(clientFrame(.ping, "a"))
        channel.pipeline.fireChannelRead(clientFrame(.ping, "b"))
        XCTAssertEqual(try written().count, 0, "nothing is flushed before the read burst ends")
        channel.pipeline.fireChannelReadComplete()
        XCTAssertEqual(try written().map(\.data), [ByteBuffer(string: "a"), ByteBuffer(string: "b")])
    }

    func testPingsFromAClientThatDoesNotReadAreNotAnswered() throws {
        channel.isWritable = false
        try receive(clientFrame(.ping, "flood"), clientFrame(.ping, "flood"))
        XCTAssertEqual(try written().count, 0)
        channel.isWritable = true
        try receive(clientFrame(.ping, "again"))
        XCTAssertEqual(try written().map(\.data), [ByteBuffer(string: "again")])
    }

    func testPingsBeyondTheRateAreNotAnsweredAndAFloodIsClosedWith1008() throws {
        for _ in 0..<8 { channel.pipeline.fireChannelRead(clientFrame(.ping, "p")) }
        channel.pipeline.fireChannelReadComplete()
        XCTAssertEqual(try written().count, 5, "one second's worth of pings is answered, the rest is not")
        for _ in 0..<RateLimitStrikes.maxRefusals - 3 { channel.pipeline.fireChannelRead(clientFrame(.ping, "p")) }
        XCTAssertEqual(try written().count, 0, "a client at its limit is not closed at once")
        try receive(clientFrame(.ping, "p"))
        let out = try written()
        XCTAssertEqual(out.map(\.opcode), [.connectionClose])
        XCTAssertEqual(closeCode(out.first), 1008)
    }

    func testAViolationSendsItsCloseCodeAndClosesTheConnection() throws {
        try receive(clientFrame(.text, [0xC0, 0x80]))
        let out = try written()
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(closeCode(out.first), 1007)
        XCTAssertTrue(sink.messages.isEmpty)
        XCTAssertFalse(channel.isActive)
    }

    func testAClientCloseIsEchoedThenTheConnectionCloses() throws {
        try receive(clientFrame(.connectionClose, closePayload(3000, Array("done".utf8))))
        let out = try written()
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(closeCode(out.first), 3000)
        XCTAssertEqual(out.first?.data.readableBytes, 2, "the code alone is echoed")
        XCTAssertFalse(channel.isActive)
    }

    func testAnEmptyCloseIsAnsweredWithAnEmptyClose() throws {
        try receive(clientFrame(.connectionClose, []))
        let out = try written()
        XCTAssertEqual(out.map(\.opcode), [.connectionClose])
        XCTAssertEqual(out.first?.data.readableBytes, 0)
    }

    func testNothingIsSentAfterACloseFrame() throws {
        let ours = WebSocketFrame(fin: true, opcode: .connectionClose, data: ByteBuffer(bytes: [0x03, 0xF4]))
        try channel.writeOutbound(ours)
        let late = channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "{}")))
        XCTAssertThrowsError(try late.wait())
        XCTAssertEqual(try written().map(\.opcode), [.connectionClose])
        // the client's answer to our close ends the connection without a second close frame
        try receive(clientFrame(.connectionClose, closePayload(1008)))
        XCTAssertEqual(try written().count, 0)
        XCTAssertFalse(channel.isActive)
    }
}

final class HandshakeTests: XCTestCase {
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="

    func head(_ uri: String = "/", method: HTTPMethod = .GET, _ fields: [(String, String)]? = nil) -> HTTPRequestHead {
        let fields = fields ?? [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "keep-alive, Upgrade"),
                                ("Sec-WebSocket-Key", Self.key), ("Sec-WebSocket-Version", "13")]
        return HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(fields))
    }

    func decide(_ head: HTTPRequestHead, open: Int = 1, max: Int = 10,
                origins: AllowedOrigins = .any) -> UpgradeDecision {
        UpgradeDecision.decide(head, openConnections: open, maxConnections: max, allowedOrigins: origins)
    }

    func testOriginIsCheckedOnlyWhenAllowedOriginsIsSet() throws {
        let app = try XCTUnwrap(AllowedOrigins(parsing: "https://app.example.com, http://localhost:8080"))
        XCTAssertEqual(decide(head(), origins: app), .upgrade, "no Origin: not a browser, allowed")
        XCTAssertEqual(decide(replacing("Origin", with: "https://APP.example.com"), origins: app), .upgrade)
        XCTAssertEqual(decide(replacing("Origin", with: "https://app.example.com:443"), origins: app), .upgrade)
        XCTAssertEqual(decide(replacing("Origin", with: "http://localhost:8080"), origins: app), .upgrade)
        for other in ["https://evil.example.com", "http://app.example.com", "https://app.example.com:8443",
                      "http://localhost", "null", "https://app.example.com.evil.net", ""] {
            XCTAssertEqual(decide(replacing("Origin", with: other), origins: app), .forbiddenOrigin, other)
        }
        XCTAssertEqual(decide(replacing("Origin", with: "https://evil.example.com")), .upgrade, "default: any")
        var two = replacing("Origin", with: "https://app.example.com")
        two.headers.add(name: "Origin", value: "https://app.example.com")
        XCTAssertEqual(decide(two, origins: app), .forbiddenOrigin, "two Origin headers")
        // a bad request stays 400 whatever its origin; a refused origin is answered before the connection count
        guard case .badRequest = decide(replacing("Sec-WebSocket-Key", with: nil), origins: app) else {
            return XCTFail("a request without a key must be 400")
        }
        var evil = replacing("Origin", with: "https://evil.example.com")
        XCTAssertEqual(decide(evil, open: 11, max: 10, origins: app), .forbiddenOrigin)
        evil.headers.replaceOrAdd(name: "Origin", value: "https://app.example.com")
        XCTAssertEqual(decide(evil, open: 11, max: 10, origins: app), .overloaded)
    }

    func testAllowedOriginsParsing() {
        XCTAssertEqual(AllowedOrigins(parsing: "*"), .any)
        XCTAssertEqual(AllowedOrigins(parsing: "HTTPS://App.Example.com:443")?.origins, ["https://app.example.com"])
        XCTAssertEqual(AllowedOrigins(parsing: "http://[::1]:8080")?.origins, ["http://[::1]:8080"])
        for bad in ["app.example.com", "https://app.example.com/", "https://a.com/path", "https://", "null",
                    "https://a.com:99999", ",", "https://user@a.com"] {
            XCTAssertNil(AllowedOrigins(parsing: bad), bad)
        }
    }

    func replacing(_ name: String, with value: String?) -> HTTPRequestHead {
        var request = head()
        request.headers.remove(name: name)
        if let value { request.headers.add(name: name, value: value) }
        return request
    }

    func testDecisions() {
        XCTAssertEqual(decide(head()), .upgrade)
        XCTAssertEqual(decide(head("/ws?token=t")), .upgrade)
        XCTAssertEqual(decide(head("/elsewhere")), .notWebSocket)
        XCTAssertEqual(decide(replacing("Upgrade", with: nil)), .notWebSocket)
        XCTAssertEqual(decide(replacing("Sec-WebSocket-Version", with: "8")), .unsupportedVersion)
        XCTAssertEqual(decide(replacing("Sec-WebSocket-Version", with: "8, 13")), .unsupportedVersion)
        guard case .badRequest = decide(replacing("Sec-WebSocket-Version", with: nil)),
              case .badRequest = decide(replacing("Sec-WebSocket-Key", with: nil)),
              case .badRequest = decide(replacing("Sec-WebSocket-Key", with: "c2hvcnQ=")),
              case .badRequest = decide(replacing("Connection", with: "keep-alive")),
              case .badRequest = decide(head(method: .POST))
        else { return XCTFail("a malformed upgrade was not a bad request") }
        XCTAssertEqual(decide(head(), open: 11, max: 10), .overloaded)
        XCTAssertEqual(decide(head(), open: 10, max: 10), .upgrade)
    }
}

/// The whole client pipeline from `IngressServer.configureClientChannel`, fed raw bytes.
final class ClientChannelTests: XCTestCase {
    var channel: EmbeddedChannel!
    var connections: ConnectionCounter!
    var hub: IngressHub!
    var runDir: TestRunDir!

    override func setUpWithError() throws {
        runDir = try TestRunDir("sy-edge")
        channel = EmbeddedChannel()
        connections = ConnectionCounter()
        hub = try .forTests(on: channel.embeddedEventLoop, runDir: runDir)
    }

    override func tearDownWithError() throws {
        _ = try? channel.finish()
        runDir.remove()
    }

    func configure(handshakeTimeout: Int = 10, maxConnections: Int = 10) throws {
        var config = SwitchyardConfig()
        config.handshakeTimeout = handshakeTimeout
        config.maxConnections = maxConnections
        config.runDir = runDir.path
        try IngressServer.configureClientChannel(channel, settings: EdgeSettings(config: config),
                                                 connections: connections, hub: hub)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    func send(_ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
        channel.embeddedEventLoop.run()
    }

    func sendFrame(_ opcode: UInt8, _ payload: [UInt8]) throws {
        let mask: [UInt8] = [9, 8, 7, 6]
        let masked = payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try channel.writeInbound(ByteBuffer(bytes: [0x80 | opcode, 0x80 | UInt8(payload.count)] + mask + masked))
        channel.embeddedEventLoop.run()
    }

    func output() throws -> [UInt8] {
        var bytes: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += buffer.readableBytesView }
        return bytes
    }

    func upgradeRequest(version: String = "13") -> String {
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(HandshakeTests.key)\r\nSec-WebSocket-Version: \(version)\r\n\r\n"
    }

    func testAnUpgradeCompletingAfterCloseAllIsClosedWith1012() throws {
        try configure()
        XCTAssertTrue(hub.closeAll(reason: "service restart: reconnect").isEmpty, "no connection yet")
        // Accepted before the listeners closed, its upgrade request arrives after: it must not be left open
        // until the process exits (the client would see 1006).
        try send(upgradeRequest())
        let bytes = try output()
        let response = String(decoding: bytes, as: UTF8.self)
        XCTAssertTrue(response.hasPrefix("HTTP/1.1 101"), response)
        // The response is ASCII, so the first 0x88 byte starts the close frame.
        guard let start = bytes.firstIndex(of: 0x88) else { return XCTFail("no close frame after the 101") }
        let close = Array(bytes[start...])
        XCTAssertEqual(Array(close.prefix(4)), [0x88, UInt8(truncatingIfNeeded: close.count - 2), 0x03, 0xF4],
                       "a close frame with 1012")
        XCTAssertEqual(hub.lateRestartCloses.count, 1, "the shutdown waits for it")
        XCTAssertEqual(hub.connectionCount, 0)
    }

    func testUpgradeThenPingPongAndTheTimeoutNoLongerApplies() throws {
        try configure(handshakeTimeout: 1)
        try send(upgradeRequest())
        let response = String(decoding: try output(), as: UTF8.self)
        XCTAssertTrue(response.hasPrefix("HTTP/1.1 101"), response)
        XCTAssertEqual(hub.connectionCount, 1)
        try sendFrame(0x9, Array("hello".utf8))
        XCTAssertEqual(try output(), [0x8A, 5] + Array("hello".utf8))
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertTrue(channel.isActive, "an upgraded connection outlives the handshake timeout")
        try sendFrame(0x3, [])
        XCTAssertEqual(Array(try output().prefix(4)), [0x88, UInt8(2 + "reserved opcode 3".utf8.count), 0x03, 0xEA])
    }

    func testWrongVersionGets426WithTheSupportedVersion() throws {
        try configure()
        try send(upgradeRequest(version: "8"))
        let response = String(decoding: try output(), as: UTF8.self)
        XCTAssertTrue(response.hasPrefix("HTTP/1.1 426"), response)
        XCTAssertTrue(response.contains("Sec-WebSocket-Version: 13\r\n"), response)
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(hub.connectionCount, 0)
    }

    func testMalformedUpgradeGets400() throws {
        try configure()
        try send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 + "Sec-WebSocket-Version: 13\r\n\r\n")
        let response = String(decoding: try output(), as: UTF8.self)
        XCTAssertTrue(response.hasPrefix("HTTP/1.1 400"), response)
        XCTAssertFalse(channel.isActive)
    }

    func testAnUpgradeWithABodyGets400AndLeavesNoHandlerBehind() throws {
        let loop = channel.embeddedEventLoop
        for body in ["Transfer-Encoding: chunked\r\n\r\n", "Content-Length: 5\r\n\r\nhe"] {
            channel = EmbeddedChannel(loop: loop)
            try configure()
            weak let upgradeHandler = try channel.pipeline.syncOperations.handler(type: HTTPServerUpgradeHandler.self)
            XCTAssertNotNil(upgradeHandler)
            var request = upgradeRequest()
            request.removeLast()  // the empty line that ends the head ("\r\n" is one Character)
            // The refusal closes the connection before the body ends: its decoder reports that as an error.
            try? send(request + body)
            let response = String(decoding: try output(), as: UTF8.self)
            XCTAssertTrue(response.hasPrefix("HTTP/1.1 400"), response)
            XCTAssertTrue(response.contains("\r\n\r\na WebSocket upgrade request has no body\n"), response)
            _ = try? channel.finish(acceptAlreadyClosed: true)
            loop.run()
            channel = EmbeddedChannel(loop: loop)
            XCTAssertNil(upgradeHandler, "the HTTP handlers of a closed connection are freed (\(body.prefix(17)))")
        }
    }

    func testUpgradeBeyondMaxConnectionsGets503() throws {
        let other = EmbeddedChannel()
        connections.track(other)
        try configure(maxConnections: 1)
        XCTAssertEqual(connections.open, 2)
        try send(upgradeRequest())
        let response = String(decoding: try output(), as: UTF8.self)
        XCTAssertTrue(response.hasPrefix("HTTP/1.1 503"), response)
        XCTAssertTrue(response.contains("Retry-After: 5\r\n"), response)
        XCTAssertEqual(hub.connectionCount, 0)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(connections.open, 1, "a closed connection is no longer counted")
        _ = try other.finish()
    }

    func testHandshakeTimeoutClosesAnIncompleteRequest() throws {
        try configure(handshakeTimeout: 3)
        try send("GET / HTTP/1.1\r\nHost: x\r\nUpgr")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2900))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        XCTAssertFalse(channel.isActive)
    }

    func testPlainHealthRequestIsStillAnswered() throws {
        try configure()
        try send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        let response = String(decoding: try output(), as: UTF8.self)
        XCTAssertTrue(response.hasPrefix("HTTP/1.1 200"), response)
        XCTAssertTrue(response.hasSuffix("ok\n"), response)
    }
}

final class EdgeSettingsTests: XCTestCase {
    func testDefaultsAndRanges() throws {
        let defaults = EdgeSettings(config: SwitchyardConfig())
        XCTAssertEqual(defaults.handshakeTimeout, .seconds(10))
        XCTAssertEqual(defaults.maxConnections, 10_000)
        XCTAssertEqual(defaults.maxFrameSize, 128 * 1024 * 2 + 64 * 1024)
        let config = try SwitchyardConfig.parse("HandshakeTimeout = 1\nMaxConnections = 3\n", file: "/x.conf")
        XCTAssertEqual(config.handshakeTimeout, 1)
        XCTAssertEqual(config.maxConnections, 3)
        for bad in ["HandshakeTimeout = 0", "HandshakeTimeout = 3601", "MaxConnections = 0", "MaxConnections = -5",
                    "MaxConnections = many"] {
            XCTAssertThrowsError(try SwitchyardConfig.parse(bad, file: "/x.conf"), bad)
        }
    }
}
