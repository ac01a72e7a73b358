import CoreMetrics
import Foundation
import Prometheus
import XCTest
@testable import SwitchyardCore

final class MetricsTests: XCTestCase {
    func testStatsSnapshotCountsAndRates() {
        let metrics = StageMetrics()
        metrics.countIn(10)
        metrics.countOut(4)
        metrics.setGauge("connections", 3)
        metrics.setReady(true)
        _ = metrics.snapshot(stage: "cache", instance: 0, now: 1000)
        metrics.countIn(20)
        let stats = metrics.snapshot(stage: "cache", instance: 0, now: 1002)
        XCTAssertEqual(stats.messagesIn, 30)
        XCTAssertEqual(stats.messagesOut, 4)
        XCTAssertEqual(stats.figures["connections"], 3)
        XCTAssertEqual(stats.ready, true)
        XCTAssertEqual(stats.rateIn, 10)
    }

    /// The stats file keeps its one flat object: the fixed fields and the stage's figures side by side.
    func testTheStatsFileIsOneFlatObjectAndReadsBack() throws {
        let stats = StageStatsFile(stage: "cache", instance: 2, pid: 42, ready: true, state: "ok", startedAt: 1.5,
                                   messagesIn: 7, messagesOut: 6, rateIn: 0.5, rateOut: 0,
                                   figures: ["queueDepth": 1, "cacheBytes": 512])
        let path = NSTemporaryDirectory() + "stats-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try stats.write(to: path)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
                                   as? [String: Any])
        XCTAssertEqual(object["cacheBytes"] as? Int, 512)
        XCTAssertEqual(object["stage"] as? String, "cache")
        XCTAssertEqual(object["ready"] as? Bool, true)
        XCTAssertEqual(object.count, 12)
        XCTAssertEqual(try StageStatsFile.read(from: path), stats)
        let badFigure = #"{"stage": "cache", "instance": 2, "pid": 42, "ready": true, "state": "ok", "startedAt": 1, "#
            + #""messagesIn": 7, "messagesOut": 6, "rateIn": 0, "rateOut": 0, "queueDepth": "x"}"#
        try Data(badFigure.utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try StageStatsFile.read(from: path), "a figure that is not an integer")
    }

    /// A stage's figures reach its registry labelled with the stage and instance, histograms with our buckets.
    func testAStageFactoryLabelsEveryMetricAndExportsTheStatsFigures() {
        let registry = PrometheusCollectorRegistry()
        let metrics = StageMetrics(factory: StageMetricsFactory.make(stage: "cache", instance: 1, registry: registry))
        metrics.countReceivedBatch(3)
        metrics.countOut(2)
        metrics.setGauge("cacheBytes", 512)
        metrics.setReady(true)
        metrics.makeTimer(MetricName.hopSeconds).recordMicroseconds(70)
        _ = metrics.snapshot(stage: "cache", instance: 1, now: Date().timeIntervalSince1970 + 5)
        let text = registry.emitToString()
        let labels = #"{stage="cache",stage_instance="1"}"#
        XCTAssertTrue(text.contains("# TYPE switchyard_messages_in_total counter\n"), text)
        XCTAssertTrue(text.contains("switchyard_messages_in_total\(labels) 3\n"), text)
        XCTAssertTrue(text.contains("switchyard_messages_out_total\(labels) 2\n"), text)
        XCTAssertTrue(text.contains("switchyard_cache_bytes\(labels) 512"), text)
        XCTAssertTrue(text.contains("switchyard_ready\(labels) 1"), text)
        XCTAssertTrue(text.contains("switchyard_uptime_seconds\(labels) "), text)
        XCTAssertTrue(text.contains(#"switchyard_batch_envelopes_bucket{stage="cache",stage_instance="1",le="4.0"} 1"#),
                      text)
        XCTAssertTrue(text.contains(#"switchyard_batch_envelopes_bucket{stage="cache",stage_instance="1",le="2.0"} 0"#),
                      text)
        XCTAssertTrue(text.contains(#"switchyard_hop_seconds_bucket{stage="cache",stage_instance="1",le="0.0001"} 1"#),
                      text)
        XCTAssertTrue(text.contains(#"switchyard_hop_seconds_bucket{stage="cache",stage_instance="1",le="5e-05"} 0"#)
                      || text.contains(#"le="0.00005"} 0"#), text)
        XCTAssertFalse(text.contains("instance=\"1\",stage_instance"), "no bare instance label")
        // The counter takes only what was added since the last snapshot.
        metrics.countIn(4)
        _ = metrics.snapshot(stage: "cache", instance: 1)
        XCTAssertTrue(registry.emitToString().contains("switchyard_messages_in_total\(labels) 7\n"))
    }

    /// A label a call site passes as `stage` cannot duplicate or override the instance's own.
    func testTheFactoryKeepsItsOwnStageLabels() {
        let registry = PrometheusCollectorRegistry()
        let factory = StageMetricsFactory.make(stage: "router", instance: 0, registry: registry)
        CoreMetrics.Counter(label: "switchyard_test_total", dimensions: [("stage", "x"), ("kind", "a")], factory: factory)
            .increment()
        XCTAssertTrue(registry.emitToString().contains(
            #"switchyard_test_total{kind="a",stage="router",stage_instance="0"} 1"#), registry.emitToString())
        XCTAssertFalse(registry.emitToString().contains(#"stage="x""#))
    }

    /// Two instances' files become one exposition: one HELP/TYPE per family, a family's samples together.
    func testMergingTwoInstancesGivesOneFamilyEach() {
        func exposition(_ stage: String, _ instance: Int, received: Int) -> String {
            let registry = PrometheusCollectorRegistry()
            let metrics = StageMetrics(factory: StageMetricsFactory.make(stage: stage, instance: instance,
                                                                         registry: registry))
            metrics.countReceivedBatch(received)
            metrics.makeTimer(MetricName.hopSeconds).recordMilliseconds(3)
            _ = metrics.snapshot(stage: stage, instance: instance)
            return registry.emitToString()
        }
        let text = PrometheusExposition.merge([exposition("cache", 0, received: 5), exposition("cache", 1, received: 9),
                                               "# TYPE switchyard_ready counter\nswitchyard_ready{stage=\"x\"} 1\n",
                                               "stray line without a type\n"])
        for family in ["switchyard_messages_in_total", "switchyard_hop_seconds", "switchyard_ready"] {
            XCTAssertEqual(text.components(separatedBy: "# TYPE \(family) ").count, 2, family)
            XCTAssertEqual(text.components(separatedBy: "# HELP \(family) ").count, 2, family)
        }
        XCTAssertTrue(text.contains("# TYPE switchyard_ready gauge\n"))
        XCTAssertFalse(text.contains(#"stage="x""#), "a family typed differently later is dropped")
        XCTAssertFalse(text.contains("stray"))
        XCTAssertTrue(text.contains(#"switchyard_messages_in_total{stage="cache",stage_instance="0"} 5"#))
        XCTAssertTrue(text.contains(#"switchyard_messages_in_total{stage="cache",stage_instance="1"} 9"#))
        // Every sample line sits under the TYPE line of its own family.
        var family = ""
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                family = String(line.split(separator: " ")[2])
            } else if !line.hasPrefix("#") {
                XCTAssertTrue(line.hasPrefix(family), "\(line) outside its family \(family)")
            }
        }
        XCTAssertEqual(text.components(separatedBy: "switchyard_hop_seconds_count{").count, 3)
    }
}

final class PrometheusFilesTests: XCTestCase {
    /// The run dir's fresh `.prom` files are merged; a file an instance stopped rewriting is left out.
    func testRenderMergesTheFreshFilesOfARunDirOnly() throws {
        let runDir = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: runDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: runDir) }
        func write(_ name: String, _ stage: String, age: TimeInterval) throws {
            let file = runDir.appendingPathComponent(name)
            try Data("# TYPE switchyard_ready gauge\nswitchyard_ready{stage=\"\(stage)\"} 1\n".utf8).write(to: file)
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-age)],
                                                  ofItemAtPath: file.path)
        }
        try write("cache-0.prom", "cache", age: 1)
        try write("router-0.prom", "router", age: 2)
        try write("ws-ingress-3.prom", "gone", age: PrometheusExposition.staleAfterSeconds + 5)
        try write("cache-0.stats.json", "not-prometheus", age: 0)
        let text = PrometheusExposition.render(runDir: runDir.path)
        XCTAssertEqual(text, """
            # HELP switchyard_ready 1 when the instance is ready
            # TYPE switchyard_ready gauge
            switchyard_ready{stage="cache"} 1
            switchyard_ready{stage="router"} 1

            """)
    }
}

final class ClockTests: XCTestCase {
    func testElapsedNeverTrapsOnAnEarlierEnd() {
        XCTAssertEqual(elapsedNanoseconds(from: 10, to: 25), 15)
        XCTAssertEqual(elapsedNanoseconds(from: 25, to: 10), 0)
        XCTAssertEqual(elapsedNanoseconds(from: .max, to: 0), 0)
    }

    func testTheMonotonicClockNeverGoesBack() {
        var last = monotonicNanoseconds()
        for _ in 0..<1000 {
            let now = monotonicNanoseconds()
            XCTAssertGreaterThanOrEqual(now, last)
            last = now
        }
    }
}
