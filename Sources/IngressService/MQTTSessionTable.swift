import IngressStage

/// The sessions of the Kafka session topic as one ws-ingress instance knows them: the records read, with this
/// instance's own writes applied at once (read-your-writes). No I/O: unit-tested.
///
/// The topic's order decides (the last write wins), except that a record of an older `generation` than the one
/// held is not applied (a save from a connection the session was taken from, still open on another node). An own
/// write is applied when written; until it is read back, records of that client read before it are older in the
/// topic's order and skipped (unless of a newer generation), so the table does not go back to an older state.
struct MQTTSessionTable {
    /// What `write` did.
    enum Written: Equatable {
        case applied
        /// A new session beyond `MqttMaxSessions`: not kept.
        case noRoom
        /// The table holds a newer generation: the session was taken up elsewhere; this save is not written.
        case takenOver
        /// A delete of a session the table does not hold (every clean CONNECT deletes): no tombstone needed.
        case nothingToDelete
    }

    let maxSessions: Int
    private(set) var records: [String: MQTTSessionRecord] = [:]
    /// Own writes not read back yet: client → the id of the latest.
    private var unreadOwnWrites: [String: UInt64] = [:]

    init(maxSessions: Int) {
        self.maxSessions = maxSessions
    }

    func hasRoom(for clientID: String) -> Bool {
        records[clientID] != nil || records.count < maxSessions
    }

    /// What a CONNECT of `clientID` finds; an expired session is dropped.
    mutating func load(_ clientID: String, now: Double) -> MQTTSessionLoaded {
        if let record = records[clientID], record.expiresAt <= now { records[clientID] = nil }
        return MQTTSessionLoaded(record: records[clientID], hasRoom: hasRoom(for: clientID))
    }

    /// This instance writes `record` (nil: deletes) as write `id`; unless `.applied`, nothing is to be written.
    /// `isCaughtUp`: the table has read the topic to its end once, so a session it does not hold is not there.
    mutating func write(_ clientID: String, _ record: MQTTSessionRecord?, id: UInt64,
                        isCaughtUp: Bool = true) -> Written {
        if let record {
            guard hasRoom(for: clientID) else { return .noRoom }
            guard !isOlder(record, than: records[clientID]) else { return .takenOver }
        } else if isCaughtUp && records[clientID] == nil && unreadOwnWrites[clientID] == nil {
            return .nothingToDelete
        }
        records[clientID] = record
        unreadOwnWrites[clientID] = id
        return .applied
    }

    private func isOlder(_ record: MQTTSessionRecord, than held: MQTTSessionRecord?) -> Bool {
        guard let held else { return false }
        return record.generation ?? 0 < held.generation ?? 0
    }

    /// Own write `id` will not be read back (it failed).
    mutating func writeFailed(_ clientID: String, id: UInt64) {
        if unreadOwnWrites[clientID] == id { unreadOwnWrites[clientID] = nil }
    }

    /// A record read from the topic (nil: a tombstone); `ownID`: the id of this instance's write it is.
    mutating func read(_ clientID: String, _ record: MQTTSessionRecord?, ownID: UInt64?, now: Double) {
        if let latest = unreadOwnWrites[clientID] {
            if let ownID, ownID >= latest {
                unreadOwnWrites[clientID] = nil  // our latest write: applied when written
                return
            }
            // Before our latest write in the topic: older than what the table holds, unless a newer generation.
            guard let record, let held = records[clientID], isOlder(held, than: record) else { return }
        }
        guard let record, record.expiresAt > now else {
            records[clientID] = nil
            return
        }
        guard !isOlder(record, than: records[clientID]) else { return }
        if hasRoom(for: clientID) { records[clientID] = record }
    }

    /// Drops the expired sessions; returns their clients (to be deleted from the topic).
    mutating func removeExpired(now: Double) -> [String] {
        let expired = records.filter { $0.value.expiresAt <= now }.map(\.key).sorted()
        for clientID in expired { records[clientID] = nil }
        return expired
    }
}

/// Whether the session topic was read up to the end it had when reading began: every partition assigned at the
/// first assignment reached its end once. No I/O: unit-tested.
struct MQTTSessionCatchUp {
    /// nil until the first assignment.
    private var remaining: Set<Int32>?
    private(set) var isDone = false

    /// Returns true when this completes the catch-up.
    mutating func assigned(_ partitions: [Int32]) -> Bool {
        guard !isDone, remaining == nil else { return false }
        remaining = Set(partitions)
        return check()
    }

    /// Returns true when this completes the catch-up.
    mutating func reachedEnd(of partition: Int32) -> Bool {
        guard !isDone, remaining != nil else { return false }
        remaining?.remove(partition)
        return check()
    }

    /// The topic was just created by this instance: there is nothing to read.
    mutating func topicCreated() -> Bool {
        guard !isDone else { return false }
        isDone = true
        return true
    }

    private mutating func check() -> Bool {
        guard remaining?.isEmpty == true else { return false }
        isDone = true
        return true
    }
}
