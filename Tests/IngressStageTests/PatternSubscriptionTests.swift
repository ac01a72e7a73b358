import Foundation
import NIOCore
import NIOEmbedded
import SwitchyardCore
import XCTest
@testable import IngressStage

final class PatternPermissionsTests: XCTestCase {
    func allows(_ sub: [String], _ pattern: String) throws -> Bool {
        try XCTUnwrap(Permissions(sub: sub, pub: [], all: [])).allowsSubscribe(toEvery: SubjectPattern(pattern))
    }

    func testAPatternIsAllowedOnlyWhenEverySubjectItCanMatchIs() throws {
        XCTAssertTrue(try allows(["/vehicles/*"], "/vehicles/+/speed"))
        XCTAssertTrue(try allows(["/*"], "/vehicles/+/speed"))
        XCTAssertTrue(try allows(["/vehicles/*"], "/vehicles/+/#"))
        XCTAssertTrue(try allows(["/a/*"], "/a/b/c/+"), "a prefix above the literal levels")
        XCTAssertFalse(try allows(["/vehicles/car7/*"], "/vehicles/+/speed"), "car8 is not allowed")
        XCTAssertFalse(try allows(["/vehicles/car7/speed"], "/vehicles/+/speed"), "an exact subject covers no pattern")
        XCTAssertFalse(try allows(["/vehicles/*"], "/+/speed"), "a wildcard first level needs /*")
        XCTAssertTrue(try allows(["/*"], "/#"))
        XCTAssertFalse(try allows(["/vehicles/*"], "/vehicles/#"), "# matches /vehicles itself, which is not allowed")
        XCTAssertTrue(try allows(["/vehicles/*", "/vehicles"], "/vehicles/#"))
        XCTAssertFalse(try allows(["/vehiclesx/*", "/vehicles"], "/vehicles/+"))
        XCTAssertTrue(Permissions.everything.allowsSubscribe(toEvery: try SubjectPattern("/+/+")))
        XCTAssertFalse(Permissions.nothing.allowsSubscribe(toEvery: try SubjectPattern("/a/+")))
    }
}

final class MQTTTopicFilterTests: XCTestCase {
    func testFiltersAreSubjectsOrPatterns() throws {
        XCTAssertEqual(try MQTTTopic.filter("vehicles/car7/speed").get(), .subject("/vehicles/car7/speed"))
        XCTAssertEqual(try MQTTTopic.filter("vehicles/+/speed").get(), .pattern(try SubjectPattern("/vehicles/+/speed")))
        XCTAssertEqual(try MQTTTopic.filter("#").get(), .pattern(try SubjectPattern("/#")))
        XCTAssertEqual(MQTTTopic.filter("$SYS/#"), .failure(.reserved))
        for invalid in ["/vehicles/#", "a/#/b", "a/b+", "a//+", "a/+/", "bad topic/#"] {
            guard case .failure(.invalid) = MQTTTopic.filter(invalid) else { return XCTFail("'\(invalid)' is invalid") }
        }
    }
}

/// The MQTT front end with wildcard subscriptions: a real hub behind the MQTT listener's pipeline.
final class MQTTPatternHubTests: XCTestCase, MQTTPipelineTest {
    var channel: EmbeddedChannel!
    var connections: ConnectionCounter!
    var hub: IngressHub!
    var runDir: TestRunDir!

    override func setUpWithError() throws {
        var config = SwitchyardConfig()
        config.maxSubjectsPerConnection = 3
        config.maxPatternsPerIngress = 2
        config.maxSubscribesInFlight = 1
        (channel, connections, hub, runDir) = try Self.makePipeline("sy-mqtt-pattern", config: config)
        try send(.connect(MQTTConnect(version: .v5, clientID: "dev1", cleanSession: true, keepAlive: 60)), .v5)
        guard case .connack(let connack) = try received(.v5).first else { return XCTFail("no CONNACK") }
        XCTAssertEqual(connack.properties.integer(MQTTProperties.ID.wildcardSubscriptionAvailable), 1)
    }

    override func tearDownWithError() throws {
        _ = try? channel.finish()
        runDir.remove()
    }

    func subscribe(_ packetID: UInt16, _ filters: [(String, UInt8)]) throws -> [MQTTReasonCode] {
        try send(.subscribe(MQTTSubscribe(packetID: packetID, subscriptions: filters.map {
            MQTTSubscription(filter: $0.0, options: $0.1 | 0x20)  // Retain Handling 2: no retained messages
        })), .v5)
        guard case .suback(let suback) = try received(.v5).first else { XCTFail("no SUBACK"); return [] }
        return suback.codes
    }

    func deliver(_ subject: String, seq: UInt64, flags: MessageFlags = [.guaranteed]) {
        hub.handle([.message(Message(subject: subject, content: ByteBuffer(string: "m\(seq)"), seq: seq,
                                     previousSeq: seq - 1, epoch: "e", flags: flags))])
    }

    func publishes() throws -> [MQTTPublish] {
        try received(.v5).compactMap { if case .publish(let publish) = $0 { return publish } else { return nil } }
    }

    func testAMatchingMessageReachesAPatternSubscriberAndOthersDoNot() throws {
        XCTAssertEqual(try subscribe(1, [("vehicles/+/speed", 1), ("vehicles/#", 0)]), [.grantedQoS1, .success])
        XCTAssertEqual(hub.patterns.count, 2)
        deliver("/vehicles/car7/speed", seq: 1)
        let both = try publishes()
        XCTAssertEqual(both.map(\.topic), ["vehicles/car7/speed"], "one copy for two matching patterns")
        XCTAssertEqual(both.first?.qos, 1, "at the highest QoS granted among them")
        deliver("/vehicles", seq: 1)
        XCTAssertEqual(try publishes().map(\.qos), [0], "vehicles/# matches vehicles, at QoS 0")
        deliver("/trucks/t1/speed", seq: 1)
        XCTAssertEqual(try publishes(), [], "no match")
        deliver("/vehicles/+/speed", seq: 1)
        deliver("/vehicles/#", seq: 1)
        XCTAssertEqual(try publishes(), [], "subjects with + or # (WebSocket, Kafka keys) are no MQTT topic names")
    }

    func testAnExactSubscriptionAndAnOverlappingPatternGetOneCopy() throws {
        XCTAssertEqual(try subscribe(1, [("vehicles/car7/speed", 0)]), [.success])
        XCTAssertEqual(try subscribe(2, [("vehicles/+/speed", 1)]), [.grantedQoS1])
        // The exact subscription's subscribe (request 1) is answered: it goes live.
        hub.handle([.subscribeReply(SubscribeReply(requestID: 1, subject: "/vehicles/car7/speed", kind: .snapshot,
                                                   status: .none, messages: [], epoch: "e", lastSeq: 0))])
        deliver("/vehicles/car7/speed", seq: 1)
        let copies = try publishes()
        XCTAssertEqual(copies.count, 1)
        XCTAssertEqual(copies.first?.qos, 1, "the pattern's QoS 1, above the subject's 0")
    }

    func testUnsubscribeStopsDeliveryAndWithdrawsTheInterest() throws {
        XCTAssertEqual(try subscribe(1, [("vehicles/+/speed", 0)]), [.success])
        try send(.unsubscribe(MQTTUnsubscribe(packetID: 2, filters: ["vehicles/+/speed", "vehicles/#"])), .v5)
        XCTAssertEqual(try received(.v5), [.unsuback(MQTTUnsubAck(packetID: 2, codes: [.success, MQTTReasonCode(rawValue: 0x11)]))])
        XCTAssertEqual(hub.patterns.count, 0)
        deliver("/vehicles/car7/speed", seq: 1)
        XCTAssertEqual(try publishes(), [])
    }

    func testPatternsCountInTheSubjectLimitAndTheIngressBound() throws {
        XCTAssertEqual(try subscribe(1, [("a/+", 0), ("b/+", 0), ("c/+", 0)]), [.success, .success, .quotaExceeded],
                       "MaxPatternsPerIngress = 2")
        XCTAssertEqual(try subscribe(2, [("a/+", 1), ("x", 0), ("y", 0)]), [.grantedQoS1, .success, .quotaExceeded],
                       "again the same pattern is no new one; MaxSubjectsPerConnection = 3 counts both")
    }

    func testTheRetainedSnapshotsOfEveryCacheShardGoWithTheRetainFlag() throws {
        try send(.subscribe(MQTTSubscribe(packetID: 1, subscriptions: [MQTTSubscription(filter: "vehicles/+", options: 1)])), .v5)
        XCTAssertEqual(try received(.v5), [.suback(MQTTSubAck(packetID: 1, codes: [.grantedQoS1]))])
        XCTAssertEqual(hub.patterns.pendingRetainedRequests, 1)
        let snapshot = { (subject: String) in
            Message(subject: subject, content: ByteBuffer(string: "s"), seq: 3, epoch: "e", flags: [.retained, .guaranteed])
        }
        // Request 1: the pattern's retained request. Two cache shards answer.
        for subject in ["/vehicles/car7", "/vehicles/car8"] {
            hub.handle([.subscribeReply(SubscribeReply(requestID: 1, subject: "/vehicles/+", kind: .snapshot,
                                                       status: .none, messages: [snapshot(subject)], epoch: "", lastSeq: 0))])
        }
        let retained = try publishes()
        XCTAssertEqual(retained.map(\.topic), ["vehicles/car7", "vehicles/car8"])
        XCTAssertEqual(retained.map(\.retain), [true, true])
        XCTAssertEqual(retained.map(\.qos), [1, 1])
        hub.tick()
        XCTAssertEqual(hub.patterns.pendingRetainedRequests, 1, "kept for the other shards")
    }
}

extension MQTTPatternHubTests {
    func emptyAnswer(_ requestID: UInt64) -> Envelope {
        .subscribeReply(SubscribeReply(requestID: requestID, subject: "/p", kind: .snapshot, status: .none,
                                       messages: [], epoch: "", lastSeq: 0))
    }

    func testRetainedRequestsWaitForAFreeSlotOfTheConnection() throws {
        try send(.subscribe(MQTTSubscribe(packetID: 1, subscriptions: [
            MQTTSubscription(filter: "a/+", options: 0), MQTTSubscription(filter: "b/+", options: 0),
        ])), .v5)
        _ = try received(.v5)
        XCTAssertEqual(hub.patterns.pendingRetainedRequests, 1, "MaxSubscribesInFlight = 1: b/+ waits")
        hub.handle([emptyAnswer(1)])
        XCTAssertEqual(hub.patterns.pendingRetainedRequests, 2, "the first shard's answer freed the slot for b/+")
        hub.handle([emptyAnswer(1)])
        XCTAssertEqual(hub.patterns.pendingRetainedRequests, 2, "another shard's answer frees nothing more")
        try send(.subscribe(MQTTSubscribe(packetID: 2, subscriptions: [MQTTSubscription(filter: "a/+", options: 0)])), .v5)
        try send(.unsubscribe(MQTTUnsubscribe(packetID: 3, filters: ["a/+"])), .v5)
        hub.handle([emptyAnswer(2)])
        XCTAssertEqual(hub.patterns.pendingRetainedRequests, 2, "the waiting request of a pattern unsubscribed meanwhile is dropped")
    }
}

final class PatternSubscriptionsTests: XCTestCase {
    func testInterestIsAnnouncedWithTheFirstSubscriberAndWithdrawnWithTheLast() throws {
        let table = PatternSubscriptions(ingress: 3, replyTo: "r", maxPatterns: 10)
        let first = ClientConnection(id: 1, channel: EmbeddedChannel(), liveBacklogLimit: 1 << 20,
                                     limits: ConnectionLimits(SwitchyardConfig()), now: 0)
        let second = ClientConnection(id: 2, channel: EmbeddedChannel(), liveBacklogLimit: 1 << 20,
                                      limits: ConnectionLimits(SwitchyardConfig()), now: 0)
        let pattern = try SubjectPattern("/a/+")
        let added = Envelope.patternInterest(PatternInterest(pattern: "/a/+", ingress: 3, isAdded: true))
        let removed = Envelope.patternInterest(PatternInterest(pattern: "/a/+", ingress: 3, isAdded: false))
        XCTAssertEqual(table.subscribe(first, to: pattern), [added])
        XCTAssertEqual(table.subscribe(second, to: pattern), [])
        XCTAssertEqual(table.reannounce(), [added])
        var found: [UInt64] = []
        table.forEachSubscriber(of: "/a/b") { found.append($0.id) }
        XCTAssertEqual(found.sorted(), [1, 2])
        XCTAssertEqual(table.unsubscribe(first, from: pattern, holdsOthers: false), [])
        XCTAssertEqual(table.remove(second, patterns: [pattern]), [removed])
        XCTAssertTrue(table.isEmpty)
        XCTAssertEqual(table.reannounce(), [])
    }
}

final class PatternIdleTests: XCTestCase {
    func testAConnectionWithOnlyPatternsIsNotIdle() throws {
        var config = SwitchyardConfig()
        config.idleTimeout = 1
        let limits = ConnectionLimits(config)
        let session = MQTTSession(version: .v311, clientID: "c", keepAliveSeconds: 0, will: nil)
        let connection = ClientConnection(id: 1, channel: EmbeddedChannel(), liveBacklogLimit: 1 << 20, limits: limits,
                                          now: 0, mqtt: session)
        XCTAssertEqual(connection.overdue(now: 2_000_000_000, limits: limits), .idle, "no subscription at all")
        session.patterns[try SubjectPattern("/a/+")] = 0
        XCTAssertNil(connection.overdue(now: 2_000_000_000, limits: limits), "a pattern is a subscription")
    }
}
