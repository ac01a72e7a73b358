import NIOCore
import XCTest
@testable import IngressStage

/// The MQTT codec: every packet both ways in 3.1.1 and 5.0, known byte layouts, and malformed input refused
/// with the right reason code.
final class MQTTCodecTests: XCTestCase {
    func bytes(_ packet: MQTTPacket, _ version: MQTTVersion) -> [UInt8] {
        Array(MQTTCodec.encode(packet, version: version).readableBytesView)
    }

    /// Frames and decodes one whole packet.
    func decode(_ bytes: [UInt8], _ version: MQTTVersion?, maxBodySize: Int = 1 << 20) throws -> MQTTPacket {
        var buffer = ByteBuffer(bytes: bytes)
        guard let raw = try MQTTFraming.next(from: &buffer, maxBodySize: maxBodySize) else {
            throw MQTTProtocolError.malformed("incomplete")
        }
        XCTAssertEqual(buffer.readableBytes, 0, "one packet, all of it read")
        return try MQTTCodec.decode(raw, version: version)
    }

    func assertRefused(_ bytes: [UInt8], _ version: MQTTVersion?, _ reason: MQTTReasonCode,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try decode(bytes, version), file: file, line: line) { error in
            XCTAssertEqual((error as? MQTTProtocolError)?.reason, reason, "\(error)", file: file, line: line)
        }
    }

    func roundTrip(_ packet: MQTTPacket, _ version: MQTTVersion, file: StaticString = #filePath, line: UInt = #line) {
        let isConnect: Bool
        if case .connect = packet { isConnect = true } else { isConnect = false }
        XCTAssertEqual(try decode(bytes(packet, version), isConnect ? nil : version), packet, file: file, line: line)
    }

    static let userProperties = MQTTProperties([
        (MQTTProperties.ID.userProperty, .stringPair("k", "v")), (MQTTProperties.ID.userProperty, .stringPair("k", "w")),
    ])

    func testEveryPacketRoundTripsInBothVersions() {
        for version in [MQTTVersion.v311, .v5] {
            let v5 = version == .v5
            let properties = v5 ? Self.userProperties : MQTTProperties()
            let will = MQTTWill(topic: "dev/1/status", payload: ByteBuffer(string: "gone"), qos: 1, retain: true,
                                properties: v5 ? MQTTProperties([(0x18, .fourByteInteger(5))]) : MQTTProperties())
            roundTrip(.connect(MQTTConnect(version: version, clientID: "c1", cleanSession: true, keepAlive: 30,
                                           will: will, username: "u", password: ByteBuffer(string: "p"),
                                           properties: v5 ? MQTTProperties([(0x11, .fourByteInteger(60))]) : .init())),
                      version)
            roundTrip(.connect(MQTTConnect(version: version, clientID: "", cleanSession: false, keepAlive: 0)), version)
            roundTrip(.connack(MQTTConnAck(sessionPresent: false, code: 0,
                                           properties: v5 ? MQTTProperties([(0x24, .byte(1)), (0x12, .string("x"))]) : .init())),
                      version)
            roundTrip(.publish(MQTTPublish(topic: "a/b", payload: ByteBuffer(bytes: [0, 1, 255]), qos: 1, retain: true,
                                           dup: true, packetID: 7, properties: properties)), version)
            roundTrip(.publish(MQTTPublish(topic: "a", payload: ByteBuffer(), qos: 0, retain: false, dup: false,
                                           packetID: nil)), version)
            roundTrip(.puback(MQTTAck(packetID: 1)), version)
            roundTrip(.pubrec(MQTTAck(packetID: 2)), version)
            roundTrip(.pubrel(MQTTAck(packetID: 3)), version)
            roundTrip(.pubcomp(MQTTAck(packetID: 65535)), version)
            roundTrip(.subscribe(MQTTSubscribe(packetID: 9, subscriptions: [
                MQTTSubscription(filter: "a/b", options: 1), MQTTSubscription(filter: "c/+", options: v5 ? 0x2E : 2),
            ], properties: properties)), version)
            roundTrip(.suback(MQTTSubAck(packetID: 9, codes: [.grantedQoS1, .unspecifiedError])), version)
            roundTrip(.unsubscribe(MQTTUnsubscribe(packetID: 10, filters: ["a/b", "c"], properties: properties)), version)
            roundTrip(.unsuback(MQTTUnsubAck(packetID: 10, codes: v5 ? [.success, MQTTReasonCode(rawValue: 0x11)] : [])),
                      version)
            roundTrip(.pingreq, version)
            roundTrip(.pingresp, version)
            roundTrip(.disconnect(MQTTDisconnect()), version)
        }
        roundTrip(.puback(MQTTAck(packetID: 4, reason: .topicNameInvalid,
                                  properties: MQTTProperties([(0x1F, .string("no subject"))]))), .v5)
        roundTrip(.puback(MQTTAck(packetID: 4, reason: .quotaExceeded)), .v5)
        roundTrip(.disconnect(MQTTDisconnect(reason: .disconnectWithWill)), .v5)
        roundTrip(.disconnect(MQTTDisconnect(reason: .keepAliveTimeout, properties: MQTTProperties([(0x1F, .string("x"))]))),
                  .v5)
    }

    func testKnownByteLayouts() throws {
        XCTAssertEqual(bytes(.connack(MQTTConnAck(sessionPresent: false, code: 0)), .v311), [0x20, 2, 0, 0])
        XCTAssertEqual(bytes(.connack(MQTTConnAck(sessionPresent: false, code: 0x89)), .v5), [0x20, 3, 0, 0x89, 0])
        XCTAssertEqual(bytes(.pingresp, .v5), [0xD0, 0])
        XCTAssertEqual(bytes(.puback(MQTTAck(packetID: 0x0102)), .v5), [0x40, 2, 1, 2], "success has no reason byte")
        XCTAssertEqual(bytes(.suback(MQTTSubAck(packetID: 1, codes: [.grantedQoS1, .unspecifiedError])), .v311),
                       [0x90, 4, 0, 1, 1, 0x80])
        XCTAssertEqual(bytes(.disconnect(MQTTDisconnect(reason: .malformedPacket)), .v5), [0xE0, 1, 0x81])
        XCTAssertEqual(bytes(.disconnect(MQTTDisconnect()), .v311), [0xE0, 0])
        XCTAssertEqual(bytes(.publish(MQTTPublish(topic: "a", payload: ByteBuffer(string: "x"), qos: 1, retain: true,
                                                  dup: false, packetID: 5)), .v5),
                       [0x33, 7, 0, 1, UInt8(ascii: "a"), 0, 5, 0, UInt8(ascii: "x")])
        // mosquitto_pub -V mqttv311 -i c -k 60 (CONNECT, clean session)
        let connect: [UInt8] = [0x10, 13, 0, 4] + Array("MQTT".utf8) + [4, 2, 0, 60, 0, 1, UInt8(ascii: "c")]
        XCTAssertEqual(try decode(connect, nil),
                       .connect(MQTTConnect(version: .v311, clientID: "c", cleanSession: true, keepAlive: 60)))
    }

    func testRemainingLengthIsFramedAcrossReadsAndBounded() throws {
        let packet = bytes(.publish(MQTTPublish(topic: "a", payload: ByteBuffer(repeating: 7, count: 200), qos: 0,
                                                retain: false, dup: false, packetID: nil)), .v311)
        XCTAssertEqual(Array(packet.prefix(3)), [0x30, 0xCB, 0x01], "two bytes of remaining length")
        var buffer = ByteBuffer(bytes: packet.prefix(2))
        XCTAssertNil(try MQTTFraming.next(from: &buffer, maxBodySize: 1000), "incomplete: wait")
        buffer.writeBytes(packet.dropFirst(2).prefix(100))
        XCTAssertNil(try MQTTFraming.next(from: &buffer, maxBodySize: 1000))
        buffer.writeBytes(packet.dropFirst(102))
        XCTAssertNotNil(try MQTTFraming.next(from: &buffer, maxBodySize: 1000))
        XCTAssertEqual(buffer.readableBytes, 0)

        var tooLarge = ByteBuffer(bytes: packet.prefix(3))
        XCTAssertThrowsError(try MQTTFraming.next(from: &tooLarge, maxBodySize: 100), "refused before the body came") {
            XCTAssertEqual(($0 as? MQTTProtocolError)?.reason, .packetTooLarge)
        }
        var fiveBytes = ByteBuffer(bytes: [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        XCTAssertThrowsError(try MQTTFraming.next(from: &fiveBytes, maxBodySize: .max))
        var notMinimal = ByteBuffer(bytes: [0xC0, 0x80, 0x00])
        XCTAssertThrowsError(try MQTTFraming.next(from: &notMinimal, maxBodySize: .max))
    }

    func testMalformedPacketsAreRefusedWithTheirReason() {
        assertRefused([0xC0, 0], nil, .protocolError)  // PINGREQ before CONNECT
        assertRefused([0x10, 13, 0, 4] + Array("MQTT".utf8) + [4, 3, 0, 60, 0, 1, 0x63], nil, .malformedPacket)  // reserved flag
        assertRefused([0x10, 13, 0, 4] + Array("MQTT".utf8) + [4, 0x1A, 0, 60, 0, 1, 0x63], nil, .malformedPacket)  // will QoS 3
        assertRefused([0x10, 13, 0, 4] + Array("MQTT".utf8) + [4, 0x42, 0, 60, 0, 1, 0x63], nil, .malformedPacket)  // password only
        assertRefused([0x10, 14, 0, 4] + Array("MQTT".utf8) + [4, 2, 0, 60, 0, 1, 0x63, 0], nil, .malformedPacket)  // extra byte
        assertRefused([0x10, 12, 0, 4] + Array("MQTT".utf8) + [4, 2, 0, 60, 0, 1], nil, .malformedPacket)  // truncated
        assertRefused([0x36, 5, 0, 1, 0x61, 0, 1], .v311, .malformedPacket)  // QoS 3
        assertRefused([0x32, 5, 0, 1, 0x61, 0, 0], .v311, .malformedPacket)  // packet id 0
        assertRefused([0x38, 4, 0, 1, 0x61, 0x78], .v311, .malformedPacket)  // DUP on QoS 0
        assertRefused([0x30, 4, 0, 2, 0xC3, 0x28], .v311, .malformedPacket)  // invalid UTF-8 topic
        assertRefused([0x30, 4, 0, 2, 0x61, 0x00], .v311, .malformedPacket)  // U+0000 in the topic
        assertRefused([0x30, 6, 0, 1, 0x61, 2, 0x7F, 0], .v5, .malformedPacket)  // unknown property 0x7F
        assertRefused([0x30, 8, 0, 1, 0x61, 4, 0x01, 1, 0x01, 1], .v5, .protocolError)  // payload format twice
        assertRefused([0x30, 5, 0, 1, 0x61, 5, 0x01], .v5, .malformedPacket)  // properties longer than the packet
        assertRefused([0x80, 6, 0, 1, 0, 1, 0x61, 1], .v311, .malformedPacket)  // SUBSCRIBE flags must be 2
        assertRefused([0x82, 2, 0, 1], .v311, .protocolError)  // SUBSCRIBE without a filter
        assertRefused([0x82, 6, 0, 1, 0, 1, 0x61, 3], .v311, .malformedPacket)  // QoS 3 requested
        assertRefused([0x82, 6, 0, 1, 0, 1, 0x61, 4], .v311, .malformedPacket)  // 3.1.1 reserved option bits
        assertRefused([0x82, 7, 0, 1, 0, 0, 1, 0x61, 0x30], .v5, .malformedPacket)  // retain handling 3
        assertRefused([0xA2, 3, 0, 1, 0], .v5, .protocolError)  // UNSUBSCRIBE without a filter
        assertRefused([0xC0, 1, 0], .v5, .malformedPacket)  // PINGREQ with a body
        assertRefused([0xF0, 0], .v5, .protocolError)  // AUTH is not supported
        assertRefused([0x10, 13, 0, 4] + Array("MQTT".utf8) + [4, 2, 0, 60, 0, 1, 0x63], .v311, .protocolError)  // 2nd CONNECT
    }

    func testUnsupportedVersionsAreToldApartFromGarbage() {
        XCTAssertThrowsError(try decode([0x10, 12, 0, 4] + Array("MQTT".utf8) + [3, 2, 0, 60, 0, 0], nil)) {
            XCTAssertEqual($0 as? MQTTCodec.ConnectError, .unsupportedVersion(level: 3))
        }
        XCTAssertThrowsError(try decode([0x10, 14, 0, 6] + Array("MQIsdp".utf8) + [3, 2, 0, 60, 0, 0], nil)) {
            XCTAssertEqual($0 as? MQTTCodec.ConnectError, .unsupportedVersion(level: 3))
        }
        assertRefused([0x10, 12, 0, 4] + Array("HTTP".utf8) + [4, 2, 0, 60, 0, 0], nil, .protocolError)
    }
}
