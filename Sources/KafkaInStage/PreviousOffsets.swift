import SwitchyardCore

/// The offset of each subject's last record forwarded, per epoch, so every message can carry its
/// `previousSeq`: Kafka offsets have holes (other keys' records), so only this tells a loss downstream from a
/// record that simply is not there.
///
/// Bounded: past `capacity` subjects it starts afresh, and records then carry "unknown" (0) until seen again.
final class PreviousOffsets {
    private struct Key: Hashable {
        var epoch: String
        var subject: String
    }

    static let capacity = 200_000
    private var last: [Key: UInt64] = [:]

    /// The previous record's offset for `message` (0 when unknown), and remembers `message` as the last one.
    /// A record read again (warm-up, resume) is not a successor of anything: 0, and nothing changes.
    func previous(of message: Message) -> UInt64 {
        let key = Key(epoch: message.epoch, subject: message.subject)
        let previous = last[key]
        if let previous, message.seq <= previous { return 0 }
        if previous == nil && last.count >= Self.capacity { last.removeAll(keepingCapacity: true) }
        last[key] = message.seq
        return previous ?? 0
    }
}
