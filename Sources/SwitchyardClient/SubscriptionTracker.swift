/// The subscriber's side of recovery, without sockets: which subjects to subscribe to on a (new) connection and
/// how (`recover` from the last position, or `history` the first time), and which messages to deliver.
///
/// Across a reconnect nothing is missed (the server recovers from the position, or answers DATA_RESYNC) and
/// nothing is delivered twice (a message at or before the position of its epoch is dropped).
public struct SubscriptionTracker: Sendable {
    /// The subjects still subscribed, in the order given.
    public private(set) var subjects: [String]
    /// The `history` count asked for on a subject's first subscribe (0: the retained snapshot).
    public let history: Int
    private var positions: [String: StreamPosition] = [:]

    public init(subjects: [String], history: Int = 0) {
        var seen = Set<String>()
        self.subjects = subjects.filter { seen.insert($0).inserted }
        self.history = max(history, 0)
    }

    /// The last delivered message's position on `subject`, if any.
    public func position(of subject: String) -> StreamPosition? { positions[subject] }

    /// The subscribe frames for a new connection: one that recovers the subjects with a position, one that
    /// subscribes the others afresh (with `history`).
    public func subscribeRequests() -> [ClientRequest] {
        var recover: [String: StreamPosition] = [:]
        var recovering: [String] = []
        var fresh: [String] = []
        for subject in subjects {
            if let position = positions[subject] {
                recover[subject] = position
                recovering.append(subject)
            } else {
                fresh.append(subject)
            }
        }
        var requests: [ClientRequest] = []
        if !recovering.isEmpty { requests.append(.subscribe(subjects: recovering, history: 0, recover: recover)) }
        if !fresh.isEmpty { requests.append(.subscribe(subjects: fresh, history: history, recover: [:])) }
        return requests
    }

    /// Whether `message` is to be delivered; if so, it becomes its subject's position. Messages of subjects not
    /// subscribed, without a seq or epoch, or already delivered are not.
    public mutating func accept(_ message: ServerFrame) -> Bool {
        guard message.op == "message", let subject = message.subject, let seq = message.seq,
              let epoch = message.epoch, subjects.contains(subject) else { return false }
        if let last = positions[subject], last.epoch == epoch, seq <= last.seq { return false }
        positions[subject] = StreamPosition(epoch: epoch, seq: seq)
        return true
    }

    /// The server refused `subject` (DENY or INVALID): it is no longer subscribed.
    public mutating func remove(_ subject: String) {
        subjects.removeAll { $0 == subject }
        positions[subject] = nil
    }
}

/// Reconnect delays: exponential from `minDelay` up to `maxDelay` with "equal jitter" (half fixed, half random),
/// reset by a connection that worked; a 1012 close ("restarting: reconnect elsewhere") reconnects at once.
public struct ReconnectBackoff: Sendable {
    public static let reconnectNowCloseCode: UInt16 = 1012

    public let minDelayMs: Int
    public let maxDelayMs: Int
    private var failures = 0

    public init(minDelayMs: Int = 250, maxDelayMs: Int = 10_000) {
        self.minDelayMs = max(minDelayMs, 1)
        self.maxDelayMs = max(maxDelayMs, self.minDelayMs)
    }

    /// The delay before the next attempt, in milliseconds. `random` returns a value in [0, 1).
    public mutating func nextDelayMs(closeCode: UInt16?, wasConnected: Bool,
                                     random: () -> Double = { Double.random(in: 0..<1) }) -> Int {
        if closeCode == Self.reconnectNowCloseCode {
            failures = 0
            return Int(random() * Double(minDelayMs))
        }
        if wasConnected { failures = 0 }
        let exponential = min(Double(maxDelayMs), Double(minDelayMs) * pow2(min(failures, 30)))
        failures += 1
        return Int(exponential / 2 + random() * exponential / 2)
    }

    private func pow2(_ exponent: Int) -> Double { Double(1 << exponent) }
}
