import Foundation

/// The stages of the pipeline, by executable name, in the order `status` shows them.
public enum StageName: String, CaseIterable, Sendable {
    case ingress = "ws-ingress"
    case router
    case cache
    case fanout
    case kafkaOut = "kafka-out"
    case kafkaIn = "kafka-in"

    /// Downstream first, so a stage is listening before the stages that send to it start.
    public static let startOrder: [StageName] = [.fanout, .cache, .router, .kafkaOut, .kafkaIn, .ingress]

    /// The stage's place in `allCases`.
    var index: Int {
        switch self {
        case .ingress: 0
        case .router: 1
        case .cache: 2
        case .fanout: 3
        case .kafkaOut: 4
        case .kafkaIn: 5
        }
    }

    /// The stages a stack with `engine` runs, in display order.
    public static func running(_ engine: ClusterEngine) -> [StageName] {
        engine == .kafka ? allCases : [.ingress, .router, .cache, .fanout]
    }

    /// How many instances of this stage the pipeline can use (the configuration and `switchyard scale` refuse
    /// other counts), and why.
    public var instanceLimit: InstanceLimit {
        switch self {
        case .ingress:
            return InstanceLimit(1...InstanceLimit.most, "instances share the client port (SO_REUSEPORT); "
                                 + "without one no client can connect")
        case .router:
            return InstanceLimit(1...1, "ws-ingress and kafka-in send everything to router-0, which keeps each "
                                 + "subject on one path; another router would get no traffic")
        case .cache:
            return InstanceLimit(1...InstanceLimit.most, "the router shards subjects over the caches by "
                                 + "FNV-1a(subject); every subject needs its shard")
        case .fanout:
            return InstanceLimit(1...InstanceLimit.most, "the caches shard subjects over the fanouts by "
                                 + "FNV-1a(subject); every subject needs its shard")
        case .kafkaOut:
            return InstanceLimit(1...InstanceLimit.most, "the router shards publishes over the producers by "
                                 + "FNV-1a(subject), so a subject keeps one producer and its order; without one "
                                 + "publishes go nowhere")
        case .kafkaIn:
            return InstanceLimit(1...1, "every kafka-in consumes every partition: a second one would deliver "
                                 + "every record twice, and without one nothing comes back from Kafka")
        }
    }
}

/// The instance counts a stage can run, with the reason an operator is told when asking for another.
public struct InstanceLimit: Equatable, Sendable {
    /// The most instances of any stage (`switchyard scale` and the `...Instances` parameters).
    public static let most = 64

    public let range: ClosedRange<Int>
    public let reason: String

    init(_ range: ClosedRange<Int>, _ reason: String) {
        self.range = range
        self.reason = reason
    }

    /// Why `stage` cannot run `count` instances; nil when it can.
    public func refusal(_ stage: StageName, count: Int) -> String? {
        guard !range.contains(count) else { return nil }
        let allowed = range.count == 1 ? "exactly \(range.lowerBound)" : "\(range.lowerBound)-\(range.upperBound)"
        return "\(stage.rawValue) runs \(allowed) instance\(range.upperBound == 1 ? "" : "s"), not \(count): \(reason)"
    }
}

/// Where every stage instance listens, and how many instances each stage runs.
///
/// Counts come from the configuration and are overridden by `<RunDir>/topology.json`, which the supervisor writes
/// when an operator scales a stage (stages re-read it on SIGHUP).
public struct Topology: Equatable, Sendable {
    public var runDir: String { didSet { addresses = Self.addresses(runDir: runDir, instances: instances) } }
    public var instances: [String: Int] { didSet { addresses = Self.addresses(runDir: runDir, instances: instances) } }
    /// Every instance's inbound address, by stage (`StageName.allCases` order): built once, not per envelope.
    private var addresses: [[String]]

    public init(runDir: String, instances: [String: Int]) {
        self.runDir = runDir
        self.instances = instances
        addresses = Self.addresses(runDir: runDir, instances: instances)
    }

    private static func addresses(runDir: String, instances: [String: Int]) -> [[String]] {
        StageName.allCases.map { stage in
            (0..<max(1, instances[stage.rawValue] ?? 1)).map { Self.address(runDir: runDir, stage, $0) }
        }
    }

    private static func address(runDir: String, _ stage: StageName, _ instance: Int) -> String {
        "ipc://\(runDir)/\(stage.rawValue)-\(instance).ipc"
    }

    /// The configured counts, overridden by `<RunDir>/topology.json`. A file that cannot be read leaves every
    /// configured count, and a count a stage cannot run (the supervisor never writes one) leaves that stage's: both
    /// are told to `onProblem`, naming the file.
    public static func load(config: SwitchyardConfig, onProblem: (RunDirFileError) -> Void = { _ in }) -> Topology {
        var topology = Topology(runDir: config.runDir, instances: config.instances)
        let file = (config.runDir as NSString).appendingPathComponent(TopologyFile.name)
        let counts: [String: Int]
        do {
            counts = try TopologyFile.read(from: file)?.instances ?? [:]
        } catch {
            onProblem(error)
            return topology
        }
        for (stage, count) in counts.sorted(by: { $0.key < $1.key }) {
            guard let name = StageName(rawValue: stage) else { continue }
            if let refusal = name.instanceLimit.refusal(name, count: count) {
                onProblem(RunDirFileError(file: file, problem: refusal + "; keeping \(topology.count(name))"))
            } else {
                topology.instances[stage] = count
            }
        }
        return topology
    }

    public func count(_ stage: StageName) -> Int { addresses[stage.index].count }

    /// The inbound (PULL) address of one stage instance.
    public func address(_ stage: StageName, _ instance: Int) -> String {
        let known = addresses[stage.index]
        return known.indices.contains(instance) ? known[instance] : Self.address(runDir: runDir, stage, instance)
    }

    /// The shard of a stage that owns `subject`: one subject always takes one path, which keeps its order.
    public func shard(_ stage: StageName, for subject: String) -> Int {
        Subject.shard(of: subject, count: count(stage))
    }
}
