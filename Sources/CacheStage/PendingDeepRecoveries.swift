import SwitchyardCore

/// Subscribes the cache passed to kafka-in (deep recovery), under the cache's own request ids (ingress ids can
/// collide). Bounded: beyond `capacity` a recovery is not asked (the caller answers it with a resync), and one
/// unanswered for `timeout` is forgotten (the ingress asks again by itself). Times are monotonic nanoseconds.
struct PendingDeepRecoveries {
    private struct Pending {
        let subscribe: Subscribe
        let askedAt: UInt64
    }

    let capacity: Int
    let timeout: UInt64
    private var pending: [UInt64: Pending] = [:]
    private var lastID: UInt64 = 0

    init(capacity: Int, timeout: UInt64) {
        self.capacity = capacity
        self.timeout = timeout
    }

    var count: Int { pending.count }

    /// The id to ask kafka-in under; nil when `capacity` recoveries are pending already.
    mutating func add(_ subscribe: Subscribe, now: UInt64) -> UInt64? {
        guard pending.count < capacity else { return nil }
        lastID &+= 1
        pending[lastID] = Pending(subscribe: subscribe, askedAt: now)
        return lastID
    }

    /// The subscribe kafka-in answered; nil when it was forgotten or never asked.
    mutating func take(_ id: UInt64) -> Subscribe? {
        pending.removeValue(forKey: id)?.subscribe
    }

    /// Forgets what waited `timeout` or longer. An earlier `now` than a recovery's (a clock that went back)
    /// keeps it.
    mutating func expire(now: UInt64) {
        pending = pending.filter { now < $0.value.askedAt || now - $0.value.askedAt < timeout }
    }
}
