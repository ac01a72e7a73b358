import Foundation
import Logging
import NIOConcurrencyHelpers

extension Logger.Level {
    /// The values of the `LogLevel` parameter and of `./switchyard loglevel`.
    public static let configNames = "TRACE, DEBUG, INFO, WARN, ERROR"

    /// Parses a `LogLevel` value, in any case (`WARNING` too).
    public init?(configName: String) {
        switch configName.uppercased() {
        case "TRACE": self = .trace
        case "DEBUG": self = .debug
        case "INFO": self = .info
        case "WARN", "WARNING": self = .warning
        case "ERROR": self = .error
        default: return nil
        }
    }

    /// The level's name in a log line and in the configuration: always one of the five `LogLevel` values, so
    /// swift-log's `.notice` reads INFO and `.critical` reads ERROR (a `level=ERROR` search finds both).
    public var configName: String {
        switch self {
        case .trace: return "TRACE"
        case .debug: return "DEBUG"
        case .info, .notice: return "INFO"
        case .warning: return "WARN"
        case .error, .critical: return "ERROR"
        }
    }
}

/// swift-log's handler in a stage process, for the stage's own logger and for any library's (`LoggingSystem` is
/// bootstrapped with it): one `LogLine` per event, written by the process's one `LogWriter`.
///
/// The level is the writer's, shared by every copy of every logger, so `./switchyard loglevel` reaches them all;
/// setting `logLevel` on one logger overrides it for that copy only, as swift-log's value semantics promise.
public struct KeyValueLogHandler: LogHandler {
    public let label: String
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let writer: LogWriter
    private var ownLevel: Logger.Level?

    public init(label: String, writer: LogWriter, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.writer = writer
        self.metadataProvider = metadataProvider
    }

    public var logLevel: Logger.Level {
        get { ownLevel ?? writer.level }
        set { ownLevel = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Fields: the logger's metadata, then the provider's, then the call's (a later one wins a key), and the call's
    /// `error:` as `error` unless the metadata has one.
    public func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let own = event.metadata { fields.merge(own) { $1 } }
        if let error = event.error, fields["error"] == nil { fields["error"] = "\(error)" }
        writer.write(LogLine.format(level: event.level, stage: writer.stage, instance: writer.instance,
                                    label: label == writer.stage ? nil : label,
                                    message: event.message.description, fields: fields))
    }
}

/// One line per event, in a stable `key=value` format:
/// `time=2026-11-24T19:33:01.123Z level=INFO stage=cache instance=0 msg="started" epoch=...`; a library's logger
/// (a label other than the stage's) adds `label=...` after `msg`; the metadata follows in key order (swift-log's
/// metadata is a dictionary: sorted keys make the order stable).
public enum LogLine {
    public static func format(time: String = timestamp(), level: Logger.Level, stage: String, instance: Int,
                              label: String?, message: String, fields: Logger.Metadata) -> String {
        var line = "time=\(time) level=\(level.configName) stage=\(quote(stage)) instance=\(instance) msg=\(quote(message))"
        if let label { line += " label=\(quote(label))" }
        for key in fields.keys.sorted() {
            line += " \(sanitize(key))=\(quote(fields[key]?.description ?? ""))"
        }
        return line + "\n"
    }

    /// Values with spaces, quotes, `=` or control characters are quoted, and every control character (and line or
    /// paragraph separator) is escaped — `\n`, `\r`, `\t`, else `\u{1b}` — so that every line splits the same way
    /// and nothing a client sent can start a line of its own.
    static func quote(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.unicodeScalars.contains {
            $0 == " " || $0 == "\"" || $0 == "=" || needsEscape($0)
        }
        guard needsQuotes else { return value }
        var quoted = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": quoted += "\\\\"
            case "\"": quoted += "\\\""
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            case _ where needsEscape(scalar): quoted += "\\u{\(String(scalar.value, radix: 16))}"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    /// A key keeps letters, digits, `_`, `.` and `-`; any other character becomes `_`, so a key never needs quotes.
    static func sanitize(_ key: String) -> String {
        guard !key.isEmpty else { return "_" }
        var clean = ""
        for scalar in key.unicodeScalars {
            let allowed = scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)
                                             || scalar == "_" || scalar == "." || scalar == "-")
            clean.unicodeScalars.append(allowed ? scalar : "_")
        }
        return clean
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }

    public static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                      parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}

/// A process's one log destination and its one level.
///
/// Lines go to standard error, which the supervisor points at `<LogFolder>/<stage>-<n>.log`. Past `rotateLimit`
/// bytes the file is renamed to `.1` and a new one takes standard error and output over, so crash output lands in
/// the current file too.
// @unchecked Sendable: `bytesInFile` (and the writes and renames) only under `writeLock`; the level is in a locked box.
public final class LogWriter: @unchecked Sendable {
    public let stage: String
    public let instance: Int
    private let sharedLevel: NIOLockedValueBox<Logger.Level>
    private let writeLock = NIOLock()
    private let descriptors: [Int32]
    private let logFile: String?
    private let rotateLimit: Int
    private var bytesInFile: Int

    /// Lines go to the first of `descriptors`; a rotation points all of them at the new file.
    public init(stage: String, instance: Int, level: Logger.Level, logFile: String? = nil, rotateLimit: Int = .max,
                descriptors: [Int32] = [STDERR_FILENO, STDOUT_FILENO]) {
        self.stage = stage
        self.instance = instance
        sharedLevel = NIOLockedValueBox(level)
        self.descriptors = descriptors
        self.logFile = logFile
        self.rotateLimit = rotateLimit
        var info = stat()
        bytesInFile = descriptors.first.map { fstat($0, &info) == 0 ? Int(info.st_size) : 0 } ?? 0
    }

    /// The level of every logger of the process (but one whose `logLevel` was set on it).
    public var level: Logger.Level {
        get { sharedLevel.withLockedValue { $0 } }
        set { sharedLevel.withLockedValue { $0 = newValue } }
    }

    /// A logger that writes through this writer; its label is the stage's, so its lines carry no `label`.
    public func makeLogger() -> Logger {
        Logger(label: stage) { KeyValueLogHandler(label: $0, writer: self) }
    }

    /// Makes every swift-log logger of the process, libraries' too, write through this writer. Once per process
    /// (swift-log traps on a second bootstrap).
    public func bootstrapLoggingSystem() {
        LoggingSystem.bootstrap({ [self] label, metadataProvider in
            KeyValueLogHandler(label: label, writer: self, metadataProvider: metadataProvider)
        }, metadataProvider: nil)
    }

    func write(_ line: String) {
        guard let descriptor = descriptors.first else { return }
        var line = line
        writeLock.withLock {
            line.withUTF8 { bytes in
                guard let base = bytes.baseAddress else { return }
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(descriptor, base + offset, bytes.count - offset)
                    if written < 0 && errno == EINTR { continue }
                    guard written > 0 else { break }
                    offset += written
                }
            }
            bytesInFile += line.utf8.count
            if let logFile, bytesInFile > rotateLimit { rotate(logFile) }
        }
    }

    /// The log's path never disappears, not even for an instant (`logs -f` and readers keep working): the
    /// current file gets the `.1` name as a second link, then a new empty file replaces the path atomically.
    private func rotate(_ logFile: String) {
        let fresh = logFile + ".new"
        let fd = open(fresh, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o644)
        guard fd >= 0 else { return }
        unlink(logFile + ".1")
        link(logFile, logFile + ".1")
        rename(fresh, logFile)
        for descriptor in descriptors { dup2(fd, descriptor) }
        close(fd)
        bytesInFile = 0
    }
}
