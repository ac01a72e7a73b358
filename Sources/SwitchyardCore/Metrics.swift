import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import Prometheus

/// A stage instance's figures. The counters and gauges are published once a second to
/// `<RunDir>/<stage>-<n>.stats.json` for the supervisor's `status`, and copied at the same moment into the
/// instance's swift-metrics (its `factory`), whose registry the `StatsPublisher` writes as Prometheus text.
/// Counters are bumped per batch, not per message, so the lock costs nothing that matters.
// @unchecked Sendable: every mutable property, and `exported` (not thread-safe), is touched only under `lock`.
public final class StageMetrics: @unchecked Sendable {
    private struct Sample {
        var time: Double
        var messagesIn: Int
        var messagesOut: Int
    }

    /// Makes every swift-metrics metric of this instance (`StageMetricsFactory` in a stage; no-op in unit tests).
    public let factory: any MetricsFactory
    /// Envelopes per received batch.
    private let batchEnvelopes: CoreMetrics.Recorder
    private let lock = NIOLock()
    private var messagesIn = 0
    private var messagesOut = 0
    private var gauges: [String: Int] = ["queueDepth": 0, "connections": 0]
    private var ready = false
    private var state = "ok"
    private var samples: [Sample] = []
    private let startedAt = Date().timeIntervalSince1970
    private let exported: ExportedFigures

    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance) {
        self.factory = factory
        batchEnvelopes = CoreMetrics.Recorder(label: MetricName.batchEnvelopes, aggregate: true, factory: factory)
        exported = ExportedFigures(factory: factory)
    }

    public func countIn(_ count: Int) { lock.withLock { messagesIn += count } }
    public func countOut(_ count: Int) { lock.withLock { messagesOut += count } }
    public func setGauge(_ name: String, _ value: Int) { lock.withLock { gauges[name] = value } }
    public func addToGauge(_ name: String, _ delta: Int) { lock.withLock { gauges[name, default: 0] += delta } }

    /// Counts a received batch of `envelopes` and records its size.
    public func countReceivedBatch(_ envelopes: Int) {
        countIn(envelopes)
        batchEnvelopes.record(envelopes)
    }

    /// A latency histogram (seconds, `StageMetricsFactory.latencyBuckets`) of this instance.
    public func makeTimer(_ name: String) -> CoreMetrics.Timer {
        CoreMetrics.Timer(label: name, factory: factory)
    }

    /// Marks the instance ready: the supervisor's `start` waits for every instance.
    public func setReady(_ ready: Bool) { lock.withLock { self.ready = ready } }

    /// A short word on the instance's health beyond up/down (e.g. "kafka unreachable"); "ok" by default.
    public func setState(_ state: String) { lock.withLock { self.state = state } }

    /// The stats file; brings the swift-metrics copies of its figures up to date on the way.
    func snapshot(stage: String, instance: Int, now: Double = Date().timeIntervalSince1970) -> StageStatsFile {
        lock.withLock {
            let current = Sample(time: now, messagesIn: messagesIn, messagesOut: messagesOut)
            samples.append(current)
            samples.removeAll { now - $0.time > 10.5 }
            let oldest = samples.first ?? current
            let span = max(now - oldest.time, 1)
            let rateIn = Double(messagesIn - oldest.messagesIn) / span
            let rateOut = Double(messagesOut - oldest.messagesOut) / span
            exported.update(messagesIn: messagesIn, messagesOut: messagesOut, rateIn: rateIn, rateOut: rateOut,
                            uptime: now - startedAt, ready: ready, gauges: gauges)
            return StageStatsFile(stage: stage, instance: instance, pid: Int(getpid()), ready: ready, state: state,
                                  startedAt: startedAt, messagesIn: messagesIn, messagesOut: messagesOut,
                                  rateIn: rateIn, rateOut: rateOut, figures: gauges)
        }
    }
}

/// The stats file's figures as swift-metrics: `switchyard_messages_in_total` and `_out_total` (counters),
/// `switchyard_rate_in`/`_out`, `switchyard_uptime_seconds`, `switchyard_ready` and one gauge per stage figure
/// (`queueDepth` → `switchyard_queue_depth`). Not thread-safe: `StageMetrics` calls it under its lock.
private final class ExportedFigures {
    private let factory: any MetricsFactory
    private let messagesIn: CoreMetrics.Counter
    private let messagesOut: CoreMetrics.Counter
    private var messagesInSoFar = 0
    private var messagesOutSoFar = 0
    private var gauges: [String: CoreMetrics.Gauge] = [:]

    init(factory: any MetricsFactory) {
        self.factory = factory
        messagesIn = CoreMetrics.Counter(label: "switchyard_messages_in_total", factory: factory)
        messagesOut = CoreMetrics.Counter(label: "switchyard_messages_out_total", factory: factory)
    }

    func update(messagesIn inTotal: Int, messagesOut outTotal: Int, rateIn: Double, rateOut: Double,
                uptime: Double, ready: Bool, gauges figures: [String: Int]) {
        // The stats counters only grow; a counter takes the difference since the last update.
        messagesIn.increment(by: max(0, inTotal - messagesInSoFar))
        messagesOut.increment(by: max(0, outTotal - messagesOutSoFar))
        messagesInSoFar = max(messagesInSoFar, inTotal)
        messagesOutSoFar = max(messagesOutSoFar, outTotal)
        gauge("switchyard_rate_in").record(rateIn)
        gauge("switchyard_rate_out").record(rateOut)
        gauge("switchyard_uptime_seconds").record(uptime)
        gauge("switchyard_ready").record(ready ? 1 : 0)
        for (name, value) in figures { gauge("switchyard_" + Self.snakeCase(name)).record(value) }
    }

    private func gauge(_ name: String) -> CoreMetrics.Gauge {
        if let existing = gauges[name] { return existing }
        let made = CoreMetrics.Gauge(label: name, factory: factory)
        gauges[name] = made
        return made
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

/// The names of the histograms (the stats figures' names follow from their keys, see `ExportedFigures`).
public enum MetricName {
    /// ws-ingress: a publish with a closure (or an MQTT QoS 1/2 publish) sent → its acknowledgement arrived.
    public static let publishAckSeconds = "switchyard_publish_ack_seconds"
    /// Router, cache, fanout, kafka-out, kafka-in: a batch received → what it caused sent on.
    public static let hopSeconds = "switchyard_hop_seconds"
    /// Every stage: envelopes per received batch.
    public static let batchEnvelopes = "switchyard_batch_envelopes"
    /// kafka-out: a publish that wants an acknowledgement produced → its delivery report.
    public static let kafkaProduceSeconds = "switchyard_kafka_produce_seconds"
    /// kafka-in: a consumed batch's first record's timestamp → the batch handed to the router.
    public static let kafkaConsumeSeconds = "switchyard_kafka_consume_seconds"
}

/// The swift-metrics factory of one stage instance: Prometheus metrics in the instance's own registry, every one
/// labelled `stage` and `stage_instance` (not `instance`: Prometheus sets that label to the scraped target).
public enum StageMetricsFactory {
    /// Latency buckets, 50 µs to 10 s.
    public static let latencyBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]
    /// Batch size buckets: powers of two from 1 to 4096 envelopes.
    public static let batchSizeBuckets: [Double] = (0...12).map { Double(1 << $0) }

    public static func make(stage: String, instance: Int, registry: PrometheusCollectorRegistry)
        -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = latencyBuckets
        factory.defaultValueHistogramBuckets = batchSizeBuckets
        let own = [("stage", stage), ("stage_instance", String(instance))]
        factory.nameAndLabelSanitizer = { name, labels in
            (name, labels.filter { label in !own.contains { $0.0 == label.0 } } + own)
        }
        return factory
    }
}

/// Writes a stage's stats file and its Prometheus file (`<stage>-<n>.prom`, the registry's exposition) once a
/// second on a timer of its own. Both are written atomically (a new file renamed over the old).
// @unchecked Sendable: every property is immutable; the timer is rescheduled only on its own serial `queue`.
public final class StatsPublisher: @unchecked Sendable {
    private let timer: DispatchSourceTimer
    private let queue = DispatchQueue(label: "switchyard.stats")

    public init(metrics: StageMetrics, registry: PrometheusCollectorRegistry, stage: String, instance: Int,
                runDir: String) {
        let statsPath = (runDir as NSString).appendingPathComponent(StageStatsFile.name(stage: stage, instance: instance))
        let promPath = (runDir as NSString).appendingPathComponent("\(stage)-\(instance).prom")
        timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now(), repeating: 1.0)
        timer.setEventHandler {
            try? metrics.snapshot(stage: stage, instance: instance).write(to: statsPath)
            try? Data(registry.emitToBuffer()).write(to: URL(fileURLWithPath: promPath), options: .atomic)
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

/// Merges the Prometheus files (`*.prom`) of every stage instance in a run dir into one exposition, served by
/// ws-ingress at `/metrics`: one `# HELP`/`# TYPE` per family, all samples of a family together, families sorted.
public enum PrometheusExposition {
    /// A file not rewritten for this long belongs to an instance that is gone (scaled down, stopped) or hung: its
    /// last figures are left out rather than shown as current (a live instance rewrites its file every second).
    public static let staleAfterSeconds = 10.0

    public static func render(runDir: String, now: Date = Date()) -> String {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: runDir)) ?? []
        let texts: [String] = files.filter { $0.hasSuffix(".prom") }.sorted().compactMap { name in
            let path = (runDir as NSString).appendingPathComponent(name)
            guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
                  now.timeIntervalSince(modified) <= staleAfterSeconds else { return nil }
            return FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
        }
        return merge(texts)
    }

    /// One exposition from several. A family typed differently in a later text keeps its first type and loses
    /// that text's samples; lines outside a `# TYPE`d family (or not of its name) are dropped.
    static func merge(_ texts: [String]) -> String {
        var families: [String: (type: String, samples: [Substring])] = [:]
        for text in texts {
            var current: String?
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                if line.hasPrefix("# TYPE ") {
                    let parts = line.split(separator: " ")
                    guard parts.count == 4 else { current = nil; continue }
                    let name = String(parts[2]), type = String(parts[3])
                    if let known = families[name], known.type != type {
                        current = nil
                    } else {
                        current = name
                        families[name, default: (type, [])].type = type
                    }
                } else if line.hasPrefix("#") {
                    continue
                } else if let name = current, belongs(line, to: name) {
                    families[name]?.samples.append(line)
                }
            }
        }
        var out = ""
        for name in families.keys.sorted() {
            guard let family = families[name] else { continue }
            if let help = help[name] { out += "# HELP \(name) \(help)\n" }
            out += "# TYPE \(name) \(family.type)\n"
            for sample in family.samples { out += sample + "\n" }
        }
        return out
    }

    /// True when `line` is a sample of family `name`: `name`, `name_bucket`, `name_sum` or `name_count`, then
    /// labels or a space.
    private static func belongs(_ line: Substring, to name: String) -> Bool {
        guard line.hasPrefix(name) else { return false }
        var rest = line.dropFirst(name.count)
        for suffix in ["_bucket", "_sum", "_count"] where rest.hasPrefix(suffix) {
            rest = rest.dropFirst(suffix.count)
            break
        }
        return rest.first == "{" || rest.first == " "
    }

    /// HELP texts of the families docs/OPERATIONS.md describes (swift-metrics gives none).
    static let help: [String: String] = [
        "switchyard_messages_in_total": "Envelopes received",
        "switchyard_messages_out_total": "Envelopes sent",
        "switchyard_rate_in": "Envelopes received per second over the last 10 s",
        "switchyard_rate_out": "Envelopes sent per second over the last 10 s",
        "switchyard_uptime_seconds": "Seconds since the instance started",
        "switchyard_ready": "1 when the instance is ready",
        "switchyard_queue_depth": "Batches waiting: the ingress's outbound queue, a pipeline stage's inbound backlog",
        "switchyard_connections": "Open client connections",
        MetricName.publishAckSeconds: "Publish sent to its acknowledgement, at ws-ingress",
        MetricName.hopSeconds: "A received batch to what it caused sent on, per stage",
        MetricName.batchEnvelopes: "Envelopes per received batch",
        MetricName.kafkaProduceSeconds: "Record produced to its delivery report, at kafka-out",
        MetricName.kafkaConsumeSeconds: "Record timestamp to handed to the router, at kafka-in",
    ]
}
