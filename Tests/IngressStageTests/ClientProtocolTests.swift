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

    // MARK: ClientJSONReader

    private func json(_ text: String) -> ClientJSONValue? {
        try? ClientJSONReader.parse(ByteBuffer(string: text)).get()
    }

    func testReaderReadsWhatJSONSerializationReads() throws {
        let texts = [
            #"{"op":"publish","subject":"/a","content":"h\u00e9\"llo\n\ud83d\ude00\/","n":[1,-2.5e3,0,true,false,null],"o":{}}"#,
            " \t\r\n{ \"a\" : [ ] , \"b\" : { \"c\" : [ [ ] ] } } \n",
            #"{"big":18446744073709551615,"neg":-0,"frac":41.0,"exp":4.1E+1}"#,
            #"{"dup":1,"dup":2}"#,
        ]
        for text in texts {
            let reference = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! NSDictionary
            let value = try XCTUnwrap(json(text), text)
            XCTAssertEqual(foundationObject(value) as? NSDictionary, reference, text)
        }
        guard case .object(let numbers) = json(#"{"big":18446744073709551615,"neg":-0,"frac":41.0,"exp":4.1E+1,"over":18446744073709551616}"#),
              case .number(let big) = numbers["big"], case .number(let neg) = numbers["neg"],
              case .number(let frac) = numbers["frac"], case .number(let exp) = numbers["exp"],
              case .number(let over) = numbers["over"] else { return XCTFail("numbers") }
        XCTAssertEqual(big.unsignedInteger, UInt64.max, "exact, not through a Double")
        XCTAssertEqual(neg.unsignedInteger, 0)
        XCTAssertEqual(frac.unsignedInteger, 41)
        XCTAssertEqual(exp.unsignedInteger, 41)
        XCTAssertNil(over.unsignedInteger, "above UInt64: only a Double, past the 1.8e19 bound")
    }

    func testReaderRefusesWhatIsNotJSON() {
        let invalid = [
            "", " ", "{", "}", #"{"a":1,}"#, "[1,]", #"{"a" 1}"#, #"{'a':1}"#, "{a:1}", #"{"a":1} x"#, #"{"a":1}{}"#,
            "01", "-", "1.", ".5", "1e", "+1", "0x10", "NaN", "Infinity", "tru", "nul", "True",
            "\"a\u{01}\"", "\"a\nb\"", #""\x""#, #""\u12""#, #""\uzzzz""#,
            #""\ud800""#, #""\udc00""#, #""\ud800\u0041""#, #""unterminated"#, "/* c */ {}",
            String(repeating: "[", count: ClientJSONReader.maxDepth + 1) + String(repeating: "]", count: ClientJSONReader.maxDepth + 1),
        ]
        for text in invalid {
            XCTAssertNil(json(text), "accepted: \(text.debugDescription)")
        }
        let deepest = String(repeating: "[", count: ClientJSONReader.maxDepth) + String(repeating: "]", count: ClientJSONReader.maxDepth)
        XCTAssertNotNil(json(deepest))
        XCTAssertNil(json(String(repeating: "[", count: 100_000)), "deep nesting is refused, not recursed into")
        XCTAssertEqual(errorCode(String(repeating: "{\"a\":", count: 1_000)), "INVALID_JSON")
    }

    private func foundationObject(_ value: ClientJSONValue) -> Any {
        switch value {
        case .object(let members):
            return NSDictionary(dictionary: Dictionary(members.map { ($0.name, foundationObject($0.value)) },
                                                       uniquingKeysWith: { _, last in last }))
        case .array(let elements): return NSArray(array: elements.map(foundationObject))
        case .string(let string): return NSString(string: string)
        case .number(let number): return number.exactUnsigned.map { NSNumber(value: $0) } ?? NSNumber(value: number.double)
        case .bool(let bool): return NSNumber(value: bool)
        case .null: return NSNull()
        }
    }
}

