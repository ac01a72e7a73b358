import Foundation
import Logging
import XCTest
@testable import SwitchyardCore

/// The `key=value` log format: a value never breaks its line, whatever a client put in it.
final class LogTests: XCTestCase {
    func testPlainValuesStayAsTheyAre() {
        XCTAssertEqual(LogLine.quote("ready"), "ready")
        XCTAssertEqual(LogLine.quote("/vehicles/car66/speed"), "/vehicles/car66/speed")
        XCTAssertEqual(LogLine.quote("a\\b"), "a\\b", "a backslash alone needs no quotes")
    }

    func testSpacesQuotesAndEqualsAreQuoted() {
        XCTAssertEqual(LogLine.quote(""), "\"\"")
        XCTAssertEqual(LogLine.quote("two words"), "\"two words\"")
        XCTAssertEqual(LogLine.quote("k=v"), "\"k=v\"")
        XCTAssertEqual(LogLine.quote("say \"hi\" \\o/"), "\"say \\\"hi\\\" \\\\o/\"")
    }

    func testControlCharactersAreEscapedSoNoValueStartsALine() {
        XCTAssertEqual(LogLine.quote("a\r\nlevel=ERROR"), "\"a\\r\\nlevel=ERROR\"")
        XCTAssertEqual(LogLine.quote("tab\there"), "\"tab\\there\"")
        XCTAssertEqual(LogLine.quote("\u{1B}[31mred"), "\"\\u{1b}[31mred\"")
        XCTAssertEqual(LogLine.quote("x\u{2028}y\u{85}z"), "\"x\\u{2028}y\\u{85}z\"")
        for value in ["a\rb", "a\nb", "\u{0}", "\u{7F}", "\u{2029}"] {
            let quoted = LogLine.quote(value)
            XCTAssertFalse(quoted.unicodeScalars.contains { $0.properties.generalCategory == .control },
                           "\(quoted.debugDescription) keeps a control character")
        }
    }

    func testKeysKeepWordCharactersDotsAndDashesOnly() {
        XCTAssertEqual(LogLine.sanitize("http.status-code_2"), "http.status-code_2")
        XCTAssertEqual(LogLine.sanitize("a b=c\n\"d\""), "a_b_c__d_")
        XCTAssertEqual(LogLine.sanitize("é"), "_")
        XCTAssertEqual(LogLine.sanitize(""), "_")
    }

    func testLineHasTimeLevelStageInstanceMsgThenFieldsInKeyOrder() {
        let line = LogLine.format(time: "2026-11-24T19:33:01.123Z", level: .warning, stage: "cache", instance: 2,
                                  label: nil, message: "next stage is not taking messages; waiting",
                                  fields: ["peer": "ipc:///run/fanout-0.ipc", "dropped": "3", "b key": "two words"])
        XCTAssertEqual(line, "time=2026-11-24T19:33:01.123Z level=WARN stage=cache instance=2 "
                       + "msg=\"next stage is not taking messages; waiting\" b_key=\"two words\" dropped=3 "
                       + "peer=ipc:///run/fanout-0.ipc\n")
        let library = LogLine.format(time: "t", level: .info, stage: "ws-ingress", instance: 0, label: "io.lib",
                                     message: "ready", fields: [:])
        XCTAssertEqual(library, "time=t level=INFO stage=ws-ingress instance=0 msg=ready label=io.lib\n")
    }

    /// The five `LogLevel` names only: swift-log's notice reads INFO and critical ERROR.
    func testLevelNames() {
        let names = Logger.Level.allCases.map(\.configName)
        XCTAssertEqual(names, ["TRACE", "DEBUG", "INFO", "INFO", "WARN", "ERROR", "ERROR"])
        XCTAssertEqual(Logger.Level(configName: "warning"), .warning)
        XCTAssertEqual(Logger.Level(configName: "Warn"), .warning)
        XCTAssertEqual(Logger.Level(configName: "trace"), .trace)
        XCTAssertNil(Logger.Level(configName: "NOTICE"))
        XCTAssertNil(Logger.Level(configName: "LOUD"))
    }

    func testMetadataOfLoggerProviderAndCallMergeAndErrorBecomesAField() throws {
        let log = try TestLogFile()
        let provider = Logger.MetadataProvider { ["request": "r1", "shared": "provider"] }
        var logger = Logger(label: "cache") {
            KeyValueLogHandler(label: $0, writer: log.writer, metadataProvider: provider)
        }
        logger[metadataKey: "shared"] = "logger"
        logger[metadataKey: "connection"] = "7"
        logger.error("send failed", error: TestError(), metadata: ["shared": "call", "peer": "p"])
        logger.info("with its own error field", error: TestError(), metadata: ["error": "mine"])
        let lines = log.lines()
        XCTAssertEqual(lines.count, 2, "\(lines)")
        XCTAssertTrue(lines[0].hasSuffix(" level=ERROR stage=cache instance=3 msg=\"send failed\" connection=7 "
                                         + "error=\"test error\" peer=p request=r1 shared=call"), lines[0])
        XCTAssertTrue(lines[1].hasSuffix(" connection=7 error=mine request=r1 shared=provider"), lines[1])
    }

    /// What a library does: `Logger(label:)` once the stage bootstrapped the logging system. Its lines are in the
    /// stage's format, carry its label, and what a client sent cannot start a line of its own.
    func testALibraryLoggerWritesTheStageFormatAfterBootstrap() throws {
        let log = try TestLogFile(keptOpen: true)  // the logging system keeps its writer for the whole test process
        log.writer.bootstrapLoggingSystem()
        let library = Logger(label: "com.example.library")
        library.notice("client said", metadata: ["text": "hi\r\ntime=x level=ERROR stage=cache msg=forged"])
        library.debug("below the level: not written")
        library.critical("gave up")
        let lines = log.lines()
        XCTAssertEqual(lines.count, 2, "\(lines)")
        XCTAssertTrue(lines.allSatisfy { $0.hasPrefix("time=") && $0.contains(" stage=cache instance=3 msg=") },
                      "\(lines)")
        XCTAssertTrue(lines[0].contains(" level=INFO ") && lines[0].contains(" label=com.example.library "), lines[0])
        XCTAssertTrue(lines[0].hasSuffix(#" text="hi\r\ntime=x level=ERROR stage=cache msg=forged""#), lines[0])
        XCTAssertTrue(lines[1].contains(" level=ERROR ") && lines[1].hasSuffix(" msg=\"gave up\" label=com.example.library"),
                      lines[1])
    }

    /// `./switchyard loglevel` sets the writer's level: every logger already handed out follows it, but for one
    /// whose own `logLevel` was set.
    func testTheWritersLevelReachesEveryLoggerHandedOut() throws {
        let log = try TestLogFile()
        let first = log.writer.makeLogger()
        let copy = first
        var pinned = log.writer.makeLogger()
        pinned.logLevel = .error
        first.debug("hidden")
        log.writer.level = .debug
        first.debug("first")
        copy.debug("copy")
        pinned.debug("pinned stays at ERROR")
        XCTAssertEqual(first.logLevel, .debug)
        XCTAssertEqual(pinned.logLevel, .error)
        XCTAssertEqual(log.lines().map { $0.components(separatedBy: " msg=").last }, ["first", "copy"])
    }

    /// Past the limit the file gets the `.1` name and a new file takes the path: both hold whole lines.
    func testRotationKeepsOneOldFileAndWholeLines() throws {
        let log = try TestLogFile(rotateLimit: 300)
        let logger = log.writer.makeLogger()
        for n in 0..<20 { logger.info("line", metadata: ["n": "\(n)"]) }
        let old = try String(contentsOfFile: log.path + ".1", encoding: .utf8)
        let current = try String(contentsOfFile: log.path, encoding: .utf8)
        XCTAssertFalse(FileManager.default.fileExists(atPath: log.path + ".new"))
        XCTAssertLessThanOrEqual(current.utf8.count, 300 + 200)
        XCTAssertTrue(old.hasSuffix("\n") && (current.isEmpty || current.hasSuffix("\n")))
        XCTAssertTrue(old.split(separator: "\n").allSatisfy { $0.hasPrefix("time=") && $0.contains(" msg=line n=") })
        XCTAssertTrue(current.hasSuffix(" n=19\n") || old.hasSuffix(" n=19\n"))
    }
}

private struct TestError: Error, CustomStringConvertible {
    var description: String { "test error" }
}

/// A log file in a fresh folder and a writer (stage cache, instance 3, level INFO) whose lines go to it.
private final class TestLogFile {
    let path: String
    let writer: LogWriter
    private let descriptor: Int32
    private let keptOpen: Bool

    init(rotateLimit: Int = .max, keptOpen: Bool = false) throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-log-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        path = folder.appendingPathComponent("cache-3.log").path
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        guard descriptor >= 0 else { throw CocoaError(.fileWriteUnknown) }
        self.keptOpen = keptOpen
        writer = LogWriter(stage: "cache", instance: 3, level: .info, logFile: path, rotateLimit: rotateLimit,
                           descriptors: [descriptor])
    }

    func lines() -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    deinit {
        guard !keptOpen else { return }
        close(descriptor)
        try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
    }
}
