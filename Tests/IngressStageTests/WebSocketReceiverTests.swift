import NIOCore
import NIOWebSocket
import XCTest
@testable import IngressStage

/// A frame as a client sends it: masked unless told otherwise.
func clientFrame(_ opcode: WebSocketOpcode, _ bytes: [UInt8], fin: Bool = true, masked: Bool = true,
                 rsv1: Bool = false, rsv2: Bool = false, rsv3: Bool = false) -> WebSocketFrame {
    var data = ByteBuffer(bytes: bytes)
    let key: WebSocketMaskingKey? = masked ? [0x11, 0x22, 0x33, 0x44] : nil
    if let key { data.webSocketMask(key) }
    return WebSocketFrame(fin: fin, rsv1: rsv1, rsv2: rsv2, rsv3: rsv3, opcode: opcode, maskKey: key, data: data)
}

func clientFrame(_ opcode: WebSocketOpcode, _ text: String, fin: Bool = true) -> WebSocketFrame {
    clientFrame(opcode, Array(text.utf8), fin: fin)
}

func closePayload(_ code: UInt16, _ reason: [UInt8] = []) -> [UInt8] {
    [UInt8(code >> 8), UInt8(code & 0xFF)] + reason
}

final class UTF8ValidatorTests: XCTestCase {
    func valid(_ bytes: [UInt8]) -> Bool { UTF8Validator.isValid(ByteBuffer(bytes: bytes)) }

    func testAcceptsUTF8AndRejectsWhatRFC3629Forbids() {
        XCTAssertTrue(valid(Array("plain ascii, é, €, 𝄞, κόσμε".utf8)))
        XCTAssertTrue(valid([0xF4, 0x8F, 0xBF, 0xBF]))  // U+10FFFF
        XCTAssertFalse(valid([0xC0, 0x80]))  // overlong NUL
        XCTAssertFalse(valid([0xE0, 0x80, 0xAF]))  // overlong '/'
        XCTAssertFalse(valid([0xED, 0xA0, 0x80]))  // surrogate U+D800
        XCTAssertFalse(valid([0xF4, 0x90, 0x80, 0x80]))  // above U+10FFFF
        XCTAssertFalse(valid([0xFF]))
        XCTAssertFalse(valid([0x80]))  // a continuation byte alone
        XCTAssertFalse(valid([0xE2, 0x82]))  // unfinished
    }

    func testAgreesWithTheStandardLibraryOnMixedInput() {
        // ASCII runs (checked eight bytes at a time) around multi-byte, broken and forbidden sequences.
        let pieces: [[UInt8]] = [Array("0123456789abcdef".utf8), Array("é".utf8), Array("€".utf8), Array("𝄞".utf8),
                                 [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0x80], [0xE2, 0x82],
                                 [0xFF], Array("x".utf8)]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 1...8, using: &generator)).flatMap { _ in
                pieces.randomElement(using: &generator)!
            }
            XCTAssertEqual(valid(bytes), String(validating: bytes, as: UTF8.self) != nil, "\(bytes)")
        }
    }

    func testACodePointMaySpanSeveralPieces() {
        var validator = UTF8Validator()
        let clef: [UInt8] = [0xF0, 0x9D, 0x84, 0x9E]
        for byte in clef {
            XCTAssertTrue(validator.consume(ByteBuffer(bytes: [byte])))
        }
        XCTAssertTrue(validator.isComplete)
        XCTAssertTrue(validator.consume(ByteBuffer(bytes: [0xF0, 0x9D])))
        XCTAssertFalse(validator.isComplete)
        XCTAssertFalse(validator.consume(ByteBuffer(bytes: [0x41])))
    }
}

final class WebSocketReceiverTests: XCTestCase {
    var receiver = WebSocketReceiver(maxMessageSize: 64)

    override func setUp() {
        receiver = WebSocketReceiver(maxMessageSize: 64)
    }

    func assertFails(_ frame: WebSocketFrame, with code: WebSocketErrorCode, file: StaticString = #filePath,
                     line: UInt = #line) {
        guard case .fail(let actual, let reason) = receiver.receive(frame) else {
            return XCTFail("\(frame) was not refused", file: file, line: line)
        }
        XCTAssertEqual(actual, code, reason, file: file, line: line)
        XCTAssertFalse(reason.isEmpty, file: file, line: line)
        // the conversation is over: nothing more is read
        XCTAssertEqual(receiver.receive(clientFrame(.text, "{}")), .none, file: file, line: line)
    }

    func testAWholeTextFrameIsAMessage() {
        XCTAssertEqual(receiver.receive(clientFrame(.text, "{\"op\":\"ping\"}")),
                       .message(.text, ByteBuffer(string: "{\"op\":\"ping\"}")))
        XCTAssertEqual(receiver.receive(clientFrame(.binary, [0, 1, 2])),
                       .message(.binary, ByteBuffer(bytes: [0, 1, 2])))
    }

    func testUnmaskingWordAtATimeGivesWhatNIOGives() {
        var generator = SystemRandomNumberGenerator()
        for length in [0, 1, 3, 7, 8, 9, 15, 16, 17, 125, 1000, 4099] {
            let key = WebSocketMaskingKey((0..<4).map { _ in UInt8.random(in: 0...255, using: &generator) })!
            var masked = ByteBuffer(bytes: (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) })
            // A payload that does not start at its buffer's first byte, as after a frame header.
            var framed = ByteBuffer(bytes: [0xAA, 0xBB, 0xCC])
            framed.writeBuffer(&masked)
            framed.moveReaderIndex(forwardBy: 3)
            let frame = WebSocketFrame(fin: true, opcode: .binary, maskKey: key, data: framed)
            XCTAssertEqual(frame.payloadUnmasked, frame.unmaskedData, "length \(length)")
        }
        let unmasked = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "plain"))
        XCTAssertEqual(unmasked.payloadUnmasked, ByteBuffer(string: "plain"))
    }

    func testUnmaskedFrameIsAProtocolError() {
        assertFails(clientFrame(.text, Array("hi".utf8), masked: false), with: .protocolError)
    }

    func testEachReservedBitIsAProtocolError() {
        assertFails(clientFrame(.text, [0x41], rsv1: true), with: .protocolError)
        setUp()
        assertFails(clientFrame(.text, [0x41], rsv2: true), with: .protocolError)
        setUp()
        assertFails(clientFrame(.ping, [], rsv3: true), with: .protocolError)
    }

    func testReservedOpcodesAreProtocolErrors() {
        for raw: UInt8 in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            setUp()
            assertFails(clientFrame(WebSocketOpcode(encodedWebSocketOpcode: raw)!, [0x41]), with: .protocolError)
        }
    }

    func testContinuationWithNothingToContinueIsAProtocolError() {
        assertFails(clientFrame(.continuation, "x"), with: .protocolError)
    }

    func testNewMessageInsideAFragmentedOneIsAProtocolError() {
        XCTAssertEqual(receiver.receive(clientFrame(.text, "{\"op\"", fin: false)), .none)
        assertFails(clientFrame(.text, "{}"), with: .protocolError)
    }

    func testFragmentedOrLongControlFramesAreProtocolErrors() {
        assertFails(clientFrame(.ping, Array("a".utf8), fin: false), with: .protocolError)
        setUp()
        assertFails(clientFrame(.ping, [UInt8](repeating: 0x61, count: 126)), with: .protocolError)
        setUp()
        XCTAssertEqual(receiver.receive(clientFrame(.ping, [UInt8](repeating: 0x61, count: 125))),
                       .ping(ByteBuffer(bytes: [UInt8](repeating: 0x61, count: 125))))
    }

    func testFragmentsAreReassembledAroundAPing() {
        XCTAssertEqual(receiver.receive(clientFrame(.text, "{\"op\":", fin: false)), .none)
        XCTAssertEqual(receiver.receive(clientFrame(.ping, "are you there")),
                       .ping(ByteBuffer(string: "are you there")))
        XCTAssertEqual(receiver.receive(clientFrame(.pong, "")), .none)
        XCTAssertEqual(receiver.receive(clientFrame(.continuation, "\"pi", fin: false)), .none)
        XCTAssertEqual(receiver.receive(clientFrame(.continuation, "ng\"}")),
                       .message(.text, ByteBuffer(string: "{\"op\":\"ping\"}")))
        // and the next message starts afresh
        XCTAssertEqual(receiver.receive(clientFrame(.text, "{}")), .message(.text, ByteBuffer(string: "{}")))
    }

    func testFragmentedBinaryIsReassembledToo() {
        XCTAssertEqual(receiver.receive(clientFrame(.binary, [1], fin: false)), .none)
        XCTAssertEqual(receiver.receive(clientFrame(.continuation, [], fin: false)), .none)
        XCTAssertEqual(receiver.receive(clientFrame(.continuation, [2])), .message(.binary, ByteBuffer(bytes: [1, 2])))
    }

    func testACodePointSplitAcrossFragmentsIsValid() {
        let euro: [UInt8] = [0xE2, 0x82, 0xAC]
        XCTAssertEqual(receiver.receive(clientFrame(.text, [0x22, euro[0]], fin: false)), .none)
        XCTAssertEqual(receiver.receive(clientFrame(.continuation, [euro[1]], fin: false)), .none)
        XCTAssertEqual(receiver.receive(clientFrame(.continuation, [euro[2], 0x22])),
                       .message(.text, ByteBuffer(bytes: [0x22] + euro + [0x22])))
    }

    func testInvalidUTF8IsError1007() {
        assertFails(clientFrame(.text, [0x22, 0xC0, 0x80, 0x22]), with: .dataInconsistentWithMessage)
        setUp()
        XCTAssertEqual(receiver.receive(clientFrame(.text, "\"ok so far", fin: false)), .none)
        assertFails(clientFrame(.continuation, [0xED, 0xA0, 0x80]), with: .dataInconsistentWithMessage)
        setUp()
        // each fragment is fine alone, but the message ends inside a code point
        XCTAssertEqual(receiver.receive(clientFrame(.text, [0x41], fin: false)), .none)
        assertFails(clientFrame(.continuation, [0xE2, 0x82]), with: .dataInconsistentWithMessage)
    }

    func testMessagesAboveTheLimitAreError1009() {
        XCTAssertEqual(receiver.receive(clientFrame(.text, String(repeating: "a", count: 64))),
                       .message(.text, ByteBuffer(string: String(repeating: "a", count: 64))))
        assertFails(clientFrame(.text, String(repeating: "a", count: 65)), with: .messageTooLarge)
        setUp()
        XCTAssertEqual(receiver.receive(clientFrame(.text, String(repeating: "a", count: 40), fin: false)), .none)
        assertFails(clientFrame(.continuation, String(repeating: "a", count: 25)), with: .messageTooLarge)
    }

    func testValidCloseIsEchoedWithItsCode() {
        XCTAssertEqual(receiver.receive(clientFrame(.connectionClose, [])), .close(ByteBuffer()))
        for code: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999] {
            setUp()
            XCTAssertEqual(receiver.receive(clientFrame(.connectionClose, closePayload(code, Array("bye €".utf8)))),
                           .close(ByteBuffer(bytes: closePayload(code))), "code \(code)")
            XCTAssertEqual(receiver.receive(clientFrame(.text, "{}")), .none, "nothing is read after a close")
        }
    }

    func testCloseCodesThatMustNotBeSentAreProtocolErrors() {
        for code: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            setUp()
            assertFails(clientFrame(.connectionClose, closePayload(code)), with: .protocolError)
        }
        setUp()
        assertFails(clientFrame(.connectionClose, [0x03]), with: .protocolError)
        setUp()
        assertFails(clientFrame(.connectionClose, closePayload(1000, [0xC0, 0x80])), with: .protocolError)
    }
}
