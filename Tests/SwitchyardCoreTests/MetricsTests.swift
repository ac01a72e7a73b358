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
        let object = metrics.snapshot(stage: "cache", instance: 0, now: 1002)
        XCTAssertEqual(object["messagesIn"] as? Int, 30)
        XCTAssertEqual(object["messagesOut"] as? Int, 4)
        XCTAssertEqual(object["connections"] as? Int, 3)
        XCTAssertEqual(object["ready"] as? Bool, true)
        XCTAssertEqual(object["rateIn"] as? Double, 10)
    }

    func testPrometheusTextHasOneFamilyPerFigure() {
        let stats: [[String: Any]] = [
            ["stage": "ws-ingress", "instance": 0, "pid": 1, "ready": true, "startedAt": 90.0, "messagesIn": 5,
             "messagesOut": 7, "connections": 2, "queueDepth": 0],
            ["stage": "cache", "instance": 1, "pid": 2, "ready": false, "startedAt": 99.0, "messagesIn": 1,
             "messagesOut": 1, "cachedMessages": 12],
        ]
        let text = PrometheusExposition.render(stats: stats, now: 100)
        XCTAssertTrue(text.contains("# TYPE switchyard_messages_in_total counter\n"))
        XCTAssertTrue(text.contains(#"switchyard_messages_in_total{stage="ws-ingress",stage_instance="0"} 5.0"#))
        XCTAssertTrue(text.contains(#"switchyard_connections{stage="ws-ingress",stage_instance="0"} 2.0"#))
        XCTAssertTrue(text.contains(#"switchyard_cached_messages{stage="cache",stage_instance="1"} 12.0"#))
        XCTAssertTrue(text.contains(#"switchyard_uptime_seconds{stage="cache",stage_instance="1"} 1.0"#))
        XCTAssertTrue(text.contains(#"switchyard_ready{stage="cache",stage_instance="1"} 0.0"#))
        XCTAssertFalse(text.contains("pid"))
        XCTAssertEqual(text.components(separatedBy: "# TYPE switchyard_ready ").count, 2)
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
