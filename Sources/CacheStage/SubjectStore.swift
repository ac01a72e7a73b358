import DequeModule
import HeapModule
import NIOCore
import SwitchyardCore

/// The cache's memory: per subject, the sequence numbers, the recent guaranteed messages and the retained snapshot.
///
/// Pure logic (no sockets, no clock: callers pass `now`, monotonic nanoseconds), so that recovery and eviction
/// decisions are tested directly. History is bounded by count (`maxMessagesPerSubject`) and age (`maxAge`);
/// `coveredAfter` remembers how far back it still reaches, which is what decides between a recovery
/// (`DATA_SYNC`) and a resync.
///
/// The whole store is bounded too, by content and header bytes (`maxBytes`) and by subjects (`maxSubjects`).
/// Under either pressure whole subjects go, **least recently used first** (a message stored or an interest change counts as
/// use): a subject nobody published to or subscribed to for the longest is the one least likely to be asked
/// for next, a subject that stays is kept whole (its history still contiguous, its snapshot still there), and
/// one order serves both bounds at O(1) amortised per message. Only when the subject being written is the last
/// one left does it shed its own oldest messages. Idle subjects — no interest, no history, no snapshot, quiet
/// for `maxAge` — go at `expire`.
///
/// Every eviction is told truthfully: a subject dropped and seen again starts in a new epoch of its own in
/// standalone mode (its old positions resync), and a history cut from the front moves `coveredAfter`; in Kafka
/// mode a subject the store no longer knows is left to Kafka (deep recovery).
public final class SubjectStore {
    struct Entry {
        /// The subject's epoch: the cache's own in standalone mode, the record's partition epoch in Kafka mode.
        var epoch: String
        var lastSeq: UInt64 = 0
        /// Every guaranteed message of `epoch` with a seq above this is in `history`.
        var coveredAfter: UInt64 = 0
        var history = Deque<Stored>()
        /// The retained snapshot. Held in a box: most subjects of a large store have none, and the entry, kept
        /// inline in the store's table (with its free slots), stays a third of the size.
        var snapshot: Message? {
            get { snapshotBox?.message }
            set { snapshotBox = newValue.map(SnapshotBox.init) }
        }
        private var snapshotBox: SnapshotBox?
        /// Ingresses with subscribers: an idle subject with interest is kept.
        var interest: IngressSet = []
        /// When the subject was last used, and its place in `recency`.
        var lastUsed: UInt64 = 0
        var useStamp: UInt64 = 0
        /// When its oldest history message is due to expire: the key of its element of `historyExpiry`.
        var expiryDue: UInt64?
        /// When it is due to be checked for being idle: the key of its element of `idleChecks`.
        var idleCheckDue: UInt64?

        /// Nothing held and nobody subscribed: once unused for the expiry time, the subject is dropped.
        var isEmpty: Bool { interest.isEmpty && snapshot == nil && history.isEmpty }

        init(epoch: String) { self.epoch = epoch }

        /// True when the snapshot is also the history message of its seq (stored, and counted, once).
        var snapshotIsInHistory: Bool {
            guard let snapshot, snapshot.flags.contains(.guaranteed), let first = history.first else { return false }
            return first.message.seq <= snapshot.seq
        }

        /// Content and header bytes the entry holds.
        var bytes: Int {
            history.reduce(0) { $0 + $1.message.byteCount }
                + (snapshotIsInHistory ? 0 : snapshot?.byteCount ?? 0)
        }
    }

    /// A retained snapshot, out of line (`Entry.snapshot`); immutable, so entries that share one stay values.
    final class SnapshotBox: Sendable {
        let message: Message

        init(_ message: Message) { self.message = message }
    }

    /// A history message and when it was stored (monotonic): its age is counted from there.
    struct Stored {
        var message: Message
        var storedAt: UInt64
    }

    /// A subject and a time when something about it falls due.
    struct Due: Comparable {
        var at: UInt64
        var subject: String

        static func < (lhs: Due, rhs: Due) -> Bool { lhs.at < rhs.at }
        static func == (lhs: Due, rhs: Due) -> Bool { lhs.at == rhs.at && lhs.subject == rhs.subject }
    }

    public let epoch: String
    public let maxMessagesPerSubject: Int
    public let maxAge: UInt64
    public let maxBytes: Int
    public let maxSubjects: Int
    /// Kafka mode: what the store cannot answer, Kafka may (`reply` returns nil for those).
    public let backedByKafka: Bool
    private var entries: [String: Entry] = [:]
    /// Subjects in order of use, oldest first; an element whose stamp is no longer its entry's is stale.
    private var recency = Deque<(subject: String, stamp: UInt64)>()
    /// Subjects with a history, by when their oldest message expires: expiry does the work that is due and no
    /// more (a sweep of every subject would stall the cache for milliseconds at 100,000 subjects). An element
    /// whose due time is no longer its entry's `expiryDue` is stale.
    private var historyExpiry = Heap<Due>()
    /// Subjects that became empty, by when to check whether they stayed unused; stale as in `historyExpiry`.
    private var idleChecks = Deque<Due>()
    private var lastStamp: UInt64 = 0
    /// Subjects dropped so far: standalone subjects created after a drop take an epoch of this generation.
    private var generation = 0
    private let allocator = ByteBufferAllocator()
    public private(set) var messageCount = 0
    /// Content and header bytes of history messages and snapshots (one shared by both counts once).
    public private(set) var bytesHeld = 0
    /// Subjects dropped by the bounds (bytes, subjects) or as idle, since start.
    public private(set) var evictedSubjects = 0
    /// Messages the subject being written shed from its own history because it alone was over `maxBytes`.
    public private(set) var shedMessages = 0

    /// - Parameters:
    ///   - epoch: the epoch of messages this store numbers itself (standalone mode).
    ///   - maxAge: nanoseconds a message stays in the history after it was stored.
    ///   - maxBytes: content and header bytes held across subjects (`CacheMaxBytes`).
    ///   - maxSubjects: subjects held (`CacheMaxSubjects`).
    ///   - backedByKafka: messages come numbered from Kafka, which holds more history than the store.
    public init(epoch: String, maxMessagesPerSubject: Int, maxAge: UInt64, maxBytes: Int = .max,
                maxSubjects: Int = .max, backedByKafka: Bool = false) {
        self.epoch = epoch
        self.maxMessagesPerSubject = maxMessagesPerSubject
        self.maxAge = maxAge
        self.maxBytes = maxBytes
        self.maxSubjects = max(1, maxSubjects)
        self.backedByKafka = backedByKafka
    }

    public var subjectCount: Int { entries.count }

    /// The epoch of a subject created now in standalone mode: the store's own until a subject was dropped.
    private var currentEpoch: String { generation == 0 ? epoch : "\(epoch).\(generation)" }

    /// The epoch reported for a subject without messages: standalone, the one its first message will have; in
    /// Kafka mode none yet, since the partition is known only with the first record.
    private var unknownSubjectEpoch: String { backedByKafka ? "" : currentEpoch }

    /// Numbers a published message (next seq of its subject, the subject's epoch) and keeps it.
    public func append(_ published: Message, now: UInt64) -> Message {
        var message = published
        message.flags.remove(.wantsAck)
        let subject = message.subject
        if entries[subject] == nil { create(subject, Entry(epoch: currentEpoch)) }
        // Mutated in place: a copy of the entry would copy its whole history.
        entries[subject]!.lastSeq += 1
        message.epoch = entries[subject]!.epoch
        message.seq = entries[subject]!.lastSeq
        message.previousSeq = message.seq - 1
        return keep(message, now: now)
    }

    /// Keeps a message that arrived already numbered (a Kafka record) and says whether it was new: a record
    /// read again (cache warm-up after a restart elsewhere) is not passed on twice. A new epoch starts the
    /// subject over.
    @discardableResult
    public func insert(_ message: Message, now: UInt64) -> Bool {
        let subject = message.subject
        if let entry = entries[subject], entry.epoch == message.epoch {
            guard message.seq > entry.lastSeq else { return false }
            if message.previousSeq > entry.lastSeq {
                // Records of this subject went missing on the way here (a stage restarted with them in
                // flight): the history no longer reaches back past them, so recoveries from before go to Kafka.
                entries[subject]!.coveredAfter = message.previousSeq
            }
        } else {
            var fresh = Entry(epoch: message.epoch)
            // Known previous record: nothing of this subject lies between it and this one.
            fresh.coveredAfter = message.previousSeq > 0 ? message.previousSeq : (message.seq == 0 ? 0 : message.seq - 1)
            if let old = entries.removeValue(forKey: subject) {
                fresh.interest = old.interest
                release(old)
            }
            create(subject, fresh)
        }
        entries[subject]!.lastSeq = message.seq
        _ = keep(message, now: now)
        return true
    }

    /// Notes an ingress gaining its first or losing its last subscriber of a subject.
    public func noteInterest(_ interest: Interest, now: UInt64) {
        if interest.isAdded {
            if entries[interest.subject] == nil { create(interest.subject, Entry(epoch: unknownSubjectEpoch)) }
            entries[interest.subject]!.interest.insert(interest.ingress)
        } else {
            guard entries[interest.subject] != nil else { return }
            entries[interest.subject]!.interest.remove(interest.ingress)
        }
        use(interest.subject, now: now)
        scheduleIdleCheck(interest.subject, unusedSince: now)
    }

    /// Adds a subject, dropping the least recently used one first when the store holds `maxSubjects`.
    private func create(_ subject: String, _ entry: Entry) {
        while entries.count >= maxSubjects, dropLeastRecentlyUsed(sparing: subject) {}
        entries[subject] = entry
    }

    /// Stores the message (its content copied out of the batch it arrived in) and applies the bounds.
    private func keep(_ received: Message, now: UInt64) -> Message {
        let subject = received.subject
        var message = received
        let isRetained = message.flags.contains(.retained)
        let isKept = message.flags.contains(.guaranteed) && maxMessagesPerSubject > 0
        if isRetained || isKept { message.content = ownCopy(of: message.content) }
        let size = message.byteCount
        let clearsSnapshot = message.flags.contains(.clearsSnapshot) && message.content.readableBytes == 0
        if isRetained {
            if let old = entries[subject]!.snapshot, !entries[subject]!.snapshotIsInHistory {
                bytesHeld -= old.byteCount
            }
            entries[subject]!.snapshot = clearsSnapshot ? nil : message
        }
        if isKept {
            entries[subject]!.history.append(Stored(message: message, storedAt: now))
            messageCount += 1
            if entries[subject]!.history.count > maxMessagesPerSubject { dropOldestMessage(from: &entries[subject]!) }
            scheduleExpiry(subject)
        } else if message.flags.contains(.guaranteed) {
            entries[subject]!.coveredAfter = message.seq
        }
        if isKept || (isRetained && !clearsSnapshot) { bytesHeld += size }
        use(subject, now: now)
        scheduleIdleCheck(subject, unusedSince: now)
        while bytesHeld > maxBytes {
            if dropLeastRecentlyUsed(sparing: subject) { continue }
            if !shedOwnContent(of: subject) { break }
        }
        return message
    }

    /// One right-sized buffer of its own, so a kept message does not keep its whole received batch alive.
    private func ownCopy(of content: ByteBuffer) -> ByteBuffer {
        var copy = allocator.buffer(capacity: content.readableBytes)
        copy.writeImmutableBuffer(content)
        return copy
    }

    /// Drops a subject's oldest history message; the history no longer reaches back past it.
    private func dropOldestMessage(from entry: inout Entry) {
        guard let dropped = entry.history.popFirst() else { return }
        messageCount -= 1
        entry.coveredAfter = max(entry.coveredAfter, dropped.message.seq)
        // A message that is also the snapshot stays held, as the snapshot.
        if entry.snapshot?.seq != dropped.message.seq {
            bytesHeld -= dropped.message.byteCount
        }
    }

    /// The subject being written is alone over `maxBytes`: its oldest message goes, then its snapshot.
    private func shedOwnContent(of subject: String) -> Bool {
        guard let entry = entries[subject] else { return false }
        if !entry.history.isEmpty {
            dropOldestMessage(from: &entries[subject]!)
            scheduleIdleCheck(subject, unusedSince: entry.lastUsed)
        } else if let snapshot = entry.snapshot {
            bytesHeld -= snapshot.byteCount
            entries[subject]!.snapshot = nil
            scheduleIdleCheck(subject, unusedSince: entry.lastUsed)
        } else {
            return false
        }
        shedMessages += 1
        return true
    }

    private func use(_ subject: String, now: UInt64) {
        lastStamp += 1
        entries[subject]?.lastUsed = now
        entries[subject]?.useStamp = lastStamp
        recency.append((subject, lastStamp))
        // Stale elements are skipped when they reach the front; compacting bounds them when none do.
        if recency.count > 2 * entries.count + 1024 {
            recency = Deque(recency.filter { entries[$0.subject]?.useStamp == $0.stamp })
        }
    }

    /// Drops the least recently used subject other than `subject`; false when there is none.
    private func dropLeastRecentlyUsed(sparing subject: String) -> Bool {
        var spared: (subject: String, stamp: UInt64)?
        defer { if let spared { recency.prepend(spared) } }
        while let (candidate, stamp) = recency.popFirst() {
            guard entries[candidate]?.useStamp == stamp else { continue }
            if candidate == subject {
                spared = (candidate, stamp)
                continue
            }
            drop(candidate)
            return true
        }
        return false
    }

    private func drop(_ subject: String) {
        guard let entry = entries.removeValue(forKey: subject) else { return }
        release(entry)
        evictedSubjects += 1
        generation += 1
    }

    /// Takes an entry's messages off the totals.
    private func release(_ entry: Entry) {
        bytesHeld -= entry.bytes
        messageCount -= entry.history.count
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
            return answer(.historical, .none, history.suffix(Int(count)).map(\.message))
        case .recover(let clientEpoch, let clientSeq):
            let coveredAfter = entry?.coveredAfter ?? 0
            if backedByKafka {
                // No Kafka offset reaches Int64.max: such a position was never real.
                guard clientSeq < UInt64(Int64.max) else { return answer(.snapshot, .resync, snapshot) }
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
            let missed = entry?.history.lazy.filter { $0.message.seq > clientSeq }.map(\.message) ?? []
            return answer(.recovered, .sync, Array(missed))
        }
    }

    /// The retained snapshots of the subjects `pattern` matches (MQTT wildcard subscribe), at most `limit` of them
    /// and about `maxBytes` of content and headers (the first one always fits). One pass over the subjects held:
    /// those outside the pattern's literal prefix cost one prefix comparison each.
    public func snapshots(matching pattern: SubjectPattern, limit: Int, maxBytes: Int) -> [Message] {
        let prefix = pattern.literalPrefix
        var found: [Message] = []
        var bytes = 0
        for (subject, entry) in entries {
            guard found.count < limit else { break }
            guard let snapshot = entry.snapshot else { continue }
            if let prefix, !subject.hasPrefix(prefix) { continue }
            guard pattern.matches(subject) else { continue }
            bytes += snapshot.byteCount
            if bytes > maxBytes && !found.isEmpty { break }
            found.append(snapshot)
        }
        return found
    }

    /// The answer for a position that cannot be served: the snapshot, if any, and a resync.
    public func resyncReply(to subscribe: Subscribe) -> SubscribeReply {
        let entry = entries[subscribe.subject]
        return SubscribeReply(requestID: subscribe.requestID, subject: subscribe.subject, kind: .snapshot,
                              status: .resync, messages: entry?.snapshot.map { [$0] } ?? [],
                              epoch: entry?.epoch ?? unknownSubjectEpoch, lastSeq: entry?.lastSeq ?? 0)
    }

    /// Drops messages stored more than `maxAge` ago (the history then no longer reaches back past them), and
    /// subjects idle for `maxAge`: no interest, nothing held, nothing stored. `now` only ever grows (monotonic).
    /// Its work is what fell due since the last call, not a walk over every subject.
    public func expire(now: UInt64) {
        guard now > maxAge else { return }
        let oldestKept = now - maxAge
        while let next = historyExpiry.min, next.at < now {
            historyExpiry.removeMin()
            guard entries[next.subject]?.expiryDue == next.at else { continue }
            entries[next.subject]!.expiryDue = nil
            while let stored = entries[next.subject]!.history.first, stored.storedAt < oldestKept {
                dropOldestMessage(from: &entries[next.subject]!)
            }
            scheduleExpiry(next.subject)
            scheduleIdleCheck(next.subject, unusedSince: entries[next.subject]!.lastUsed)
        }
        while let next = idleChecks.first, next.at < now {
            idleChecks.removeFirst()
            guard let entry = entries[next.subject], entry.idleCheckDue == next.at else { continue }
            entries[next.subject]!.idleCheckDue = nil
            if entry.lastUsed < oldestKept {
                if entry.isEmpty { drop(next.subject) }
            } else {
                scheduleIdleCheck(next.subject, unusedSince: entry.lastUsed)  // used since: check again later
            }
        }
    }

    /// Puts a subject with a history in `historyExpiry` for its oldest message, unless it is there already.
    private func scheduleExpiry(_ subject: String) {
        guard let entry = entries[subject], entry.expiryDue == nil, let oldest = entry.history.first else { return }
        let due = oldest.storedAt &+ maxAge
        entries[subject]!.expiryDue = due
        historyExpiry.insert(Due(at: due, subject: subject))
    }

    /// Puts an empty subject in `idleChecks`, unless it is there already. Checks fall due in the order they are
    /// made, each `maxAge` after the subject was last used (a check may come a little late, never early).
    private func scheduleIdleCheck(_ subject: String, unusedSince: UInt64) {
        guard let entry = entries[subject], entry.idleCheckDue == nil, entry.isEmpty else { return }
        let due = max(unusedSince &+ maxAge, idleChecks.last?.at ?? 0)
        entries[subject]!.idleCheckDue = due
        idleChecks.append(Due(at: due, subject: subject))
    }
}
