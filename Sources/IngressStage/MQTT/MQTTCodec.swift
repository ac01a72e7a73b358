import NIOCore

/// A packet as framed by its fixed header: type, flags and body (the bytes of its remaining length).
public struct MQTTRawPacket: Equatable, Sendable {
    public var type: UInt8
    public var flags: UInt8
    public var body: ByteBuffer
}

/// Splits a byte stream into packets by their fixed header (MQTT 2.1), bounding each by `maxBodySize`.
public enum MQTTFraming {
    /// The largest remaining length the protocol can express (four bytes of variable byte integer).
    public static let maxRemainingLength = 268_435_455

    /// The next whole packet at the front of `buffer` (consumed), nil until one is complete; throws on a fixed
    /// header that cannot be valid or a packet larger than `maxBodySize`, before its body has arrived.
    public static func next(from buffer: inout ByteBuffer, maxBodySize: Int) throws -> MQTTRawPacket? {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        var length = 0
        var multiplier = 1
        var offset = 1
        while true {
            guard let byte = buffer.getInteger(at: buffer.readerIndex + offset, as: UInt8.self) else { return nil }
            offset += 1
            length += Int(byte & 0x7F) * multiplier
            if byte & 0x80 == 0 {
                if offset > 2 && byte == 0 { throw MQTTProtocolError.malformed("remaining length is not minimally encoded") }
                break
            }
            guard offset < 5 else { throw MQTTProtocolError.malformed("remaining length longer than four bytes") }
            multiplier *= 128
        }
        guard length <= maxBodySize else {
            throw MQTTProtocolError(.packetTooLarge, "a packet of \(length) bytes; the limit is \(maxBodySize)")
        }
        guard buffer.readableBytes >= offset + length else { return nil }
        buffer.moveReaderIndex(forwardBy: offset)
        guard let body = buffer.readSlice(length: length) else { return nil }
        return MQTTRawPacket(type: first >> 4, flags: first & 0x0F, body: body)
    }
}

/// Reads fields of a packet body, throwing `malformed` on anything short or invalid.
struct MQTTReader {
    var buffer: ByteBuffer

    var isAtEnd: Bool { buffer.readableBytes == 0 }
    var remaining: Int { buffer.readableBytes }

    mutating func byte(_ what: String) throws -> UInt8 {
        guard let value = buffer.readInteger(as: UInt8.self) else { throw MQTTProtocolError.malformed("\(what) is missing") }
        return value
    }

    mutating func uint16(_ what: String) throws -> UInt16 {
        guard let value = buffer.readInteger(as: UInt16.self) else { throw MQTTProtocolError.malformed("\(what) is missing") }
        return value
    }

    mutating func uint32(_ what: String) throws -> UInt32 {
        guard let value = buffer.readInteger(as: UInt32.self) else { throw MQTTProtocolError.malformed("\(what) is missing") }
        return value
    }

    mutating func variableInteger(_ what: String) throws -> UInt32 {
        var value: UInt32 = 0
        var shift: UInt32 = 0
        for index in 0..<4 {
            let byte = try self.byte(what)
            if index > 0 && byte == 0 { throw MQTTProtocolError.malformed("\(what) is not minimally encoded") }
            value |= UInt32(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        throw MQTTProtocolError.malformed("\(what) is longer than four bytes")
    }

    mutating func binary(_ what: String) throws -> ByteBuffer {
        let length = try uint16("the length of \(what)")
        guard let bytes = buffer.readSlice(length: Int(length)) else {
            throw MQTTProtocolError.malformed("\(what) is shorter than its length")
        }
        return bytes
    }

    /// A UTF-8 string (MQTT 1.5.4): valid UTF-8 without U+0000.
    mutating func string(_ what: String) throws -> String {
        let bytes = try binary(what)
        guard UTF8Validator.isValid(bytes), !bytes.readableBytesView.contains(0) else {
            throw MQTTProtocolError.malformed("\(what) is not valid UTF-8")
        }
        return String(buffer: bytes)
    }

    mutating func packetID() throws -> UInt16 {
        let id = try uint16("the packet identifier")
        guard id != 0 else { throw MQTTProtocolError.malformed("packet identifier 0") }
        return id
    }

    mutating func rest() -> ByteBuffer {
        buffer.readSlice(length: buffer.readableBytes) ?? ByteBuffer()
    }

    /// v5 properties: their length, then each identifier and a value of the type the identifier has.
    mutating func properties() throws -> MQTTProperties {
        let length = Int(try variableInteger("the properties length"))
        guard let slice = buffer.readSlice(length: length) else {
            throw MQTTProtocolError.malformed("the properties are shorter than their length")
        }
        var reader = MQTTReader(buffer: slice)
        var properties = MQTTProperties()
        while !reader.isAtEnd {
            let id = Int(try reader.variableInteger("a property identifier"))
            guard id <= 0x7F, let kind = MQTTProperties.kind(of: UInt8(id)) else {
                throw MQTTProtocolError.malformed("unknown property \(id)")
            }
            let value: MQTTProperties.Value
            switch kind {
            case .byte: value = .byte(try reader.byte("a property"))
            case .twoByteInteger: value = .twoByteInteger(try reader.uint16("a property"))
            case .fourByteInteger: value = .fourByteInteger(try reader.uint32("a property"))
            case .variableByteInteger: value = .variableByteInteger(try reader.variableInteger("a property"))
            case .string: value = .string(try reader.string("a property"))
            case .binary: value = .binary(try reader.binary("a property"))
            case .stringPair: value = .stringPair(try reader.string("a user property name"),
                                                  try reader.string("a user property value"))
            }
            if id != MQTTProperties.ID.userProperty && id != 0x0B && properties[UInt8(id)] != nil {
                throw MQTTProtocolError.protocolError("property \(id) appears twice")
            }
            properties.append(UInt8(id), value)
        }
        return properties
    }

    func expectEnd(_ packet: String) throws {
        guard isAtEnd else { throw MQTTProtocolError.malformed("\(remaining) bytes too many in \(packet)") }
    }
}

/// Encodes and decodes MQTT 3.1.1 and 5.0 control packets. Decoding checks every length and value and throws
/// `MQTTProtocolError`, never traps.
public enum MQTTCodec {
    enum PacketType {
        static let connect: UInt8 = 1, connack: UInt8 = 2, publish: UInt8 = 3, puback: UInt8 = 4, pubrec: UInt8 = 5
        static let pubrel: UInt8 = 6, pubcomp: UInt8 = 7, subscribe: UInt8 = 8, suback: UInt8 = 9
        static let unsubscribe: UInt8 = 10, unsuback: UInt8 = 11, pingreq: UInt8 = 12, pingresp: UInt8 = 13
        static let disconnect: UInt8 = 14
    }

    /// What CONNECT carries before anything version-specific: `unsupportedVersion` is answered with a CONNACK.
    public enum ConnectError: Error, Equatable {
        case unsupportedVersion(level: UInt8)
    }

    // MARK: Decoding

    /// Decodes a packet of a connection speaking `version` (nil before its CONNECT: only CONNECT is valid then).
    public static func decode(_ raw: MQTTRawPacket, version: MQTTVersion?) throws -> MQTTPacket {
        guard let version else {
            guard raw.type == PacketType.connect else {
                throw MQTTProtocolError.protocolError("the first packet must be CONNECT")
            }
            return .connect(try decodeConnect(raw))
        }
        var reader = MQTTReader(buffer: raw.body)
        let v5 = version == .v5
        func requireFlags(_ expected: UInt8, _ name: String) throws {
            guard raw.flags == expected else { throw MQTTProtocolError.malformed("invalid flags of \(name)") }
        }
        switch raw.type {
        case PacketType.connect:
            throw MQTTProtocolError.protocolError("a second CONNECT")
        case PacketType.connack:
            try requireFlags(0, "CONNACK")
            let flags = try reader.byte("the CONNACK flags")
            guard flags & 0xFE == 0 else { throw MQTTProtocolError.malformed("reserved CONNACK flags set") }
            let code = try reader.byte("the CONNACK code")
            let properties = v5 ? try reader.properties() : MQTTProperties()
            try reader.expectEnd("CONNACK")
            return .connack(MQTTConnAck(sessionPresent: flags == 1, code: code, properties: properties))
        case PacketType.publish:
            return .publish(try decodePublish(raw.flags, &reader, v5: v5))
        case PacketType.puback:
            try requireFlags(0, "PUBACK")
            return .puback(try decodeAck(&reader, v5: v5, "PUBACK"))
        case PacketType.pubrec:
            try requireFlags(0, "PUBREC")
            return .pubrec(try decodeAck(&reader, v5: v5, "PUBREC"))
        case PacketType.pubrel:
            try requireFlags(2, "PUBREL")
            return .pubrel(try decodeAck(&reader, v5: v5, "PUBREL"))
        case PacketType.pubcomp:
            try requireFlags(0, "PUBCOMP")
            return .pubcomp(try decodeAck(&reader, v5: v5, "PUBCOMP"))
        case PacketType.subscribe:
            try requireFlags(2, "SUBSCRIBE")
            let packetID = try reader.packetID()
            let properties = v5 ? try reader.properties() : MQTTProperties()
            var subscriptions: [MQTTSubscription] = []
            while !reader.isAtEnd {
                let filter = try reader.string("a topic filter")
                let options = try reader.byte("the subscription options")
                guard options & (v5 ? 0xC0 : 0xFC) == 0 else {
                    throw MQTTProtocolError.malformed("reserved subscription option bits set")
                }
                guard options & 0x03 != 3, options & 0x30 != 0x30 else {
                    throw MQTTProtocolError.malformed("invalid QoS or retain handling in the subscription options")
                }
                subscriptions.append(MQTTSubscription(filter: filter, options: options))
            }
            guard !subscriptions.isEmpty else { throw MQTTProtocolError.protocolError("SUBSCRIBE without a topic filter") }
            return .subscribe(MQTTSubscribe(packetID: packetID, subscriptions: subscriptions, properties: properties))
        case PacketType.suback:
            try requireFlags(0, "SUBACK")
            let packetID = try reader.packetID()
            let properties = v5 ? try reader.properties() : MQTTProperties()
            var codes: [MQTTReasonCode] = []
            while !reader.isAtEnd { codes.append(MQTTReasonCode(rawValue: try reader.byte("a SUBACK code"))) }
            return .suback(MQTTSubAck(packetID: packetID, codes: codes, properties: properties))
        case PacketType.unsubscribe:
            try requireFlags(2, "UNSUBSCRIBE")
            let packetID = try reader.packetID()
            let properties = v5 ? try reader.properties() : MQTTProperties()
            var filters: [String] = []
            while !reader.isAtEnd { filters.append(try reader.string("a topic filter")) }
            guard !filters.isEmpty else { throw MQTTProtocolError.protocolError("UNSUBSCRIBE without a topic filter") }
            return .unsubscribe(MQTTUnsubscribe(packetID: packetID, filters: filters, properties: properties))
        case PacketType.unsuback:
            try requireFlags(0, "UNSUBACK")
            let packetID = try reader.packetID()
            guard v5 else {
                try reader.expectEnd("UNSUBACK")
                return .unsuback(MQTTUnsubAck(packetID: packetID))
            }
            let properties = try reader.properties()
            var codes: [MQTTReasonCode] = []
            while !reader.isAtEnd { codes.append(MQTTReasonCode(rawValue: try reader.byte("an UNSUBACK code"))) }
            return .unsuback(MQTTUnsubAck(packetID: packetID, codes: codes, properties: properties))
        case PacketType.pingreq:
            try requireFlags(0, "PINGREQ")
            try reader.expectEnd("PINGREQ")
            return .pingreq
        case PacketType.pingresp:
            try requireFlags(0, "PINGRESP")
            try reader.expectEnd("PINGRESP")
            return .pingresp
        case PacketType.disconnect:
            try requireFlags(0, "DISCONNECT")
            var disconnect = MQTTDisconnect()
            if v5 && !reader.isAtEnd {
                disconnect.reason = MQTTReasonCode(rawValue: try reader.byte("the reason code"))
                if !reader.isAtEnd { disconnect.properties = try reader.properties() }
            }
            try reader.expectEnd("DISCONNECT")
            return .disconnect(disconnect)
        default:
            throw MQTTProtocolError.protocolError("packet type \(raw.type) is not supported")
        }
    }

    private static func decodeConnect(_ raw: MQTTRawPacket) throws -> MQTTConnect {
        guard raw.flags == 0 else { throw MQTTProtocolError.malformed("invalid flags of CONNECT") }
        var reader = MQTTReader(buffer: raw.body)
        let name = try reader.string("the protocol name")
        let level = try reader.byte("the protocol level")
        guard name == "MQTT" || name == "MQIsdp" else { throw MQTTProtocolError.protocolError("protocol '\(name)' is not MQTT") }
        guard name == "MQTT", let version = MQTTVersion(rawValue: level) else {
            throw ConnectError.unsupportedVersion(level: level)
        }
        let v5 = version == .v5
        let flags = try reader.byte("the connect flags")
        guard flags & 0x01 == 0 else { throw MQTTProtocolError.malformed("the reserved connect flag is set") }
        let hasWill = flags & 0x04 != 0
        let willQoS = (flags >> 3) & 0x03
        let willRetain = flags & 0x20 != 0
        let hasPassword = flags & 0x40 != 0
        let hasUsername = flags & 0x80 != 0
        guard willQoS != 3 else { throw MQTTProtocolError.malformed("will QoS 3") }
        guard hasWill || (willQoS == 0 && !willRetain) else {
            throw MQTTProtocolError.malformed("will QoS or retain without a will")
        }
        guard v5 || hasUsername || !hasPassword else { throw MQTTProtocolError.malformed("a password without a user name") }
        let keepAlive = try reader.uint16("the keepalive")
        let properties = v5 ? try reader.properties() : MQTTProperties()
        let clientID = try reader.string("the client identifier")
        var will: MQTTWill?
        if hasWill {
            let willProperties = v5 ? try reader.properties() : MQTTProperties()
            let topic = try reader.string("the will topic")
            let payload = try reader.binary("the will payload")
            will = MQTTWill(topic: topic, payload: payload, qos: willQoS, retain: willRetain, properties: willProperties)
        }
        let username = hasUsername ? try reader.string("the user name") : nil
        let password = hasPassword ? try reader.binary("the password") : nil
        try reader.expectEnd("CONNECT")
        return MQTTConnect(version: version, clientID: clientID, cleanSession: flags & 0x02 != 0, keepAlive: keepAlive,
                           will: will, username: username, password: password, properties: properties)
    }

    private static func decodePublish(_ flags: UInt8, _ reader: inout MQTTReader, v5: Bool) throws -> MQTTPublish {
        let qos = (flags >> 1) & 0x03
        guard qos != 3 else { throw MQTTProtocolError.malformed("PUBLISH with QoS 3") }
        let dup = flags & 0x08 != 0
        guard qos > 0 || !dup else { throw MQTTProtocolError.malformed("DUP set on a QoS 0 PUBLISH") }
        let topic = try reader.string("the topic name")
        let packetID = qos > 0 ? try reader.packetID() : nil
        let properties = v5 ? try reader.properties() : MQTTProperties()
        return MQTTPublish(topic: topic, payload: reader.rest(), qos: qos, retain: flags & 0x01 != 0, dup: dup,
                           packetID: packetID, properties: properties)
    }

    private static func decodeAck(_ reader: inout MQTTReader, v5: Bool, _ name: String) throws -> MQTTAck {
        var ack = MQTTAck(packetID: try reader.packetID())
        if v5 && !reader.isAtEnd {
            ack.reason = MQTTReasonCode(rawValue: try reader.byte("the reason code"))
            if !reader.isAtEnd { ack.properties = try reader.properties() }
        }
        try reader.expectEnd(name)
        return ack
    }

    // MARK: Encoding

    /// Where the packet identifier of an encoded QoS > 0 PUBLISH is, from the packet's start: after the fixed
    /// header (type byte, remaining length of one to four bytes) and the topic name.
    static func packetIDOffset(ofPublish packet: ByteBuffer) -> Int {
        var offset = 1
        while let byte = packet.getInteger(at: packet.readerIndex + offset, as: UInt8.self), byte & 0x80 != 0, offset < 4 {
            offset += 1
        }
        offset += 1
        let topicLength = packet.getInteger(at: packet.readerIndex + offset, as: UInt16.self) ?? 0
        return offset + 2 + Int(topicLength)
    }

    /// Encodes `packet` for a connection speaking `version` (CONNECT carries its own).
    public static func encode(_ packet: MQTTPacket, version: MQTTVersion,
                              allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var body = allocator.buffer(capacity: 64)
        let v5 = version == .v5
        var flags: UInt8 = 0
        let type: UInt8
        switch packet {
        case .connect(let connect):
            type = PacketType.connect
            body.writeMQTTString("MQTT")
            body.writeInteger(connect.version.rawValue)
            var connectFlags: UInt8 = connect.cleanSession ? 0x02 : 0
            if let will = connect.will {
                connectFlags |= 0x04 | (will.qos & 0x03) << 3 | (will.retain ? 0x20 : 0)
            }
            if connect.password != nil { connectFlags |= 0x40 }
            if connect.username != nil { connectFlags |= 0x80 }
            body.writeInteger(connectFlags)
            body.writeInteger(connect.keepAlive)
            let connectV5 = connect.version == .v5
            if connectV5 { body.writeMQTTProperties(connect.properties) }
            body.writeMQTTString(connect.clientID)
            if let will = connect.will {
                if connectV5 { body.writeMQTTProperties(will.properties) }
                body.writeMQTTString(will.topic)
                body.writeMQTTBinary(will.payload)
            }
            if let username = connect.username { body.writeMQTTString(username) }
            if let password = connect.password { body.writeMQTTBinary(password) }
        case .connack(let connack):
            type = PacketType.connack
            body.writeInteger(UInt8(connack.sessionPresent ? 1 : 0))
            body.writeInteger(connack.code)
            if v5 { body.writeMQTTProperties(connack.properties) }
        case .publish(let publish):
            type = PacketType.publish
            flags = (publish.dup ? 0x08 : 0) | (publish.qos & 0x03) << 1 | (publish.retain ? 0x01 : 0)
            body.writeMQTTString(publish.topic)
            if publish.qos > 0 { body.writeInteger(publish.packetID ?? 0) }
            if v5 { body.writeMQTTProperties(publish.properties) }
            var payload = publish.payload
            body.writeBuffer(&payload)
        case .puback(let ack), .pubrec(let ack), .pubcomp(let ack):
            type = packet.ackType
            body.writeAck(ack, v5: v5)
        case .pubrel(let ack):
            type = PacketType.pubrel
            flags = 2
            body.writeAck(ack, v5: v5)
        case .subscribe(let subscribe):
            type = PacketType.subscribe
            flags = 2
            body.writeInteger(subscribe.packetID)
            if v5 { body.writeMQTTProperties(subscribe.properties) }
            for subscription in subscribe.subscriptions {
                body.writeMQTTString(subscription.filter)
                body.writeInteger(subscription.options)
            }
        case .suback(let suback):
            type = PacketType.suback
            body.writeInteger(suback.packetID)
            if v5 { body.writeMQTTProperties(suback.properties) }
            for code in suback.codes { body.writeInteger(code.rawValue) }
        case .unsubscribe(let unsubscribe):
            type = PacketType.unsubscribe
            flags = 2
            body.writeInteger(unsubscribe.packetID)
            if v5 { body.writeMQTTProperties(unsubscribe.properties) }
            for filter in unsubscribe.filters { body.writeMQTTString(filter) }
        case .unsuback(let unsuback):
            type = PacketType.unsuback
            body.writeInteger(unsuback.packetID)
            if v5 {
                body.writeMQTTProperties(unsuback.properties)
                for code in unsuback.codes { body.writeInteger(code.rawValue) }
            }
        case .pingreq:
            type = PacketType.pingreq
        case .pingresp:
            type = PacketType.pingresp
        case .disconnect(let disconnect):
            type = PacketType.disconnect
            if v5 && (disconnect.reason != .success || !disconnect.properties.isEmpty) {
                body.writeInteger(disconnect.reason.rawValue)
                if !disconnect.properties.isEmpty { body.writeMQTTProperties(disconnect.properties) }
            }
        }
        var packet = allocator.buffer(capacity: body.readableBytes + 5)
        packet.writeInteger(type << 4 | flags)
        packet.writeMQTTVariableInteger(UInt32(clamping: body.readableBytes))
        packet.writeBuffer(&body)
        return packet
    }
}

extension MQTTPacket {
    fileprivate var ackType: UInt8 {
        switch self {
        case .pubrec: return MQTTCodec.PacketType.pubrec
        case .pubcomp: return MQTTCodec.PacketType.pubcomp
        default: return MQTTCodec.PacketType.puback
        }
    }
}

/// MQTT's field encodings; public for the bench's MQTT client, which speaks the same wire.
extension ByteBuffer {
    /// A variable byte integer: seven bits a byte, low first, the high bit set on all but the last.
    public mutating func writeMQTTVariableInteger(_ value: UInt32) {
        var remaining = value
        repeat {
            var byte = UInt8(remaining & 0x7F)
            remaining >>= 7
            if remaining > 0 { byte |= 0x80 }
            writeInteger(byte)
        } while remaining > 0
    }

    /// A string or binary field: a two-byte length, then the bytes (cut at 65,535: callers keep within it).
    public mutating func writeMQTTString(_ string: String) {
        let bytes = string.utf8.prefix(Int(UInt16.max))
        writeInteger(UInt16(bytes.count))
        writeBytes(bytes)
    }

    mutating func writeMQTTBinary(_ buffer: ByteBuffer) {
        var bytes = buffer.getSlice(at: buffer.readerIndex, length: min(buffer.readableBytes, Int(UInt16.max))) ?? ByteBuffer()
        writeInteger(UInt16(bytes.readableBytes))
        writeBuffer(&bytes)
    }

    mutating func writeMQTTProperties(_ properties: MQTTProperties) {
        var encoded = ByteBuffer()
        for (id, value) in properties.entries {
            encoded.writeMQTTVariableInteger(UInt32(id))
            switch value {
            case .byte(let byte): encoded.writeInteger(byte)
            case .twoByteInteger(let integer): encoded.writeInteger(integer)
            case .fourByteInteger(let integer): encoded.writeInteger(integer)
            case .variableByteInteger(let integer): encoded.writeMQTTVariableInteger(min(integer, UInt32(MQTTFraming.maxRemainingLength)))
            case .string(let string): encoded.writeMQTTString(string)
            case .binary(let binary): encoded.writeMQTTBinary(binary)
            case .stringPair(let name, let value):
                encoded.writeMQTTString(name)
                encoded.writeMQTTString(value)
            }
        }
        writeMQTTVariableInteger(UInt32(clamping: encoded.readableBytes))
        writeBuffer(&encoded)
    }

    fileprivate mutating func writeAck(_ ack: MQTTAck, v5: Bool) {
        writeInteger(ack.packetID)
        guard v5, ack.reason != .success || !ack.properties.isEmpty else { return }
        writeInteger(ack.reason.rawValue)
        if !ack.properties.isEmpty { writeMQTTProperties(ack.properties) }
    }
}
