/// Publishes with a closure (or an MQTT packet identifier) that wait for their acknowledgement, each with a
/// deadline (monotonic nanoseconds).
struct PendingPublishes {
    struct Entry: Equatable {
        let connectionID: UInt64
        let closure: String
        /// Set for an MQTT publish: answered with a PUBACK instead of a `publish_status`.
        var mqtt: MQTTPublishReceipt? = nil
        /// When the publish was sent on (monotonic nanoseconds): for the publish → ack latency.
        let sentAt: UInt64
        let deadline: UInt64
    }

    let timeoutNanoseconds: UInt64
    private var entries: [UInt64: Entry] = [:]

    init(timeoutSeconds: Int) {
        timeoutNanoseconds = UInt64(clamping: min(timeoutSeconds, 365 * 86_400)) * 1_000_000_000
    }

    var count: Int { entries.count }

    mutating func add(requestID: UInt64, connectionID: UInt64, closure: String, mqtt: MQTTPublishReceipt? = nil,
                      now: UInt64) {
        let (deadline, overflow) = now.addingReportingOverflow(timeoutNanoseconds)
        entries[requestID] = Entry(connectionID: connectionID, closure: closure, mqtt: mqtt, sentAt: now,
                                   deadline: overflow ? .max : deadline)
    }

    /// The publish `requestID` was answered: its entry, once.
    mutating func acknowledge(_ requestID: UInt64) -> Entry? {
        entries.removeValue(forKey: requestID)
    }

    /// Removes and returns the publishes whose deadline passed.
    mutating func expire(now: UInt64) -> [Entry] {
        let expired = entries.filter { $0.value.deadline <= now }
        for requestID in expired.keys { entries[requestID] = nil }
        return Array(expired.values)
    }
}
