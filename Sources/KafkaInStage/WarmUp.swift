import SwitchyardCore
import SwitchyardKafka

/// Decides when kafka-in is ready: once the caches hold the warm-up window, so a node answers snapshots and
/// history from its first subscriber on. The supervisor starts ws-ingress only after that.
///
/// Ready when every partition assigned at start has been read to its end, when Kafka answered but offers
/// nothing to consume yet, when Kafka is unreachable (the node must not wait for it), or after `maxWait`.
struct WarmUp {
    /// Longest a start waits for the warm-up.
    static let maxWait: UInt64 = 15_000_000_000
    /// How long after Kafka first answered an assignment may still come.
    static let assignmentGrace: UInt64 = 1_000_000_000

    enum Event {
        case assigned([KafkaTopicPartition])
        case caughtUp(KafkaTopicPartition)
        case reachable(Bool)
    }

    private let startedAt: UInt64
    private var waitingFor: Set<KafkaTopicPartition>?
    private var reachableAt: UInt64?
    private(set) var isDone = false
    private(set) var reason = ""

    init(now: UInt64) {
        startedAt = now
    }

    /// Returns true when this event finished the warm-up.
    mutating func note(_ event: Event, now: UInt64) -> Bool {
        guard !isDone else { return false }
        switch event {
        case .assigned(let partitions):
            if waitingFor == nil { waitingFor = Set(partitions) }
        case .caughtUp(let partition):
            waitingFor?.remove(partition)
        case .reachable(let reachable):
            if !reachable { return finish("Kafka is unreachable; warming up when it is back") }
            if reachableAt == nil { reachableAt = now }
        }
        if waitingFor?.isEmpty == true { return finish("caches warm") }
        return false
    }

    /// Returns true when time alone finished the warm-up.
    mutating func tick(now: UInt64) -> Bool {
        guard !isDone else { return false }
        if waitingFor == nil, let reachableAt, elapsedNanoseconds(from: reachableAt, to: now) >= Self.assignmentGrace {
            return finish("nothing to consume yet")
        }
        if elapsedNanoseconds(from: startedAt, to: now) >= Self.maxWait { return finish("warm-up still running after 15 s") }
        return false
    }

    private mutating func finish(_ reason: String) -> Bool {
        isDone = true
        self.reason = reason
        return true
    }
}
