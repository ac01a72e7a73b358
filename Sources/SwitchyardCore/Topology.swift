import Foundation

/// The stages of the pipeline, by executable name.
public enum StageName: String, CaseIterable, Sendable {
    case ingress = "ws-ingress"
    case router
    case cache
    case fanout
    case kafkaIn = "kafka-in"
    case kafkaOut = "kafka-out"
}

/// Where every stage instance listens, and how many instances each stage runs.
///
/// Counts come from the configuration and are overridden by `<RunDir>/topology.json`, which the supervisor writes
/// when an operator scales a stage (stages re-read it on SIGHUP).
public struct Topology: Equatable, Sendable {
    public var runDir: String
    public var instances: [String: Int]

    public init(runDir: String, instances: [String: Int]) {
        self.runDir = runDir
        self.instances = instances
    }

    public static func load(config: SwitchyardConfig) -> Topology {
        var topology = Topology(runDir: config.runDir, instances: config.instances)
        let file = (config.runDir as NSString).appendingPathComponent("topology.json")
        if let data = FileManager.default.contents(atPath: file),
           let counts = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            for (stage, value) in counts {
                if let count = value as? Int, count > 0 { topology.instances[stage] = count }
            }
        }
        return topology
    }

    public func count(_ stage: StageName) -> Int { max(1, instances[stage.rawValue] ?? 1) }

    /// The inbound (PULL) address of one stage instance.
    public func address(_ stage: StageName, _ instance: Int) -> String {
        "ipc://\(runDir)/\(stage.rawValue)-\(instance).ipc"
    }

    /// The shard of a stage that owns `subject`: one subject always takes one path, which keeps its order.
    public func shard(_ stage: StageName, for subject: String) -> Int {
        Subject.shard(of: subject, count: count(stage))
    }
}
