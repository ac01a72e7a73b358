import Foundation
import Logging
import NIOCore
import NIOWebSocket
import SwitchyardCore

/// What the hub answers a CONNECT.
enum MQTTConnectOutcome {
    case accepted(ClientConnection)
    /// The CONNACK refusing it; the connection is then closed.
    case refused(MQTTConnAck)
}

/// The MQTT front end of the hub: MQTT packets become the same subscribes and publishes as WebSocket frames,
/// with the same subjects, limits and acknowledgements (docs/MQTT.md).
extension IngressHub {
    /// The longest client identifier accepted (MQTT requires at least 23 characters).
    static let maxMQTTClientIDLength = 256

    // MARK: CONNECT

    /// Registers an MQTT client whose token (`MQTTAccess`) granted it `permissions`, or refuses its CONNECT.
    /// `stored`: what `loadMQTTSession` found (nil: nothing was read).
    func connect(_ channel: Channel, _ connect: MQTTConnect, permissions: Permissions,
                 stored: MQTTSessionStore.Loaded? = nil) -> MQTTConnectOutcome {
        let v5 = connect.version == .v5
        func refusal(v311: UInt8, v5 reason: MQTTReasonCode) -> MQTTConnectOutcome {
            .refused(MQTTConnAck(sessionPresent: false, code: v5 ? reason.rawValue : v311))
        }
        var clientID = connect.clientID
        let assigned = clientID.isEmpty
        if assigned {
            // 3.1.1 (3.1.3.3): an empty identifier needs a clean session; v5 always gets one assigned.
            guard v5 || connect.cleanSession else { return refusal(v311: 0x02, v5: .clientIdentifierNotValid) }
            clientID = "switchyard-" + UUID().uuidString.lowercased()
        }
        guard clientID.utf8.count <= Self.maxMQTTClientIDLength else {
            return refusal(v311: 0x02, v5: .clientIdentifierNotValid)
        }
        // Enhanced authentication (AUTH) is not supported: the token is the password (MQTT 5 4.12).
        guard connect.properties[MQTTProperties.ID.authenticationMethod] == nil else {
            return refusal(v311: 0x05, v5: .badAuthenticationMethod)
        }
        if let will = connect.will {
            // 3.1.1 has no code for a will it cannot take: 0x05 (not authorized) is the closest.
            guard case .success(let subject) = MQTTTopic.subject(of: will.topic) else {
                return refusal(v311: 0x05, v5: .topicNameInvalid)
            }
            guard permissions.allows(.publish, subject) else { return refusal(v311: 0x05, v5: .notAuthorized) }
            guard will.qos < 2 || !v5 else { return refusal(v311: 0x05, v5: .qosNotSupported) }
            let headers = will.properties.userProperties
            guard MessageHeader.areWithinBounds(headers),
                  will.payload.readableBytes + MessageHeader.byteCount(of: headers) <= config.messageSizeLimit else {
                return refusal(v311: 0x05, v5: .packetTooLarge)
            }
        }
        let receiveMaximum = connect.properties.integer(MQTTProperties.ID.receiveMaximum)
        let maxPacketSize = connect.properties.integer(MQTTProperties.ID.maximumPacketSize)
        guard receiveMaximum != 0, maxPacketSize != 0 else {
            return refusal(v311: 0x02, v5: .protocolError)  // both must be above 0 when present (MQTT 5 3.1.2.11)
        }
        let session = MQTTSession(version: connect.version, clientID: clientID, keepAliveSeconds: connect.keepAlive,
                                  will: connect.will,
                                  receiveMaximum: receiveMaximum.map { Int($0) } ?? MQTTSession.maxPacketIdentifiers,
                                  maxPacketSize: maxPacketSize.map { Int($0) } ?? .max,
                                  wantsReasonStrings: connect.properties.integer(0x17) != 0)  // Request Problem Information
        let terms = sessionTerms(for: connect, hasRoom: stored?.hasRoom ?? true)
        guard !terms.refused else { return refusal(v311: 0x03, v5: .serverBusy) }
        session.expirySeconds = terms.expirySeconds
        session.maxPatternPositions = limits.maxSubjects
        session.needsSave = terms.expirySeconds != nil
        let continued = continuedSession(of: clientID, terms: terms, stored: stored?.record)
        if let previous = mqttClients[clientID] {
            logger.debug("MQTT session taken over", metadata: ["client": "\(clientID)", "connection": "\(previous.id)"])
            close(previous, mqttReason: .sessionTakenOver, "another connection connected with this client identifier")
        }
        let connection = self.connect(channel, mqtt: session)
        connection.permissions = permissions
        mqttClients[clientID] = connection
        metrics.setGauge("mqttConnections", mqttClients.count)
        var properties = MQTTProperties()
        if v5 {
            if let expiry = terms.connAckExpiry {
                // Capped by MqttSessionExpiry, or 0: not kept (MQTT 5 3.2.2.3.2).
                properties.append(MQTTProperties.ID.sessionExpiryInterval, .fourByteInteger(expiry))
            }
            if assigned { properties.append(MQTTProperties.ID.assignedClientIdentifier, .string(clientID)) }
            properties.append(MQTTProperties.ID.maximumQoS, .byte(1))
            properties.append(MQTTProperties.ID.maximumPacketSize,
                              .fourByteInteger(UInt32(clamping: mqttSettings.maxPacketBodySize + 5)))
            properties.append(MQTTProperties.ID.wildcardSubscriptionAvailable, .byte(1))
            properties.append(MQTTProperties.ID.subscriptionIdentifierAvailable, .byte(0))
            properties.append(MQTTProperties.ID.sharedSubscriptionAvailable, .byte(0))
        }
        logger.debug("MQTT client connected", metadata: ["connection": "\(connection.id)", "client": "\(clientID)",
                                                         "version": "\(connect.version.rawValue)", "keepalive": "\(connect.keepAlive)"])
        write(.connack(MQTTConnAck(sessionPresent: continued != nil, code: 0, properties: properties)), to: connection)
        if let continued {
            restore(continued, on: connection, session: session)
        } else if let discarded = stored?.record {
            session.generation = (discarded.generation ?? 0) &+ 1  // a take-over too: the older connection goes
        }
        if session.generation > 0 { mqttSessionStore?.announceTakeOver(of: clientID, generation: session.generation) }
        flushDirty()
        return .accepted(connection)
    }

    // MARK: Packets

    func handle(_ packet: MQTTPacket, from connection: ClientConnection) {
        guard !connection.isClosing, let session = connection.mqtt else { return }
        let now = now()
        connection.lastActivity = now
        switch packet {
        case .publish(let publish):
            self.publish(publish, from: connection, session: session, now: now)
        case .puback(let ack):
            session.acknowledge(ack.packetID)
        case .pubrel(let ack):
            // The second half of a 3.1.1 QoS 2 publish, PUBREC'd once stored (docs/MQTT.md).
            write(.pubcomp(MQTTAck(packetID: ack.packetID)), to: connection)
        case .subscribe(let subscribe):
            self.subscribe(subscribe, from: connection, session: session, now: now)
        case .unsubscribe(let unsubscribe):
            var codes: [MQTTReasonCode] = []
            for filter in unsubscribe.filters {
                switch MQTTTopic.filter(filter) {
                // Only a filter the device subscribed to: a subject subscribed on its own while a pattern's
                // recovery of it is answered is not one.
                case .success(.subject(let subject))
                    where session.grantedQoS[subject] != nil && connection.subjects.remove(subject) != nil:
                    session.grantedQoS[subject] = nil
                    session.filters[filter] = nil
                    session.forget(subject)
                    send(table.unsubscribe(connection, from: subject))
                    codes.append(.success)
                case .success(.pattern(let pattern)) where session.patterns.removeValue(forKey: pattern) != nil:
                    session.filters[filter] = nil
                    session.forgetUnmatchedPatternSubjects()
                    session.needsSave = true
                    send(patterns.unsubscribe(connection, from: pattern, holdsOthers: !session.patterns.isEmpty))
                    codes.append(.success)
                default:
                    codes.append(MQTTReasonCode(rawValue: 0x11))  // No subscription existed
                }
            }
            write(.unsuback(MQTTUnsubAck(packetID: unsubscribe.packetID, codes: codes)), to: connection)
        case .pingreq:
            write(.pingresp, to: connection)
        case .disconnect(let disconnect):
            if disconnect.reason != .disconnectWithWill { session.will = nil }
            applyDisconnectExpiry(disconnect, to: session)
            connection.isClosing = true
            connection.channel.close(promise: nil)
            self.disconnect(connection)
            return
        case .connect, .connack, .pubrec, .pubcomp, .suback, .unsuback, .pingresp:
            close(connection, mqttReason: .protocolError, "a packet only a server sends")
            return
        }
        sendWaitingSubscribes(of: connection)
        flushDirty()
    }

    /// Malformed input or a protocol violation: v5 gets a DISCONNECT with the reason code, then the connection
    /// closes.
    func fail(_ connection: ClientConnection, _ error: Error) {
        let problem = error as? MQTTProtocolError ?? .malformed("\(error)")
        logger.debug("MQTT client closed: invalid input",
                     metadata: ["connection": "\(connection.id)", "error": "\(problem)"])
        close(connection, mqttReason: problem.reason, problem.message)
    }

    /// `restoring`: the subscriptions of a continued session (no SUBACK, no rate limit; each subject recovers
    /// from its position).
    func subscribe(_ subscribe: MQTTSubscribe, from connection: ClientConnection, session: MQTTSession,
                   now: UInt64, restoring: [String: MQTTSubjectPosition]? = nil) {
        let v5 = session.version == .v5
        let failure = { (reason: MQTTReasonCode) in v5 ? reason : .unspecifiedError }
        let cost = min(subscribe.subscriptions.count, connection.subscribeRate.burst)
        guard restoring != nil || connection.subscribeRate.take(cost, now: now) else {
            let codes = subscribe.subscriptions.map { _ in failure(.quotaExceeded) }
            write(.suback(MQTTSubAck(packetID: subscribe.packetID, codes: codes)), to: connection)
            if connection.rateLimitStrikes.refused(now: now) {
                close(connection, mqttReason: .messageRateTooHigh, "subscribe rate limit exceeded repeatedly")
            }
            return
        }
        var codes: [MQTTReasonCode] = []
        var accepted: [(subject: String, start: SubscribeStart)] = []
        var acceptedPatterns: [(pattern: SubjectPattern, sendsRetained: Bool)] = []
        /// Subjects and patterns count together in `MaxSubjectsPerConnection`.
        var subscriptionCount: Int { connection.subjects.count + session.patterns.count }
        for subscription in subscribe.subscriptions {
            // Retain Handling (v5): 0 sends the retained messages, 1 only to a new subscription, 2 never.
            let retainHandling = (subscription.options >> 4) & 0x03
            let granted = min(subscription.qos, 1)
            let filter: MQTTTopic.Filter
            switch MQTTTopic.filter(subscription.filter) {
            case .success(let valid): filter = valid
            case .failure(.reserved): codes.append(failure(.notAuthorized)); continue
            case .failure(.invalid), .failure(.wildcard): codes.append(failure(.topicFilterInvalid)); continue
            }
            switch filter {
            case .subject(let subject):
                guard connection.permissions.allows(.subscribe, subject) else {
                    codes.append(failure(.notAuthorized))
                    continue
                }
                let isNew = !connection.subjects.contains(subject)
                guard !isNew || subscriptionCount < limits.maxSubjects else {
                    codes.append(failure(.quotaExceeded))
                    continue
                }
                session.grantedQoS[subject] = granted
                connection.subjects.insert(subject)
                let sendsRetained = retainHandling == 0 || (retainHandling == 1 && isNew)
                let start = resumedStart(of: subject, in: session, restoring: restoring, isNew: isNew)
                accepted.append((subject, start ?? (sendsRetained ? .snapshot : .history(count: 0))))
            case .pattern(let pattern):
                guard connection.permissions.allowsSubscribe(toEvery: pattern) else {
                    codes.append(failure(.notAuthorized))
                    continue
                }
                let isNew = session.patterns[pattern] == nil
                guard !isNew || (subscriptionCount < limits.maxSubjects && patterns.admits(pattern)) else {
                    codes.append(failure(.quotaExceeded))
                    continue
                }
                session.patterns[pattern] = granted
                if isNew { send(patterns.subscribe(connection, to: pattern)) }
                // A restored session's subscriptions already existed: no retained messages (MQTT 3.8.4).
                acceptedPatterns.append((pattern, restoring == nil && (retainHandling == 0 || (retainHandling == 1 && isNew))))
            }
            codes.append(MQTTReasonCode(rawValue: granted))
            session.filters[subscription.filter] = granted
            session.needsSave = true
        }
        if restoring == nil { write(.suback(MQTTSubAck(packetID: subscribe.packetID, codes: codes)), to: connection) }
        for (subject, start) in accepted where !connection.isClosing {
            logger.debug("MQTT subscribe", metadata: ["connection": "\(connection.id)", "subject": "\(subject)"])
            send(table.subscribe(connection, to: subject, start: start, now: now))
        }
        for (pattern, sendsRetained) in acceptedPatterns where sendsRetained && !connection.isClosing {
            logger.debug("MQTT pattern subscribe", metadata: ["connection": "\(connection.id)", "pattern": "\(pattern)"])
            send(patterns.requestRetained(for: connection, of: pattern, maxInFlight: limits.maxSubscribesInFlight,
                                          makeRequestID: table.makeRequestID, now: now))
        }
    }

    /// A cache shard's retained snapshots for a pattern subscribe, sent with the retain flag to the connection
    /// if it still holds the pattern; false for a reply that is not for a pattern subscribe.
    func answerPatternSubscribe(_ reply: SubscribeReply) -> Bool {
        let (isPatternReply, connection) = patterns.answer(reply) { connection, pattern in
            !connection.isClosing && connection.mqtt?.patterns[pattern] != nil
        }
        guard isPatternReply else { return false }
        guard let connection else { return true }
        for message in reply.messages where MQTTTopic.isTopicName(message.subject) {
            connection.queueAnswer(message, kind: .snapshot)
        }
        if !reply.messages.isEmpty { connection.writeQueued(now: now()) }
        sendWaitingSubscribes(of: connection)  // its slot is free
        return true
    }

    private func publish(_ publish: MQTTPublish, from connection: ClientConnection, session: MQTTSession,
                         now: UInt64) {
        let v5 = session.version == .v5
        guard !(v5 && publish.qos == 2) else {
            return close(connection, mqttReason: .qosNotSupported, "QoS 2 is not supported (Maximum QoS is 1)")
        }
        guard publish.properties[MQTTProperties.ID.topicAlias] == nil else {
            return close(connection, mqttReason: .topicAliasInvalid, "topic aliases are not supported (maximum 0)")
        }
        /// A publish that is not taken: v5 QoS 1 gets a PUBACK with the reason; QoS 0 is dropped; a 3.1.1 QoS 1
        /// or 2 publish closes the connection, as 3.1.1 has no way to say no (docs/MQTT.md).
        func refuse(_ reason: MQTTReasonCode, _ message: String) {
            if publish.qos == 0 { return }
            guard v5, let packetID = publish.packetID else { return close(connection, mqttReason: reason, message) }
            write(.puback(MQTTAck(packetID: packetID, reason: reason, properties: reasonString(message, for: session))),
                  to: connection)
        }
        guard connection.publishRate.take(1, now: now) else {
            refuse(.quotaExceeded, "rate limited: at most \(connection.publishRate.perSecond) publishes per second")
            if connection.rateLimitStrikes.refused(now: now) {
                close(connection, mqttReason: .messageRateTooHigh, "publish rate limit exceeded repeatedly")
            }
            return
        }
        let subject: String
        switch MQTTTopic.subject(of: publish.topic) {
        case .success(let valid):
            subject = valid
        case .failure(let refusal):
            guard v5, publish.qos > 0 else { return close(connection, mqttReason: .topicNameInvalid, refusal.description) }
            return refuse(.topicNameInvalid, refusal.description)
        }
        // 3.1.1 QoS 1 and 2: the connection is closed, as MQTT-3.3.5-2 allows (docs/MQTT.md).
        guard connection.permissions.allows(.publish, subject) else { return refuse(.notAuthorized, Self.notPermitted) }
        let headers = publish.properties.userProperties
        guard MessageHeader.areWithinBounds(headers) else {
            return refuse(.quotaExceeded, "at most \(MessageHeader.maxCount) user properties of \(MessageHeader.maxBytes) bytes in all")
        }
        let size = publish.payload.readableBytes + MessageHeader.byteCount(of: headers)
        guard size <= config.messageSizeLimit else {
            return refuse(.quotaExceeded, "the payload and user properties are \(size) bytes; the limit is \(config.messageSizeLimit)")
        }
        guard !link.isCongested else { return refuse(.unspecifiedError, "the broker is overloaded; try again") }
        var flags = MessageFlags(mqttRetain: publish.retain, qos: publish.qos, payload: publish.payload)
        let requestID = table.makeRequestID()
        if let packetID = publish.packetID {
            flags.insert(.wantsAck)
            pendingPublishes.add(requestID: requestID, connectionID: connection.id, closure: "",
                                 mqtt: MQTTPublishReceipt(packetID: packetID, exactlyOnce: publish.qos == 2), now: now)
        }
        let message = Message(subject: subject, content: publish.payload, flags: flags, timestamp: wallClockNanoseconds(),
                              headers: headers)
        link.send(.publish(Publish(requestID: requestID, replyTo: inboundAddress, message: message)))
    }

    /// The pipeline's answer to a publish: PUBACK (PUBREC for 3.1.1 QoS 2) once it is stored, never on failure.
    func acknowledge(_ receipt: MQTTPublishReceipt, ok: Bool, reason: String, to connection: ClientConnection) {
        guard let session = connection.mqtt else { return }
        if ok {
            let ack = MQTTAck(packetID: receipt.packetID)
            write(receipt.exactlyOnce ? .pubrec(ack) : .puback(ack), to: connection)
        } else if session.version == .v5 {
            write(.puback(MQTTAck(packetID: receipt.packetID, reason: .unspecifiedError,
                                  properties: reasonString(reason, for: session))), to: connection)
        } else {
            close(connection, mqttReason: .unspecifiedError, "the publish was not stored: \(reason)")
        }
    }

    // MARK: Ending

    /// Publishes the will of a connection that ends without a normal DISCONNECT (when its permissions allow),
    /// and forgets its client id.
    func endMQTTSession(of connection: ClientConnection) {
        guard let session = connection.mqtt else { return }
        if mqttClients[session.clientID] === connection { mqttClients[session.clientID] = nil }
        metrics.setGauge("mqttConnections", mqttClients.count)
        guard let will = session.will, case .success(let subject) = MQTTTopic.subject(of: will.topic),
              connection.permissions.allows(.publish, subject) else { return }
        session.will = nil
        let flags = MessageFlags(mqttRetain: will.retain, qos: will.qos, payload: will.payload)
        logger.debug("MQTT will published", metadata: ["connection": "\(connection.id)", "subject": "\(subject)"])
        let message = Message(subject: subject, content: will.payload, flags: flags, timestamp: wallClockNanoseconds(),
                              headers: will.properties.userProperties)
        link.send(.publish(Publish(requestID: table.makeRequestID(), replyTo: inboundAddress, message: message)))
    }

    /// Closes an MQTT connection: v5 first gets a DISCONNECT with `reason` (unless `immediately`: a client that
    /// does not read).
    func close(_ connection: ClientConnection, mqttReason reason: MQTTReasonCode, _ message: String,
               immediately: Bool = false) {
        guard !connection.isClosing else { return }
        connection.isClosing = true
        connection.discardQueued()
        let channel = connection.channel
        if connection.mqtt?.version == .v5 && !immediately {
            let disconnect = MQTTDisconnect(reason: reason, properties: reasonString(message))
            let packet = MQTTCodec.encode(.disconnect(disconnect), version: .v5, allocator: channel.allocator)
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, data: packet)).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            channel.flush()
            channel.close(promise: nil)
        }
        disconnect(connection)
    }

    // MARK: Writing

    func write(_ packet: MQTTPacket, to connection: ClientConnection) {
        guard let session = connection.mqtt else { return }
        let bytes = MQTTCodec.encode(packet, version: session.version, allocator: allocator)
        writeLive(WebSocketFrame(fin: true, opcode: .binary, data: bytes), to: connection)
    }

    /// A Reason String for a PUBACK: not for a client that asked for none (Request Problem Information 0).
    private func reasonString(_ message: String, for session: MQTTSession) -> MQTTProperties {
        session.wantsReasonStrings ? reasonString(message) : MQTTProperties()
    }

    private func reasonString(_ message: String) -> MQTTProperties {
        MQTTProperties([(MQTTProperties.ID.reasonString, .string(String(message.prefix(200))))])
    }
}

/// Where the acknowledgement of an MQTT publish goes.
struct MQTTPublishReceipt: Equatable {
    var packetID: UInt16
    /// A 3.1.1 QoS 2 publish: answered PUBREC (then PUBCOMP on the client's PUBREL).
    var exactlyOnce: Bool
}

extension MessageFlags {
    /// The flags of a message published over MQTT: retained only when the retain flag is set (an empty payload
    /// then clears the snapshot, MQTT 3.3.1.3), guaranteed from QoS 1, binary unless the payload is UTF-8.
    init(mqttRetain retain: Bool, qos: UInt8, payload: ByteBuffer) {
        self = []
        if retain { insert(.retained) }
        if retain && payload.readableBytes == 0 { insert(.clearsSnapshot) }
        if qos > 0 { insert(.guaranteed) }
        if !UTF8Validator.isValid(payload) { insert(.binary) }
    }
}

extension MQTTReasonCode {
    /// The reason an MQTT client is given when the hub closes a connection for a WebSocket close code.
    init(closing code: WebSocketErrorCode) {
        switch code {
        case .unknown(1012): self = .serverShuttingDown
        case .goingAway: self = .keepAliveTimeout
        case .policyViolation: self = .quotaExceeded
        default: self = .unspecifiedError
        }
    }
}
