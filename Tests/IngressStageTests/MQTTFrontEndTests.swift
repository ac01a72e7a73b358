import Foundation
import NIOCore
import NIOEmbedded
import SwitchyardCore
import XCTest
@testable import IngressStage

final class MQTTTopicTests: XCTestCase {
    func testTopicsMapToSubjectsOrAreRefused() {
        XCTAssertEqual(try MQTTTopic.subject(of: "vehicles/car66/speed").get(), "/vehicles/car66/speed")
        XCTAssertEqual(try MQTTTopic.subject(of: "a").get(), "/a")
        XCTAssertEqual(MQTTTopic.topic(of: "/vehicles/car66/speed"), "vehicles/car66/speed")
        XCTAssertEqual(MQTTTopic.subject(of: "$SYS/broker/load"), .failure(.reserved))
        XCTAssertEqual(MQTTTopic.subject(of: "$share/g/a"), .failure(.reserved))
        XCTAssertEqual(MQTTTopic.subject(of: "a/+/c"), .failure(.wildcard))
        XCTAssertEqual(MQTTTopic.subject(of: "#"), .failure(.wildcard))
        for invalid in ["/a/b", "a//b", "a/b/", "", "bad topic/x", String(repeating: "k", count: 250)] {
            guard case .failure(.invalid) = MQTTTopic.subject(of: invalid) else {
                return XCTFail("'\(invalid)' must have no subject")
            }
        }
    }
}

final class MQTTSessionTests: XCTestCase {
    func testPacketIdentifiersStayWithinTheClientsReceiveMaximum() {
        let session = MQTTSession(version: .v5, clientID: "c", keepAliveSeconds: 10, will: nil, receiveMaximum: 2)
        XCTAssertEqual(session.keepAliveTimeoutNanoseconds, 15_000_000_000, "1.5 times the keepalive")
        XCTAssertEqual(session.takePacketID(), 1)
        XCTAssertEqual(session.takePacketID(), 2)
        XCTAssertNil(session.takePacketID(), "two await their PUBACK")
        XCTAssertTrue(session.acknowledge(1))
        XCTAssertFalse(session.acknowledge(1), "acknowledged once")
        XCTAssertEqual(session.takePacketID(), 3)
    }

    func testAPublishIsEncodedOncePerVersionAndQoSWithItsOwnPacketIdentifier() throws {
        let message = Message(subject: "/a/b", content: ByteBuffer(string: "hi"), seq: 4, epoch: "e")
        var publish = MQTTOutgoingPublish(message: message, retain: false)
        let allocator = ByteBufferAllocator()
        let qos1 = MQTTSession(version: .v5, clientID: "1", keepAliveSeconds: 0, will: nil)
        qos1.grantedQoS["/a/b"] = 1
        let qos0 = MQTTSession(version: .v311, clientID: "0", keepAliveSeconds: 0, will: nil)
        qos0.grantedQoS["/a/b"] = 0
        let first = try XCTUnwrap(publish.packet(for: qos1, allocator: allocator))
        let second = try XCTUnwrap(publish.packet(for: qos1, allocator: allocator))
        let expected = { (id: UInt16) in
            MQTTPacket.publish(MQTTPublish(topic: "a/b", payload: ByteBuffer(string: "hi"), qos: 1, retain: false,
                                           dup: false, packetID: id))
        }
        XCTAssertEqual(try decode(first, .v5), expected(1))
        XCTAssertEqual(try decode(second, .v5), expected(2))
        XCTAssertEqual(try decode(XCTUnwrap(publish.packet(for: qos0, allocator: allocator)), .v311),
                       .publish(MQTTPublish(topic: "a/b", payload: ByteBuffer(string: "hi"), qos: 0, retain: false,
                                            dup: false, packetID: nil)))
        var standard = MQTTOutgoingPublish(message: Message(subject: "/a/b", content: ByteBuffer(), flags: [.retained]),
                                           retain: true)
        guard case .publish(let snapshot) = try decode(XCTUnwrap(standard.packet(for: qos1, allocator: allocator)), .v5) else {
            return XCTFail("not a PUBLISH")
        }
        XCTAssertEqual(snapshot.qos, 0, "a STANDARD message goes at QoS 0")
        XCTAssertTrue(snapshot.retain)

        let small = MQTTSession(version: .v5, clientID: "s", keepAliveSeconds: 0, will: nil, maxPacketSize: 8)
        small.grantedQoS["/a/b"] = 1
        XCTAssertNil(publish.packet(for: small, allocator: allocator), "larger than the client's Maximum Packet Size")
        XCTAssertEqual(small.unacknowledgedCount, 0)
    }

    func testHeadersGoToV5SubscribersAsUserPropertiesAndNotTo311() throws {
        let headers = [MessageHeader("unit", "km/h"), MessageHeader("unit", "m/s"), MessageHeader("é", "")]
        let message = Message(subject: "/a/b", content: ByteBuffer(string: "hi"), seq: 4, epoch: "e", headers: headers)
        var publish = MQTTOutgoingPublish(message: message, retain: false)
        let allocator = ByteBufferAllocator()
        let v5 = MQTTSession(version: .v5, clientID: "5", keepAliveSeconds: 0, will: nil)
        v5.grantedQoS["/a/b"] = 1
        let v311 = MQTTSession(version: .v311, clientID: "3", keepAliveSeconds: 0, will: nil)
        v311.grantedQoS["/a/b"] = 1
        for id: UInt16 in [1, 2] {
            XCTAssertEqual(try decode(XCTUnwrap(publish.packet(for: v5, allocator: allocator)), .v5),
                           .publish(MQTTPublish(topic: "a/b", payload: ByteBuffer(string: "hi"), qos: 1, retain: false,
                                                dup: false, packetID: id,
                                                properties: MQTTProperties(userProperties: headers))))
        }
        XCTAssertEqual(try decode(XCTUnwrap(publish.packet(for: v311, allocator: allocator)), .v311),
                       .publish(MQTTPublish(topic: "a/b", payload: ByteBuffer(string: "hi"), qos: 1, retain: false,
                                            dup: false, packetID: 1)))
        XCTAssertEqual(MQTTProperties(userProperties: headers).userProperties, headers)
    }

    func testThePacketIdentifierIsFoundAfterLongRemainingLengthsAndTopics() throws {
        for (topic, size) in [("a", 0), (String(repeating: "t", count: 300), 200), ("b", 20_000), ("c", 3_000_000)] {
            let publish = MQTTPublish(topic: topic, payload: ByteBuffer(repeating: 1, count: size), qos: 1, retain: false,
                                      dup: false, packetID: 0x1234)
            let packet = MQTTCodec.encode(.publish(publish), version: .v5)
            XCTAssertEqual(packet.getInteger(at: MQTTCodec.packetIDOffset(ofPublish: packet), as: UInt16.self), 0x1234)
        }
    }

    func decode(_ buffer: ByteBuffer, _ version: MQTTVersion) throws -> MQTTPacket {
        var buffer = buffer
        return try MQTTCodec.decode(XCTUnwrap(MQTTFraming.next(from: &buffer, maxBodySize: .max)), version: version)
    }
}

/// The MQTT listener's pipeline (`IngressServer.configureMQTTChannel`) with a real hub, fed raw bytes.
final class MQTTChannelTests: XCTestCase, MQTTPipelineTest {
    var channel: EmbeddedChannel!
    var connections: ConnectionCounter!
    var hub: IngressHub!
    var runDir: TestRunDir!

    override func setUpWithError() throws {
        var config = SwitchyardConfig()
        config.handshakeTimeout = 2
        config.maxConnections = 1
        config.messageSizeLimit = 1024
        (channel, connections, hub, runDir) = try Self.makePipeline("sy-mqtt", config: config)
    }

    override func tearDownWithError() throws {
        _ = try? channel.finish()
        runDir.remove()
    }


    func connect(_ version: MQTTVersion, clientID: String = "dev1", cleanSession: Bool = true) throws -> [MQTTPacket] {
        try send(.connect(MQTTConnect(version: version, clientID: clientID, cleanSession: cleanSession, keepAlive: 60)),
                 version)
        return try received(version)
    }

    func testConnectThenPingAndSubscribeAnswers() throws {
        XCTAssertEqual(try connect(.v311), [.connack(MQTTConnAck(sessionPresent: false, code: 0))])
        XCTAssertEqual(hub.connectionCount, 1)
        try send(.pingreq, .v311)
        XCTAssertEqual(try received(.v311), [.pingresp])
        try send(.subscribe(MQTTSubscribe(packetID: 3, subscriptions: [
            MQTTSubscription(filter: "a/b", options: 2), MQTTSubscription(filter: "a/+", options: 1),
            MQTTSubscription(filter: "$SYS/x", options: 0), MQTTSubscription(filter: "/a", options: 0),
        ])), .v311)
        XCTAssertEqual(try received(.v311), [.suback(MQTTSubAck(packetID: 3, codes: [
            .grantedQoS1, .grantedQoS1, .unspecifiedError, .unspecifiedError,
        ]))], "QoS 2 granted as 1; a pattern granted; $ topics and topics without a subject refused")
        try send(.unsubscribe(MQTTUnsubscribe(packetID: 4, filters: ["a/b"])), .v311)
        XCTAssertEqual(try received(.v311), [.unsuback(MQTTUnsubAck(packetID: 4))])
        try send(.disconnect(MQTTDisconnect()), .v311)
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(hub.connectionCount, 0)
    }

    func testV5ConnackStatesTheLimitsAndSubAckGivesReasonCodes() throws {
        let answer = try connect(.v5, clientID: "")
        guard case .connack(let connack) = answer.first else { return XCTFail("\(answer)") }
        XCTAssertEqual(connack.code, 0)
        XCTAssertEqual(connack.properties.integer(MQTTProperties.ID.maximumQoS), 1)
        XCTAssertEqual(connack.properties.integer(MQTTProperties.ID.wildcardSubscriptionAvailable), 1)
        guard case .string(let assigned)? = connack.properties[MQTTProperties.ID.assignedClientIdentifier] else {
            return XCTFail("an empty client id gets one assigned")
        }
        XCTAssertTrue(assigned.hasPrefix("switchyard-"))
        try send(.subscribe(MQTTSubscribe(packetID: 1, subscriptions: [
            MQTTSubscription(filter: "a/#", options: 1), MQTTSubscription(filter: "$SYS/x", options: 0),
            MQTTSubscription(filter: "a//b", options: 0), MQTTSubscription(filter: "ok", options: 0),
        ])), .v5)
        XCTAssertEqual(try received(.v5), [.suback(MQTTSubAck(packetID: 1, codes: [
            .grantedQoS1, .notAuthorized, .topicFilterInvalid, .success,
        ]))])
    }

    func testV5PublishToAnInvalidTopicGetsAReasonCodeAnd311IsDisconnected() throws {
        _ = try connect(.v5)
        try send(.publish(MQTTPublish(topic: "$SYS/x", payload: ByteBuffer(string: "x"), qos: 1, retain: false,
                                      dup: false, packetID: 9)), .v5)
        guard case .puback(let ack) = try received(.v5).first else { return XCTFail("no PUBACK") }
        XCTAssertEqual(ack.packetID, 9)
        XCTAssertEqual(ack.reason, .topicNameInvalid)
        try send(.publish(MQTTPublish(topic: "a", payload: ByteBuffer(repeating: 1, count: 1025), qos: 1,
                                      retain: false, dup: false, packetID: 10)), .v5)
        guard case .puback(let tooLarge) = try received(.v5).first else { return XCTFail("no PUBACK") }
        XCTAssertEqual(tooLarge.reason, .quotaExceeded, "above MessageSizeLimit")
        XCTAssertTrue(channel.isActive)
    }

    func testV5PublishWithUserPropertiesBeyondTheBoundsGetsQuotaExceeded() throws {
        _ = try connect(.v5)
        let tooMany = MQTTProperties(userProperties: Array(repeating: MessageHeader("k", "v"), count: MessageHeader.maxCount + 1))
        try send(.publish(MQTTPublish(topic: "a", payload: ByteBuffer(string: "x"), qos: 1, retain: false, dup: false,
                                      packetID: 11, properties: tooMany)), .v5)
        guard case .puback(let countAck) = try received(.v5).first else { return XCTFail("no PUBACK") }
        XCTAssertEqual(countAck.reason, .quotaExceeded, "more than \(MessageHeader.maxCount) user properties")
        // 1000 bytes of payload and 30 of properties: above MessageSizeLimit (1024) together.
        let some = MQTTProperties([(MQTTProperties.ID.userProperty, .stringPair("name", String(repeating: "v", count: 26)))])
        try send(.publish(MQTTPublish(topic: "a", payload: ByteBuffer(repeating: 1, count: 1000), qos: 1, retain: false,
                                      dup: false, packetID: 12, properties: some)), .v5)
        guard case .puback(let sizeAck) = try received(.v5).first else { return XCTFail("no PUBACK") }
        XCTAssertEqual(sizeAck.packetID, 12)
        XCTAssertEqual(sizeAck.reason, .quotaExceeded, "payload and user properties above MessageSizeLimit")
        XCTAssertTrue(channel.isActive)
    }

    func test311PublishToAnInvalidTopicClosesTheConnection() throws {
        _ = try connect(.v311)
        try send(.publish(MQTTPublish(topic: "a/+", payload: ByteBuffer(), qos: 0, retain: false, dup: false,
                                      packetID: nil)), .v311)
        XCTAssertEqual(try received(.v311), [])
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(hub.connectionCount, 0)
    }

    func testMalformedInputGetsAV5DisconnectWithItsReason() throws {
        _ = try connect(.v5)
        try channel.writeInbound(ByteBuffer(bytes: [0x36, 5, 0, 1, 0x61, 0, 1]))  // PUBLISH with QoS 3
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try received(.v5).first, .disconnect(MQTTDisconnect(reason: .malformedPacket, properties:
            MQTTProperties([(MQTTProperties.ID.reasonString, .string("PUBLISH with QoS 3"))]))))
        XCTAssertFalse(channel.isActive)
    }

    func testAPacketAboveTheLimitIsRefusedBeforeItsBodyArrives() throws {
        _ = try connect(.v5)
        _ = try? channel.writeInbound(ByteBuffer(bytes: [0x30, 0xFF, 0xFF, 0x7F]))
        channel.embeddedEventLoop.run()
        guard case .disconnect(let disconnect) = try received(.v5).first else { return XCTFail("no DISCONNECT") }
        XCTAssertEqual(disconnect.reason, .packetTooLarge)
        XCTAssertFalse(channel.isActive)
    }

    func testConnectMustArriveWithinTheHandshakeTimeout() throws {
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1900))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        XCTAssertFalse(channel.isActive)
    }

    func testTheFirstPacketMustBeConnectAndOldVersionsAreRefused() throws {
        try channel.writeInbound(ByteBuffer(bytes: [0x10, 12, 0, 4] + Array("MQTT".utf8) + [3, 2, 0, 60, 0, 0]))
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try received(.v311), [.connack(MQTTConnAck(sessionPresent: false, code: 1))])
        XCTAssertFalse(channel.isActive)
    }

    func testBeyondMaxConnectionsConnectIsRefused() throws {
        let other = EmbeddedChannel()
        connections.track(other)
        XCTAssertEqual(try connect(.v311), [.connack(MQTTConnAck(sessionPresent: false, code: 3))])
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(hub.connectionCount, 0)
        _ = try other.finish()
    }

    func testATokensPermissionsDecideSubscribesAndPublishes() throws {
        _ = try connect(.v5)
        let connection = try XCTUnwrap(hub.mqttClients["dev1"])
        connection.permissions = try XCTUnwrap(Permissions(sub: ["/a/*"], pub: ["/p/*"], all: []))
        try send(.subscribe(MQTTSubscribe(packetID: 1, subscriptions: [
            MQTTSubscription(filter: "a/x", options: 1), MQTTSubscription(filter: "b/x", options: 1),
        ])), .v5)
        XCTAssertEqual(try received(.v5), [.suback(MQTTSubAck(packetID: 1, codes: [.grantedQoS1, .notAuthorized]))])
        try send(.publish(MQTTPublish(topic: "a/x", payload: ByteBuffer(string: "x"), qos: 1, retain: false,
                                      dup: false, packetID: 7)), .v5)
        guard case .puback(let denied) = try received(.v5).first else { return XCTFail("no PUBACK") }
        XCTAssertEqual(denied.reason, .notAuthorized)
        XCTAssertEqual(hub.pendingPublishes.count, 0, "a denied publish goes nowhere")
        try send(.publish(MQTTPublish(topic: "a/x", payload: ByteBuffer(string: "x"), qos: 0, retain: false,
                                      dup: false, packetID: nil)), .v5)
        XCTAssertEqual(try received(.v5), [], "QoS 0: dropped")
        try send(.publish(MQTTPublish(topic: "p/x", payload: ByteBuffer(string: "x"), qos: 1, retain: false,
                                      dup: false, packetID: 8)), .v5)
        XCTAssertEqual(try received(.v5), [], "allowed: the PUBACK waits for the pipeline")
        XCTAssertEqual(hub.pendingPublishes.count, 1)
        XCTAssertTrue(channel.isActive)
    }

    func testA311DeniedQoS1PublishClosesTheConnectionAndASubscribeGets0x80() throws {
        _ = try connect(.v311)
        let connection = try XCTUnwrap(hub.mqttClients["dev1"])
        connection.permissions = .subscribeOnly
        try send(.subscribe(MQTTSubscribe(packetID: 1, subscriptions: [MQTTSubscription(filter: "a", options: 1)])),
                 .v311)
        XCTAssertEqual(try received(.v311), [.suback(MQTTSubAck(packetID: 1, codes: [.grantedQoS1]))])
        connection.permissions = .nothing
        try send(.subscribe(MQTTSubscribe(packetID: 2, subscriptions: [MQTTSubscription(filter: "b", options: 1)])),
                 .v311)
        XCTAssertEqual(try received(.v311), [.suback(MQTTSubAck(packetID: 2, codes: [.unspecifiedError]))])
        try send(.publish(MQTTPublish(topic: "a", payload: ByteBuffer(string: "x"), qos: 0, retain: false,
                                      dup: false, packetID: nil)), .v311)
        XCTAssertTrue(channel.isActive, "QoS 0: dropped")
        try send(.publish(MQTTPublish(topic: "a", payload: ByteBuffer(string: "x"), qos: 1, retain: false,
                                      dup: false, packetID: 3)), .v311)
        XCTAssertEqual(try received(.v311), [], "no PUBACK")
        XCTAssertFalse(channel.isActive, "3.1.1 cannot say no: closed (MQTT-3.3.5-2)")
        XCTAssertEqual(hub.pendingPublishes.count, 0)
    }

    func testAnEmptyClientIdentifierWithoutCleanSessionIsRefusedIn311() throws {
        XCTAssertEqual(try connect(.v311, clientID: "", cleanSession: false),
                       [.connack(MQTTConnAck(sessionPresent: false, code: 2))])
        XCTAssertFalse(channel.isActive)
    }
}

/// MQTT over WebSocket: the WebSocket listener's pipeline upgraded at `/mqtt`.
final class MQTTOverWebSocketTests: XCTestCase {
    func testUpgradeAtMQTTPathNegotiatesTheSubprotocolAndCarriesPacketsAcrossFrames() throws {
        let runDir = try TestRunDir("sy-mqttws")
        defer { runDir.remove() }
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        let hub = try IngressHub.forTests(on: channel.embeddedEventLoop, runDir: runDir)
        try IngressServer.configureClientChannel(channel, settings: EdgeSettings(config: SwitchyardConfig()),
                                                 connections: ConnectionCounter(), hub: hub)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        func output() throws -> [UInt8] {
            var bytes: [UInt8] = []
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += buffer.readableBytesView }
            return bytes
        }
        func sendBinary(_ payload: [UInt8]) throws {
            let mask: [UInt8] = [1, 2, 3, 4]
            let masked = payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
            try channel.writeInbound(ByteBuffer(bytes: [0x82, 0x80 | UInt8(payload.count)] + mask + masked))
            channel.embeddedEventLoop.run()
        }

        try channel.writeInbound(ByteBuffer(string: "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            + "Connection: Upgrade\r\nSec-WebSocket-Key: \(HandshakeTests.key)\r\nSec-WebSocket-Version: 13\r\n"
            + "Sec-WebSocket-Protocol: mqtt\r\n\r\n"))
        channel.embeddedEventLoop.run()
        let response = String(decoding: try output(), as: UTF8.self)
        XCTAssertTrue(response.hasPrefix("HTTP/1.1 101"), response)
        XCTAssertTrue(response.lowercased().contains("sec-websocket-protocol: mqtt\r\n"), response)

        let connect = Array(MQTTCodec.encode(.connect(MQTTConnect(version: .v311, clientID: "ws", cleanSession: true,
                                                                  keepAlive: 30)), version: .v311).readableBytesView)
        try sendBinary(Array(connect.prefix(5)))
        XCTAssertEqual(try output(), [], "half a CONNECT: nothing yet")
        try sendBinary(Array(connect.dropFirst(5)) + [0xC0, 0])  // the rest, and a PINGREQ in the same message
        XCTAssertEqual(try output(), [0x82, 4, 0x20, 2, 0, 0, 0x82, 2, 0xD0, 0], "CONNACK, PINGRESP in binary frames")
        XCTAssertEqual(hub.connectionCount, 1)
    }
}

/// Who may in over MQTT: the password as the token, decided without a socket.
final class MQTTAccessTests: XCTestCase {
    let token = ByteBuffer(string: "header.claims.signature")

    func testEntitlementNoneLetsEveryoneInWithEverythingAndIgnoresThePassword() {
        for password in [nil, token] {
            XCTAssertEqual(MQTTAccess.decide(password: password, withoutToken: .everything, checksTokens: false),
                           .admit(TokenGrant(permissions: .everything, expiresAt: nil)))
        }
    }

    func testJWTNeedsAPasswordAndVerifiesIt() {
        XCTAssertEqual(MQTTAccess.decide(password: nil, withoutToken: nil, checksTokens: true), .refuse(.missing))
        XCTAssertEqual(MQTTAccess.decide(password: ByteBuffer(), withoutToken: nil, checksTokens: true),
                       .refuse(.missing), "an empty password is none")
        XCTAssertEqual(MQTTAccess.decide(password: token, withoutToken: nil, checksTokens: true),
                       .verify("header.claims.signature"))
        XCTAssertEqual(MQTTAccess.decide(password: ByteBuffer(bytes: [0x61, 0xFF, 0x62]), withoutToken: nil,
                                         checksTokens: true), .refuse(.malformed), "not UTF-8")
        XCTAssertEqual(MQTTAccess.decide(password: ByteBuffer(repeating: 0x61, count: TokenGrant.maxTokenBytes + 1),
                                         withoutToken: nil, checksTokens: true), .refuse(.tooLong))
        let grant = TokenGrant(permissions: .subscribeOnly, expiresAt: Date(timeIntervalSinceNow: 60))
        XCTAssertEqual(MQTTAccess.decide(password: nil, withoutToken: nil, checksTokens: true, upgradeGrant: grant),
                       .admit(grant), "MQTT over WebSocket: the token of the upgrade request")
        XCTAssertEqual(MQTTAccess.decide(password: token, withoutToken: nil, checksTokens: true, upgradeGrant: grant),
                       .verify("header.claims.signature"), "a password wins over the upgrade's token")
    }

    func testBasicLetsAnonymousClientsSubscribeOnlyAndVerifiesAPassword() {
        XCTAssertEqual(MQTTAccess.decide(password: nil, withoutToken: .subscribeOnly, checksTokens: true),
                       .admit(TokenGrant(permissions: .subscribeOnly, expiresAt: nil)))
        XCTAssertEqual(MQTTAccess.decide(password: token, withoutToken: .subscribeOnly, checksTokens: true),
                       .verify("header.claims.signature"))
    }

    func testRefusalsAreNotAuthorizedWithoutATokenAndBadCredentialsWithOne() {
        XCTAssertEqual(MQTTAccess.connAck(refusing: .missing, version: .v311).code, 5)
        XCTAssertEqual(MQTTAccess.connAck(refusing: .missing, version: .v5).code, 0x87)
        for refusal in TokenRefusal.allCases where refusal != .missing {
            XCTAssertEqual(MQTTAccess.connAck(refusing: refusal, version: .v311).code, 4, "\(refusal)")
            let v5 = MQTTAccess.connAck(refusing: refusal, version: .v5)
            XCTAssertEqual(v5.code, 0x86, "\(refusal)")
            XCTAssertEqual(v5.properties[MQTTProperties.ID.reasonString], .string(refusal.reason))
        }
        XCTAssertEqual(MQTTAccess.connAck(refusing: .expired, version: .v311).properties, MQTTProperties(),
                       "3.1.1 CONNACK has no properties")
    }
}

/// `Entitlement` in front of the MQTT listener's pipeline: refusals as CONNACK codes, permissions, token expiry.
final class MQTTEntitlementChannelTests: XCTestCase, MQTTPipelineTest {
    var channel: EmbeddedChannel!
    var hub: IngressHub!
    var runDir: TestRunDir!

    override func setUpWithError() throws {
        runDir = try TestRunDir("sy-mqtt-ent")
        channel = EmbeddedChannel()
    }

    override func tearDownWithError() throws {
        _ = try? channel.finish()
        runDir.remove()
    }

    /// The pipeline of `configureMQTTChannel` under `text`'s configuration; `upgradeGrant` as MQTT over
    /// WebSocket would pass it.
    func configure(_ text: String, upgradeGrant: TokenGrant? = nil) throws {
        let config = try SwitchyardConfig.parse(text, file: runDir.url.appendingPathComponent("s.conf").path)
        hub = try .forTests(on: channel.embeddedEventLoop, runDir: runDir, config: config)
        let settings = hub.mqttSettings
        try channel.pipeline.syncOperations.addHandlers([
            MQTTTCPFraming(), ByteToMessageHandler(MQTTFrameDecoder(maxBodySize: settings.maxPacketBodySize)),
            MQTTConnectionHandler(hub: hub, settings: settings, entitlement: Entitlement(config: config, verifier: nil),
                                  connections: nil, upgradeGrant: upgradeGrant),
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }


    func connect(_ version: MQTTVersion, password: String?, will: MQTTWill? = nil) throws -> UInt8? {
        try send(.connect(MQTTConnect(version: version, clientID: "dev", cleanSession: true, keepAlive: 60, will: will,
                                      username: password == nil ? nil : "anyone",
                                      password: password.map { ByteBuffer(string: $0) })), version)
        guard case .connack(let connack)? = try received(version).first else { return nil }
        return connack.code
    }

    func testJWTRefusesAClientWithoutAPasswordAsNotAuthorized() throws {
        for (version, code) in [(MQTTVersion.v311, UInt8(5)), (.v5, 0x87)] {
            try tearDownWithError()
            try setUpWithError()
            try configure("Entitlement = jwt\nJwtSecret = \(String(repeating: "k", count: 32))")
            XCTAssertEqual(try connect(version, password: nil), code, "\(version)")
            XCTAssertFalse(channel.isActive)
            XCTAssertEqual(hub.connectionCount, 0)
        }
    }

    func testBasicRefusesAnotherPasswordAndLetsTheAllowTokenPublish() throws {
        for (version, code) in [(MQTTVersion.v311, UInt8(4)), (.v5, 0x86)] {
            try tearDownWithError()
            try setUpWithError()
            try configure("Entitlement = basic\nEntitlementAllowToken = open-sesame")
            XCTAssertEqual(try connect(version, password: "guess"), code, "\(version)")
            XCTAssertFalse(channel.isActive)
        }
        try tearDownWithError()
        try setUpWithError()
        try configure("Entitlement = basic\nEntitlementAllowToken = open-sesame")
        XCTAssertEqual(try connect(.v5, password: "open-sesame"), 0)
        XCTAssertEqual(hub.mqttClients["dev"]?.permissions, .everything)
    }

    func testBasicWithoutAPasswordMaySubscribeButNotPublishNorLeaveAWill() throws {
        try configure("Entitlement = basic\nEntitlementAllowToken = open-sesame")
        XCTAssertEqual(try connect(.v5, password: nil), 0)
        XCTAssertEqual(hub.mqttClients["dev"]?.permissions, .subscribeOnly)
        try send(.publish(MQTTPublish(topic: "a", payload: ByteBuffer(string: "x"), qos: 1, retain: false, dup: false,
                                      packetID: 1)), .v5)
        guard case .puback(let ack)? = try received(.v5).first else { return XCTFail("no PUBACK") }
        XCTAssertEqual(ack.reason, .notAuthorized)

        try tearDownWithError()
        try setUpWithError()
        try configure("Entitlement = basic\nEntitlementAllowToken = open-sesame")
        let will = MQTTWill(topic: "status/dev", payload: ByteBuffer(string: "gone"), qos: 0, retain: false)
        XCTAssertEqual(try connect(.v5, password: nil, will: will), 0x87, "the will must obey the publish permission")
        XCTAssertEqual(hub.connectionCount, 0)
    }

    func testAnExpiredTokenEndsTheConnectionWithMaximumConnectTime() throws {
        let grant = TokenGrant(permissions: .everything, expiresAt: Date(timeIntervalSinceNow: 0.2))
        try configure("Entitlement = jwt\nJwtSecret = \(String(repeating: "k", count: 32))", upgradeGrant: grant)
        XCTAssertEqual(try connect(.v5, password: nil), 0)
        XCTAssertTrue(channel.isActive)
        Thread.sleep(forTimeInterval: 0.3)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        guard case .disconnect(let disconnect)? = try received(.v5).first else { return XCTFail("no DISCONNECT") }
        XCTAssertEqual(disconnect.reason, .maximumConnectTime)
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(hub.connectionCount, 0)
    }
}

/// A test that feeds MQTT packets to an `EmbeddedChannel` pipeline and reads what it answers.
protocol MQTTPipelineTest {
    var channel: EmbeddedChannel! { get }
}

extension MQTTPipelineTest {
    /// The MQTT listener's pipeline (`IngressServer.configureMQTTChannel`) with a real hub, connected.
    static func makePipeline(_ name: String, config: SwitchyardConfig) throws
        -> (EmbeddedChannel, ConnectionCounter, IngressHub, TestRunDir) {
        let runDir = try TestRunDir(name)
        let channel = EmbeddedChannel()
        let connections = ConnectionCounter()
        let hub = try IngressHub.forTests(on: channel.embeddedEventLoop, runDir: runDir, config: config)
        try IngressServer.configureMQTTChannel(channel, settings: hub.mqttSettings,
                                               entitlement: Entitlement(config: config, verifier: nil),
                                               connections: connections, hub: hub)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, connections, hub, runDir)
    }

    func send(_ packet: MQTTPacket, _ version: MQTTVersion) throws {
        try channel.writeInbound(MQTTCodec.encode(packet, version: version))
        channel.embeddedEventLoop.run()
    }

    /// Every packet written so far.
    func received(_ version: MQTTVersion) throws -> [MQTTPacket] {
        var bytes = ByteBuffer()
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&buffer) }
        var packets: [MQTTPacket] = []
        while let raw = try MQTTFraming.next(from: &bytes, maxBodySize: .max) {
            packets.append(try MQTTCodec.decode(raw, version: version))
        }
        return packets
    }
}
