import Foundation
import NIOCore
import SwitchyardCore

/// What a CONNECT's session flags and the node's bounds make of its session. No I/O: unit-tested.
struct MQTTSessionTerms: Equatable {
    /// Seconds the session is kept after the connection ends; nil: it ends with the connection.
    var expirySeconds: UInt32?
    /// v5 CONNACK Session Expiry Interval, sent when it differs from what the client asked for.
    var connAckExpiry: UInt32?
    /// Clean session (3.1.1) / Clean Start (v5): a stored session is discarded, not continued.
    var discardsStored: Bool
    /// 3.1.1 only: the session cannot be kept (`MqttMaxSessions`) and 3.1.1 has no way to say so but CONNACK
    /// `0x03` Server unavailable. v5 is told by CONNACK Session Expiry Interval 0 instead.
    var refused = false
}

extension MQTTSessionTerms {
    /// `requestedExpiry`: the v5 CONNECT's Session Expiry Interval (absent: 0); ignored for 3.1.1, whose clean
    /// session off asks for `maxExpiry`. `maxExpiry` 0: no session is kept.
    init(version: MQTTVersion, cleanSession: Bool, requestedExpiry: UInt32?, maxExpiry: Int, hasRoom: Bool) {
        discardsStored = cleanSession
        let cap = UInt32(clamping: max(maxExpiry, 0))
        let requested: UInt32 = version == .v5 ? requestedExpiry ?? 0 : (cleanSession ? 0 : cap)
        var granted = min(requested, cap)
        if granted > 0 && !hasRoom {
            refused = version == .v311
            granted = 0
        }
        expirySeconds = granted > 0 ? granted : nil
        connAckExpiry = version == .v5 && granted != requested ? granted : nil
    }
}

/// Persistent MQTT sessions in the hub: continued on CONNECT, saved while they change and when their connection
/// ends (docs/MQTT.md, "Persistent sessions").
extension IngressHub {
    /// A session is saved at most this often while its positions change.
    static let mqttSessionSaveNanoseconds: UInt64 = 1_000_000_000

    func sessionTerms(for connect: MQTTConnect, hasRoom: Bool) -> MQTTSessionTerms {
        MQTTSessionTerms(version: connect.version, cleanSession: connect.cleanSession,
                         requestedExpiry: connect.properties.integer(MQTTProperties.ID.sessionExpiryInterval),
                         maxExpiry: mqttSessionStore == nil ? 0 : config.mqttSessionExpiry, hasRoom: hasRoom)
    }

    /// Reads the stored session of a CONNECT that may continue one or start a persistent one; nil when there is
    /// nothing to read (no identifier yet, or neither).
    func loadMQTTSession(for connect: MQTTConnect, on eventLoop: EventLoop) -> EventLoopFuture<MQTTSessionStore.Loaded>? {
        guard let store = mqttSessionStore, !connect.clientID.isEmpty else { return nil }
        let terms = sessionTerms(for: connect, hasRoom: true)
        guard !terms.discardsStored || terms.expirySeconds != nil else { return nil }
        return store.load(connect.clientID, on: eventLoop)
    }

    /// The session a CONNECT continues: that of a connection of the same client still open on this instance
    /// (handed over: fresher than its file, unless another node took the session up since), else the stored one;
    /// none under a clean session. A session that will not outlive this connection is removed from the store now.
    func continuedSession(of clientID: String, terms: MQTTSessionTerms, stored: MQTTSessionRecord?)
        -> MQTTSessionRecord? {
        var record = stored
        if let previous = mqttClients[clientID], let old = previous.mqtt, old.isPersistent {
            if stored?.generation ?? 0 <= old.generation { record = sessionRecord(of: previous) }
            old.isReleased = true
        }
        if terms.discardsStored { record = nil }
        if terms.discardsStored || terms.expirySeconds == nil { mqttSessionStore?.delete(clientID) }
        return record
    }

    /// Re-establishes a continued session's subscriptions through the SUBSCRIBE path (permissions checked under
    /// this connection's token: what it may not have is dropped), recovering each subject from its position.
    func restore(_ record: MQTTSessionRecord, on connection: ClientConnection, session: MQTTSession) {
        session.restoredPositions = record.positions
        session.restorePacketIDs(record.unacknowledged ?? [])
        session.generation = (record.generation ?? 0) &+ 1
        let subscriptions = record.subscriptions.map { MQTTSubscription(filter: $0.filter, options: min($0.qos, 1)) }
        metrics.addToGauge("mqttSessionsResumed", 1)
        logger.debug("MQTT session resumed", metadata: ["connection": "\(connection.id)", "client": "\(record.clientID)",
                                                        "subscriptions": "\(subscriptions.count)"])
        subscribe(MQTTSubscribe(packetID: 0, subscriptions: subscriptions), from: connection, session: session,
                  now: now(), restoring: record.positions)
        recoverPatternSubjects(of: record, on: connection, session: session)
        for dropped in record.subscriptions where session.filters[dropped.filter] == nil {
            logger.info("MQTT session subscription dropped: not allowed under the new token or beyond the limits",
                        metadata: ["client": "\(record.clientID)", "filter": "\(dropped.filter)"])
        }
        session.needsSave = true
    }

    /// Recovers each subject the session had a position for through a pattern only (a restored pattern still
    /// matches it): the connection subscribes to the subject from its position until the cache's answer is
    /// written (`finishPatternRecovery`), then has it live through the pattern. At most `MaxSubjectsPerConnection`.
    func recoverPatternSubjects(of record: MQTTSessionRecord, on connection: ClientConnection, session: MQTTSession) {
        let now = now()
        for (subject, position) in record.positions.sorted(by: { $0.key < $1.key })
        where !connection.subjects.contains(subject) && session.recoveringPatternSubjects.count < limits.maxSubjects
            && session.patterns.keys.contains(where: { $0.matches(subject) }) {
            session.trackPatternSubject(subject, restored: true)
            session.recoveringPatternSubjects.insert(subject)
            connection.subjects.insert(subject)
            let start = resumedStart(of: subject, in: session, restoring: [subject: position], isNew: true) ?? .snapshot
            send(table.subscribe(connection, to: subject, start: start, now: now))
        }
    }

    /// The answer recovering a subject matched only by a pattern was queued: the connection leaves the subject,
    /// which it has live through its pattern from now on (unless the client subscribed to it itself meanwhile).
    func finishPatternRecovery(of connection: ClientConnection, subject: String) {
        guard let session = connection.mqtt, session.recoveringPatternSubjects.remove(subject) != nil,
              session.grantedQoS[subject] == nil, connection.subjects.remove(subject) != nil else { return }
        send(table.unsubscribe(connection, from: subject))
    }

    /// Where a persistent session's subscription starts: restored, or subscribed again by the client (as
    /// clients do after reconnecting, often while the restored one awaits its answer), after the session's
    /// position, so that nothing it missed is skipped. A position without an epoch (Kafka mode: the subject had
    /// no message when subscribed) takes the subject's whole history; restored without a position (saved before
    /// the cache answered), the snapshot. nil: as any new subscription.
    func resumedStart(of subject: String, in session: MQTTSession, restoring: [String: MQTTSubjectPosition]?,
                      isNew: Bool) -> SubscribeStart? {
        let position = restoring.map { $0[subject] } ?? (isNew || !session.isPersistent ? nil : session.position(of: subject))
        guard let position else { return restoring == nil ? nil : .snapshot }
        guard !position.epoch.isEmpty else {
            return .history(count: UInt32(clamping: max(config.maxCachedMessagesPerSubject, 1)))
        }
        return .recover(epoch: position.epoch, seq: position.seq)
    }

    /// The record of a persistent session as it stands; nil for a session that ends with its connection.
    func sessionRecord(of connection: ClientConnection) -> MQTTSessionRecord? {
        guard let session = connection.mqtt, let expiry = session.expirySeconds else { return nil }
        if session.droppedPatternPositions > 0 {
            logger.info("MQTT session positions of subjects matched by a pattern dropped: beyond MaxSubjectsPerConnection",
                        metadata: ["client": "\(session.clientID)", "dropped": "\(session.droppedPatternPositions)",
                                   "limit": "\(limits.maxSubjects)"])
            session.droppedPatternPositions = 0
        }
        var positions = session.positions(of: connection.subjects.union(session.patternSubjects))
        for subject in connection.subjects where positions[subject] == nil {
            if case .live(let epoch, let seq)? = table.state(of: connection.id, in: subject) {
                // Nothing sent yet: where the cache's answer to the subscribe left it.
                positions[subject] = MQTTSubjectPosition(epoch: epoch, seq: seq, sentSeq: seq)
            }
        }
        let subscriptions = session.filters.sorted { $0.key < $1.key }.map {
            MQTTSessionRecord.Subscription(filter: $0.key, qos: $0.value)
        }
        let unacknowledged = session.unacknowledgedMessages(within: positions)
        return MQTTSessionRecord(clientID: session.clientID, version: session.version.rawValue, expirySeconds: expiry,
                                 expiresAt: Date().timeIntervalSince1970 + Double(expiry),
                                 subscriptions: subscriptions, positions: positions,
                                 generation: session.generation == 0 ? nil : session.generation,
                                 unacknowledged: unacknowledged.isEmpty ? nil : unacknowledged)
    }

    /// Saves the persistent sessions that changed, each at most once a second, and those unchanged for half
    /// their expiry (so that a long connection's file does not expire under it). Called by `tick`.
    func saveChangedMQTTSessions() {
        guard let store = mqttSessionStore else { return }
        let now = now()
        for connection in mqttClients.values {
            guard let session = connection.mqtt, let expiry = session.expirySeconds, !session.isReleased,
                  !connection.isClosing else { continue }
            let sinceSaved = elapsedNanoseconds(from: session.savedAt, to: now)
            let due = session.needsSave ? Self.mqttSessionSaveNanoseconds : UInt64(expiry) * 500_000_000
            guard sinceSaved >= due, let record = sessionRecord(of: connection) else { continue }
            session.needsSave = false
            session.savedAt = now
            store.save(record)
        }
    }

    /// The connection ends: its persistent session is saved as it stands (unless a newer connection took it).
    func saveMQTTSession(of connection: ClientConnection) {
        guard let session = connection.mqtt, !session.isReleased, let store = mqttSessionStore,
              let record = sessionRecord(of: connection) else { return }
        session.isReleased = true
        store.save(record)
    }

    /// Closes the connections whose session a connection on another instance or node took up since (a newer
    /// generation, `MQTTSessionStorage.takeOvers`): v5 first gets DISCONNECT `0x8E` Session taken over; the will is
    /// published here, once (docs/MQTT.md, "Take-over"). Called every second.
    func closeTakenOverMQTTConnections(_ taken: [String: UInt64]) {
        for (clientID, generation) in taken {
            guard let connection = mqttClients[clientID], let session = connection.mqtt,
                  generation > session.generation else { continue }
            session.isReleased = true  // its saves would be older than the new connection's
            metrics.addToGauge("mqttSessionsTakenOver", 1)
            logger.info("MQTT session taken over by a connection on another instance or node",
                        metadata: ["connection": "\(connection.id)", "client": "\(clientID)",
                                   "generation": "\(session.generation)", "newGeneration": "\(generation)"])
            close(connection, mqttReason: .sessionTakenOver, "another connection connected with this client identifier")
        }
    }

    /// A v5 DISCONNECT may shorten or end its session's expiry (it may not make a session persistent: MQTT 5
    /// 3.14.2.2.2; that is ignored).
    func applyDisconnectExpiry(_ disconnect: MQTTDisconnect, to session: MQTTSession) {
        guard session.isPersistent,
              let requested = disconnect.properties.integer(MQTTProperties.ID.sessionExpiryInterval) else { return }
        if requested == 0 {
            session.expirySeconds = nil
            mqttSessionStore?.delete(session.clientID)
        } else {
            session.expirySeconds = min(requested, UInt32(clamping: config.mqttSessionExpiry))
        }
    }

    /// The cache no longer holds what an MQTT client missed on `subject` (`DATA_RESYNC`): MQTT has no way to say
    /// so; delivery continues live.
    func noteMQTTResync(of connection: ClientConnection, subject: String) {
        metrics.addToGauge("mqttResyncs", 1)
        logger.info("MQTT client missed messages the cache no longer holds (DATA_RESYNC); delivery continues live",
                    metadata: ["connection": "\(connection.id)", "client": "\(connection.mqtt?.clientID ?? "")",
                               "subject": "\(subject)"])
    }
}
