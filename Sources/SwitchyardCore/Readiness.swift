import Foundation

/// Whether a node can serve clients (`/ready` on the monitor listener): router, every cache and fanout instance
/// and, in Kafka mode, kafka-in and kafka-out are up, Kafka is reachable and the caches are warm.
///
/// It reads what the supervisor's `status` reads: each instance's stats file in RunDir, rewritten every second
/// by the instance (its pid, `ready`, and `state`, e.g. "kafka unreachable"). A file older than
/// `staleAfterSeconds` belongs to an instance that is stopped, hung or dead.
public enum Readiness {
    /// Seconds after which an instance that has not rewritten its stats file counts as not running.
    public static let staleAfterSeconds = 3.0

    /// What is known of one instance: its parsed stats file (nil if missing or unreadable), the file's age in
    /// seconds, and whether the pid it names is alive.
    public struct InstanceReport {
        public var stats: StageStatsFile?
        public var ageSeconds: Double
        public var pidAlive: Bool

        public init(stats: StageStatsFile?, ageSeconds: Double, pidAlive: Bool) {
            self.stats = stats
            self.ageSeconds = ageSeconds
            self.pidAlive = pidAlive
        }
    }

    /// The instances a node needs, as `stage-n` names.
    public static func requiredInstances(engine: ClusterEngine, topology: Topology) -> [String] {
        var stages: [StageName] = [.router, .cache, .fanout]
        if engine == .kafka { stages += [.kafkaIn, .kafkaOut] }
        return stages.flatMap { stage in (0..<topology.count(stage)).map { "\(stage.rawValue)-\($0)" } }
    }

    /// Why `name` is not ready, or nil when it is.
    public static func problem(_ name: String, _ report: InstanceReport) -> String? {
        guard let stats = report.stats else { return "\(name): not running (no stats file)" }
        guard report.pidAlive else { return "\(name): not running" }
        guard report.ageSeconds <= staleAfterSeconds else {
            return "\(name): no figures for \(Int(report.ageSeconds)) s (stopped, hung or restarting)"
        }
        guard stats.ready else {
            return name.hasPrefix(StageName.kafkaIn.rawValue) ? "\(name): warming up the caches" : "\(name): starting"
        }
        if stats.state != "ok" { return "\(name): \(stats.state)" }
        return nil
    }

    /// The reasons this node is not ready (empty when it is), from the files in `config.runDir`. File I/O: call
    /// it off any event loop.
    public static func check(config: SwitchyardConfig, now: Date = Date()) -> [String] {
        let topology = Topology.load(config: config)
        return requiredInstances(engine: config.clusterEngine, topology: topology).compactMap { name in
            problem(name, report(for: name, runDir: config.runDir, now: now))
        }
    }

    static func report(for name: String, runDir: String, now: Date) -> InstanceReport {
        let path = (runDir as NSString).appendingPathComponent("\(name).stats.json")
        // A file being replaced, or one of another version, reads as missing: the instance counts as not running.
        guard let stats = try? StageStatsFile.read(from: path),
              let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
        else { return InstanceReport(stats: nil, ageSeconds: 0, pidAlive: false) }
        let pidAlive = pid_t(exactly: stats.pid).map(isAlive) ?? false
        return InstanceReport(stats: stats, ageSeconds: max(0, now.timeIntervalSince(modified)), pidAlive: pidAlive)
    }

    private static func isAlive(_ pid: pid_t) -> Bool {
        pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)
    }
}
