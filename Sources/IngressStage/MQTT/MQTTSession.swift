import NIOCore
import SwitchyardCore

/// The MQTT state of one connection (the subscriptions themselves are the connection's subjects). A persistent
/// session (`expirySeconds` set) also tracks, per subject, how far the device has acknowledged and been sent, for
/// `MQTTSessionStore` (docs/MQTT.md, "Persistent sessions"). Touched only on the ingress's event loop.
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

    /// Seconds the session outlives its connection (capped by `MqttSessionExpiry`); nil: it ends with it.
    var expirySeconds: UInt32?
    /// This connection saves the session no more: a newer connection of the same client on this instance took
    /// it over, or its connection ended and it was saved for the last time.
    var isReleased = false
    /// How many times a connection took the stored session up (`MQTTSessionRecord.generation`).
    var generation: UInt64 = 0
    /// Subscriptions or positions changed since the session was last saved.
    var needsSave = false
    /// Monotonic time of the last save.
    var savedAt: UInt64 = 0
    /// The subscription filters as the client gave them, with their granted QoS (saved with the session).
    var filters: [String: UInt8] = [:]
    /// The positions of the stored session this one continues: messages after `seq` up to `sentSeq` were sent
    /// before and go again flagged DUP; a subject without a message since keeps its position.
    var restoredPositions: [String: MQTTSubjectPosition] = [:]

    /// Positions kept for subjects delivered through a pattern only (`MaxSubjectsPerConnection`): beyond it, the
    /// subject sent to least recently loses its position.
    var maxPatternPositions = 1000
    /// Position losses of that bound not logged yet.
    var droppedPatternPositions = 0
    /// Subjects matched only by a pattern whose restored position is being recovered, through a subscription of
    /// the connection's to the subject that ends with its answer (`IngressHub.finishPatternRecovery`).
    var recoveringPatternSubjects: Set<String> = []
    /// A persistent session's subjects delivered through a pattern only, with when each was last sent to.
    private var patternSubjectOrder: [String: UInt64] = [:]

    private var unacknowledged: Set<UInt16> = []
    /// The packet identifiers a restored session's unacknowledged messages were sent with: each goes again with its
    /// own (MQTT-4.4.0-1), and no other message takes one of them meanwhile. At most one per identifier.
    private var restoredPacketIDs: [MessageKey: UInt16] = [:]
    private var reservedPacketIDs: Set<UInt16> = []
    private var lastPacketID: UInt16 = 0
    /// A persistent session's QoS 1 messages awaiting their PUBACK, by packet identifier.
    private var inFlight: [UInt16: InFlight] = [:]
    private var sentCount: UInt64 = 0
    /// A persistent session's last message sent per subject.
    private var lastSent: [String: (epoch: String, seq: UInt64)] = [:]

    private struct MessageKey: Hashable {
        var subject: String
        var epoch: String
        var seq: UInt64
    }

    private struct InFlight {
        var subject: String
        var epoch: String
        var seq: UInt64
        /// Sent as the session's `order`th message.
        var order: UInt64

        /// Comes before `other` in the subject's stream: by seq within an epoch, else by when it was sent.
        func precedes(_ other: InFlight) -> Bool {
            epoch == other.epoch ? seq < other.seq : order < other.order
        }
    }

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

    /// The packet identifier for a QoS 1 delivery of `message`: the one it was sent with before the session was
    /// restored, else a free one; nil when the client's Receive Maximum is reached (the message then goes at
    /// QoS 0, docs/MQTT.md).
    func takePacketID(for message: Message) -> UInt16? {
        let key = MessageKey(subject: message.subject, epoch: message.epoch, seq: message.seq)
        if let restored = restoredPacketIDs.removeValue(forKey: key) {
            reservedPacketIDs.remove(restored)
            guard unacknowledged.count < receiveMaximum else { return nil }
            unacknowledged.insert(restored)
            return restored
        }
        return takePacketID()
    }

    /// A free packet identifier: neither awaiting its PUBACK nor kept for a re-send; nil at the Receive Maximum.
    func takePacketID() -> UInt16? {
        guard unacknowledged.count < receiveMaximum else { return nil }
        if unacknowledged.count + reservedPacketIDs.count >= Self.maxPacketIdentifiers {
            // Every identifier is taken: the re-sends still waiting give theirs up (they get new ones).
            restoredPacketIDs = [:]
            reservedPacketIDs = []
        }
        repeat {
            lastPacketID = lastPacketID == UInt16.max ? 1 : lastPacketID + 1
        } while unacknowledged.contains(lastPacketID) || reservedPacketIDs.contains(lastPacketID)
        unacknowledged.insert(lastPacketID)
        return lastPacketID
    }

    /// Keeps the packet identifiers of a restored session's unacknowledged messages for their re-sends.
    func restorePacketIDs(_ unacknowledged: [MQTTSessionRecord.Unacknowledged]) {
        for sent in unacknowledged where sent.packetID != 0 && !reservedPacketIDs.contains(sent.packetID) {
            let key = MessageKey(subject: sent.subject, epoch: sent.epoch, seq: sent.seq)
            guard restoredPacketIDs[key] == nil else { continue }
            restoredPacketIDs[key] = sent.packetID
            reservedPacketIDs.insert(sent.packetID)
        }
    }

    /// The messages of `positions` sent and not acknowledged, with their packet identifiers, for the session's
    /// record: those awaiting a PUBACK, and a restored session's not re-sent yet.
    func unacknowledgedMessages(within positions: [String: MQTTSubjectPosition]) -> [MQTTSessionRecord.Unacknowledged] {
        let sent = inFlight.map { (MessageKey(subject: $0.value.subject, epoch: $0.value.epoch, seq: $0.value.seq), $0.key) }
        return (sent + restoredPacketIDs.map { ($0.key, $0.value) }).compactMap { key, packetID in
            guard let position = positions[key.subject], position.epoch == key.epoch,
                  key.seq > position.seq, key.seq <= position.sentSeq else { return nil }
            return MQTTSessionRecord.Unacknowledged(subject: key.subject, epoch: key.epoch, seq: key.seq, packetID: packetID)
        }.sorted { ($0.subject, $0.seq) < ($1.subject, $1.seq) }
    }

    /// The client's PUBACK; false for an identifier that was not awaiting one.
    @discardableResult
    func acknowledge(_ packetID: UInt16) -> Bool {
        if inFlight.removeValue(forKey: packetID) != nil { needsSave = true }
        return unacknowledged.remove(packetID) != nil
    }

    /// Gives back an identifier taken for a delivery that was not sent.
    func release(_ packetID: UInt16) {
        unacknowledged.remove(packetID)
    }

    var isPersistent: Bool { expirySeconds != nil }

    /// A message went to the device (or was skipped for it: larger than its Maximum Packet Size), at QoS 1 when
    /// `packetID` is set.
    func noteSent(_ message: Message, packetID: UInt16?) {
        guard isPersistent else { return }
        sentCount += 1
        // A live message can be encoded before the older ones of an answer still being written: keep the highest.
        let isOlder = lastSent[message.subject].map { $0.epoch == message.epoch && $0.seq > message.seq } ?? false
        if !isOlder { lastSent[message.subject] = (message.epoch, message.seq) }
        if grantedQoS[message.subject] == nil { trackPatternSubject(message.subject) }
        if let packetID {
            inFlight[packetID] = InFlight(subject: message.subject, epoch: message.epoch, seq: message.seq, order: sentCount)
        }
        needsSave = true
    }

    /// A message of a recovery that the device was sent before it reconnected: it goes with DUP set.
    func isResend(_ message: Message) -> Bool {
        guard let position = restoredPositions[message.subject] else { return false }
        return message.epoch == position.epoch && message.seq > position.seq && message.seq <= position.sentSeq
    }

    /// Where recovery of `subject` starts when the device comes back: after the last message sent, or before the
    /// oldest it has not acknowledged (so that one is sent again); nil when nothing was sent since the session
    /// began or was restored (the caller knows where the subscription started).
    func position(of subject: String) -> MQTTSubjectPosition? {
        position(of: subject, oldestUnacknowledged: inFlight.values.filter { $0.subject == subject }.min { $0.precedes($1) })
    }

    /// `position(of:)` of each of `subjects` that has one, with one pass over the unacknowledged messages.
    func positions(of subjects: some Sequence<String>) -> [String: MQTTSubjectPosition] {
        var oldest: [String: InFlight] = [:]
        for delivery in inFlight.values where oldest[delivery.subject].map({ delivery.precedes($0) }) ?? true {
            oldest[delivery.subject] = delivery
        }
        var positions: [String: MQTTSubjectPosition] = [:]
        for subject in subjects {
            positions[subject] = position(of: subject, oldestUnacknowledged: oldest[subject])
        }
        return positions
    }

    private func position(of subject: String, oldestUnacknowledged oldest: InFlight?) -> MQTTSubjectPosition? {
        guard let sent = lastSent[subject] else { return restoredPositions[subject] }
        guard let oldest else { return MQTTSubjectPosition(epoch: sent.epoch, seq: sent.seq, sentSeq: sent.seq) }
        let acknowledged = oldest.seq > 0 ? oldest.seq - 1 : 0
        return MQTTSubjectPosition(epoch: oldest.epoch, seq: acknowledged,
                                   sentSeq: sent.epoch == oldest.epoch ? sent.seq : acknowledged)
    }

    /// The subjects delivered through a pattern only whose positions are kept.
    var patternSubjects: Dictionary<String, UInt64>.Keys { patternSubjectOrder.keys }

    /// Keeps the position of a subject delivered through a pattern only (a restored one: as the least recent).
    func trackPatternSubject(_ subject: String, restored: Bool = false) {
        if patternSubjectOrder[subject] == nil && patternSubjectOrder.count >= max(maxPatternPositions, 1),
           let oldest = patternSubjectOrder.min(by: { $0.value < $1.value })?.key {
            patternSubjectOrder[oldest] = nil
            lastSent[oldest] = nil
            restoredPositions[oldest] = nil
            droppedPatternPositions += 1
        }
        patternSubjectOrder[subject] = restored ? 0 : sentCount
    }

    /// Forgets the positions of subjects no pattern of the session matches any more (one was unsubscribed).
    func forgetUnmatchedPatternSubjects() {
        for subject in patternSubjectOrder.keys where grantedQoS[subject] == nil
            && !patterns.keys.contains(where: { $0.matches(subject) }) {
            patternSubjectOrder[subject] = nil
            forget(subject)
        }
    }

    /// Forgets what was tracked for a subject the client unsubscribed from.
    func forget(_ subject: String) {
        lastSent[subject] = nil
        restoredPositions[subject] = nil
        inFlight = inFlight.filter { $0.value.subject != subject }
        for (key, packetID) in restoredPacketIDs where key.subject == subject {
            restoredPacketIDs[key] = nil
            reservedPacketIDs.remove(packetID)
        }
        needsSave = true
    }
}

/// One message's PUBLISH for MQTT subscribers: encoded, and framed as a WebSocket binary frame, at most once per
/// version, QoS and DUP and shared by every subscriber; a QoS 1 copy differs only in its packet identifier, set in
/// a copy of the shared frame (one buffer per QoS 1 subscriber, none per QoS 0 one).
struct MQTTOutgoingPublish {
    let message: Message
    /// Set for a retained message sent because of a subscription (a snapshot); clear on live forwarding.
    let retain: Bool
    private var encoded: [Int: (frame: WireFrame, packetIDOffset: Int)] = [:]

    init(message: Message, retain: Bool) {
        self.message = message
        self.retain = retain
    }

    /// The packet for `session`, or nil when it exceeds the client's Maximum Packet Size.
    mutating func packet(for session: MQTTSession, allocator: ByteBufferAllocator) -> ByteBuffer? {
        wireFrame(for: session, allocator: allocator)?.payload
    }

    /// The packet for `session` as it goes out (`WireFrame.payload` is the packet alone), or nil when it exceeds
    /// the client's Maximum Packet Size.
    mutating func wireFrame(for session: MQTTSession, allocator: ByteBufferAllocator) -> WireFrame? {
        let wantsQoS1 = message.flags.contains(.guaranteed) && session.deliveryQoS(for: message.subject) > 0
        let packetID = wantsQoS1 ? session.takePacketID(for: message) : nil
        let qos: UInt8 = packetID == nil ? 0 : 1
        // DUP only on QoS 1 (MQTT-3.3.1-2): a message of a restored session's recovery sent before.
        let dup = qos == 1 && session.isResend(message)
        let key = Int(session.version.rawValue) << 2 | (dup ? 2 : 0) | Int(qos)
        let shared: (frame: WireFrame, packetIDOffset: Int)
        if let known = encoded[key] {
            shared = known
        } else {
            shared = encode(version: session.version, qos: qos, dup: dup, allocator: allocator)
            encoded[key] = shared
        }
        guard shared.frame.payloadBytes <= session.maxPacketSize else {
            if let packetID { session.release(packetID) }
            session.noteSent(message, packetID: nil)
            return nil
        }
        session.noteSent(message, packetID: packetID)
        guard let packetID else { return shared.frame }
        return shared.frame.setting(packetID, atPayloadOffset: shared.packetIDOffset)
    }

    private func encode(version: MQTTVersion, qos: UInt8, dup: Bool, allocator: ByteBufferAllocator)
        -> (frame: WireFrame, packetIDOffset: Int) {
        var publish = MQTTPublish(topic: MQTTTopic.topic(of: message.subject), payload: message.content, qos: qos,
                                  retain: retain, dup: dup, packetID: qos > 0 ? 0 : nil)
        // v5 subscribers get the headers as User Properties; 3.1.1 has no way to carry them.
        if version == .v5 && !message.headers.isEmpty {
            publish.properties = MQTTProperties(userProperties: message.headers)
        }
        let packet = MQTTCodec.encode(.publish(publish), version: version, allocator: allocator)
        let packetIDOffset = MQTTCodec.packetIDOffset(ofPublish: packet)
        return (WireFrame(opcode: .binary, data: packet, allocator: allocator), packetIDOffset)
    }
}
