import SwitchyardCore

/// Tells when a producer is stuck: a record timed out (`_MSG_TIMED_OUT`) although the cluster had been answering
/// for at least the record's whole life (`message.timeout.ms`), so the record could have been delivered and was
/// not. Seen with the idempotent producer after a broker restarted empty (its state lost): metadata requests are
/// answered, yet every record times out until the producer is made anew.
///
/// Records that time out while the cluster is away, or that were produced before it came back, do not count.
/// Times are `monotonicNanoseconds()`.
public struct ProducerStallWatch: Sendable {
    private let messageTimeoutMilliseconds: UInt64
    private var reachableSince: UInt64?

    public init(messageTimeoutMilliseconds: UInt64) {
        self.messageTimeoutMilliseconds = messageTimeoutMilliseconds
    }

    /// The cluster started or stopped answering (the producer's `.reachability` events).
    public mutating func reachabilityChanged(_ reachable: Bool, now: UInt64) {
        reachableSince = reachable ? (reachableSince ?? now) : nil
    }

    /// Whether a delivery that failed with `error` at `now` shows the producer stalled.
    public func isStalled(afterFailure error: KafkaError, now: UInt64) -> Bool {
        guard error.code == KafkaError.messageTimedOutCode, let since = reachableSince else { return false }
        return elapsedNanoseconds(from: since, to: now) / 1_000_000 >= messageTimeoutMilliseconds
    }
}
