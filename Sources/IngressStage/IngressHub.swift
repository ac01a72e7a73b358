import NIOCore
import NIOWebSocket
import SwitchyardCore

/// One WebSocket client of this ingress. Owned by the hub, touched only on the event loop.
final class ClientConnection {
    let id: UInt64
    let channel: Channel
    var subjects: Set<String> = []
    /// Bytes written since the channel last stopped being writable: the client's backlog beyond the watermark.
    var bytesWhileUnwritable = 0
    var needsFlush = false
    var isClosing = false

    init(id: UInt64, channel: Channel) {
        self.id = id
        self.channel = channel
    }
}

/// A connection's subscription to one subject.
struct Subscriber {
    enum State {
        /// Waiting for the cache's answer to `requestID`; live messages wait with the request meanwhile.
        case pending(requestID: UInt64)
        /// Live. Messages at or below `floorSeq` of `floorEpoch` were covered by the cache's answer.
        case live(floorEpoch: String, floorSeq: UInt64)
    }

    let connection: ClientConnection
    var state: State
}

/// The state of one ingress: its connections, the index subject → local subscribers, and the requests waiting for
/// an answer from the pipeline. Everything runs on the ingress's single event loop, so nothing here is locked.
final class IngressHub {
    /// Live messages a subscriber may hold while its subscribe is answered, before it is cut off.
    static let maxHeldMessages = 10_000
    /// A subscribe not answered within this is asked again (a stage restarted and lost it; a restart that the
    /// ingress hears of through `peerUp` re-asks at once). Long enough for a deep recovery from Kafka.
    static let subscribeRetryNanoseconds: UInt64 = 10_000_000_000

    private struct PendingPublish {
        let connectionID: UInt64
        let closure: String
        let deadline: UInt64
    }

    /// A subscribe waiting for the cache's answer: one subscriber's, or a repair on behalf of every live
    /// subscriber of a subject that may have missed messages.
    private struct PendingSubscribe {
        var connectionIDs: Set<UInt64>
        var request: Subscribe
        var sentAt: UInt64
        var isRepair: Bool
        /// A repair that found the subject's numbering started over now asks for the new epoch from its start.
        var startsNewEpoch = false
        /// A repair's subscribers may each have seen more than the subject's stream here (a recovery answer that
        /// reached further): what each already has, so the repair sends nothing twice.
        var seenUpTo: [UInt64: StreamPosition] = [:]
        /// Live messages that arrived meanwhile, shared by every subscriber waiting for this answer.
        var held: [Message] = []
    }

    /// The last message of a subject that went through this ingress: where a repair starts from.
    private struct StreamPosition {
        var epoch: String
        var seq: UInt64
    }

    let instance: UInt32
    let inboundAddress: String
    private let config: SwitchyardConfig
    private let logger: Logger
    private let metrics: StageMetrics
    private let link: BackplaneLink
    private let allocator = ByteBufferAllocator()

    private var connections: [UInt64: ClientConnection] = [:]
    private var subscribers: [String: [UInt64: Subscriber]] = [:]
    private var pendingPublishes: [UInt64: PendingPublish] = [:]
    private var pendingSubscribes: [UInt64: PendingSubscribe] = [:]
    private var positions: [String: StreamPosition] = [:]
    private var nextConnectionID: UInt64 = 0
    private var nextRequestID: UInt64 = 0
    private var dirty: [ClientConnection] = []

    init(instance: UInt32, inboundAddress: String, config: SwitchyardConfig, logger: Logger, metrics: StageMetrics,
         link: BackplaneLink) {
        self.instance = instance
        self.inboundAddress = inboundAddress
        self.config = config
        self.logger = logger
        self.metrics = metrics
        self.link = link
    }

    var connectionCount: Int { connections.count }

    // MARK: Connections

    func connect(_ channel: Channel) -> ClientConnection {
        nextConnectionID += 1
        let connection = ClientConnection(id: nextConnectionID, channel: channel)
        connections[connection.id] = connection
        metrics.setGauge("connections", connections.count)
        logger.debug("client connected", ["connection": connection.id, "remote": channel.remoteAddress as Any])
        return connection
    }

    func disconnect(_ connection: ClientConnection) {
        guard connections.removeValue(forKey: connection.id) != nil else { return }
        logger.debug("client disconnected", ["connection": connection.id, "subjects": connection.subjects.count])
        for subject in connection.subjects { removeSubscriber(connection, from: subject) }
        connection.subjects.removeAll()
        metrics.setGauge("connections", connections.count)
    }

    /// Closes every connection with `1012 Service Restart`: clients reconnect (to another instance) and recover.
    /// Returns when each connection is closed.
    func closeAll(reason: String) -> [EventLoopFuture<Void>] {
        connections.values.map { connection in
            close(connection, code: .unknown(1012), reason: reason)
            return connection.channel.closeFuture
        }
    }

    func writabilityChanged(_ connection: ClientConnection) {
        if connection.channel.isWritable { connection.bytesWhileUnwritable = 0 }
    }

    // MARK: Client requests

    func handle(_ request: ClientRequest, from connection: ClientConnection) {
        switch request {
        case .connect:
            break  // Tokens are accepted as they are; there is no authorization yet.
        case .ping:
            write(ServerFrames.pong, to: connection)
        case .subscribe(let subjects, let history, let recover):
            for subject in subjects {
                subscribe(connection, to: subject, history: history, recover: recover[subject])
            }
        case .unsubscribe(let subjects):
            for subject in subjects where connection.subjects.remove(subject) != nil {
                removeSubscriber(connection, from: subject)
            }
        case .publish(let publish):
            self.publish(publish, from: connection)
        }
        flushDirty()
    }

    func reject(_ error: ClientFrameError, from connection: ClientConnection) {
        write(ServerFrames.error(error), to: connection)
        flushDirty()
    }

    private func subscribe(_ connection: ClientConnection, to subject: String, history: Int,
                           recover: RecoveryPosition?) {
        if let problem = Subject.validate(subject) {
            write(ServerFrames.subscribed(subject, status: "INVALID", reason: problem.description), to: connection)
            return
        }
        write(ServerFrames.subscribed(subject, status: "ALLOW"), to: connection)
        let registersInterest = subscribers[subject] == nil
        if !connection.subjects.insert(subject).inserted, let previous = subscribers[subject]?[connection.id] {
            forgetPendingRequest(of: previous, connectionID: connection.id)
        }
        let start: SubscribeStart
        if let recover {
            start = .recover(epoch: recover.epoch, seq: recover.seq)
        } else if history > 0 {
            start = .history(count: UInt32(history))
        } else {
            start = .snapshot
        }
        nextRequestID += 1
        logger.debug("subscribe", ["connection": connection.id, "subject": subject, "start": start])
        let request = Subscribe(requestID: nextRequestID, replyTo: inboundAddress, subject: subject,
                                ingress: instance, registersInterest: registersInterest, start: start)
        subscribers[subject, default: [:]][connection.id] = Subscriber(
            connection: connection, state: .pending(requestID: request.requestID))
        pendingSubscribes[request.requestID] = PendingSubscribe(connectionIDs: [connection.id], request: request,
                                                                sentAt: wallClockNanoseconds(), isRepair: false)
        link.send(.subscribe(request))
    }

    private func removeSubscriber(_ connection: ClientConnection, from subject: String) {
        guard let removed = subscribers[subject]?.removeValue(forKey: connection.id) else { return }
        forgetPendingRequest(of: removed, connectionID: connection.id)
        if subscribers[subject]?.isEmpty == true {
            subscribers[subject] = nil
            positions[subject] = nil
            link.send(.interest(Interest(subject: subject, ingress: instance, isAdded: false)))
        }
    }

    private func forgetPendingRequest(of subscriber: Subscriber, connectionID: UInt64) {
        guard case .pending(let requestID) = subscriber.state else { return }
        pendingSubscribes[requestID]?.connectionIDs.remove(connectionID)
        if pendingSubscribes[requestID]?.connectionIDs.isEmpty == true { pendingSubscribes[requestID] = nil }
    }

    private func publish(_ publish: ClientPublish, from connection: ClientConnection) {
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
        guard publish.content.readableBytes <= config.messageSizeLimit else {
            return refuse("MESSAGE_SIZE_LIMIT_EXCEEDED",
                          "content is \(publish.content.readableBytes) bytes; the limit is \(config.messageSizeLimit)")
        }
        guard !link.isCongested else {
            return refuse("FAILED", "the broker is overloaded; try again")
        }
        var flags: MessageFlags = []
        if publish.retained { flags.insert(.retained) }
        if publish.guaranteed { flags.insert(.guaranteed) }
        if publish.binary { flags.insert(.binary) }
        nextRequestID += 1
        let now = wallClockNanoseconds()
        if let closure = publish.closure {
            flags.insert(.wantsAck)
            pendingPublishes[nextRequestID] = PendingPublish(
                connectionID: connection.id, closure: closure,
                deadline: now + UInt64(config.publishTimeout) * 1_000_000_000)
        }
        let message = Message(subject: publish.subject, content: publish.content, flags: flags,
                              closure: publish.closure ?? "", timestamp: now)
        logger.trace("publish", ["connection": connection.id, "subject": publish.subject,
                                 "bytes": publish.content.readableBytes])
        link.send(.publish(Publish(requestID: nextRequestID, replyTo: inboundAddress, message: message)))
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
            case .publish, .subscribe, .interest:
                logger.warn("unexpected envelope for the ingress dropped", ["envelope": envelope.kindName])
            }
        }
        flushDirty()
    }

    private func deliver(_ message: Message) {
        guard subscribers[message.subject] != nil else { return }
        if let position = positions[message.subject], position.epoch == message.epoch, message.seq <= position.seq {
            return  // Read again (a cache warmed up anew after a restart): it went through here already.
        }
        if let position = positions[message.subject], position.epoch == message.epoch,
           message.previousSeq > position.seq {
            logger.warn("messages missing from the live stream; repairing from the cache",
                        ["subject": message.subject, "after": position.seq, "missing": message.previousSeq])
            repair(message.subject, after: position)
        }
        advancePosition(message.subject, epoch: message.epoch, seq: message.seq)
        var frame: WebSocketFrame?
        // State changes are applied after the loop: changing the dictionary while iterating it would copy it.
        var changes: [(UInt64, Subscriber.State)] = []
        var waitingRequests: Set<UInt64> = []
        for (id, subscriber) in subscribers[message.subject]! {
            switch subscriber.state {
            case .live(let floorEpoch, let floorSeq):
                if message.epoch != floorEpoch {
                    // The subject's numbering started over (a restarted or re-sharded cache, a recreated topic):
                    // say so. An empty floor epoch is a subject that had no messages yet.
                    if !floorEpoch.isEmpty {
                        write(ServerFrames.status(message.subject, status: "DATA_RESYNC"), to: subscriber.connection)
                    }
                    changes.append((id, .live(floorEpoch: message.epoch, floorSeq: 0)))
                } else if message.seq <= floorSeq {
                    continue
                }
                if frame == nil { frame = textFrame(ServerFrames.message(message, kind: .update, allocator: allocator)) }
                write(frame!, to: subscriber.connection)
            case .pending(let requestID):
                waitingRequests.insert(requestID)
            }
        }
        for (id, state) in changes { subscribers[message.subject]?[id]?.state = state }
        for requestID in waitingRequests {
            pendingSubscribes[requestID]?.held.append(message)
            guard let pending = pendingSubscribes[requestID], pending.held.count > Self.maxHeldMessages else { continue }
            logger.warn("subscribers held too many messages while subscribing; disconnected",
                        ["connections": pending.connectionIDs.count, "subject": message.subject])
            for connectionID in pending.connectionIDs {
                if let connection = connections[connectionID] {
                    close(connection, code: .unknown(1013), reason: "try again later")
                }
            }
        }
    }

    private func advancePosition(_ subject: String, epoch: String, seq: UInt64) {
        if let position = positions[subject], position.epoch == epoch, position.seq >= seq { return }
        positions[subject] = StreamPosition(epoch: epoch, seq: seq)
    }

    /// Asks the cache again for everything after `position` on behalf of the subject's live subscribers, who
    /// hold live messages meanwhile: what went missing is then delivered in order, without duplicates.
    private func repair(_ subject: String, after position: StreamPosition) {
        guard let local = subscribers[subject] else { return }
        nextRequestID += 1
        let request = Subscribe(requestID: nextRequestID, replyTo: inboundAddress, subject: subject, ingress: instance,
                                registersInterest: true, start: .recover(epoch: position.epoch, seq: position.seq))
        var repaired: Set<UInt64> = []
        var seenUpTo: [UInt64: StreamPosition] = [:]
        for (id, subscriber) in local {
            guard case .live(let floorEpoch, let floorSeq) = subscriber.state else { continue }
            subscribers[subject]![id]!.state = .pending(requestID: request.requestID)
            repaired.insert(id)
            seenUpTo[id] = StreamPosition(epoch: floorEpoch, seq: floorSeq)
        }
        guard !repaired.isEmpty else { return }
        var pending = PendingSubscribe(connectionIDs: repaired, request: request, sentAt: wallClockNanoseconds(),
                                       isRepair: true)
        pending.seenUpTo = seenUpTo
        pendingSubscribes[request.requestID] = pending
        link.send(.subscribe(request))
    }

    private func acknowledge(_ ack: PublishAck) {
        guard let pending = pendingPublishes.removeValue(forKey: ack.requestID),
              let connection = connections[pending.connectionID] else { return }
        let status = ack.status == .ok ? "OK" : "FAILED"
        write(ServerFrames.publishStatus(closure: pending.closure, status: status,
                                         reason: ack.reason.isEmpty ? nil : ack.reason), to: connection)
    }

    private func answer(_ reply: SubscribeReply) {
        guard let pending = pendingSubscribes.removeValue(forKey: reply.requestID) else { return }
        if pending.isRepair, !pending.startsNewEpoch, reply.status == .resync, !reply.epoch.isEmpty,
           case .recover(let askedEpoch, _) = pending.request.start, askedEpoch != reply.epoch {
            return askForNewEpoch(reply, after: pending)
        }
        // A repair's answer continues the subject's stream here. A subscriber's own answer may reach past it
        // (a client that came from a node further ahead) and must not make this ingress skip messages.
        if pending.isRepair && (reply.epoch == positions[reply.subject]?.epoch || positions[reply.subject] == nil) {
            advancePosition(reply.subject, epoch: reply.epoch, seq: reply.lastSeq)
        }
        for connectionID in pending.connectionIDs {
            guard let subscriber = subscribers[reply.subject]?[connectionID],
                  case .pending(let requestID) = subscriber.state, requestID == reply.requestID else { continue }
            let connection = subscriber.connection
            // A repair hands over missed live messages as updates; only a resync is worth telling.
            let kind = pending.isRepair && reply.status == .sync ? MessageKind.update : reply.kind
            if pending.startsNewEpoch && reply.status == .sync {
                write(ServerFrames.status(reply.subject, status: "DATA_RESYNC"), to: connection)
            }
            let seen = pending.seenUpTo[connectionID]
            for message in reply.messages where !(message.epoch == seen?.epoch && message.seq <= seen!.seq) {
                write(ServerFrames.message(message, kind: kind, allocator: allocator), to: connection)
            }
            switch reply.status {
            case .sync where !pending.isRepair:
                write(ServerFrames.status(reply.subject, status: "DATA_SYNC"), to: connection)
            case .resync:
                write(ServerFrames.status(reply.subject, status: "DATA_RESYNC"), to: connection)
            case .sync, .none:
                break
            }
            var floor = StreamPosition(epoch: reply.epoch, seq: reply.lastSeq)
            if let seen, seen.epoch == floor.epoch, seen.seq > floor.seq { floor = seen }
            for message in pending.held where !(message.epoch == floor.epoch && message.seq <= floor.seq) {
                write(ServerFrames.message(message, kind: .update, allocator: allocator), to: connection)
            }
            subscribers[reply.subject]![connectionID]!.state = .live(floorEpoch: floor.epoch, floorSeq: floor.seq)
        }
    }

    /// The subject's numbering started over while its subscribers were live (a restarted cache): rather than
    /// only the new epoch's snapshot, they get `DATA_RESYNC` and the new epoch from its first message, if the
    /// cache still holds all of it.
    private func askForNewEpoch(_ reply: SubscribeReply, after repair: PendingSubscribe) {
        nextRequestID += 1
        var followUp = repair
        followUp.request.requestID = nextRequestID
        followUp.request.start = .recover(epoch: reply.epoch, seq: 0)
        followUp.startsNewEpoch = true
        followUp.sentAt = wallClockNanoseconds()
        for connectionID in repair.connectionIDs {
            guard case .pending(let requestID)? = subscribers[reply.subject]?[connectionID]?.state,
                  requestID == reply.requestID else { continue }
            subscribers[reply.subject]![connectionID]!.state = .pending(requestID: nextRequestID)
        }
        pendingSubscribes[nextRequestID] = followUp
        link.send(.subscribe(followUp.request))
    }

    /// A stage (re)started and may have lost what it knew or messages in flight, or the shards moved: announce
    /// every subject again, repair every subject from its last position, and re-ask pending subscribes.
    func reannounce(because reason: String) {
        logger.info("re-announcing interest", ["reason": reason, "subjects": subscribers.count])
        for subject in subscribers.keys {
            link.send(.interest(Interest(subject: subject, ingress: instance, isAdded: true)))
            if let position = positions[subject] { repair(subject, after: position) }
        }
        retrySubscribes(olderThan: 0)
    }

    // MARK: Timers

    /// Fails publishes that were not acknowledged in time and asks again for subscribes that went unanswered.
    func tick() {
        let now = wallClockNanoseconds()
        for (requestID, pending) in pendingPublishes where pending.deadline <= now {
            pendingPublishes[requestID] = nil
            guard let connection = connections[pending.connectionID] else { continue }
            write(ServerFrames.publishStatus(closure: pending.closure, status: "FAILED",
                                             reason: "not stored within \(config.publishTimeout)s"), to: connection)
        }
        retrySubscribes(olderThan: Self.subscribeRetryNanoseconds)
        metrics.setGauge("queueDepth", link.queuedBatches)
        metrics.setGauge("pendingPublishes", pendingPublishes.count)
        metrics.setGauge("subjects", subscribers.count)
        flushDirty()
    }

    private func retrySubscribes(olderThan age: UInt64) {
        let now = wallClockNanoseconds()
        for (requestID, pending) in pendingSubscribes where now - pending.sentAt >= age {
            var request = pending.request
            request.registersInterest = true
            pendingSubscribes[requestID]!.sentAt = now
            link.send(.subscribe(request))
        }
    }

    // MARK: Writing to clients

    private func textFrame(_ buffer: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text, data: buffer)
    }

    private func write(_ buffer: ByteBuffer, to connection: ClientConnection) {
        write(textFrame(buffer), to: connection)
    }

    /// Writes without flushing (flushed once per batch); disconnects a client whose backlog passes the limit.
    private func write(_ frame: WebSocketFrame, to connection: ClientConnection) {
        guard !connection.isClosing else { return }
        if !connection.channel.isWritable {
            connection.bytesWhileUnwritable += frame.data.readableBytes
            if connection.bytesWhileUnwritable > config.clientBufferLimit / 2 {
                logger.warn("slow client disconnected: it stopped reading", [
                    "connection": connection.id, "remote": connection.channel.remoteAddress as Any,
                    "limit": config.clientBufferLimit,
                ])
                close(connection, code: .policyViolation, reason: "slow consumer: too many messages queued",
                      immediately: true)
                return
            }
        }
        connection.channel.write(frame, promise: nil)
        if !connection.needsFlush {
            connection.needsFlush = true
            dirty.append(connection)
        }
    }

    private func flushDirty() {
        for connection in dirty {
            connection.needsFlush = false
            connection.channel.flush()
        }
        dirty.removeAll(keepingCapacity: true)
    }

    /// Sends a close frame and closes: at once for a client that is not reading (its backlog would never
    /// drain); otherwise the close handshake: only our sending side is shut once the frame is written, so frames
    /// the client is still sending do not make the kernel reset the connection (and lose our close frame), and
    /// the connection closes when the client answers, or after a second.
    func close(_ connection: ClientConnection, code: WebSocketErrorCode, reason: String, immediately: Bool = false) {
        guard !connection.isClosing else { return }
        connection.isClosing = true
        var data = connection.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        let channel = connection.channel
        let written = channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
        if immediately {
            channel.close(promise: nil)
        } else {
            written.whenComplete { _ in
                channel.close(mode: .output, promise: nil)
                channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
            }
        }
        disconnect(connection)
    }
}
