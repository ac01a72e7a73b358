import DequeModule
import SwitchyardCore

/// The cache's memory: per subject, the sequence numbers, the recent guaranteed messages and the retained snapshot.
///
/// Pure logic (no sockets), so that recovery decisions are tested directly. History is bounded by count
/// (`maxMessagesPerSubject`) and age (`maxAge`); `coveredAfter` remembers how far back it still reaches, which is
/// what decides between a recovery (`DATA_SYNC`) and a resync.
public final class SubjectStore {
    struct Entry {
        /// The subject's epoch: the cache's own in standalone mode, the record's partition epoch in Kafka mode.
        var epoch: String
        var lastSeq: UInt64 = 0
        /// Every guaranteed message of `epoch` with a seq above this is in `history`.
        var coveredAfter: UInt64 = 0
        var history = Deque<Message>()
        var snapshot: Message?
    }

    public let epoch: String
    public let maxMessagesPerSubject: Int
    public let maxAge: UInt64
    /// Kafka mode: what the store cannot answer, Kafka may (`reply` returns nil for those).
    public let backedByKafka: Bool
    private var entries: [String: Entry] = [:]
    public private(set) var messageCount = 0

    /// - Parameters:
    ///   - epoch: the epoch of messages this store numbers itself (standalone mode).
    ///   - maxAge: nanoseconds a message stays in the history.
    ///   - backedByKafka: messages come numbered from Kafka, which holds more history than the store.
    public init(epoch: String, maxMessagesPerSubject: Int, maxAge: UInt64, backedByKafka: Bool = false) {
        self.epoch = epoch
        self.maxMessagesPerSubject = maxMessagesPerSubject
        self.maxAge = maxAge
        self.backedByKafka = backedByKafka
    }

    public var subjectCount: Int { entries.count }

    /// The epoch reported for a subject without messages: standalone, the store's own (its first message will
    /// have it); in Kafka mode none yet, since the partition is known only with the first record.
    private var unknownSubjectEpoch: String { backedByKafka ? "" : epoch }

    /// Numbers a published message (next seq of its subject, this store's epoch) and keeps it.
    public func append(_ published: Message, now: UInt64) -> Message {
        var message = published
        message.flags.remove(.wantsAck)
        message.epoch = epoch
        message.timestamp = message.timestamp == 0 ? now : message.timestamp
        // Mutated in place: a copy of the entry would copy its whole history.
        entries[message.subject, default: Entry(epoch: epoch)].lastSeq += 1
        message.seq = entries[message.subject]!.lastSeq
        message.previousSeq = message.seq - 1
        keep(message, in: &entries[message.subject]!)
        return message
    }

    /// Keeps a message that arrived already numbered (a Kafka record) and says whether it was new: a record
    /// read again (cache warm-up after a restart elsewhere) is not passed on twice. A new epoch starts the
    /// subject over.
    @discardableResult
    public func insert(_ message: Message) -> Bool {
        if let current = entries[message.subject]?.epoch, current == message.epoch {
            guard message.seq > entries[message.subject]!.lastSeq else { return false }
            if message.previousSeq > entries[message.subject]!.lastSeq {
                // Records of this subject went missing on the way here (a stage restarted with them in
                // flight): the history no longer reaches back past them, so recoveries from before go to Kafka.
                entries[message.subject]!.coveredAfter = message.previousSeq
            }
        } else {
            var fresh = Entry(epoch: message.epoch)
            // Known previous record: nothing of this subject lies between it and this one.
            fresh.coveredAfter = message.previousSeq > 0 ? message.previousSeq : (message.seq == 0 ? 0 : message.seq - 1)
            entries[message.subject] = fresh
        }
        entries[message.subject]!.lastSeq = message.seq
        keep(message, in: &entries[message.subject]!)
        return true
    }

    private func keep(_ message: Message, in entry: inout Entry) {
        if message.flags.contains(.retained) { entry.snapshot = message }
        guard message.flags.contains(.guaranteed), maxMessagesPerSubject > 0 else {
            if message.flags.contains(.guaranteed) { entry.coveredAfter = message.seq }
            return
        }
        entry.history.append(message)
        messageCount += 1
        if entry.history.count > maxMessagesPerSubject, let evicted = entry.history.popFirst() {
            entry.coveredAfter = evicted.seq
            messageCount -= 1
        }
    }

    /// What a new subscriber gets, as the cache's reply; nil when only Kafka can tell (a recovery from further
    /// back than the store reaches, or from an epoch it does not know).
    public func reply(to subscribe: Subscribe) -> SubscribeReply? {
        let entry = entries[subscribe.subject]
        let epoch = entry?.epoch ?? unknownSubjectEpoch
        let lastSeq = entry?.lastSeq ?? 0
        func answer(_ kind: MessageKind, _ status: SubscribeReply.Status, _ messages: [Message]) -> SubscribeReply {
            SubscribeReply(requestID: subscribe.requestID, subject: subscribe.subject, kind: kind, status: status,
                           messages: messages, epoch: epoch, lastSeq: lastSeq)
        }
        let snapshot = entry?.snapshot.map { [$0] } ?? []
        switch subscribe.start {
        case .snapshot:
            return answer(.snapshot, .none, snapshot)
        case .history(let count):
            guard let history = entry?.history, count > 0 else { return answer(.historical, .none, []) }
            return answer(.historical, .none, Array(history.suffix(Int(count))))
        case .recover(let clientEpoch, let clientSeq):
            let coveredAfter = entry?.coveredAfter ?? 0
            if backedByKafka {
                guard let entry, clientEpoch == entry.epoch, clientSeq >= coveredAfter else { return nil }
                if clientSeq >= lastSeq {
                    // The client saw more than this node has read yet (it came from a node further ahead):
                    // nothing to send, and nothing up to its position may be sent again.
                    return SubscribeReply(requestID: subscribe.requestID, subject: subscribe.subject,
                                          kind: .recovered, status: .sync, messages: [], epoch: epoch,
                                          lastSeq: clientSeq)
                }
            } else if clientEpoch != epoch || clientSeq > lastSeq || clientSeq < coveredAfter {
                return answer(.snapshot, .resync, snapshot)
            }
            let missed = entry?.history.filter { $0.seq > clientSeq } ?? []
            return answer(.recovered, .sync, missed)
        }
    }

    /// The answer for a position that cannot be served: the snapshot, if any, and a resync.
    public func resyncReply(to subscribe: Subscribe) -> SubscribeReply {
        let entry = entries[subscribe.subject]
        return SubscribeReply(requestID: subscribe.requestID, subject: subscribe.subject, kind: .snapshot,
                              status: .resync, messages: entry?.snapshot.map { [$0] } ?? [],
                              epoch: entry?.epoch ?? unknownSubjectEpoch, lastSeq: entry?.lastSeq ?? 0)
    }

    /// Drops messages older than `maxAge`; the history then no longer reaches back past them.
    public func expire(now: UInt64) {
        guard now > maxAge else { return }
        let oldestKept = now - maxAge
        for index in entries.indices {
            guard let first = entries.values[index].history.first, first.timestamp < oldestKept else { continue }
            while let message = entries.values[index].history.first, message.timestamp < oldestKept {
                entries.values[index].history.removeFirst()
                entries.values[index].coveredAfter = message.seq
                messageCount -= 1
            }
        }
    }
}
