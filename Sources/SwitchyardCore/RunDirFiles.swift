import Foundation

// The JSON files in RunDir that stages read or write, one `Codable` type each. docs/OPERATIONS.md, "Files in
// RunDir", lists every file of RunDir (also the supervisor's and the stats file), who writes and who reads it.

/// A run-dir file that could not be read: names the file and what is wrong with it.
public struct RunDirFileError: Error, Equatable, CustomStringConvertible {
    public let file: String
    public let problem: String

    public var description: String { "\(file): \(problem)" }
}

/// A JSON file in RunDir. Writes replace the file in one step (readers never see half a file); reads tell a
/// missing file (nil) from one that is not what its type expects (`RunDirFileError`), and never trap.
public protocol RunDirJSONFile: Codable, Equatable, Sendable {}

extension RunDirJSONFile {
    /// The file at `path`; nil when there is none.
    public static func read(from path: String) throws(RunDirFileError) -> Self? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RunDirFileError(file: path, problem: "cannot be read")
        }
        do {
            return try JSONDecoder().decode(Self.self, from: data)
        } catch let error as DecodingError {
            throw RunDirFileError(file: path, problem: "not a valid \(Self.self): \(error.summary)")
        } catch {
            throw RunDirFileError(file: path, problem: "not a valid \(Self.self): \(error)")
        }
    }

    /// Writes the file at `path` atomically (a temporary file renamed over it).
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}

/// `topology.json`: how many instances each stage runs, by executable name, e.g. `{"cache": 2, "fanout": 1}`.
/// Written by the supervisor (at start and on `switchyard scale`); read by every stage at start and on SIGHUP.
/// Stages missing from it keep their configured count.
public struct TopologyFile: RunDirJSONFile {
    public static let name = "topology.json"

    public var instances: [String: Int]

    public init(instances: [String: Int]) {
        self.instances = instances
    }

    public init(from decoder: Decoder) throws {
        instances = try decoder.singleValueContainer().decode([String: Int].self)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(instances)
    }
}

/// `kafka-in-<n>.offsets.json`: the next offset to forward per partition epoch (`<topic>-<partition>`), e.g.
/// `{"prices-0": 1042}`. Written by kafka-in at most once a second; read by kafka-in at start, to resume.
public struct OffsetCheckpointFile: RunDirJSONFile {
    public static func name(instance: Int) -> String { "kafka-in-\(instance).offsets.json" }

    public var nextOffsets: [String: Int64]

    public init(nextOffsets: [String: Int64]) {
        self.nextOffsets = nextOffsets
    }

    public init(from decoder: Decoder) throws {
        nextOffsets = try decoder.singleValueContainer().decode([String: Int64].self)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(nextOffsets)
    }
}

/// `<stage>-<n>.stats.json`: an instance's figures, rewritten every second by its `StatsPublisher`; read by the
/// supervisor (`status`, readiness) and by ws-ingress (`/ready`). One JSON object: the fixed fields below, and each
/// of the stage's own figures (`queueDepth`, `connections`, ...: `figures`) as an integer beside them.
public struct StageStatsFile: RunDirJSONFile {
    public static func name(stage: String, instance: Int) -> String { "\(stage)-\(instance).stats.json" }

    public var stage: String
    public var instance: Int
    public var pid: Int
    /// The supervisor's `start` waits until every instance is ready.
    public var ready: Bool
    /// "ok", or a short word on the instance's health, e.g. "kafka unreachable".
    public var state: String
    /// Unix time in seconds.
    public var startedAt: Double
    /// Envelopes received and sent since the start (kafka-in: records consumed).
    public var messagesIn: Int
    public var messagesOut: Int
    /// Envelopes per second over the last 10 s.
    public var rateIn: Double
    public var rateOut: Double
    /// The stage's own figures, by name.
    public var figures: [String: Int]

    public init(stage: String, instance: Int, pid: Int, ready: Bool, state: String, startedAt: Double,
                messagesIn: Int, messagesOut: Int, rateIn: Double, rateOut: Double, figures: [String: Int]) {
        self.stage = stage
        self.instance = instance
        self.pid = pid
        self.ready = ready
        self.state = state
        self.startedAt = startedAt
        self.messagesIn = messagesIn
        self.messagesOut = messagesOut
        self.rateIn = rateIn
        self.rateOut = rateOut
        self.figures = figures
    }

    private enum Field: String, CodingKey, CaseIterable {
        case stage, instance, pid, ready, state, startedAt, messagesIn, messagesOut, rateIn, rateOut
    }

    /// Any key: the stage's figures sit beside the fixed fields.
    private struct FigureKey: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let fields = try decoder.container(keyedBy: Field.self)
        stage = try fields.decode(String.self, forKey: .stage)
        instance = try fields.decode(Int.self, forKey: .instance)
        pid = try fields.decode(Int.self, forKey: .pid)
        ready = try fields.decode(Bool.self, forKey: .ready)
        state = try fields.decode(String.self, forKey: .state)
        startedAt = try fields.decode(Double.self, forKey: .startedAt)
        messagesIn = try fields.decode(Int.self, forKey: .messagesIn)
        messagesOut = try fields.decode(Int.self, forKey: .messagesOut)
        rateIn = try fields.decode(Double.self, forKey: .rateIn)
        rateOut = try fields.decode(Double.self, forKey: .rateOut)
        let all = try decoder.container(keyedBy: FigureKey.self)
        let fixed = Set(Field.allCases.map(\.rawValue))
        figures = [:]
        for key in all.allKeys where !fixed.contains(key.stringValue) {
            figures[key.stringValue] = try all.decode(Int.self, forKey: key)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var fields = encoder.container(keyedBy: Field.self)
        try fields.encode(stage, forKey: .stage)
        try fields.encode(instance, forKey: .instance)
        try fields.encode(pid, forKey: .pid)
        try fields.encode(ready, forKey: .ready)
        try fields.encode(state, forKey: .state)
        try fields.encode(startedAt, forKey: .startedAt)
        try fields.encode(messagesIn, forKey: .messagesIn)
        try fields.encode(messagesOut, forKey: .messagesOut)
        try fields.encode(rateIn, forKey: .rateIn)
        try fields.encode(rateOut, forKey: .rateOut)
        let fixed = Set(Field.allCases.map(\.rawValue))
        var all = encoder.container(keyedBy: FigureKey.self)
        for (name, value) in figures where !fixed.contains(name) {
            try all.encode(value, forKey: FigureKey(stringValue: name))
        }
    }
}

extension DecodingError {
    /// One line: what was wrong and where in the document.
    var summary: String {
        func at(_ context: Context) -> String {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return (path.isEmpty ? "" : "at '\(path)': ") + context.debugDescription
        }
        switch self {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context),
             .dataCorrupted(let context):
            return at(context)
        @unknown default:
            return "\(self)"
        }
    }
}
