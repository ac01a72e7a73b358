import DequeModule
import Foundation
import SwitchyardCore

/// Which deep recoveries run, wait or are refused: pure bookkeeping (no threads), so merging and bounds are
/// tested directly.
///
/// Requests for the same read (subject, partition epoch and position) share one read and one answer. At most
/// `maxRunning` reads run and as many again wait; a request beyond that is refused, and its caller answers
/// it with a resync at once rather than keep it waiting for longer than the cache would wait.
struct DeepRecoveryQueue {
    /// What one read of Kafka answers.
    struct Read: Hashable {
        let subject: String
        let epoch: String
        let after: UInt64
    }

    enum Admission: Equatable {
        /// A new read, waiting for a worker.
        case queued
        /// Joined a read already waiting or running.
        case merged
        /// Too many reads in flight, or too many requests on one read: answer with a resync now.
        case refused
    }

    /// Requests that may share one read: beyond this a request is refused.
    static let maxRequestsPerRead = 1024

    let maxRunning: Int
    private var waiting = Deque<Read>()
    private var running = 0
    private var requests: [Read: [Subscribe]] = [:]

    init(maxRunning: Int) {
        self.maxRunning = max(1, maxRunning)
    }

    /// Reads waiting or running.
    var inFlight: Int { requests.count }
    var waitingCount: Int { waiting.count }

    /// Only recoveries (`.recover` starts) make a read; anything else has no `Read`.
    static func read(for request: Subscribe) -> Read? {
        guard case .recover(let epoch, let seq) = request.start else { return nil }
        return Read(subject: request.subject, epoch: epoch, after: seq)
    }

    mutating func admit(_ request: Subscribe, as read: Read) -> Admission {
        if requests[read] != nil {
            guard requests[read]!.count < Self.maxRequestsPerRead else { return .refused }
            requests[read]!.append(request)
            return .merged
        }
        guard waiting.count < maxRunning else { return .refused }
        requests[read] = [request]
        waiting.append(read)
        return .queued
    }

    /// The next read for an idle worker, counted as running until `finish`.
    mutating func start() -> Read? {
        guard running < maxRunning, let read = waiting.popFirst() else { return nil }
        running += 1
        return read
    }

    /// The requests of a read in flight, oldest first.
    func requestsOf(_ read: Read) -> [Subscribe] { requests[read] ?? [] }

    /// Ends a running read: returns every request it answers (the merged ones included).
    mutating func finish(_ read: Read) -> [Subscribe] {
        running = max(0, running - 1)
        return requests.removeValue(forKey: read) ?? []
    }
}

/// Runs deep recoveries on `JoinableThread`s of its own, so kafka-in's pipeline thread never waits on Kafka: a fixed
/// number of workers take reads from a `DeepRecoveryQueue`, and answer every request of a read through
/// `answer` (kafka-in's reply outbox).
// @unchecked Sendable: `queue` and `stopped` are touched only under `condition`'s lock; the closures are @Sendable;
// `workers` is set in init and read in `stop` only.
final class DeepRecoveryWorker: @unchecked Sendable {
    typealias Perform = @Sendable (DeepRecoveryQueue.Read, Subscribe) -> SubscribeReply
    typealias Answer = @Sendable (SubscribeReply, [Subscribe]) -> Void

    private let condition = NSCondition()
    private var queue: DeepRecoveryQueue
    private var stopped = false
    private let perform: Perform
    private let answer: Answer
    private var workers: [JoinableThread] = []

    /// - Parameters:
    ///   - maxRunning: worker threads, i.e. reads at once (`MaxDeepRecoveries`); as many more may wait.
    ///   - perform: reads Kafka (blocking) for the first request of a read.
    ///   - answer: sends the reply to every request of the read (their ids and addresses differ).
    init(maxRunning: Int, perform: @escaping Perform, answer: @escaping Answer) {
        queue = DeepRecoveryQueue(maxRunning: maxRunning)
        self.perform = perform
        self.answer = answer
        workers = (0..<queue.maxRunning).map { index in
            JoinableThread(name: "deep-recovery-\(index)") { [weak self] _ in self?.work() }
        }
    }

    /// Takes a recovery request; `.refused` ones are the caller's to answer (with a resync).
    func submit(_ request: Subscribe) -> DeepRecoveryQueue.Admission {
        guard let read = DeepRecoveryQueue.read(for: request) else { return .refused }
        condition.lock()
        defer { condition.unlock() }
        guard !stopped else { return .refused }
        let admission = queue.admit(request, as: read)
        if admission == .queued { condition.signal() }
        return admission
    }

    /// Reads in flight (waiting or running), for the metrics.
    var inFlight: Int {
        condition.lock()
        defer { condition.unlock() }
        return queue.inFlight
    }

    /// Workers finish the read they are in (readers give up when the stage stops), take no more, and have
    /// returned when this returns.
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
        for worker in workers { worker.stop() }
    }

    private func work() {
        while true {
            condition.lock()
            var next = queue.start()
            while next == nil && !stopped {
                condition.wait()
                next = queue.start()
            }
            guard let read = next, !stopped else {
                condition.unlock()
                return
            }
            let first = queue.requestsOf(read).first
            condition.unlock()
            let reply = first.map { perform(read, $0) }
            condition.lock()
            let requests = queue.finish(read)
            condition.unlock()
            if let reply { answer(reply, requests) }
        }
    }
}
