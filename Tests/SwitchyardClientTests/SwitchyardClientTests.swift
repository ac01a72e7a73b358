import XCTest
@testable import SwitchyardClient

final class SubscriptionTrackerTests: XCTestCase {
    private func message(_ subject: String, _ seq: UInt64, epoch: String = "E1") -> ServerFrame {
        ServerFrame(op: "message", subject: subject, content: "x", type: "update", seq: seq, epoch: epoch)
    }

    func testFirstSubscribeAsksForHistoryThenRecoversFromTheLastDeliveredMessage() {
        var tracker = SubscriptionTracker(subjects: ["/a", "/b", "/a"], history: 5)
        XCTAssertEqual(tracker.subscribeRequests(), [.subscribe(subjects: ["/a", "/b"], history: 5, recover: [:])])
        XCTAssertTrue(tracker.accept(message("/a", 41)))
        XCTAssertTrue(tracker.accept(message("/a", 42)))
        XCTAssertEqual(tracker.subscribeRequests(), [
            .subscribe(subjects: ["/a"], history: 0, recover: ["/a": StreamPosition(epoch: "E1", seq: 42)]),
            .subscribe(subjects: ["/b"], history: 5, recover: [:]),
        ])
    }

    func testDuplicatesOfTheSameEpochAreDroppedAndANewEpochIsTaken() {
        var tracker = SubscriptionTracker(subjects: ["/a"])
        XCTAssertTrue(tracker.accept(message("/a", 7)))
        XCTAssertFalse(tracker.accept(message("/a", 7)))
        XCTAssertFalse(tracker.accept(message("/a", 3)))
        XCTAssertTrue(tracker.accept(message("/a", 8)))
        XCTAssertTrue(tracker.accept(message("/a", 1, epoch: "E2")), "after DATA_RESYNC the numbering starts over")
        XCTAssertEqual(tracker.position(of: "/a"), StreamPosition(epoch: "E2", seq: 1))
        XCTAssertFalse(tracker.accept(message("/other", 1)), "a subject not subscribed")
        XCTAssertFalse(tracker.accept(ServerFrame(op: "message", subject: "/a", seq: 9)), "no epoch")
    }

    func testARefusedSubjectIsNoLongerSubscribed() {
        var tracker = SubscriptionTracker(subjects: ["/a", "b"])
        tracker.remove("b")
        XCTAssertEqual(tracker.subjects, ["/a"])
        XCTAssertEqual(tracker.subscribeRequests(), [.subscribe(subjects: ["/a"], history: 0, recover: [:])])
    }
}

final class ReconnectBackoffTests: XCTestCase {
    func testDelaysGrowExponentiallyUpToTheMaximumWithJitterAndResetAfterAConnection() {
        var backoff = ReconnectBackoff(minDelayMs: 100, maxDelayMs: 1000)
        let low = (0..<6).map { _ in backoff.nextDelayMs(closeCode: nil, wasConnected: false, random: { 0 }) }
        XCTAssertEqual(low, [50, 100, 200, 400, 500, 500])
        XCTAssertEqual(backoff.nextDelayMs(closeCode: nil, wasConnected: true, random: { 0.999 }), 99)
        XCTAssertEqual(backoff.nextDelayMs(closeCode: nil, wasConnected: false, random: { 0.5 }), 150)
    }

    func testClose1012ReconnectsAtOnce() {
        var backoff = ReconnectBackoff(minDelayMs: 200, maxDelayMs: 10_000)
        for _ in 0..<5 { _ = backoff.nextDelayMs(closeCode: nil, wasConnected: false) }
        XCTAssertEqual(backoff.nextDelayMs(closeCode: 1012, wasConnected: true, random: { 0.5 }), 100)
        XCTAssertEqual(backoff.nextDelayMs(closeCode: nil, wasConnected: false, random: { 0 }), 100)
    }
}

final class FramesTests: XCTestCase {
    func testRequestsAreJSONWithOpFirstAndEscapedStrings() {
        XCTAssertEqual(ClientRequest.ping.json, #"{"op":"ping"}"#)
        XCTAssertEqual(ClientRequest.publish(subject: "/a", content: "say \"hi\"\n\u{1}", closure: "c1", retained: false,
                                             qos: "STANDARD", base64: false).json,
                       #"{"op":"publish","subject":"/a","content":"say \"hi\"\n\u0001","closure":"c1","retained":false,"qos":"STANDARD"}"#)
        XCTAssertEqual(ClientRequest.subscribe(subjects: ["/b", "/a"], history: 0,
                                               recover: ["/b": StreamPosition(epoch: "e", seq: 2),
                                                         "/a": StreamPosition(epoch: "e", seq: 1)]).json,
                       #"{"op":"subscribe","subjects":["/b","/a"],"recover":{"/a":{"epoch":"e","seq":1},"/b":{"epoch":"e","seq":2}}}"#)
    }

    func testServerFramesDecodeAndHostileOnesAreRefused() {
        let frame = ServerFrame.decode(#"{"op":"message","subject":"/a","content":"1","type":"update","seq":42,"epoch":"E","retained":true,"later":[1]}"#)
        XCTAssertEqual(frame?.seq, 42)
        XCTAssertEqual(frame?.retained, true)
        XCTAssertNil(ServerFrame.decode(#"{"op":"message","seq":-1}"#))
        XCTAssertNil(ServerFrame.decode(#"{"op":"message","seq":18446744073709551616}"#))
        XCTAssertNil(ServerFrame.decode("[1]"))
        XCTAssertNil(ServerFrame.decode("not json"))
    }

    func testWebSocketURLs() {
        XCTAssertEqual(WebSocketURL("ws://127.0.0.1:8800/")?.description, "ws://127.0.0.1:8800/")
        XCTAssertEqual(WebSocketURL("ws://localhost")?.port, 80)
        XCTAssertEqual(WebSocketURL("ws://h:1?token=t")?.target, "/?token=t")
        XCTAssertEqual(WebSocketURL("ws://[::1]:8800/ws")?.host, "::1")
        for bad in ["http://h:1/", "ws://:1/", "ws://h:0/", "ws://h:99999/", "ws://h:x/", "ws://[::1/"] {
            XCTAssertNil(WebSocketURL(bad), bad)
        }
    }
}
