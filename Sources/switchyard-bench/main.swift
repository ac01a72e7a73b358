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

var results: [RunResult] = []
do {
    if !options.baselineOnly {
        let watched = options.watchRunDir.map { CPUSample.stageProcesses(runDir: $0) } ?? []
        let runner = ScenarioRunner(options: options, name: "switchyard", host: options.host, port: options.port,
                                    watched: watched)
        results.append(try runner.run())
    }
    if options.baseline || options.baselineOnly {
        let server = BaselineServer()
        let port = try server.start(host: options.baselineHost, port: options.baselinePort)
        defer { server.stop() }
        let runner = ScenarioRunner(options: options, name: "baseline", host: options.baselineHost, port: port)
        results.append(try runner.run())
    }
} catch {
    fputs("switchyard-bench: \(error)\n", stderr)
    exit(1)
}

let report = Report(options: options, results: results)
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
