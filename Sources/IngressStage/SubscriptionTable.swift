import NIOCore
import SwitchyardCore

/// The subscription state machine of one ingress: the index subject → local subscribers, the subscribes
/// waiting for the cache's answer (a client's own, or a repair for every live subscriber of a subject), the live
/// messages held meanwhile, and each subject's last position, where a repair starts from.
///
/// No sockets: every operation returns the envelopes for the pipeline, and what to write to whom, to the hub.
/// Times are monotonic nanoseconds.
final class SubscriptionTable {
    struct Subscriber {
        enum State: Equatable {
            /// Waiting for the answer to `requestID`; live messages wait with the request meanwhile.
            case pending(requestID: UInt64)
            /// Live. Messages at or below `floorSeq` of `floorEpoch` were covered by the cache's answer.
            case live(floorEpoch: String, floorSeq: UInt64)
        }

        let connection: ClientConnection
        var state: State
    }

    /// A subject's place in a stream: what a subscriber or this ingress has seen.
    struct StreamPosition: Equatable {
        var epoch: String
        var seq: UInt64
    }

    /// What one subscriber gets from an answer, in this order.
    struct AnswerDelivery {
        let connection: ClientConnection
        /// `DATA_RESYNC` before the messages: the subject's numbering started over (a repair into a new epoch).
        var resyncFirst = false
        var messages: [Message] = []
        var kind: MessageKind
        /// `DATA_SYNC` or `DATA_RESYNC` after the messages.
        var status: String?
        /// Live messages held while the answer was awaited, past what it covered (as updates).
        var held: [Message] = []
        /// Indexes in `held` that `DATA_RESYNC` goes before: the subject's numbering started over there.
        var resyncBeforeHeld: Set<Int> = []
    }

    /// A subscribe waiting for the cache's answer.
    private struct PendingSubscribe {
        var connectionIDs: Set<UInt64>
        var request: Subscribe
        /// When it was last sent; nil while it waits for a free slot of its connection (`MaxSubscribesInFlight`).
        var sentAt: UInt64?
        /// The connection whose own subscribe this is; nil for a repair.
        var owner: ClientConnection?
        /// A repair that found the subject's numbering started over now asks for the new epoch from its start.
        var startsNewEpoch = false
        /// A repair's subscribers may each have seen more than the subject's stream here (a recovery answer that
        /// reached further): what each already has, so the repair sends nothing twice.
        var seenUpTo: [UInt64: StreamPosition] = [:]
        /// Live messages that arrived meanwhile, shared by every subscriber waiting for this answer.
        var held: [Message] = []
        var heldBytes = 0

        var isRepair: Bool { owner == nil }
    }

    let ingress: UInt32
    let replyTo: String
    let maxSubscribesInFlight: Int
    let maxPendingSubscribeBytes: Int

    private var subscribers: [String: SubjectSubscribers] = [:]
    private var pending: [UInt64: PendingSubscribe] = [:]
    private var positions: [String: StreamPosition] = [:]
    /// Per connection, its subscribes waiting for a free slot, in order.
    private var waiting: [UInt64: CircularBuffer<UInt64>] = [:]
    private var nextRequestID: UInt64 = 0
    /// How many subscribes held more than `maxPendingSubscribeBytes` and were asked again (for the log).
    private(set) var subscribesAskedAgain = 0

    init(ingress: UInt32, replyTo: String, maxSubscribesInFlight: Int, maxPendingSubscribeBytes: Int) {
        self.ingress = ingress
        self.replyTo = replyTo
        self.maxSubscribesInFlight = max(maxSubscribesInFlight, 1)
        self.maxPendingSubscribeBytes = maxPendingSubscribeBytes
    }

    var subjectCount: Int { subscribers.count }
    var pendingCount: Int { pending.count }

    func state(of connectionID: UInt64, in subject: String) -> Subscriber.State? {
        subscribers[subject]?[connectionID]?.state
    }

    /// Request ids are shared with publishes, so one counter serves both.
    func makeRequestID() -> UInt64 {
        nextRequestID &+= 1
        return nextRequestID
    }

    // MARK: Client requests

    /// Subscribes (or subscribes again, replacing the previous start) `connection` to `subject`.
    func subscribe(_ connection: ClientConnection, to subject: String, start: SubscribeStart, now: UInt64)
        -> [Envelope] {
        var out: [Envelope] = []
        let registersInterest = subscribers[subject] == nil
        if let previous = subscribers[subject]?[connection.id] {
            forgetPending(of: previous, connectionID: connection.id)
        }
        let request = Subscribe(requestID: makeRequestID(), replyTo: replyTo, subject: subject, ingress: ingress,
                                registersInterest: registersInterest, start: start)
        subscribers[subject, default: SubjectSubscribers()][connection.id] = Subscriber(
            connection: connection, state: .pending(requestID: request.requestID))
        pending[request.requestID] = PendingSubscribe(connectionIDs: [connection.id], request: request,
                                                      owner: connection)
        if connection.subscribesInFlight < maxSubscribesInFlight && !connection.isPacingAnswer {
            out += send(request.requestID, now: now)
        } else {
            pending[request.requestID]?.request.registersInterest = true
            waiting[connection.id, default: CircularBuffer()].append(request.requestID)
        }
        return out
    }

    /// Removes `connection`'s subscription to `subject`; tells the pipeline when it was the subject's last.
    func unsubscribe(_ connection: ClientConnection, from subject: String) -> [Envelope] {
        guard let removed = subscribers[subject]?.removeValue(forKey: connection.id) else { return [] }
        forgetPending(of: removed, connectionID: connection.id)
        guard subscribers[subject]?.isEmpty == true else { return [] }
        subscribers[subject] = nil
        positions[subject] = nil
        return [.interest(Interest(subject: subject, ingress: ingress, isAdded: false))]
    }

    /// Forgets everything of a connection that went away.
    func remove(_ connection: ClientConnection) -> [Envelope] {
        waiting[connection.id] = nil
        var out: [Envelope] = []
        for subject in connection.subjects { out += unsubscribe(connection, from: subject) }
        return out
    }

    private func forgetPending(of subscriber: Subscriber, connectionID: UInt64) {
        guard case .pending(let requestID) = subscriber.state, var request = pending[requestID] else { return }
        request.connectionIDs.remove(connectionID)
        guard request.connectionIDs.isEmpty else {
            pending[requestID] = request
            return
        }
        pending[requestID] = nil
        finished(request)
    }

    /// A connection's own subscribe is over (answered or forgotten): its slot is free (`sendWaiting`).
    private func finished(_ request: PendingSubscribe) {
        guard let owner = request.owner, request.sentAt != nil else { return }
        owner.subscribesInFlight = max(owner.subscribesInFlight - 1, 0)
    }

    /// Sends the connection's waiting subscribes, in order, while it has free slots and no answer is being
    /// written to it: at most `maxSubscribesInFlight` answers are ever buffered for one connection.
    func sendWaiting(for connection: ClientConnection, now: UInt64) -> [Envelope] {
        guard waiting[connection.id] != nil, !connection.isPacingAnswer else { return [] }
        var out: [Envelope] = []
        while connection.subscribesInFlight < maxSubscribesInFlight, let next = waiting[connection.id]?.popFirst() {
            out += send(next, now: now)
        }
        if waiting[connection.id]?.isEmpty == true { waiting[connection.id] = nil }
        return out
    }

    private func send(_ requestID: UInt64, now: UInt64) -> [Envelope] {
        guard var request = pending[requestID] else { return [] }
        request.sentAt = now
        request.owner?.subscribesInFlight += 1
        pending[requestID] = request
        return [.subscribe(request.request)]
    }

    // MARK: From the pipeline

    /// Hands `message` to every live subscriber that has not had it (`write(connection, resyncFirst)`) and holds
    /// it for pending ones. Returns the envelopes to send: a repair when messages went missing here, and a
    /// subscribe asked again when what it held passed `maxPendingSubscribeBytes`.
    func deliver(_ message: Message, now: UInt64, to write: (ClientConnection, _ resyncFirst: Bool) -> Void)
        -> [Envelope] {
        guard subscribers[message.subject] != nil else { return [] }
        var out: [Envelope] = []
        if let position = positions[message.subject], position.epoch == message.epoch {
            // Read again (a cache warmed up anew after a restart): it went through here already.
            if message.seq <= position.seq { return [] }
            if message.previousSeq > position.seq { out += repair(message.subject, after: position, now: now) }
        }
        advancePosition(message.subject, epoch: message.epoch, seq: message.seq)
        // State changes are applied after the loop: changing the dictionary while iterating it would copy it.
        var newEpochs: [UInt64] = []
        var waitingRequests: Set<UInt64> = []
        for (id, subscriber) in subscribers[message.subject] ?? SubjectSubscribers() {
            switch subscriber.state {
            case .live(let floorEpoch, let floorSeq):
                if message.epoch != floorEpoch {
                    // The subject's numbering started over (a restarted or re-sharded cache, a recreated topic):
                    // say so. An empty floor epoch is a subject that had no messages yet.
                    newEpochs.append(id)
                    write(subscriber.connection, !floorEpoch.isEmpty)
                } else if message.seq > floorSeq {
                    write(subscriber.connection, false)
                }
            case .pending(let requestID):
                waitingRequests.insert(requestID)
            }
        }
        for id in newEpochs {
            subscribers[message.subject]?[id]?.state = .live(floorEpoch: message.epoch, floorSeq: 0)
        }
        let bytes = message.content.readableBytes + message.closure.utf8.count
        for requestID in waitingRequests {
            guard var request = pending.removeValue(forKey: requestID) else { continue }
            request.held.append(message)
            request.heldBytes += bytes
            if request.heldBytes > maxPendingSubscribeBytes {
                out += askAgain(request, now: now)
            } else {
                pending[requestID] = request
            }
        }
        return out
    }

    /// A subscribe held more live messages than allowed while waiting: they are dropped and the cache is asked
    /// again from the same start (a new request id, so the old answer is ignored). The cache holds what was
    /// dropped, so the new answer covers it: nothing is lost.
    private func askAgain(_ request: PendingSubscribe, now: UInt64) -> [Envelope] {
        subscribesAskedAgain += 1
        var renewed = request
        renewed.held = []
        renewed.heldBytes = 0
        renewed.request.requestID = makeRequestID()
        renewed.request.registersInterest = true
        moveSubscribers(of: request, to: renewed.request.requestID)
        pending[renewed.request.requestID] = renewed
        if request.sentAt == nil {
            if let owner = request.owner, let index = waiting[owner.id]?.firstIndex(of: request.request.requestID) {
                waiting[owner.id]?[index] = renewed.request.requestID
            }
            return []
        }
        renewed.owner?.subscribesInFlight -= 1  // `send` counts it again
        return send(renewed.request.requestID, now: now)
    }

    private func moveSubscribers(of request: PendingSubscribe, to requestID: UInt64) {
        let subject = request.request.subject
        for connectionID in request.connectionIDs {
            guard case .pending(let current)? = subscribers[subject]?[connectionID]?.state,
                  current == request.request.requestID else { continue }
            subscribers[subject]?[connectionID]?.state = .pending(requestID: requestID)
        }
    }

    private func advancePosition(_ subject: String, epoch: String, seq: UInt64) {
        if let position = positions[subject], position.epoch == epoch, position.seq >= seq { return }
        positions[subject] = StreamPosition(epoch: epoch, seq: seq)
    }

    /// Asks the cache again for everything after `position` on behalf of the subject's live subscribers, who
    /// hold live messages meanwhile: what went missing is then delivered in order, without duplicates.
    private func repair(_ subject: String, after position: StreamPosition, now: UInt64) -> [Envelope] {
        guard let local = subscribers[subject] else { return [] }
        let request = Subscribe(requestID: makeRequestID(), replyTo: replyTo, subject: subject, ingress: ingress,
                                registersInterest: true, start: .recover(epoch: position.epoch, seq: position.seq))
        var repair = PendingSubscribe(connectionIDs: [], request: request, sentAt: now)
        for (id, subscriber) in local {
            guard case .live(let floorEpoch, let floorSeq) = subscriber.state else { continue }
            subscribers[subject]?[id]?.state = .pending(requestID: request.requestID)
            repair.connectionIDs.insert(id)
            repair.seenUpTo[id] = StreamPosition(epoch: floorEpoch, seq: floorSeq)
        }
        guard !repair.connectionIDs.isEmpty else { return [] }
        pending[request.requestID] = repair
        return [.subscribe(request)]
    }

    /// The cache answered a subscribe: what each of its subscribers gets, and what to send (a repair's follow-up
    /// into a new epoch). The connection's next waiting subscribe goes once the answer is written (`sendWaiting`).
    func answer(_ reply: SubscribeReply, now: UInt64) -> (deliveries: [AnswerDelivery], send: [Envelope]) {
        guard let request = pending.removeValue(forKey: reply.requestID) else { return ([], []) }
        if request.isRepair, !request.startsNewEpoch, reply.status == .resync, !reply.epoch.isEmpty,
           case .recover(let askedEpoch, _) = request.request.start, askedEpoch != reply.epoch {
            return ([], [askForNewEpoch(reply, after: request, now: now)])
        }
        // A repair's answer continues the subject's stream here. A subscriber's own answer may reach past it
        // (a client that came from a node further ahead) and must not make this ingress skip messages.
        // A follow-up into a new epoch moves it there (a later repair then starts from the new epoch, not the old).
        if request.isRepair && (reply.epoch == positions[reply.subject]?.epoch || positions[reply.subject] == nil
                                || (request.startsNewEpoch && reply.status == .sync)) {
            advancePosition(reply.subject, epoch: reply.epoch, seq: reply.lastSeq)
        }
        var deliveries: [AnswerDelivery] = []
        for connectionID in request.connectionIDs {
            guard let subscriber = subscribers[reply.subject]?[connectionID],
                  subscriber.state == .pending(requestID: reply.requestID) else { continue }
            // A repair hands over missed live messages as updates; only a resync is worth telling.
            var delivery = AnswerDelivery(connection: subscriber.connection,
                                          kind: request.isRepair && reply.status == .sync ? .update : reply.kind)
            delivery.resyncFirst = request.startsNewEpoch && reply.status == .sync
            let seen = request.seenUpTo[connectionID]
            delivery.messages = reply.messages.filter { !Self.covers(seen, $0) }
            switch reply.status {
            case .sync where !request.isRepair: delivery.status = "DATA_SYNC"
            case .resync: delivery.status = "DATA_RESYNC"
            case .sync, .none: break
            }
            var floor = StreamPosition(epoch: reply.epoch, seq: reply.lastSeq)
            if let seen, seen.epoch == floor.epoch, seen.seq > floor.seq { floor = seen }
            // Held live messages may already be of a newer epoch than the answer (the subject moved to another
            // cache shard while the answer was on its way): they get DATA_RESYNC before them, as live ones do.
            for message in request.held {
                if message.epoch != floor.epoch {
                    if !floor.epoch.isEmpty { delivery.resyncBeforeHeld.insert(delivery.held.count) }
                    floor = StreamPosition(epoch: message.epoch, seq: 0)
                } else if message.seq <= floor.seq {
                    continue
                }
                delivery.held.append(message)
                floor.seq = message.seq
            }
            subscribers[reply.subject]?[connectionID]?.state = .live(floorEpoch: floor.epoch, floorSeq: floor.seq)
            deliveries.append(delivery)
        }
        finished(request)
        return (deliveries, [])
    }

    private static func covers(_ position: StreamPosition?, _ message: Message) -> Bool {
        guard let position else { return false }
        return message.epoch == position.epoch && message.seq <= position.seq
    }

    /// The subject's numbering started over while its subscribers were live (a restarted cache): rather than
    /// only the new epoch's snapshot, they get `DATA_RESYNC` and the new epoch from its first message, if the
    /// cache still holds all of it.
    private func askForNewEpoch(_ reply: SubscribeReply, after repair: PendingSubscribe, now: UInt64) -> Envelope {
        var followUp = repair
        followUp.request.requestID = makeRequestID()
        followUp.request.start = .recover(epoch: reply.epoch, seq: 0)
        followUp.startsNewEpoch = true
        followUp.sentAt = now
        moveSubscribers(of: repair, to: followUp.request.requestID)
        pending[followUp.request.requestID] = followUp
        return .subscribe(followUp.request)
    }

    /// A stage (re)started and may have lost what it knew or messages in flight, or the shards moved: announce
    /// every subject again, repair every subject from its last position, and re-ask pending subscribes.
    func reannounce(now: UInt64) -> [Envelope] {
        // Pending requests first: the repairs made below are pending too, and must leave only once.
        let askedAgain = retry(olderThan: 0, now: now)
        var out: [Envelope] = []
        for subject in subscribers.keys {
            out.append(.interest(Interest(subject: subject, ingress: ingress, isAdded: true)))
            if let position = positions[subject] { out += repair(subject, after: position, now: now) }
        }
        return out + askedAgain
    }

    /// Sent subscribes unanswered for `age` nanoseconds, sent again (a stage restarted and lost them).
    func retry(olderThan age: UInt64, now: UInt64) -> [Envelope] {
        var out: [Envelope] = []
        for (requestID, request) in pending {
            guard let sentAt = request.sentAt, now >= sentAt, now - sentAt >= age else { continue }
            var subscribe = request.request
            subscribe.registersInterest = true
            pending[requestID]?.sentAt = now
            out.append(.subscribe(subscribe))
        }
        return out
    }
}

/// The local subscribers of one subject, by connection id: inline while there is one (a device on a subject of
/// its own, the common case at 100,000 connections), a dictionary from the second on. A dictionary of one would
/// cost an allocation of ~170 bytes per subject.
struct SubjectSubscribers: Sequence {
    typealias Subscriber = SubscriptionTable.Subscriber

    private enum Storage {
        case one(UInt64, Subscriber)
        /// Empty too (an empty dictionary allocates nothing).
        case many([UInt64: Subscriber])
    }

    private var storage = Storage.many([:])

    var isEmpty: Bool {
        if case .many(let all) = storage { return all.isEmpty }
        return false
    }

    subscript(id: UInt64) -> Subscriber? {
        get {
            switch storage {
            case .one(let only, let subscriber): return only == id ? subscriber : nil
            case .many(let all): return all[id]
            }
        }
        set {
            switch storage {
            case .one(let only, let subscriber):
                if only == id {
                    storage = newValue.map { .one(id, $0) } ?? .many([:])
                } else if let newValue {
                    storage = .many([only: subscriber, id: newValue])
                }
            case .many(var all):
                if all.isEmpty, let newValue {
                    storage = .one(id, newValue)
                    return
                }
                storage = .many([:])  // leaves `all` the only reference: changed in place, not copied
                all[id] = newValue
                storage = .many(all)
            }
        }
    }

    @discardableResult
    mutating func removeValue(forKey id: UInt64) -> Subscriber? {
        guard let removed = self[id] else { return nil }
        self[id] = nil
        return removed
    }

    struct Iterator: IteratorProtocol {
        fileprivate var single: (key: UInt64, value: Subscriber)?
        fileprivate var rest: Dictionary<UInt64, Subscriber>.Iterator?

        mutating func next() -> (key: UInt64, value: Subscriber)? {
            if let single {
                self.single = nil
                return single
            }
            return rest?.next()
        }
    }

    func makeIterator() -> Iterator {
        switch storage {
        case .one(let id, let subscriber): return Iterator(single: (id, subscriber), rest: nil)
        case .many(let all): return Iterator(single: nil, rest: all.makeIterator())
        }
    }
}
