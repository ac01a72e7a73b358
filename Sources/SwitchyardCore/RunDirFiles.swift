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
