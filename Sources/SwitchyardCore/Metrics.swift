import Foundation
import NIOConcurrencyHelpers

/// A stage instance's counters, published once a second to `<RunDir>/<stage>-<n>.stats.json` for the
/// supervisor's `status`. Counters are bumped per batch, not per message, so the lock costs nothing that matters.
public final class StageMetrics: @unchecked Sendable {
    private struct Sample {
        var time: Double
        var messagesIn: Int
        var messagesOut: Int
    }

    private let lock = NIOLock()
    private var messagesIn = 0
    private var messagesOut = 0
    private var gauges: [String: Int] = ["queueDepth": 0, "connections": 0]
    private var ready = false
    private var state = "starting"
    private var samples: [Sample] = []
    private let startedAt = Date().timeIntervalSince1970

    public init() {}

    public func countIn(_ count: Int) { lock.withLock { messagesIn += count } }
    public func countOut(_ count: Int) { lock.withLock { messagesOut += count } }
    public func setGauge(_ name: String, _ value: Int) { lock.withLock { gauges[name] = value } }
    public func addToGauge(_ name: String, _ delta: Int) { lock.withLock { gauges[name, default: 0] += delta } }

    /// Marks the instance ready (the supervisor's `start` waits for every instance) with a short state word.
    public func setState(_ state: String, ready: Bool) {
        lock.withLock {
            self.state = state
            self.ready = ready
        }
    }

    public var totals: (messagesIn: Int, messagesOut: Int) { lock.withLock { (messagesIn, messagesOut) } }

    func snapshot(stage: String, instance: Int, now: Double = Date().timeIntervalSince1970) -> [String: Any] {
        lock.withLock {
            samples.append(Sample(time: now, messagesIn: messagesIn, messagesOut: messagesOut))
            samples.removeAll { now - $0.time > 10.5 }
            let oldest = samples.first!
            let span = max(now - oldest.time, 1)
            var object: [String: Any] = [
                "stage": stage, "instance": instance, "pid": Int(getpid()), "ready": ready, "state": state,
                "startedAt": startedAt, "messagesIn": messagesIn, "messagesOut": messagesOut,
                "rateIn": Double(messagesIn - oldest.messagesIn) / span,
                "rateOut": Double(messagesOut - oldest.messagesOut) / span,
            ]
            for (name, value) in gauges { object[name] = value }
            return object
        }
    }
}

/// Writes a stage's stats file once a second on a timer of its own.
public final class StatsPublisher: @unchecked Sendable {
    private let timer: DispatchSourceTimer
    private let queue = DispatchQueue(label: "switchyard.stats")

    public init(metrics: StageMetrics, stage: String, instance: Int, runDir: String) {
        let path = (runDir as NSString).appendingPathComponent("\(stage)-\(instance).stats.json")
        timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now(), repeating: 1.0)
        timer.setEventHandler {
            let object = metrics.snapshot(stage: stage, instance: instance)
            guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
            try? data.write(to: URL(fileURLWithPath: path), options: .atomic)
        }
        timer.resume()
    }

    /// Writes the current figures at once (e.g. right after becoming ready).
    public func publishNow() {
        queue.async { [timer] in timer.schedule(deadline: .now(), repeating: 1.0) }
    }

    deinit {
        timer.cancel()
    }
}
