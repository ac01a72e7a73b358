import XCTest
@testable import SwitchyardCore

final class ReadinessTests: XCTestCase {
    func report(_ stats: StageStatsFile?, age: Double = 0.5, alive: Bool = true) -> Readiness.InstanceReport {
        Readiness.InstanceReport(stats: stats, ageSeconds: age, pidAlive: alive)
    }

    func stats(ready: Bool, state: String = "ok", pid: Int = 1) -> StageStatsFile {
        StageStatsFile(stage: "s", instance: 0, pid: pid, ready: ready, state: state, startedAt: 0, messagesIn: 0,
                       messagesOut: 0, rateIn: 0, rateOut: 0, figures: [:])
    }

    func testRequiredInstancesFollowTheEngineAndTheTopology() {
        let topology = Topology(runDir: "/r", instances: ["cache": 2, "fanout": 1, "kafka-in": 1, "kafka-out": 1])
        XCTAssertEqual(Readiness.requiredInstances(engine: .none, topology: topology),
                       ["router-0", "cache-0", "cache-1", "fanout-0"])
        XCTAssertEqual(Readiness.requiredInstances(engine: .kafka, topology: topology),
                       ["router-0", "cache-0", "cache-1", "fanout-0", "kafka-in-0", "kafka-out-0"])
    }

    func testEachReasonAnInstanceIsNotReady() {
        let up = stats(ready: true)
        XCTAssertNil(Readiness.problem("cache-0", report(up)))
        XCTAssertEqual(Readiness.problem("cache-0", report(nil)), "cache-0: not running (no stats file)")
        XCTAssertEqual(Readiness.problem("cache-0", report(up, alive: false)), "cache-0: not running")
        XCTAssertEqual(Readiness.problem("cache-0", report(up, age: 7.2)),
                       "cache-0: no figures for 7 s (stopped, hung or restarting)")
        XCTAssertEqual(Readiness.problem("router-0", report(stats(ready: false))), "router-0: starting")
        XCTAssertEqual(Readiness.problem("kafka-in-0", report(stats(ready: false))), "kafka-in-0: warming up the caches")
        XCTAssertEqual(Readiness.problem("kafka-out-0", report(stats(ready: true, state: "kafka unreachable"))),
                       "kafka-out-0: kafka unreachable")
    }

    func testCheckReadsTheRunDir() throws {
        let runDir = NSTemporaryDirectory() + "readiness-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: runDir) }
        var config = SwitchyardConfig()
        config.runDir = runDir
        let up = stats(ready: true, pid: Int(getpid()))
        try up.write(to: runDir + "/router-0.stats.json")
        try up.write(to: runDir + "/fanout-0.stats.json")
        try Data("{\"ready\": true}".utf8).write(to: URL(fileURLWithPath: runDir + "/cache-0.stats.json"))
        XCTAssertEqual(Readiness.check(config: config), ["cache-0: not running (no stats file)"],
                       "a file that is not a stats file counts as none")
        try up.write(to: runDir + "/cache-0.stats.json")
        XCTAssertEqual(Readiness.check(config: config), [])
        XCTAssertEqual(Readiness.check(config: config, now: Date() + 10).count, 3, "every file is stale")
    }
}
