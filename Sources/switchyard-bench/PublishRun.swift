import NIOCore
import SwitchyardCore

/// The run of one publisher connection, shared by the v1 and the peer publishers: from `start` until `stop`
/// (monotonic nanoseconds), its pump called every `period` on the channel's event loop. Loop-confined.
final class PublishRun {
    private(set) var isRunning = false
    private(set) var startedAt: UInt64 = 0
    private(set) var stopAt: UInt64 = 0
    private var timer: RepeatedTask?

    /// Schedules the run; must be called on `eventLoop`.
    func start(on eventLoop: EventLoop, from start: UInt64, until stop: UInt64, every period: TimeAmount,
               pump: @escaping () -> Void) {
        startedAt = start
        stopAt = stop
        // One clock reading: a start that passed meanwhile is a delay of 0, never an underflow.
        let delay = Int64(clamping: elapsedNanoseconds(from: monotonicNanos(), to: start))
        let run = NIOLoopBound(self, eventLoop: eventLoop)
        let pump = NIOLoopBound(pump, eventLoop: eventLoop)
        eventLoop.scheduleTask(in: .nanoseconds(delay)) {
            run.value.isRunning = true
            run.value.timer = eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: period) { task in
                guard run.value.isRunning else { return task.cancel() }
                pump.value()
            }
        }
    }

    /// Whether the run goes on at `now`; ends it once `now` reaches `stopAt`.
    func goesOn(at now: UInt64) -> Bool {
        if now >= stopAt { isRunning = false }
        return isRunning
    }

    /// Publishes due at `now` for `ratePerSecond`, `sent` of them made so far: at most 100 ms worth after a
    /// stall; the ones skipped beyond that are added to `sent` and returned as `skipped`.
    func due(at now: UInt64, ratePerSecond: Double, sent: inout UInt64) -> (owed: UInt64, skipped: UInt64) {
        let due = UInt64(Double(elapsedNanoseconds(from: startedAt, to: now)) * ratePerSecond / 1e9)
        guard due > sent else { return (0, 0) }
        let owed = due - sent
        let cap = UInt64(max(ratePerSecond / 10, 1))
        guard owed > cap else { return (owed, 0) }
        sent += owed - cap
        return (cap, owed - cap)
    }

    /// Stops the timer (the connection went away).
    func cancel() {
        isRunning = false
        timer?.cancel()
    }
}
