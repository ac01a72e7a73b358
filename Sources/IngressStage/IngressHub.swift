#if canImport(Glibc)
import Glibc
#endif
import CoreMetrics
import Logging
import NIOCore
import NIOWebSocket
import SwitchyardCore

/// The coordinator of one ingress: takes client requests and pipeline envelopes, lets `SubscriptionTable`
/// decide who gets what, `PendingPublishes` track acknowledgements, `ClientConnection` write (and pace answers),
/// and applies the per-connection limits. Everything runs on the ingress's single event loop, so nothing here
/// is locked.
// @unchecked Sendable: used only on the ingress's one event loop; other threads hop there (`execute`, `submit`).
final class IngressHub: @unchecked Sendable {
    /// A subscribe not answered within this is asked again (a stage restarted and lost it; a restart that the
    /// ingress hears of through `peerUp` re-asks at once). Long enough for a deep recovery from Kafka.
    static let subscribeRetryNanoseconds: UInt64 = 10_000_000_000

    let instance: UInt32
    let inboundAddress: String
    // Not private: the MQTT front end (MQTT/IngressHub+MQTT.swift) shares them.
    let config: SwitchyardConfig
    let limits: ConnectionLimits
    let mqttSettings: MQTTSettings
    let logger: Logger
    let metrics: StageMetrics
    /// A publish that wants an answer: sent on → its acknowledgement (not the expired ones).
    private let publishAckTime: CoreMetrics.Timer
    let link: BackplaneLink
    let allocator = ByteBufferAllocator()
    let table: SubscriptionTable
    /// MQTT wildcard subscriptions (MQTT/IngressHub+MQTT.swift).
    let patterns: PatternSubscriptions
    var pendingPublishes: PendingPublishes

    private(set) var connections: [UInt64: ClientConnection] = [:]
    /// MQTT connections by client identifier: a second CONNECT with the same one takes the session over.
    var mqttClients: [String: ClientConnection] = [:]
    /// Persistent MQTT sessions (`RunDir/mqtt-sessions/`, or the Kafka session topic); nil when `MqttSessionExpiry` is 0.
    var mqttSessionStore: (any MQTTSessionStorage)?
    private var nextConnectionID: UInt64 = 0
    /// Connections written to since the last flush: flushed once per batch, then judged by what they left.
    private var dirty: [ClientConnection] = []

    init(instance: UInt32, inboundAddress: String, config: SwitchyardConfig, logger: Logger, metrics: StageMetrics,
         link: BackplaneLink) {
        self.instance = instance
        self.inboundAddress = inboundAddress
        self.config = config
        self.limits = ConnectionLimits(config)
        self.mqttSettings = MQTTSettings(config: config)
        self.logger = logger
        self.metrics = metrics
        publishAckTime = metrics.makeTimer(MetricName.publishAckSeconds)
        self.link = link
        table = SubscriptionTable(ingress: instance, replyTo: inboundAddress,
                                  maxSubscribesInFlight: limits.maxSubscribesInFlight,
                                  maxPendingSubscribeBytes: limits.maxPendingSubscribeBytes)
        patterns = PatternSubscriptions(ingress: instance, replyTo: inboundAddress,
                                        maxPatterns: config.maxPatternsPerIngress)
        pendingPublishes = PendingPublishes(timeoutSeconds: config.publishTimeout)
    }

    var connectionCount: Int { connections.count }
    /// Set by `closeAll`: a connection accepted before the listeners closed whose upgrade (or MQTT CONNECT)
    /// completes afterwards is closed the same way as soon as it registers, rather than cut when the process exits.
    private var restartReason: String?
    /// The connections closed that way, for the shutdown to wait for.
    private(set) var lateRestartCloses: [EventLoopFuture<Void>] = []

    func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    func send(_ envelopes: [Envelope]) {
        for envelope in envelopes { link.send(envelope) }
    }

    // MARK: Connections

    /// Registers a client connection: WebSocket JSON, or MQTT with its `mqtt` session.
    func connect(_ channel: Channel, mqtt: MQTTSession? = nil) -> ClientConnection {
        nextConnectionID += 1
        let connection = ClientConnection(id: nextConnectionID, channel: channel,
                                          liveBacklogLimit: limits.liveBacklogLimit, limits: limits, now: now(),
                                          mqtt: mqtt)
        connections[connection.id] = connection
        metrics.setGauge("connections", connections.count)
        logger.debug("client connected",
                     metadata: ["connection": "\(connection.id)", "remote": .string(Self.describe(channel))])
        if let restartReason {
            // Next tick: the caller sets the connection up (and answers an MQTT CONNECT) first.
            channel.eventLoop.assumeIsolated().execute { [self] in
                close(connection, code: .unknown(1012), reason: restartReason)
            }
            lateRestartCloses.append(channel.closeFuture)
        }
        return connection
    }

    func disconnect(_ connection: ClientConnection) {
        guard connections.removeValue(forKey: connection.id) != nil else { return }
        logger.debug("client disconnected",
                     metadata: ["connection": "\(connection.id)", "subjects": "\(connection.subjects.count)"])
        saveMQTTSession(of: connection)  // before the table forgets where its subjects stand
        send(table.remove(connection))
        if let session = connection.mqtt, !session.patterns.isEmpty {
            send(patterns.remove(connection, patterns: session.patterns.keys))
        }
        endMQTTSession(of: connection)
        connection.subjects.removeAll()
        connection.discardQueued()
        metrics.setGauge("connections", connections.count)
    }

    /// Closes every connection with `1012 Service Restart`: clients reconnect (to another instance) and recover.
    /// Returns when each connection is closed.
    func closeAll(reason: String) -> [EventLoopFuture<Void>] {
        restartReason = reason
        return connections.values.map { connection in
            close(connection, code: .unknown(1012), reason: reason)
            return connection.channel.closeFuture
        }
    }

    func writabilityChanged(_ connection: ClientConnection) {
        connection.writabilityChanged(now: now())
        sendWaitingSubscribes(of: connection)
    }

    /// Once a connection's answers are written, its subscribes (and MQTT retained requests of patterns) waiting
    /// for a slot may go.
    func sendWaitingSubscribes(of connection: ClientConnection) {
        guard !connection.isClosing else { return }
        send(table.sendWaiting(for: connection, now: now()))
        if let session = connection.mqtt, !session.patterns.isEmpty {
            send(patterns.sendWaitingRetained(for: connection, maxInFlight: limits.maxSubscribesInFlight,
                                              holds: { session.patterns[$0] != nil },
                                              makeRequestID: table.makeRequestID, now: now()))
        }
    }

    // MARK: Client requests

    func handle(_ request: ClientRequest, from connection: ClientConnection) {
        guard !connection.isClosing else { return }
        let now = now()
        connection.lastActivity = now
        switch request {
        case .connect:
            break  // `ClientHandler` has dealt with its token (`ConnectionAccess`).
        case .ping:
            if connection.pingRate.take(1, now: now) {
                write(ServerFrames.pong, to: connection)
            } else if connection.rateLimitStrikes.refused(now: now) {
                close(connection, code: .policyViolation, reason: "ping flood: at most \(limits.pingRate) pings per second")
            }
        case .subscribe(let subjects, let history, let recover):
            // A frame of more subjects than the burst costs the burst: those beyond the subject limit get DENY.
            let cost = min(subjects.count, connection.subscribeRate.burst)
            guard admit(cost, of: "subscribe", by: connection, bucket: \.subscribeRate, unit: "subjects",
                        closure: nil, now: now) else { break }
            for subject in subjects where !connection.isClosing {
                subscribe(connection, to: subject, history: history, recover: recover[subject], now: now)
            }
        case .unsubscribe(let subjects):
            for subject in subjects where connection.subjects.remove(subject) != nil {
                send(table.unsubscribe(connection, from: subject))
            }
        case .publish(let publish):
            guard admit(1, of: "publish", by: connection, bucket: \.publishRate, unit: "publishes",
                        closure: publish.closure, now: now) else { break }
            self.publish(publish, from: connection, now: now)
        }
        sendWaitingSubscribes(of: connection)
        flushDirty()
    }

    func reject(_ error: ClientFrameError, from connection: ClientConnection) {
        connection.lastActivity = now()
        write(ServerFrames.error(error), to: connection)
        flushDirty()
    }

    /// Takes `count` tokens of a connection's rate limit, or answers `RATE_LIMITED` (`publish_status` FAILED for a
    /// publish with a closure) and closes a connection that keeps going over it.
    private func admit(_ count: Int, of what: String, by connection: ClientConnection,
                       bucket: ReferenceWritableKeyPath<ClientConnection, TokenBucket>, unit: String,
                       closure: String?, now: UInt64) -> Bool {
        if connection[keyPath: bucket].take(count, now: now) { return true }
        let limit = connection[keyPath: bucket].perSecond
        let reason = "rate limited: at most \(limit) \(unit) per second per connection; the \(what) was dropped"
        if let closure {
            write(ServerFrames.publishStatus(closure: closure, status: "FAILED", reason: reason), to: connection)
        } else {
            write(ServerFrames.error(ClientFrameError(code: "RATE_LIMITED", reason: reason)), to: connection)
        }
        if connection.rateLimitStrikes.refused(now: now) {
            logger.warning("client closed: it keeps exceeding its rate limit",
                           metadata: ["connection": "\(connection.id)", "op": "\(what)",
                                      "remote": .string(Self.describe(connection.channel))])
            close(connection, code: .policyViolation, reason: "rate limit exceeded repeatedly")
        }
        return false
    }

    private func subscribe(_ connection: ClientConnection, to subject: String, history: Int,
                           recover: RecoveryPosition?, now: UInt64) {
        if let problem = Subject.validate(subject) {
            write(ServerFrames.subscribed(subject, status: "INVALID", reason: problem.description), to: connection)
            return
        }
        guard connection.permissions.allows(.subscribe, subject) else {
            write(ServerFrames.subscribed(subject, status: "DENY", reason: Self.notPermitted), to: connection)
            return
        }
        if !connection.subjects.contains(subject) && connection.subjects.count >= limits.maxSubjects {
            write(ServerFrames.subscribed(subject, status: "DENY",
                                          reason: "subject limit: at most \(limits.maxSubjects) subjects per connection"),
                  to: connection)
            return
        }
        write(ServerFrames.subscribed(subject, status: "ALLOW"), to: connection)
        connection.subjects.insert(subject)
        let start: SubscribeStart
        if let recover {
            start = .recover(epoch: recover.epoch, seq: recover.seq)
        } else if history > 0 {
            start = .history(count: UInt32(clamping: history))
        } else {
            start = .snapshot
        }
        logger.debug("subscribe",
                     metadata: ["connection": "\(connection.id)", "subject": "\(subject)", "start": "\(start)"])
        send(table.subscribe(connection, to: subject, start: start, now: now))
    }

    private func publish(_ publish: ClientPublish, from connection: ClientConnection, now: UInt64) {
        func refuse(_ status: String, _ reason: String) {
            if let closure = publish.closure {
                write(ServerFrames.publishStatus(closure: closure, status: status, reason: reason), to: connection)
            } else {
                write(ServerFrames.error(ClientFrameError(code: status, reason: reason)), to: connection)
            }
        }
        if let problem = Subject.validate(publish.subject) {
            return refuse("FAILED", "invalid subject: \(problem)")
        }
        guard connection.permissions.allows(.publish, publish.subject) else { return refuse("DENY", Self.notPermitted) }
        let size = publish.content.readableBytes + (publish.closure?.utf8.count ?? 0)
        guard size <= config.messageSizeLimit else {
            return refuse("MESSAGE_SIZE_LIMIT_EXCEEDED",
                          "content and closure are \(size) bytes; the limit is \(config.messageSizeLimit)")
        }
        guard !link.isCongested else {
            return refuse("FAILED", "the broker is overloaded; try again")
        }
        var flags: MessageFlags = []
        if publish.retained { flags.insert(.retained) }
        if publish.guaranteed { flags.insert(.guaranteed) }
        if publish.binary { flags.insert(.binary) }
        let requestID = table.makeRequestID()
        if let closure = publish.closure {
            flags.insert(.wantsAck)
            pendingPublishes.add(requestID: requestID, connectionID: connection.id, closure: closure, now: now)
        }
        let message = Message(subject: publish.subject, content: publish.content, flags: flags,
                              closure: publish.closure ?? "", timestamp: wallClockNanoseconds())
        logger.trace("publish", metadata: ["connection": "\(connection.id)", "subject": "\(publish.subject)",
                                           "bytes": "\(publish.content.readableBytes)"])
        link.send(.publish(Publish(requestID: requestID, replyTo: inboundAddress, message: message)))
    }

    // MARK: Entitlement

    static let notPermitted = "not permitted by the connection's token"

    /// A new token's permissions replace the old: subscriptions they no longer allow end with `subscribed` DENY.
    func replacePermissions(of connection: ClientConnection, with permissions: Permissions) {
        connection.permissions = permissions
        for subject in connection.subjects.sorted() where !permissions.allows(.subscribe, subject) {
            connection.subjects.remove(subject)
            send(table.unsubscribe(connection, from: subject))
            write(ServerFrames.subscribed(subject, status: "DENY", reason: Self.notPermitted), to: connection)
        }
        flushDirty()
    }

    /// A connection-wide status such as `TOKEN_TO_EXPIRE`.
    func tokenStatus(_ status: String, to connection: ClientConnection) {
        write(ServerFrames.connectionStatus(status), to: connection)
        flushDirty()
    }

    /// `TOKEN_EXPIRED`, then close 1008. The status goes straight to the channel, before the close frame, even
    /// while an answer is being written (what is queued is dropped with the connection). An MQTT client gets
    /// v5 DISCONNECT `0xA0` (Maximum connect time), and its will is not published: it goes with the token.
    func tokenExpired(_ connection: ClientConnection) {
        guard !connection.isClosing else { return }
        if let session = connection.mqtt {
            session.will = nil
            return close(connection, mqttReason: .maximumConnectTime, "token expired")
        }
        connection.channel.write(textFrame(ServerFrames.connectionStatus("TOKEN_EXPIRED")), promise: nil)
        close(connection, code: .policyViolation, reason: "token expired")
    }

    // MARK: From the pipeline

    func handle(_ envelopes: [Envelope]) {
        for envelope in envelopes {
            switch envelope {
            case .message(let message):
                deliver(message)
            case .publishAck(let ack):
                acknowledge(ack)
            case .subscribeReply(let reply):
                answer(reply)
            case .peerUp(let peer):
                reannounce(because: "peer up: \(peer.stage)-\(peer.instance)")
            case .publish, .subscribe, .interest, .patternInterest, .patternSubscribe:
                logger.warning("unexpected envelope for the ingress dropped",
                               metadata: ["envelope": "\(envelope.kindName)"])
            }
        }
        flushDirty()
    }

    /// Encodes the message once per protocol and writes the same frame to every live subscriber: of its subject,
    /// and (MQTT) of a pattern matching it, once per connection.
    private func deliver(_ message: Message) {
        var frame: WireFrame?
        var mqttPublish: MQTTOutgoingPublish?
        func writeMQTT(to connection: ClientConnection, _ session: MQTTSession) {
            // Mutated in place: a copy would make each new encoding copy the packets encoded so far.
            if mqttPublish == nil { mqttPublish = MQTTOutgoingPublish(message: message, retain: false) }
            guard let framed = mqttPublish!.wireFrame(for: session, allocator: allocator) else { return }
            writeLive(framed, to: connection)
        }
        let askedAgain = table.subscribesAskedAgain
        let requests = table.deliver(message, now: now()) { connection, resyncFirst in
            if let session = connection.mqtt {
                if resyncFirst { noteMQTTResync(of: connection, subject: message.subject) }
                return writeMQTT(to: connection, session)
            }
            if resyncFirst { writeLive(textFrame(ServerFrames.status(message.subject, status: "DATA_RESYNC")), to: connection) }
            let encoded = frame ?? WireFrame(opcode: .text,
                                             data: ServerFrames.message(message, kind: .update, allocator: allocator),
                                             allocator: allocator)
            frame = encoded
            writeLive(encoded, to: connection)
        }
        send(requests)
        // A connection subscribed to the subject itself has it (or holds it for its pending subscribe) already.
        if !patterns.isEmpty && MQTTTopic.isTopicName(message.subject) {
            patterns.forEachSubscriber(of: message.subject) { connection in
                guard let session = connection.mqtt, !connection.isClosing,
                      !connection.subjects.contains(message.subject) else { return }
                writeMQTT(to: connection, session)
            }
        }
        if table.subscribesAskedAgain != askedAgain {
            logger.warning("live messages held for a pending subscribe passed MaxPendingSubscribeBytes; dropped them and asked again",
                           metadata: ["subject": "\(message.subject)", "limit": "\(limits.maxPendingSubscribeBytes)"])
        }
    }

    private func acknowledge(_ ack: PublishAck) {
        guard let pending = pendingPublishes.acknowledge(ack.requestID) else { return }
        publishAckTime.recordNanoseconds(Int64(clamping: elapsedNanoseconds(from: pending.sentAt, to: now())))
        guard let connection = connections[pending.connectionID] else { return }
        if let receipt = pending.mqtt {
            return acknowledge(receipt, ok: ack.status == .ok, reason: ack.reason, to: connection)
        }
        let status = ack.status == .ok ? "OK" : "FAILED"
        write(ServerFrames.publishStatus(closure: pending.closure, status: status,
                                         reason: ack.reason.isEmpty ? nil : ack.reason), to: connection)
    }

    /// Queues each subscriber's answer on its connection, which writes it in parts as the client reads.
    private func answer(_ reply: SubscribeReply) {
        if answerPatternSubscribe(reply) { return }
        let (deliveries, requests) = table.answer(reply, now: now())
        send(requests)
        for delivery in deliveries where !delivery.connection.isClosing {
            let connection = delivery.connection
            if connection.mqtt != nil && (delivery.resyncFirst || delivery.status == "DATA_RESYNC") {
                noteMQTTResync(of: connection, subject: reply.subject)
            }
            if delivery.resyncFirst { queueAnswer(ServerFrames.status(reply.subject, status: "DATA_RESYNC"), to: connection) }
            for message in delivery.messages { connection.queueAnswer(message, kind: delivery.kind) }
            if let status = delivery.status { queueAnswer(ServerFrames.status(reply.subject, status: status), to: connection) }
            for (index, message) in delivery.held.enumerated() {
                if delivery.resyncBeforeHeld.contains(index) {
                    queueAnswer(ServerFrames.status(reply.subject, status: "DATA_RESYNC"), to: connection)
                }
                connection.queueAnswer(message, kind: .update)
            }
            connection.writeQueued(now: now())
            if connection.mqtt != nil { finishPatternRecovery(of: connection, subject: reply.subject) }
            sendWaitingSubscribes(of: connection)
        }
    }

    /// This ingress instance (re)started: the fanouts forget the patterns its previous process announced (which
    /// would match, `#` every message, for ever). Sent before any subscription's interest, on the one pipe to the
    /// router, which passes it to every fanout. Subjects are not forgotten this way: their interest travels
    /// through the caches, so this notice could overtake a new subscriber's interest.
    func announceStart() {
        link.send(.peerUp(PeerUp(stage: StageName.ingress.rawValue, instance: instance)))
    }

    func reannounce(because reason: String) {
        logger.info("re-announcing interest", metadata: ["reason": "\(reason)", "subjects": "\(table.subjectCount)"])
        send(table.reannounce(now: now()) + patterns.reannounce())
    }

    // MARK: Timers

    /// Fails publishes that were not acknowledged in time, asks again for subscribes that went unanswered and
    /// closes the connections whose time is up.
    func tick() {
        let now = now()
        for expired in pendingPublishes.expire(now: now) {
            guard let connection = connections[expired.connectionID] else { continue }
            if let receipt = expired.mqtt {
                acknowledge(receipt, ok: false, reason: "not stored within \(config.publishTimeout)s", to: connection)
                continue
            }
            write(ServerFrames.publishStatus(closure: expired.closure, status: "FAILED",
                                             reason: "not stored within \(config.publishTimeout)s"), to: connection)
        }
        send(table.retry(olderThan: Self.subscribeRetryNanoseconds, now: now))
        patterns.expireRetainedRequests(now: now)
        closeOverdueConnections(now: now)
        saveChangedMQTTSessions()
        metrics.setGauge("queueDepth", link.queuedBatches)
        metrics.setGauge("pendingPublishes", pendingPublishes.count)
        metrics.setGauge("pendingSubscribes", table.pendingCount)
        metrics.setGauge("subjects", table.subjectCount)
        metrics.setGauge("patterns", patterns.count)
        flushDirty()
    }

    /// One pass over the connections per tick: closes the idle ones (`1001`), the stalled ones (too slow, with a
    /// reset) and the MQTT clients whose keepalive expired.
    private func closeOverdueConnections(now: UInt64) {
        var overdue: [(ClientConnection, ClientConnection.Overdue)] = []
        for connection in connections.values {
            if let reason = connection.overdue(now: now, limits: limits) { overdue.append((connection, reason)) }
        }
        for (connection, reason) in overdue {
            switch reason {
            case .idle:
                logger.debug("idle client closed", metadata: ["connection": "\(connection.id)"])
                close(connection, code: .goingAway, reason: "idle")
            case .stalled:
                closeSlow(connection, reason: "took none of its messages for \(config.slowClientTimeout) s")
            case .keepAliveExpired:
                logger.debug("MQTT keepalive expired", metadata: ["connection": "\(connection.id)"])
                close(connection, mqttReason: .keepAliveTimeout, "keepalive expired")
            }
        }
    }

    // MARK: Writing to clients

    private func textFrame(_ buffer: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text, data: buffer)
    }

    /// Queues a status frame of an answer (MQTT has none: dropped for MQTT clients).
    private func queueAnswer(_ buffer: ByteBuffer, to connection: ClientConnection) {
        guard connection.mqtt == nil else { return }
        connection.queueAnswer(textFrame(buffer))
    }

    /// Writes a reply to the client's own request; closes a client that does not read.
    private func write(_ buffer: ByteBuffer, to connection: ClientConnection) {
        writeLive(textFrame(buffer), to: connection)
    }

    func writeLive(_ frame: WebSocketFrame, to connection: ClientConnection) {
        writeLive(WireFrame(frame, allocator: allocator), to: connection)
    }

    /// Writes a frame built once for every receiver (a published message).
    func writeLive(_ frame: WireFrame, to connection: ClientConnection) {
        connection.writeLive(frame)
        if !connection.isDirty {
            connection.isDirty = true
            dirty.append(connection)
        }
    }

    func closeSlow(_ connection: ClientConnection, reason: String? = nil) {
        guard !connection.isClosing else { return }
        logger.warning("slow client disconnected: it stopped reading", metadata: [
            "connection": "\(connection.id)", "remote": .string(Self.describe(connection.channel)),
            "why": .string(reason ?? "more than ClientBufferLimit (\(config.clientBufferLimit) bytes) queued"),
        ])
        metrics.addToGauge("slowClientsClosed", 1)
        close(connection, code: .policyViolation, reason: "slow consumer: too many messages queued", immediately: true)
    }

    func flushDirty() {
        guard !dirty.isEmpty else { return }
        let now = now()
        for connection in dirty {
            connection.isDirty = false
            connection.flush()
            if connection.leftUnread(now: now) == .tooSlow { closeSlow(connection) }
        }
        dirty.removeAll(keepingCapacity: true)
    }

    /// Sends a close frame and closes: at once for a client that is not reading, with a reset (our close frame and
    /// FIN would wait behind its unread data, and the kernel would keep the socket and its buffer for minutes);
    /// otherwise the close handshake: only our sending side is shut once the frame is written, so frames the
    /// client is still sending do not make the kernel reset the connection (and lose our close frame), and the
    /// connection closes when the client answers, or after a second.
    func close(_ connection: ClientConnection, code: WebSocketErrorCode, reason: String, immediately: Bool = false) {
        guard !connection.isClosing else { return }
        if connection.mqtt != nil {
            return close(connection, mqttReason: MQTTReasonCode(closing: code), reason, immediately: immediately)
        }
        connection.isClosing = true
        connection.discardQueued()
        var data = connection.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        let channel = connection.channel
        let written = channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
        if immediately {
            if let socket = channel as? SocketOptionProvider {
                socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
            } else {
                channel.close(promise: nil)
            }
        } else {
            written.whenComplete { _ in
                channel.close(mode: .output, promise: nil)
                channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
            }
        }
        disconnect(connection)
    }

    /// A client's address for the log (`unknown` once the socket is gone).
    static func describe(_ channel: Channel) -> String {
        channel.remoteAddress.map { "\($0)" } ?? "unknown"
    }
}
