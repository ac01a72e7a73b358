import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import Prometheus

/// What every stage executable shares: its command line (`-c FILE --instance N`, `--print-config`), its
/// configuration, topology, log, metrics and signal handling.
// @unchecked Sendable: `stats`, `_topology`, `_isStopping` under `lock`; `signalSources` only in `start` (main thread).
public final class StageContext: @unchecked Sendable {
    public let stage: StageName
    public let instance: Int
    public let config: SwitchyardConfig
    public let logger: Logger
    /// The process's one log file and level: behind `logger` and, once `bootstrap` ran, every swift-log logger.
    private let logWriter: LogWriter
    /// This instance's Prometheus metrics, written to `<RunDir>/<stage>-<n>.prom` with the stats file.
    public let registry = PrometheusCollectorRegistry()
    public let metrics: StageMetrics
    private var stats: StatsPublisher?
    private let lock = NIOLock()
    private var _topology: Topology
    private var signalSources: [DispatchSourceSignal] = []
    private var _isStopping = false

    /// True once SIGTERM or SIGINT arrived: long waits (a deep recovery) give up.
    public var isStopping: Bool { lock.withLock { _isStopping } }

    /// Reads the command line and configuration, and routes every swift-log logger of the process (libraries'
    /// too) to this stage's log. Call it once per process. Exits the process with a clear message on bad
    /// arguments or a bad configuration, and after printing it for `--print-config`.
    public static func bootstrap(_ stage: StageName, arguments: [String] = CommandLine.arguments) -> StageContext {
        var configPath = "switchyard.conf"
        var instance = 0
        var printConfig = false
        var index = 1
        func value() -> String {
            index += 1
            guard index < arguments.count else { exitWithUsage(stage, "\(arguments[index - 1]) needs a value") }
            return arguments[index]
        }
        while index < arguments.count {
            switch arguments[index] {
            case "-c", "--config": configPath = value()
            case "--instance":
                guard let number = Int(value()), number >= 0 else { exitWithUsage(stage, "--instance takes a number") }
                instance = number
            case "--print-config": printConfig = true
            case "-h", "--help": exitWithUsage(stage, nil)
            default: exitWithUsage(stage, "unknown argument \(arguments[index])")
            }
            index += 1
        }
        let config: SwitchyardConfig
        do {
            config = try SwitchyardConfig.load(path: configPath)
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            exit(2)
        }
        if printConfig {
            print(config.supervisorJSON())
            exit(0)
        }
        let context = StageContext(stage: stage, instance: instance, config: config)
        context.logWriter.bootstrapLoggingSystem()
        // Once per process: swift-metrics used anywhere in the stage lands in this instance's registry.
        MetricsSystem.bootstrap(context.metrics.factory)
        return context
    }

    public init(stage: StageName, instance: Int, config: SwitchyardConfig) {
        self.stage = stage
        self.instance = instance
        self.config = config
        metrics = StageMetrics(factory: StageMetricsFactory.make(stage: stage.rawValue, instance: instance,
                                                                 registry: registry))
        var topologyProblems: [RunDirFileError] = []
        _topology = Topology.load(config: config) { topologyProblems.append($0) }
        let logFile = (config.logFolder as NSString).appendingPathComponent("\(stage.rawValue)-\(instance).log")
        logWriter = LogWriter(stage: stage.rawValue, instance: instance, level: config.logLevel, logFile: logFile,
                              rotateLimit: config.logRotateLimit)
        logger = logWriter.makeLogger()
        try? FileManager.default.createDirectory(atPath: config.runDir, withIntermediateDirectories: true)
        for problem in topologyProblems { warnAboutTopology(problem) }
    }

    private func warnAboutTopology(_ problem: RunDirFileError) {
        logger.warning("topology file not (fully) used", metadata: ["problem": "\(problem)"])
    }

    public var topology: Topology { lock.withLock { _topology } }

    /// This instance's inbound (PULL) address.
    public var inboundAddress: String { topology.address(stage, instance) }

    /// Starts publishing the stats and Prometheus files and installs the signal handlers every stage shares: SIGUSR1 re-reads
    /// `<RunDir>/<stage>-<n>.loglevel`, SIGHUP re-reads the topology (then calls `onTopologyChange`), SIGUSR2
    /// calls `onReload` (ignored without it), SIGTERM and SIGINT call `onStop`.
    public func start(onStop: @escaping @Sendable () -> Void,
                      onTopologyChange: @escaping @Sendable (Topology) -> Void = { _ in },
                      onReload: (@Sendable () -> Void)? = nil) {
        let publisher = StatsPublisher(metrics: metrics, registry: registry, stage: stage.rawValue, instance: instance,
                                       runDir: config.runDir)
        lock.withLock { stats = publisher }
        handle(SIGTERM) { [weak self] in
            self?.stopping(signal: "TERM")
            onStop()
        }
        handle(SIGINT) { [weak self] in
            self?.stopping(signal: "INT")
            onStop()
        }
        handle(SIGUSR1) { [weak self] in self?.reloadLogLevel() }
        handle(SIGHUP) { [weak self] in
            guard let self else { return }
            let topology = Topology.load(config: self.config) { self.warnAboutTopology($0) }
            self.lock.withLock { self._topology = topology }
            self.logger.info("topology reloaded", metadata: ["instances": "\(topology.instances)"])
            onTopologyChange(topology)
        }
        if let onReload {
            handle(SIGUSR2, onReload)
        } else {
            signal(SIGUSR2, SIG_IGN)
        }
        signal(SIGPIPE, SIG_IGN)
    }

    /// Tells the supervisor this instance is ready (or not) and writes the stats file at once.
    public func setReady(_ ready: Bool) {
        metrics.setReady(ready)
        lock.withLock { stats }?.publishNow()
    }

    private func stopping(signal: String) {
        lock.withLock { _isStopping = true }
        logger.info("stopping", metadata: ["signal": "\(signal)"])
    }

    private func handle(_ signalNumber: Int32, _ action: @escaping @Sendable () -> Void) {
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler(handler: action)
        source.resume()
        signalSources.append(source)
    }

    private func reloadLogLevel() {
        let file = (config.runDir as NSString).appendingPathComponent("\(stage.rawValue)-\(instance).loglevel")
        guard let text = try? String(contentsOfFile: file, encoding: .utf8),
              let level = Logger.Level(configName: text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            logger.warning("log level file missing or invalid", metadata: ["file": "\(file)"])
            return
        }
        logWriter.level = level
        logger.info("log level changed", metadata: ["level": "\(level.configName)"])
    }

    private static func exitWithUsage(_ stage: StageName, _ problem: String?) -> Never {
        let usage = "usage: \(stage.rawValue) [-c FILE] [--instance N] [--print-config]\n"
        if let problem {
            FileHandle.standardError.write(Data("\(stage.rawValue): \(problem)\n\(usage)".utf8))
            exit(2)
        }
        print(usage, terminator: "")
        exit(0)
    }
}

/// The current time in nanoseconds since the Unix epoch (`CLOCK_REALTIME`): for message timestamps and epochs
/// only. It can step back (NTP, a VM resumed), so intervals and deadlines use `monotonicNanoseconds()`.
public func wallClockNanoseconds() -> UInt64 {
    nanoseconds(CLOCK_REALTIME)
}

/// Nanoseconds on a clock that never steps back (`CLOCK_MONOTONIC`, from an arbitrary start): for intervals and
/// deadlines. Meaningless across processes and restarts.
public func monotonicNanoseconds() -> UInt64 {
    nanoseconds(CLOCK_MONOTONIC)
}

/// Nanoseconds from `start` to `end`; 0 when `end` is earlier, so a time from another clock or a clock that went
/// back never traps.
public func elapsedNanoseconds(from start: UInt64, to end: UInt64) -> UInt64 {
    end >= start ? end - start : 0
}

private func nanoseconds(_ clock: clockid_t) -> UInt64 {
    var now = timespec()
    clock_gettime(clock, &now)
    // A clock set before 1970 reads as 0 rather than trapping.
    return UInt64(clamping: now.tv_sec) &* 1_000_000_000 &+ UInt64(clamping: now.tv_nsec)
}
