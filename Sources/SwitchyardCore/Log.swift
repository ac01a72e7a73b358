import Foundation
import NIOConcurrencyHelpers

public enum LogLevel: Int, Comparable, Sendable {
    case trace = 0, debug, info, warn, error

    public static let names = "TRACE, DEBUG, INFO, WARN, ERROR"

    public init?(name: String) {
        switch name.uppercased() {
        case "TRACE": self = .trace
        case "DEBUG": self = .debug
        case "INFO": self = .info
        case "WARN", "WARNING": self = .warn
        case "ERROR": self = .error
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .trace: return "TRACE"
        case .debug: return "DEBUG"
        case .info: return "INFO"
        case .warn: return "WARN"
        case .error: return "ERROR"
        }
    }

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One line per event, in a stable `key=value` format:
/// `time=2026-11-24T19:33:01.123Z level=INFO stage=cache instance=0 msg="started" epoch=...`.
///
/// Lines go to standard error, which the supervisor points at `<LogFolder>/<stage>-<n>.log`. Past
/// `rotateLimit` bytes the file is renamed to `.1` and a new one takes standard output and error over, so crash
/// output lands in the current file too.
// @unchecked Sendable: `_level` and `bytesInFile` (and the writes and renames) are touched only under `lock`.
public final class Logger: @unchecked Sendable {
    public let stage: String
    public let instance: Int
    private let lock = NIOLock()
    private var _level: LogLevel
    private let logFile: String?
    private let rotateLimit: Int
    private var bytesInFile: Int

    public init(stage: String, instance: Int, level: LogLevel, logFile: String? = nil, rotateLimit: Int = .max) {
        self.stage = stage
        self.instance = instance
        _level = level
        self.logFile = logFile
        self.rotateLimit = rotateLimit
        var info = stat()
        bytesInFile = fstat(2, &info) == 0 ? Int(info.st_size) : 0
    }

    public var level: LogLevel {
        get { lock.withLock { _level } }
        set { lock.withLock { _level = newValue } }
    }

    public func isEnabled(_ level: LogLevel) -> Bool { level >= self.level }

    public func trace(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, Any> = [:]) {
        log(.trace, message(), fields())
    }
    public func debug(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, Any> = [:]) {
        log(.debug, message(), fields())
    }
    public func info(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, Any> = [:]) {
        log(.info, message(), fields())
    }
    public func warn(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, Any> = [:]) {
        log(.warn, message(), fields())
    }
    public func error(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> KeyValuePairs<String, Any> = [:]) {
        log(.error, message(), fields())
    }

    private func log(_ level: LogLevel, _ message: @autoclosure () -> String,
                     _ fields: @autoclosure () -> KeyValuePairs<String, Any>) {
        guard isEnabled(level) else { return }
        var line = "time=\(Self.timestamp()) level=\(level.name) stage=\(stage) instance=\(instance) msg=\(Self.quote(message()))"
        for (key, value) in fields() {
            line += " \(key)=\(Self.quote(String(describing: value)))"
        }
        line += "\n"
        write(line)
    }

    private func write(_ line: String) {
        lock.withLock {
            var utf8 = line.utf8CString
            _ = utf8.popLast()
            _ = utf8.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
            bytesInFile += utf8.count
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
        dup2(fd, 1)
        dup2(fd, 2)
        close(fd)
        bytesInFile = 0
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

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                      parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}
