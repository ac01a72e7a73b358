import XCTest
@testable import SwitchyardCore

final class ReadinessTests: XCTestCase {
    func report(_ stats: [String: Any]?, age: Double = 0.5, alive: Bool = true) -> Readiness.InstanceReport {
        Readiness.InstanceReport(stats: stats, ageSeconds: age, pidAlive: alive)
    }

    func testRequiredInstancesFollowTheEngineAndTheTopology() {
        let topology = Topology(runDir: "/r", instances: ["cache": 2, "fanout": 1, "kafka-in": 1, "kafka-out": 1])
        XCTAssertEqual(Readiness.requiredInstances(engine: .none, topology: topology),
                       ["router-0", "cache-0", "cache-1", "fanout-0"])
        XCTAssertEqual(Readiness.requiredInstances(engine: .kafka, topology: topology),
                       ["router-0", "cache-0", "cache-1", "fanout-0", "kafka-in-0", "kafka-out-0"])
    }

    func testEachReasonAnInstanceIsNotReady() {
        let up: [String: Any] = ["ready": true, "state": "ok", "pid": 1]
        XCTAssertNil(Readiness.problem("cache-0", report(up)))
        XCTAssertEqual(Readiness.problem("cache-0", report(nil)), "cache-0: not running (no stats file)")
        XCTAssertEqual(Readiness.problem("cache-0", report(up, alive: false)), "cache-0: not running")
        XCTAssertEqual(Readiness.problem("cache-0", report(up, age: 7.2)),
                       "cache-0: no figures for 7 s (stopped, hung or restarting)")
        XCTAssertEqual(Readiness.problem("router-0", report(["ready": false])), "router-0: starting")
        XCTAssertEqual(Readiness.problem("kafka-in-0", report(["ready": false])), "kafka-in-0: warming up the caches")
        XCTAssertEqual(Readiness.problem("kafka-out-0", report(["ready": true, "state": "kafka unreachable"])),
                       "kafka-out-0: kafka unreachable")
    }

    func testCheckReadsTheRunDir() throws {
        let runDir = NSTemporaryDirectory() + "readiness-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: runDir) }
        var config = SwitchyardConfig()
        config.runDir = runDir
        func write(_ name: String, _ object: [String: Any]) throws {
            let data = try JSONSerialization.data(withJSONObject: object)
            try data.write(to: URL(fileURLWithPath: runDir + "/\(name).stats.json"))
        }
        let me = Int(getpid())
        try write("router-0", ["ready": true, "state": "ok", "pid": me])
        try write("fanout-0", ["ready": true, "state": "ok", "pid": me])
        XCTAssertEqual(Readiness.check(config: config), ["cache-0: not running (no stats file)"])
        try write("cache-0", ["ready": true, "state": "ok", "pid": me])
        XCTAssertEqual(Readiness.check(config: config), [])
        XCTAssertEqual(Readiness.check(config: config, now: Date() + 10).count, 3, "every file is stale")
    }
}
