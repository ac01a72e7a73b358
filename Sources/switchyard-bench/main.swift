// C's `stdout` and `stderr` are mutable globals to Swift 6; the C runtime sets them before `main` and nothing here
// reassigns them. (Imported before Foundation, which re-exports Glibc without the attribute.)
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation

// switchyard-bench: a SwiftNIO load generator for Switchyard's WebSocket protocol. See Options.usage and
// docs/BENCHMARKS.md.

setvbuf(stdout, nil, _IOLBF, 0)

let options: Options
do {
    options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    fputs("switchyard-bench: \(error)\n", stderr)
    exit(2)
}

// Every connection is a file descriptor, and the baseline's server side lives in this process too.
var limit = rlimit()
getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
if limit.rlim_cur < limit.rlim_max {
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}
let connectionsPerRun = options.subscriberCount + options.publisherCount
let descriptorsNeeded = connectionsPerRun * ((options.baseline || options.baselineOnly) ? 2 : 1) + 64
if UInt64(descriptorsNeeded) > UInt64(limit.rlim_cur) {
    fputs("switchyard-bench: \(descriptorsNeeded) file descriptors needed but the limit is \(limit.rlim_cur); "
          + "run fewer subscribers per process\n", stderr)
    exit(2)
}

// Bounded in time whatever happens to the server: a watchdog ends the process.
let watchdog = Thread {
    Thread.sleep(forTimeInterval: options.effectiveTimeout)
    fputs("switchyard-bench: timed out after \(options.effectiveTimeout)s\n", stderr)
    exit(4)
}
watchdog.start()

if options.scenario == .connections {
    do {
        let result = try ConnectionsRunner(options: options).run()
        let json = result.json(options)
        print(json)
        if let path = options.jsonOut { try (json + "\n").write(toFile: path, atomically: true, encoding: .utf8) }
        exit(result.isClean ? 0 : 3)
    } catch {
        fputs("switchyard-bench: \(error)\n", stderr)
        exit(1)
    }
}

// Each round runs the load against Switchyard and against the baseline, alternating which goes first, so that
// the noise of a shared machine falls on both; the report pools the rounds.
var rounds: [[RunResult]] = []
do {
    var baselineServer: BaselineServer?
    var baselinePort = 0
    if options.baseline || options.baselineOnly {
        let server = BaselineServer()
        baselinePort = try server.start(host: options.baselineHost, port: options.baselinePort)
        baselineServer = server
    }
    defer { baselineServer?.stop() }
    let watched = (options.watchRunDir.map { CPUSample.stageProcesses(runDir: $0) } ?? []) + options.watchPids
    for round in 0..<options.rounds {
        if options.rounds > 1 && !options.quiet { fputs("round \(round + 1) of \(options.rounds)\n", stderr) }
        var runners: [ScenarioRunner] = []
        if !options.baselineOnly {
            runners.append(ScenarioRunner(options: options, name: options.name, host: options.host, port: options.port,
                                          watched: watched))
        }
        if baselineServer != nil {
            runners.append(ScenarioRunner(options: options, name: "baseline", host: options.baselineHost,
                                          port: baselinePort))
        }
        var results: [RunResult] = []
        for runner in (round % 2 == 0 ? runners : runners.reversed()) { results.append(try runner.run()) }
        rounds.append(results.sorted { $0.name != "baseline" && $1.name == "baseline" })
    }
} catch {
    fputs("switchyard-bench: \(error)\n", stderr)
    exit(1)
}
let results = rounds[0].indices.map { index in RunResult.pooled(rounds.map { $0[index] }) }

let report = Report(options: options, results: results, rounds: rounds)
print(report.table())
let json = report.json()
print(json)
if let path = options.jsonOut {
    do {
        try (json + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    } catch {
        fputs("switchyard-bench: cannot write \(path): \(error)\n", stderr)
        exit(1)
    }
}
let clean = results.allSatisfy { $0.stats.gaps == 0 && $0.stats.duplicates == 0 && $0.missing == 0
    && $0.connectFailures == 0 && $0.stats.disconnects == 0 && $0.stats.acksFailed == 0 }
exit(clean ? 0 : 3)
