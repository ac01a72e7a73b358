import Foundation
import Logging
import NIOCore
import SwitchyardCore

/// Where a persistent session's device stands on one subject: it acknowledged every QoS 1 message up to `seq` of
/// `epoch` (recovery starts after it), and was sent messages up to `sentSeq` (those after `seq` and up to
/// `sentSeq` go again flagged DUP).
public struct MQTTSubjectPosition: Codable, Equatable, Sendable {
    public var epoch: String
    public var seq: UInt64
    public var sentSeq: UInt64
}

/// `mqtt-sessions/<hash>.json` (or the value of a record of the Kafka session topic): one persistent MQTT
/// session (docs/MQTT.md, "Persistent sessions").
public struct MQTTSessionRecord: RunDirJSONFile {
    public struct Subscription: Codable, Equatable, Sendable {
        public var filter: String
        public var qos: UInt8
    }

    public var clientID: String
    /// The protocol level of the connection that left it: 4 (3.1.1) or 5.
    public var version: UInt8
    /// Seconds it is kept after its connection ends (already capped by `MqttSessionExpiry`).
    public var expirySeconds: UInt32
    /// Unix time it expires unless a connection takes it up: its last save plus `expirySeconds`.
    public var expiresAt: Double
    public var subscriptions: [Subscription]
    /// Per subject (not filter), where recovery starts.
    public var positions: [String: MQTTSubjectPosition]
    /// How many times a connection took the session up (nil: 0). In Kafka mode a save of an older generation than
    /// the one stored (from a connection the session was taken from, still open on another node) is not applied.
    public var generation: UInt64?
    /// The QoS 1 messages sent and not acknowledged, with the packet identifier each went with: a reconnect
    /// re-sends them with it (MQTT-4.4.0-1). At most one per packet identifier, so at most the client's Receive
    /// Maximum (3.1.1: 65,535). nil in records of builds before it (their re-sends get new identifiers).
    public var unacknowledged: [Unacknowledged]? = nil

    public struct Unacknowledged: Codable, Equatable, Sendable {
        public var subject: String
        public var epoch: String
        public var seq: UInt64
        public var packetID: UInt16
    }

    /// A record this build can continue: protocol level 4 or 5.
    public var hasKnownVersion: Bool {
        version == MQTTVersion.v311.rawValue || version == MQTTVersion.v5.rawValue
    }
}

/// The persistent MQTT sessions of a node: one small file per session in `RunDir/mqtt-sessions/`, named by a
/// 128-bit hash of the client identifier (the file holds the identifier; a file of another identifier counts as
/// none). Files are read on CONNECT and written (atomically: a temporary file renamed) on one serial queue off
/// the event loops, so every ws-ingress instance of the node, and an instance restarted after `kill -9`, sees
/// the sessions the others left. The folder is created with the first session.
// @unchecked Sendable: `knownCount` is touched only on `queue`; everything else is immutable.
final class MQTTSessionStore: MQTTSessionStorage, @unchecked Sendable {
    static let folderName = "mqtt-sessions"
    /// A session file larger than this is not read (it is corrupt: `MaxSubjectsPerConnection` subjects fit).
    static let maxFileBytes = 16 << 20
    /// Temporary files of an interrupted write older than this are removed by `sweep`.
    static let staleTemporarySeconds: Double = 60
    /// Session files a sweep reads in one piece of work.
    static let sweepBatch = 256

    let directory: String
    let maxSessions: Int
    private let logger: Logger
    private let queue = DispatchQueue(label: "switchyard.mqtt-sessions")
    /// Session files in the folder as last counted (`sweep`), plus those created and less those deleted since;
    /// nil until first counted. Other instances of the node change it too, so it is approximate between sweeps.
    private var knownCount: Int?
    /// Take-over announcements: `RunDir/mqtt-takeovers/<hash>-<generation>`, holding the client identifier; every
    /// instance of the node reads each once, and they are removed after `takeOverMarkerSeconds`.
    static let takeOverFolderName = "mqtt-takeovers"
    static let takeOverMarkerSeconds: Double = 30
    let takeOverDirectory: String
    /// The announcements this instance wrote or read already, of those still there. Touched only on `queue`.
    private var seenMarkers: Set<String> = []
    /// When `takeOversNow` last looked for old announcements to remove (a third of their life apart, so that a
    /// reconnect storm's many announcements are not looked at every second). Touched only on `queue`.
    private var markersSweptAt: Double = 0

    init(runDir: String, maxSessions: Int, logger: Logger) {
        directory = (runDir as NSString).appendingPathComponent(Self.folderName)
        takeOverDirectory = (runDir as NSString).appendingPathComponent(Self.takeOverFolderName)
        self.maxSessions = maxSessions
        self.logger = logger
    }

    typealias Loaded = MQTTSessionLoaded

    // MARK: Off the event loop

    func load(_ clientID: String, on eventLoop: EventLoop) -> EventLoopFuture<Loaded> {
        let promise = eventLoop.makePromise(of: Loaded.self)
        queue.async { promise.succeed(self.loadNow(clientID, now: Date().timeIntervalSince1970)) }
        return promise.futureResult
    }

    func save(_ record: MQTTSessionRecord) {
        queue.async { self.saveNow(record) }
    }

    func delete(_ clientID: String) {
        queue.async { self.deleteNow(clientID) }
    }

    /// Removes expired sessions and left-over temporary files, and counts the sessions again. Files are read in
    /// batches, each its own piece of work on the queue, so that CONNECTs and saves go on between them.
    func sweep() {
        queue.async {
            let names = self.folderNames()
            let now = Date().timeIntervalSince1970
            for start in stride(from: 0, to: names.count, by: Self.sweepBatch) {
                let batch = names[start..<min(start + Self.sweepBatch, names.count)]
                self.queue.async { self.sweep(batch, now: now) }
            }
            self.queue.async { self.recount() }
        }
    }

    func announceTakeOver(of clientID: String, generation: UInt64) {
        queue.async { self.announceTakeOverNow(of: clientID, generation: generation) }
    }

    func takeOvers(on eventLoop: EventLoop) -> EventLoopFuture<[String: UInt64]> {
        let promise = eventLoop.makePromise(of: [String: UInt64].self)
        queue.async { promise.succeed(self.takeOversNow(now: Date().timeIntervalSince1970)) }
        return promise.futureResult
    }

    func close() {
        queue.sync {}  // the sessions saved as their connections closed are written
    }

    /// Runs `body` after everything queued before it (tests, shutdown).
    func sync<T>(_ body: () throws -> T) rethrows -> T {
        try queue.sync(execute: body)
    }

    // MARK: The work, on `queue`

    func path(of clientID: String) -> String {
        (directory as NSString).appendingPathComponent(Self.fileName(of: clientID))
    }

    /// Two FNV-1a 64-bit hashes (of the bytes and of the bytes reversed), hex: a fixed-length name whatever the
    /// identifier holds.
    static func fileName(of clientID: String) -> String {
        func fnv1a<S: Sequence<UInt8>>(_ bytes: S) -> UInt64 {
            bytes.reduce(0xcbf2_9ce4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01b3 }
        }
        let bytes = Array(clientID.utf8)
        let hex = [fnv1a(bytes), fnv1a(bytes.reversed())].map { hash in
            let digits = String(hash, radix: 16)
            return String(repeating: "0", count: 16 - digits.count) + digits
        }
        return hex.joined() + ".json"
    }

    func loadNow(_ clientID: String, now: Double) -> Loaded {
        let path = path(of: clientID)
        let record = read(path)
        if let record, record.clientID == clientID {
            if record.expiresAt > now { return Loaded(record: record, hasRoom: true) }
            logger.debug("MQTT session expired", metadata: ["client": "\(clientID)"])
            remove(path)
            return Loaded(record: nil, hasRoom: hasRoom())
        }
        // Another identifier's file (a hash collision) is left alone and this one's session is not kept.
        return Loaded(record: nil, hasRoom: record == nil && hasRoom())
    }

    /// Writes the session; false when it was not kept (`MqttMaxSessions` reached by other sessions).
    @discardableResult
    func saveNow(_ record: MQTTSessionRecord) -> Bool {
        let path = path(of: record.clientID)
        let isNew = !FileManager.default.fileExists(atPath: path)
        guard !isNew || hasRoom() else {
            logger.warning("MQTT session not kept: MqttMaxSessions reached",
                           metadata: ["client": "\(record.clientID)", "limit": "\(maxSessions)"])
            return false
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try record.write(to: path)
            if isNew { knownCount = (knownCount ?? 0) + 1 }
            return true
        } catch {
            logger.error("MQTT session not saved", metadata: ["file": "\(path)", "error": "\(error)"])
            return false
        }
    }

    func deleteNow(_ clientID: String) {
        remove(path(of: clientID))
    }

    /// Returns how many sessions it removed.
    @discardableResult
    func sweepNow(now: Double) -> Int {
        let removed = sweep(folderNames()[...], now: now)
        recount()
        return removed
    }

    func announceTakeOverNow(of clientID: String, generation: UInt64) {
        let name = "\(Self.fileName(of: clientID).dropLast(5))-\(generation)"
        seenMarkers.insert(name)
        let path = (takeOverDirectory as NSString).appendingPathComponent(name)
        do {
            try FileManager.default.createDirectory(atPath: takeOverDirectory, withIntermediateDirectories: true)
            try Data(clientID.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            logger.error("MQTT take-over not announced to the node's other instances",
                         metadata: ["file": "\(path)", "error": "\(error)"])
        }
    }

    /// The announcements of the node's other instances not read yet: client → generation. Removes those older
    /// than `takeOverMarkerSeconds` (and left-over temporary files), looking every third of that.
    func takeOversNow(now: Double) -> [String: UInt64] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: takeOverDirectory)) ?? []
        let sweeps = now - markersSweptAt >= Self.takeOverMarkerSeconds / 3
        if sweeps { markersSweptAt = now }
        var taken: [String: UInt64] = [:]
        var present: Set<String> = []
        for name in names {
            let path = (takeOverDirectory as NSString).appendingPathComponent(name)
            if sweeps, let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate]) as? Date,
               now - modified.timeIntervalSince1970 > Self.takeOverMarkerSeconds {
                try? FileManager.default.removeItem(atPath: path)
                continue
            }
            guard let (hash, generation) = Self.takeOverMarker(name) else { continue }
            present.insert(name)
            guard seenMarkers.insert(name).inserted else { continue }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? Int ?? 0
            guard size <= 4 * IngressHub.maxMQTTClientIDLength, let data = FileManager.default.contents(atPath: path),
                  let clientID = String(data: data, encoding: .utf8),
                  Self.fileName(of: clientID).hasPrefix(hash) else { continue }
            taken[clientID] = max(taken[clientID] ?? 0, generation)
        }
        seenMarkers.formIntersection(present)
        return taken
    }

    /// The hash and generation of a take-over announcement's name; nil for another file.
    static func takeOverMarker(_ name: String) -> (hash: Substring, generation: UInt64)? {
        let parts = name.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, isSessionFileName(parts[0] + ".json"), let generation = UInt64(parts[1]) else {
            return nil
        }
        return (parts[0], generation)
    }

    private func folderNames() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    }

    private func recount() {
        knownCount = folderNames().filter(Self.isSessionFileName).count
    }

    @discardableResult
    private func sweep(_ names: ArraySlice<String>, now: Double) -> Int {
        var removed = 0
        for name in names {
            let path = (directory as NSString).appendingPathComponent(name)
            guard Self.isSessionFileName(name) else {
                let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate]) as? Date
                if let modified, now - modified.timeIntervalSince1970 > Self.staleTemporarySeconds {
                    try? FileManager.default.removeItem(atPath: path)
                }
                continue
            }
            if let record = read(path), record.expiresAt <= now {
                remove(path)
                removed += 1
            }
        }
        return removed
    }

    static func isSessionFileName(_ name: String) -> Bool {
        name.utf8.count == 37 && name.hasSuffix(".json") && name.utf8.prefix(32).allSatisfy {
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
        }
    }

    private func hasRoom() -> Bool {
        if knownCount == nil { recount() }
        return (knownCount ?? 0) < maxSessions
    }

    /// The record in `path`; nil when there is none or it is corrupt (logged, naming the file).
    private func read(_ path: String) -> MQTTSessionRecord? {
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? Int ?? 0
        func unreadable(_ problem: String) -> MQTTSessionRecord? {
            logger.warning("MQTT session file unreadable; treated as no session",
                           metadata: ["file": "\(path)", "problem": "\(problem)"])
            return nil
        }
        guard size <= Self.maxFileBytes else { return unreadable("larger than \(Self.maxFileBytes) bytes") }
        do {
            guard let record = try MQTTSessionRecord.read(from: path) else { return nil }
            guard record.hasKnownVersion else {
                return unreadable("protocol level \(record.version)")
            }
            return record
        } catch {
            return unreadable(error.problem)
        }
    }

    private func remove(_ path: String) {
        guard (try? FileManager.default.removeItem(atPath: path)) != nil else { return }
        knownCount = max((knownCount ?? 1) - 1, 0)
    }
}
