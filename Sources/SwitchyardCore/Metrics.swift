import Foundation
import NIOConcurrencyHelpers

/// A stage instance's counters, published once a second to `<RunDir>/<stage>-<n>.stats.json` for the
/// supervisor's `status`. Counters are bumped per batch, not per message, so the lock costs nothing that matters.
// @unchecked Sendable: every mutable property is touched only under `lock`.
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
    private var state = "ok"
    private var samples: [Sample] = []
    private let startedAt = Date().timeIntervalSince1970

    public init() {}

    public func countIn(_ count: Int) { lock.withLock { messagesIn += count } }
    public func countOut(_ count: Int) { lock.withLock { messagesOut += count } }
    public func setGauge(_ name: String, _ value: Int) { lock.withLock { gauges[name] = value } }
    public func addToGauge(_ name: String, _ delta: Int) { lock.withLock { gauges[name, default: 0] += delta } }

    /// Marks the instance ready: the supervisor's `start` waits for every instance.
    public func setReady(_ ready: Bool) { lock.withLock { self.ready = ready } }

    /// A short word on the instance's health beyond up/down (e.g. "kafka unreachable"); "ok" by default.
    public func setState(_ state: String) { lock.withLock { self.state = state } }

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
// @unchecked Sendable: both properties are immutable; the timer is rescheduled only on its own serial `queue`.
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
        queue.async { [self] in timer.schedule(deadline: .now(), repeating: 1.0) }
    }

    deinit {
        timer.cancel()
    }
}

/// Renders the stats files of every stage instance in a run dir as Prometheus text (served by ws-ingress at
/// `/metrics`): one family per figure, labelled `stage` and `stage_instance` (not `instance`: Prometheus sets that
/// label to the scraped target).
public enum PrometheusExposition {
    public static func render(runDir: String) -> String {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: runDir)) ?? []
        let stats: [[String: Any]] = files.filter { $0.hasSuffix(".stats.json") }.sorted().compactMap { name in
            let path = (runDir as NSString).appendingPathComponent(name)
            guard let data = FileManager.default.contents(atPath: path) else { return nil }
            return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        }
        return render(stats: stats, now: Date().timeIntervalSince1970)
    }

    static func render(stats: [[String: Any]], now: Double) -> String {
        var families: [String: (type: String, help: String, samples: [String])] = [:]
        func add(_ name: String, _ type: String, _ help: String, _ labels: String, _ value: Double) {
            families[name, default: (type, help, [])].samples.append("\(name){\(labels)} \(value)")
        }
        for object in stats {
            guard let stage = object["stage"] as? String, let instance = object["instance"] as? Int else { continue }
            let labels = "stage=\"\(stage)\",stage_instance=\"\(instance)\""
            for (key, value) in object {
                guard let number = value as? NSNumber, String(cString: number.objCType) != "c" else { continue }
                switch key {
                case "instance", "pid": continue
                case "messagesIn":
                    add("switchyard_messages_in_total", "counter", "Envelopes received", labels, number.doubleValue)
                case "messagesOut":
                    add("switchyard_messages_out_total", "counter", "Envelopes sent", labels, number.doubleValue)
                case "startedAt":
                    add("switchyard_uptime_seconds", "gauge", "Seconds since the instance started", labels,
                        now - number.doubleValue)
                default:
                    add("switchyard_" + snakeCase(key), "gauge", "Stage figure \(key)", labels, number.doubleValue)
                }
            }
            add("switchyard_ready", "gauge", "1 when the instance is ready", labels,
                (object["ready"] as? Bool ?? false) ? 1 : 0)
        }
        var text = ""
        for name in families.keys.sorted() {
            let family = families[name]!
            text += "# HELP \(name) \(family.help)\n# TYPE \(name) \(family.type)\n"
            text += family.samples.joined(separator: "\n") + "\n"
        }
        return text
    }

    static func snakeCase(_ name: String) -> String {
        var result = ""
        for character in name {
            if character.isUppercase {
                result += "_" + character.lowercased()
            } else {
                result.append(character)
            }
        }
        return result
    }
}
