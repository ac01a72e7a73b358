import IngressStage
import NIOCore

/// The MQTT 3.1.1 the bench speaks (over WebSocket, subprotocol `mqtt`): CONNECT with a clean session,
/// SUBSCRIBE at QoS 0, PUBLISH at QoS 0, PINGREQ. Reads CONNACK, SUBACK, PUBLISH and PINGRESP.
struct MQTTSession: PeerSession {
    /// Keep-alive announced in CONNECT; a PINGREQ goes out at half of it.
    static let keepAliveSeconds: UInt16 = 30
    /// The largest packet the bench accepts from a server.
    static let maxPacket = 1 << 20

    private let topics: [ByteBuffer]

    init(subjects: [String]) {
        topics = subjects.map { var buffer = ByteBuffer(); buffer.writeString($0); return buffer }
    }

    mutating func opening(subscribeTo subjectIndex: Int?) -> ByteBuffer {
        var out = ByteBuffer()
        var connect = ByteBuffer()
        connect.writeMQTTString("MQTT")
        connect.writeInteger(UInt8(4))  // protocol level 3.1.1
        connect.writeInteger(UInt8(0x02))  // clean session, no will, no user name or password
        connect.writeInteger(Self.keepAliveSeconds)
        connect.writeMQTTString("bench-\(UInt64.random(in: 0...UInt64.max))")
        out.writeMQTTPacket(type: 0x10, body: connect)
        if let subjectIndex {
            var subscribe = ByteBuffer()
            subscribe.writeInteger(UInt16(1))  // packet identifier
            var topic = topics[subjectIndex]
            subscribe.writeInteger(UInt16(topic.readableBytes))
            subscribe.writeBuffer(&topic)
            subscribe.writeInteger(UInt8(0))  // QoS 0
            out.writeMQTTPacket(type: 0x82, body: subscribe)
        }
        return out
    }

    func publish(subjectIndex: Int, payload: ByteBuffer) -> ByteBuffer {
        let topic = topics[subjectIndex]
        var body = ByteBuffer()
        body.reserveCapacity(2 + topic.readableBytes + payload.readableBytes)
        body.writeInteger(UInt16(topic.readableBytes))
        body.writeImmutableBuffer(topic)
        body.writeImmutableBuffer(payload)
        var out = ByteBuffer()
        out.writeMQTTPacket(type: 0x30, body: body)  // PUBLISH, QoS 0, no retain
        return out
    }

    var keepalive: (every: TimeAmount, bytes: ByteBuffer)? {
        (.seconds(Int64(Self.keepAliveSeconds / 2)), ByteBuffer(bytes: [0xC0, 0x00]))
    }

    mutating func consume(_ buffer: inout ByteBuffer, _ event: (PeerEvent) -> Void) {
        while let (first, bodyLength, headerLength) = Self.fixedHeader(buffer) {
            guard bodyLength <= Self.maxPacket else {
                event(.failure("MQTT packet of \(bodyLength) bytes"))
                buffer.clear()
                return
            }
            guard buffer.readableBytes >= headerLength + bodyLength else { return }
            buffer.moveReaderIndex(forwardBy: headerLength)
            guard var body = buffer.readSlice(length: bodyLength) else { return }
            switch first >> 4 {
            case 2:  // CONNACK: flags, return code
                if let code = body.getInteger(at: body.readerIndex + 1, as: UInt8.self), code != 0 {
                    event(.failure("CONNACK return code \(code)"))
                }
            case 9:  // SUBACK: packet identifier, one return code
                let code = body.getInteger(at: body.readerIndex + 2, as: UInt8.self) ?? 0x80
                event(.subscribed(granted: code < 0x80))
            case 3:  // PUBLISH: topic, packet identifier when QoS > 0, payload
                guard let topicLength = body.readInteger(as: UInt16.self),
                      body.readableBytes >= Int(topicLength) + ((first >> 1) & 3 > 0 ? 2 : 0) else {
                    event(.failure("malformed PUBLISH"))
                    continue
                }
                body.moveReaderIndex(forwardBy: Int(topicLength) + ((first >> 1) & 3 > 0 ? 2 : 0))
                event(.message(body))
            default:  // PINGRESP and anything else
                break
            }
        }
    }

    /// The first byte, the remaining length and the fixed header's size, once the fixed header is complete.
    static func fixedHeader(_ buffer: ByteBuffer) -> (UInt8, Int, Int)? {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        var length = 0
        var shift = 0
        for index in 1...4 {
            guard let byte = buffer.getInteger(at: buffer.readerIndex + index, as: UInt8.self) else { return nil }
            length |= Int(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return (first, length, 1 + index) }
            shift += 7
        }
        return (first, Int.max, 5)  // a fifth length byte: malformed, reported as too large
    }
}

extension ByteBuffer {
    /// A packet: `type` (with its flags), the remaining length as a variable byte integer, then `body` (the
    /// bench's packets are far below MQTT's 256 MB limit).
    mutating func writeMQTTPacket(type: UInt8, body: ByteBuffer) {
        writeInteger(type)
        writeMQTTVariableInteger(UInt32(body.readableBytes))
        writeImmutableBuffer(body)
    }
}
