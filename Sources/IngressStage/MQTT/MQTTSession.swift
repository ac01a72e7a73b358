import NIOCore
import SwitchyardCore

/// The MQTT state of one connection (the subscriptions themselves are the connection's subjects). Sessions
/// live as long as their connection: clean session off / session expiry is not kept yet (docs/MQTT.md).
/// Touched only on the ingress's event loop.
final class MQTTSession {
    /// Packet identifiers are 1...65535: at most this many QoS 1 deliveries can await their PUBACK.
    static let maxPacketIdentifiers = Int(UInt16.max)

    let version: MQTTVersion
    let clientID: String
    /// 1.5 × the keepalive, in nanoseconds; 0: no keepalive.
    let keepAliveTimeoutNanoseconds: UInt64
    /// Published when the connection ends without a normal DISCONNECT; nil once it must not be.
    var will: MQTTWill?
    /// The QoS granted per subscribed subject.
    var grantedQoS: [String: UInt8] = [:]
    /// The wildcard subscriptions (their index is the hub's `PatternSubscriptions`) and the QoS granted to each.
    var patterns: [SubjectPattern: UInt8] = [:]
    /// v5 Receive Maximum of the client: QoS 1 deliveries that may await their PUBACK at once.
    let receiveMaximum: Int
    /// v5 Maximum Packet Size of the client: larger PUBLISHes are not sent to it (MQTT 5 3.1.2.11.4).
    let maxPacketSize: Int
    /// v5 Request Problem Information: false when the client asked for no Reason Strings on acknowledgements.
    let wantsReasonStrings: Bool

    private var unacknowledged: Set<UInt16> = []
    private var lastPacketID: UInt16 = 0

    init(version: MQTTVersion, clientID: String, keepAliveSeconds: UInt16, will: MQTTWill?,
         receiveMaximum: Int = MQTTSession.maxPacketIdentifiers, maxPacketSize: Int = .max,
         wantsReasonStrings: Bool = true) {
        self.version = version
        self.clientID = clientID
        keepAliveTimeoutNanoseconds = UInt64(keepAliveSeconds) * 1_500_000_000
        self.will = will
        self.receiveMaximum = min(max(receiveMaximum, 1), Self.maxPacketIdentifiers)
        self.maxPacketSize = maxPacketSize
        self.wantsReasonStrings = wantsReasonStrings
    }

    var unacknowledgedCount: Int { unacknowledged.count }

    /// The QoS a message on `subject` goes at: the highest granted among the subscriptions it matches, its subject
    /// and its patterns (one copy per message, MQTT 5 3.3.4); 0 when none matches.
    func deliveryQoS(for subject: String) -> UInt8 {
        var qos = grantedQoS[subject] ?? 0
        for (pattern, granted) in patterns where granted > qos && pattern.matches(subject) { qos = granted }
        return qos
    }

    /// A free packet identifier for a QoS 1 delivery; nil when the client's Receive Maximum is reached (the
    /// message then goes at QoS 0, docs/MQTT.md).
    func takePacketID() -> UInt16? {
        guard unacknowledged.count < receiveMaximum else { return nil }
        repeat { lastPacketID = lastPacketID == UInt16.max ? 1 : lastPacketID + 1 } while unacknowledged.contains(lastPacketID)
        unacknowledged.insert(lastPacketID)
        return lastPacketID
    }

    /// The client's PUBACK; false for an identifier that was not awaiting one.
    @discardableResult
    func acknowledge(_ packetID: UInt16) -> Bool {
        unacknowledged.remove(packetID) != nil
    }

    /// Gives back an identifier taken for a delivery that was not sent.
    func release(_ packetID: UInt16) {
        unacknowledged.remove(packetID)
    }
}

/// One message's PUBLISH for MQTT subscribers: encoded at most once per version and QoS and shared by every
/// subscriber; a QoS 1 copy differs only in its packet identifier, set in the shared bytes' copy.
struct MQTTOutgoingPublish {
    let message: Message
    /// Set for a retained message sent because of a subscription (a snapshot); clear on live forwarding.
    let retain: Bool
    private var encoded: [Int: (packet: ByteBuffer, packetIDOffset: Int)] = [:]

    init(message: Message, retain: Bool) {
        self.message = message
        self.retain = retain
    }

    /// The packet for `session`, or nil when it exceeds the client's Maximum Packet Size.
    mutating func packet(for session: MQTTSession, allocator: ByteBufferAllocator) -> ByteBuffer? {
        let wantsQoS1 = message.flags.contains(.guaranteed) && session.deliveryQoS(for: message.subject) > 0
        let packetID = wantsQoS1 ? session.takePacketID() : nil
        let qos: UInt8 = packetID == nil ? 0 : 1
        let key = Int(session.version.rawValue) << 1 | Int(qos)
        let shared = encoded[key] ?? encode(version: session.version, qos: qos, allocator: allocator)
        encoded[key] = shared
        guard shared.packet.readableBytes <= session.maxPacketSize else {
            if let packetID { session.release(packetID) }
            return nil
        }
        guard let packetID else { return shared.packet }
        var packet = shared.packet
        packet.setInteger(packetID, at: packet.readerIndex + shared.packetIDOffset)
        return packet
    }

    private func encode(version: MQTTVersion, qos: UInt8, allocator: ByteBufferAllocator)
        -> (packet: ByteBuffer, packetIDOffset: Int) {
        var publish = MQTTPublish(topic: MQTTTopic.topic(of: message.subject), payload: message.content, qos: qos,
                                  retain: retain, dup: false, packetID: qos > 0 ? 0 : nil)
        // v5 subscribers get the headers as User Properties; 3.1.1 has no way to carry them.
        if version == .v5 && !message.headers.isEmpty {
            publish.properties = MQTTProperties(userProperties: message.headers)
        }
        let packet = MQTTCodec.encode(.publish(publish), version: version, allocator: allocator)
        return (packet, MQTTCodec.packetIDOffset(ofPublish: packet))
    }
}
