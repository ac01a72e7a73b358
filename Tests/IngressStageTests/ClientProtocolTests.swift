import Foundation
import NIOCore
import SwitchyardCore
import XCTest
@testable import IngressStage

final class ClientProtocolTests: XCTestCase {
    func parse(_ text: String) -> Result<ClientRequest, ClientFrameError> {
        ClientFrameParser.parse(ByteBuffer(string: text))
    }

    func errorCode(_ text: String) -> String? {
        if case .failure(let error) = parse(text) { return error.code }
        return nil
    }

    func testSubscribeWithHistoryAndRecovery() {
        let request = parse(#"{"op":"subscribe","subjects":["/a/b"],"history":5,"recover":{"/a/b":{"epoch":"E","seq":41}}}"#)
        XCTAssertEqual(request, .success(.subscribe(subjects: ["/a/b"], history: 5,
                                                    recover: ["/a/b": RecoveryPosition(epoch: "E", seq: 41)])))
    }

    func testPublishDefaultsAndOptions() {
        guard case .success(.publish(let plain)) = parse(#"{"op":"publish","subject":"/a","content":"hi"}"#) else {
            return XCTFail()
        }
        XCTAssertTrue(plain.retained && plain.guaranteed && !plain.binary)
        XCTAssertNil(plain.closure)
        guard case .success(.publish(let binary)) = parse(
            #"{"op":"publish","subject":"/a","content":"AAEC","encoding":"base64","closure":"c","retained":false,"qos":"STANDARD"}"#)
        else { return XCTFail() }
        XCTAssertEqual(Array(binary.content.readableBytesView), [0, 1, 2])
        XCTAssertTrue(binary.binary && !binary.retained && !binary.guaranteed)
        XCTAssertEqual(binary.closure, "c")
    }

    func testBadFramesGetClearCodes() {
        XCTAssertEqual(errorCode("not json"), "INVALID_JSON")
        XCTAssertEqual(errorCode("[1,2]"), "INVALID_JSON")
        XCTAssertEqual(errorCode(#"{"op":"fly"}"#), "UNKNOWN_OP")
        XCTAssertEqual(errorCode(#"{"subjects":[]}"#), "INVALID_FRAME")
        XCTAssertEqual(errorCode(#"{"op":"subscribe","subjects":[]}"#), "INVALID_FRAME")
        XCTAssertEqual(errorCode(#"{"op":"subscribe","subjects":[1]}"#), "INVALID_FRAME")
        XCTAssertEqual(errorCode(#"{"op":"subscribe","subjects":["/a"],"history":-1}"#), "INVALID_FRAME")
        XCTAssertEqual(errorCode(#"{"op":"subscribe","subjects":["/a"],"recover":{"/a":{"seq":1}}}"#), "INVALID_FRAME")
        XCTAssertEqual(errorCode(#"{"op":"publish","subject":"/a"}"#), "INVALID_FRAME")
        XCTAssertEqual(errorCode(#"{"op":"publish","subject":"/a","content":"x","retained":1}"#), "INVALID_FRAME")
        XCTAssertEqual(errorCode(#"{"op":"publish","subject":"/a","content":"%%","encoding":"base64"}"#), "INVALID_FRAME")
        XCTAssertEqual(errorCode(#"{"op":"publish","subject":"/a","content":"x","qos":"MAYBE"}"#), "INVALID_FRAME")
    }

    func testMessageFramesAreValidJSON() throws {
        let message = Message(subject: "/a/\"q\"", content: ByteBuffer(string: "line\n\t\"quoted\" \\ \u{1} ü"),
                              seq: 7, epoch: "E", flags: [.guaranteed], closure: "c\"1")
        let frame = ServerFrames.message(message, kind: .recovered, allocator: ByteBufferAllocator())
        let object = try JSONSerialization.jsonObject(with: Data(frame.readableBytesView)) as! [String: Any]
        XCTAssertEqual(object["op"] as? String, "message")
        XCTAssertEqual(object["subject"] as? String, "/a/\"q\"")
        XCTAssertEqual(object["content"] as? String, "line\n\t\"quoted\" \\ \u{1} ü")
        XCTAssertEqual(object["type"] as? String, "recovered")
        XCTAssertEqual(object["seq"] as? Int, 7)
        XCTAssertEqual(object["retained"] as? Bool, false)
        XCTAssertEqual(object["closure"] as? String, "c\"1")
        XCTAssertTrue(String(buffer: frame).hasPrefix(#"{"op":"message""#))
    }

    func testBinaryContentIsBase64() throws {
        let message = Message(subject: "/a", content: ByteBuffer(bytes: [0xff, 0x00]), seq: 1, epoch: "E",
                              flags: [.binary])
        let frame = ServerFrames.message(message, kind: .update, allocator: ByteBufferAllocator())
        let object = try JSONSerialization.jsonObject(with: Data(frame.readableBytesView)) as! [String: Any]
        XCTAssertEqual(object["content"] as? String, "/wA=")
        XCTAssertEqual(object["encoding"] as? String, "base64")
    }
}
