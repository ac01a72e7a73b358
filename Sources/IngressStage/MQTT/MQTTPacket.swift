import NIOCore
import SwitchyardCore

/// The MQTT versions ws-ingress speaks, by their CONNECT protocol level.
public enum MQTTVersion: UInt8, Sendable {
    case v311 = 4
    case v5 = 5
}

/// MQTT 5 reason codes the ingress sends or reads (MQTT 5.0 section 2.4). 3.1.1 return codes are derived from them.
public struct MQTTReasonCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let success = Self(rawValue: 0x00)
    public static let grantedQoS1 = Self(rawValue: 0x01)
    public static let disconnectWithWill = Self(rawValue: 0x04)
    public static let unspecifiedError = Self(rawValue: 0x80)
    public static let malformedPacket = Self(rawValue: 0x81)
    public static let protocolError = Self(rawValue: 0x82)
    public static let implementationSpecificError = Self(rawValue: 0x83)
    public static let unsupportedProtocolVersion = Self(rawValue: 0x84)
    public static let clientIdentifierNotValid = Self(rawValue: 0x85)
    public static let badUserNameOrPassword = Self(rawValue: 0x86)
    public static let notAuthorized = Self(rawValue: 0x87)
    public static let serverUnavailable = Self(rawValue: 0x88)
    public static let serverBusy = Self(rawValue: 0x89)
    public static let serverShuttingDown = Self(rawValue: 0x8B)
    public static let badAuthenticationMethod = Self(rawValue: 0x8C)
    public static let keepAliveTimeout = Self(rawValue: 0x8D)
    public static let sessionTakenOver = Self(rawValue: 0x8E)
    public static let topicFilterInvalid = Self(rawValue: 0x8F)
    public static let topicNameInvalid = Self(rawValue: 0x90)
    public static let packetIdentifierNotFound = Self(rawValue: 0x92)
    public static let receiveMaximumExceeded = Self(rawValue: 0x93)
    public static let topicAliasInvalid = Self(rawValue: 0x94)
    public static let packetTooLarge = Self(rawValue: 0x95)
    public static let messageRateTooHigh = Self(rawValue: 0x96)
    public static let quotaExceeded = Self(rawValue: 0x97)
    public static let qosNotSupported = Self(rawValue: 0x9B)
    public static let maximumConnectTime = Self(rawValue: 0xA0)
    public static let wildcardSubscriptionsNotSupported = Self(rawValue: 0xA2)

    public var isFailure: Bool { rawValue >= 0x80 }
    public var description: String { "0x" + String(rawValue, radix: 16, uppercase: true) }
}

/// MQTT 5 properties, in the order they came, each checked against the type its identifier has.
public struct MQTTProperties: Equatable, Sendable {
    public enum Value: Equatable, Sendable {
        case byte(UInt8)
        case twoByteInteger(UInt16)
        case fourByteInteger(UInt32)
        case variableByteInteger(UInt32)
        case string(String)
        case binary(ByteBuffer)
        case stringPair(String, String)
    }

    /// Property identifiers used by name in the ingress.
    public enum ID {
        public static let payloadFormatIndicator: UInt8 = 0x01
        public static let sessionExpiryInterval: UInt8 = 0x11
        public static let assignedClientIdentifier: UInt8 = 0x12
        public static let serverKeepAlive: UInt8 = 0x13
        public static let authenticationMethod: UInt8 = 0x15
        public static let reasonString: UInt8 = 0x1F
        public static let receiveMaximum: UInt8 = 0x21
        public static let topicAliasMaximum: UInt8 = 0x22
        public static let topicAlias: UInt8 = 0x23
        public static let maximumQoS: UInt8 = 0x24
        public static let retainAvailable: UInt8 = 0x25
        public static let userProperty: UInt8 = 0x26
        public static let maximumPacketSize: UInt8 = 0x27
        public static let wildcardSubscriptionAvailable: UInt8 = 0x28
        public static let subscriptionIdentifierAvailable: UInt8 = 0x29
        public static let sharedSubscriptionAvailable: UInt8 = 0x2A
    }

    public var entries: [(id: UInt8, value: Value)]

    public init(_ entries: [(id: UInt8, value: Value)] = []) {
        self.entries = entries
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.entries.count == rhs.entries.count
            && zip(lhs.entries, rhs.entries).allSatisfy { $0.id == $1.id && $0.value == $1.value }
    }

    public var isEmpty: Bool { entries.isEmpty }

    public subscript(id: UInt8) -> Value? { entries.first { $0.id == id }?.value }

    public func integer(_ id: UInt8) -> UInt32? {
        switch self[id] {
        case .byte(let value): return UInt32(value)
        case .twoByteInteger(let value): return UInt32(value)
        case .fourByteInteger(let value), .variableByteInteger(let value): return value
        default: return nil
        }
    }

    public mutating func append(_ id: UInt8, _ value: Value) {
        entries.append((id, value))
    }

    /// The User Properties (0x26), in order: a message's headers.
    public var userProperties: [MessageHeader] {
        entries.compactMap {
            guard $0.id == ID.userProperty, case .stringPair(let name, let value) = $0.value else { return nil }
            return MessageHeader(name, value)
        }
    }

    /// `headers` as User Properties.
    public init(userProperties headers: [MessageHeader]) {
        self.init(headers.map { (ID.userProperty, Value.stringPair($0.name, $0.value)) })
    }

    /// The wire type of each property identifier MQTT 5 defines (section 2.2.2.2).
    enum Kind { case byte, twoByteInteger, fourByteInteger, variableByteInteger, string, binary, stringPair }

    static func kind(of id: UInt8) -> Kind? {
        switch id {
        case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A: return .byte
        case 0x13, 0x21, 0x22, 0x23: return .twoByteInteger
        case 0x02, 0x11, 0x18, 0x27: return .fourByteInteger
        case 0x0B: return .variableByteInteger
        case 0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F: return .string
        case 0x09, 0x16: return .binary
        case 0x26: return .stringPair
        default: return nil
        }
    }
}

/// The will of a CONNECT: published by the server when the connection ends without a normal DISCONNECT.
public struct MQTTWill: Equatable, Sendable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: UInt8
    public var retain: Bool
    public var properties = MQTTProperties()
}

public struct MQTTConnect: Equatable, Sendable {
    public var version: MQTTVersion
    public var clientID: String
    public var cleanSession: Bool
    /// Seconds; 0 turns the keepalive off.
    public var keepAlive: UInt16
    public var will: MQTTWill?
    public var username: String?
    public var password: ByteBuffer?
    public var properties = MQTTProperties()
}

public struct MQTTConnAck: Equatable, Sendable {
    public var sessionPresent: Bool
    /// v5 reason code; for 3.1.1 the return code (0-5) as it is on the wire.
    public var code: UInt8
    public var properties = MQTTProperties()
}

public struct MQTTPublish: Equatable, Sendable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: UInt8
    public var retain: Bool
    public var dup: Bool
    /// Present exactly when `qos` > 0.
    public var packetID: UInt16?
    public var properties = MQTTProperties()
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP: a packet identifier and (v5) a reason code and properties.
public struct MQTTAck: Equatable, Sendable {
    public var packetID: UInt16
    public var reason: MQTTReasonCode = .success
    public var properties = MQTTProperties()
}

public struct MQTTSubscription: Equatable, Sendable {
    public var filter: String
    /// The options byte: maximum QoS in bits 0-1; v5 adds No Local, Retain As Published and Retain Handling.
    public var options: UInt8

    public var qos: UInt8 { options & 0x03 }
}

public struct MQTTSubscribe: Equatable, Sendable {
    public var packetID: UInt16
    public var subscriptions: [MQTTSubscription]
    public var properties = MQTTProperties()
}

public struct MQTTSubAck: Equatable, Sendable {
    public var packetID: UInt16
    /// One per subscription: the granted QoS, or a failure (3.1.1: 0x80; v5: a reason code).
    public var codes: [MQTTReasonCode]
    public var properties = MQTTProperties()
}

public struct MQTTUnsubscribe: Equatable, Sendable {
    public var packetID: UInt16
    public var filters: [String]
    public var properties = MQTTProperties()
}

public struct MQTTUnsubAck: Equatable, Sendable {
    public var packetID: UInt16
    /// v5 only: one per filter.
    public var codes: [MQTTReasonCode] = []
    public var properties = MQTTProperties()
}

public struct MQTTDisconnect: Equatable, Sendable {
    public var reason: MQTTReasonCode = .success
    public var properties = MQTTProperties()
}

/// One MQTT control packet.
public enum MQTTPacket: Equatable, Sendable {
    case connect(MQTTConnect)
    case connack(MQTTConnAck)
    case publish(MQTTPublish)
    case puback(MQTTAck)
    case pubrec(MQTTAck)
    case pubrel(MQTTAck)
    case pubcomp(MQTTAck)
    case subscribe(MQTTSubscribe)
    case suback(MQTTSubAck)
    case unsubscribe(MQTTUnsubscribe)
    case unsuback(MQTTUnsubAck)
    case pingreq
    case pingresp
    case disconnect(MQTTDisconnect)
}

/// Why input is not a valid MQTT packet: the connection is closed (v5: with a DISCONNECT of `reason` first).
public struct MQTTProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: MQTTReasonCode
    public var message: String

    public init(_ reason: MQTTReasonCode, _ message: String) {
        self.reason = reason
        self.message = message
    }

    static func malformed(_ message: String) -> Self { Self(.malformedPacket, message) }
    static func protocolError(_ message: String) -> Self { Self(.protocolError, message) }

    public var description: String { "\(message) (reason \(reason))" }
}
