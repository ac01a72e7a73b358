import SwitchyardCore

/// The wildcard subscriptions (MQTT `+`, `#`) of one ingress: pattern → subscribed connections, found for a
/// message's subject by a level trie. A pattern's interest is announced to the pipeline once per ingress, with
/// its first subscriber, and withdrawn with its last, as a subject's is. At most `maxPatterns` distinct
/// patterns (`MaxPatternsPerIngress`): every fanout shard keeps them all and looks at them for every message.
///
/// It also remembers the retained-snapshot requests of pattern subscribes (one answer per cache shard) for
/// `retainedRequestTimeout`. No sockets, no clock: times are monotonic nanoseconds passed in.
final class PatternSubscriptions {
    /// How long the answers of the cache shards to a pattern subscribe are taken; later ones are dropped.
    static let retainedRequestTimeout: UInt64 = 10_000_000_000

    private struct RetainedRequest {
        var connectionID: UInt64
        var pattern: SubjectPattern
        var sentAt: UInt64
        /// A cache shard answered: the request no longer holds one of its connection's slots.
        var answered = false
    }

    let ingress: UInt32
    let replyTo: String
    let maxPatterns: Int
    private let matcher = PatternMatcher<UInt64>()
    /// The connections holding at least one pattern.
    private var connections: [UInt64: ClientConnection] = [:]
    private var retainedRequests: [UInt64: RetainedRequest] = [:]
    /// Per connection: its retained requests no cache shard answered yet, and the patterns whose request waits.
    private var unanswered: [UInt64: Int] = [:]
    private var waitingRetained: [UInt64: [SubjectPattern]] = [:]

    init(ingress: UInt32, replyTo: String, maxPatterns: Int) {
        self.ingress = ingress
        self.replyTo = replyTo
        self.maxPatterns = max(maxPatterns, 1)
    }

    /// Distinct patterns subscribed to.
    var count: Int { matcher.count }
    var isEmpty: Bool { matcher.isEmpty }
    var pendingRetainedRequests: Int { retainedRequests.count }

    /// Whether `connection` may subscribe to `pattern`: a pattern the ingress holds already always; a new one
    /// while the ingress holds fewer than `maxPatterns`.
    func admits(_ pattern: SubjectPattern) -> Bool {
        matcher.count < maxPatterns || !matcher.owners(of: pattern).isEmpty
    }

    /// Subscribes `connection` to `pattern` (check `admits` first); the interest to announce when it is the
    /// pattern's first subscriber here.
    func subscribe(_ connection: ClientConnection, to pattern: SubjectPattern) -> [Envelope] {
        connections[connection.id] = connection
        guard matcher.insert(pattern, owner: connection.id) else { return [] }
        return [.patternInterest(PatternInterest(pattern: pattern.text, ingress: ingress, isAdded: true))]
    }

    /// Removes one subscription; `connection` says whether it holds other patterns still.
    func unsubscribe(_ connection: ClientConnection, from pattern: SubjectPattern, holdsOthers: Bool) -> [Envelope] {
        if !holdsOthers { connections[connection.id] = nil }
        guard matcher.remove(pattern, owner: connection.id) else { return [] }
        return [.patternInterest(PatternInterest(pattern: pattern.text, ingress: ingress, isAdded: false))]
    }

    /// Forgets every pattern of a connection that went away.
    func remove(_ connection: ClientConnection, patterns: some Sequence<SubjectPattern>) -> [Envelope] {
        connections[connection.id] = nil
        waitingRetained[connection.id] = nil
        return patterns.flatMap { pattern -> [Envelope] in
            guard matcher.remove(pattern, owner: connection.id) else { return [] }
            return [.patternInterest(PatternInterest(pattern: pattern.text, ingress: ingress, isAdded: false))]
        }
    }

    /// Calls `body` once for each connection with a pattern matching `subject`.
    func forEachSubscriber(of subject: String, _ body: (ClientConnection) -> Void) {
        guard !matcher.isEmpty else { return }
        for id in matcher.owners(matching: subject) {
            if let connection = connections[id] { body(connection) }
        }
    }

    /// Every pattern's interest again, for a stage that (re)started.
    func reannounce() -> [Envelope] {
        matcher.ownersByPattern.keys.map {
            .patternInterest(PatternInterest(pattern: $0.text, ingress: ingress, isAdded: true))
        }
    }

    // MARK: Retained snapshots

    /// Asks every cache shard for the retained snapshots `pattern` matches, for `connection`: at once while the
    /// connection has fewer than `maxInFlight` requests unanswered and is not still being written an answer;
    /// otherwise the request waits (`sendWaitingRetained`), so a client that keeps subscribing to `#` cannot
    /// make the ingress hold more answers for it than its exact subscribes could (`MaxSubscribesInFlight`).
    func requestRetained(for connection: ClientConnection, of pattern: SubjectPattern, maxInFlight: Int,
                         makeRequestID: () -> UInt64, now: UInt64) -> [Envelope] {
        if connection.isPacingAnswer || unanswered[connection.id, default: 0] >= maxInFlight
            || waitingRetained[connection.id] != nil {
            if waitingRetained[connection.id]?.contains(pattern) != true {
                waitingRetained[connection.id, default: []].append(pattern)
            }
            return []
        }
        return [send(for: connection, pattern, requestID: makeRequestID(), now: now)]
    }

    /// The waiting requests of `connection` that may go now, in order; those of patterns it no longer holds
    /// (`holds`) are dropped.
    func sendWaitingRetained(for connection: ClientConnection, maxInFlight: Int, holds: (SubjectPattern) -> Bool,
                             makeRequestID: () -> UInt64, now: UInt64) -> [Envelope] {
        guard var waiting = waitingRetained[connection.id] else { return [] }
        var out: [Envelope] = []
        while !connection.isPacingAnswer, unanswered[connection.id, default: 0] < maxInFlight, !waiting.isEmpty {
            let pattern = waiting.removeFirst()
            if holds(pattern) { out.append(send(for: connection, pattern, requestID: makeRequestID(), now: now)) }
        }
        waitingRetained[connection.id] = waiting.isEmpty ? nil : waiting
        return out
    }

    private func send(for connection: ClientConnection, _ pattern: SubjectPattern, requestID: UInt64,
                      now: UInt64) -> Envelope {
        retainedRequests[requestID] = RetainedRequest(connectionID: connection.id, pattern: pattern, sentAt: now)
        unanswered[connection.id, default: 0] += 1
        return .patternSubscribe(PatternSubscribe(requestID: requestID, replyTo: replyTo, pattern: pattern.text))
    }

    /// Whether `reply` answers a pattern subscribe (true even when its connection is gone: the reply is then
    /// dropped), and the connection to send its snapshots to when it still holds the pattern. The first answer
    /// (of one of the cache shards) frees the request's slot.
    func answer(_ reply: SubscribeReply, holds: (ClientConnection, SubjectPattern) -> Bool)
        -> (isPatternReply: Bool, connection: ClientConnection?) {
        guard var request = retainedRequests[reply.requestID] else { return (false, nil) }
        if !request.answered {
            request.answered = true
            retainedRequests[reply.requestID] = request
            freeSlot(of: request.connectionID)
        }
        guard let connection = connections[request.connectionID], holds(connection, request.pattern) else {
            return (true, nil)
        }
        return (true, connection)
    }

    /// Forgets the requests older than `retainedRequestTimeout` (each cache shard answered, or never will).
    func expireRetainedRequests(now: UInt64) {
        guard !retainedRequests.isEmpty else { return }
        for (requestID, request) in retainedRequests
        where now >= request.sentAt && now - request.sentAt >= Self.retainedRequestTimeout {
            retainedRequests[requestID] = nil
            if !request.answered { freeSlot(of: request.connectionID) }
        }
    }

    private func freeSlot(of connectionID: UInt64) {
        guard let count = unanswered[connectionID] else { return }
        unanswered[connectionID] = count > 1 ? count - 1 : nil
    }
}
