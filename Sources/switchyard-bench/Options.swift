#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum Scenario: String {
    case fanout
    case publish
    case connections
}

struct Options {
    var scenario: Scenario = .fanout
    var wireProtocol: WireProtocol = .switchyard
    /// The target's name in the report (and in its subjects).
    var name = "switchyard"
    var host = "127.0.0.1"
    var port = 8800
    var path: String?
    var subscribers = 1000
    var subjects = 10
    var publishers: Int?
    var rate: Double = 0
    var window = 100
    var duration: Double = 10
    var warmup: Double = 2
    var drain: Double = 5
    var payload = 64
    var burst = 1
    var threads = 1
    var sources = 1
    var connectConcurrency = 100
    var qos: String?
    var retained: Bool?
    var baseline = false
    var baselineOnly = false
    var baselineHost = "127.0.0.1"
    var baselinePort = 0
    var jsonOut: String?
    var quiet = false
    var timeout: Double?
    var watchRunDir: String?
    var watchPids: [(name: String, pid: Int32)] = []
    var rounds = 1
    /// `connections`: the first subject's number (`/conn/<n>`), the first source address's last octet, connections
    /// opened per second, seconds between two messages on one subject, a file written once all are subscribed.
    var firstSubject = 0
    var sourceFirst = 1
    var connectRate: Double = 1000
    var interval: Double = 10
    var readyFile: String?
    var subscribe = true

    /// The WebSocket path: `/mqtt` for MQTT (Switchyard's MQTT endpoint; mosquitto takes any path), else `/`.
    var webSocketPath: String { path ?? (wireProtocol == .mqtt ? "/mqtt" : "/") }
    var publisherCount: Int { scenario == .connections ? 1 : publishers ?? (scenario == .fanout ? 1 : 4) }
    var subscriberCount: Int { scenario == .publish ? 0 : subscribers }
    var runCount: Int { ((baselineOnly ? 0 : 1) + (baseline || baselineOnly ? 1 : 0)) * rounds }
    var effectiveTimeout: Double {
        if let timeout { return timeout }
        if scenario == .connections { return Double(subscribers) / connectRate + 60 + duration + drain + 45 }
        return Double(runCount) * (warmup + duration + drain + 45)
    }

    static let usage = """
    usage: switchyard-bench [options]

    Load generator for Switchyard's WebSocket protocol (loopback only). With --baseline, the same load also runs
    against a minimal in-process NIO fan-out server, and the report gives Switchyard/baseline ratios.

    Scenarios
      fanout   (default) N subscribers on S subjects (subscriber i on subject i mod S), then P publishers publish
               round-robin over the subjects; measures acked publishes/s, deliveries/s, end-to-end latency
               (publish sent -> message received), and checks per subscriber that seqs are contiguous.
      publish  P publishers publish with closures as fast as their windows allow (or at --rate); no subscribers;
               measures acked publishes/s and ack latency (publish sent -> publish_status received).
      connections  --subscribers N connections opened at --connect-rate, from 127.0.0.<--source-first> onwards
               (--sources addresses), each subscribed to its own subject /conn/<--first-subject + i>; then one
               publisher sends one message per subject every --interval seconds (spread evenly) for --duration
               seconds while they are held; reports per connection whether it received every acknowledged
               message (scripts/bench-connections.sh runs several processes and measures the stages' memory).

    Options
      --scenario fanout|publish|connections
      --target HOST:PORT       Switchyard's WebSocket listener (default 127.0.0.1:8800); loopback only
      --protocol P             what the bench speaks to the target (default switchyard):
                                 switchyard  protocol v1, JSON over WebSocket, publishes acknowledged
                                 mqtt        MQTT 3.1.1 over WebSocket (subprotocol mqtt), QoS 0
                                 nats        NATS over WebSocket
                                 raw         the floor program's 110-byte records over TCP (scripts/bench-floor.c)
                               mqtt, nats and raw publish at --rate (required) from one publisher, content
                               "t=<send time>;n=<seq of the subject>;" padded to --payload; fanout only
      --name NAME              the target's name in the report (default switchyard)
      --path PATH              WebSocket path (default /mqtt with --protocol mqtt, else /)
      --subscribers N          fanout subscribers (default 1000)
      --subjects S             subjects (default 10)
      --publishers P           publisher connections (default 1 for fanout, 4 for publish)
      --rate R                 total publishes/s target; 0 = as fast as the windows allow (default 0)
      --window W               unacknowledged publishes per publisher (default 100)
      --duration D             measured seconds (default 10)
      --warmup SECONDS         publishing before the measurement starts (default 2)
      --drain SECONDS          at most this long after the end for the last acks and deliveries (default 5)
      --payload BYTES          publish content size: "t=<send time ns>" padded with dots (default 64)
      --burst B                publishes go out B at a time to one subject, back to back (default 1): B messages
                               per subscriber reach the server together
      --qos GUARANTEED|STANDARD, --retained true|false
                               publish options (default: the protocol defaults, omitted from the frame)
      --threads T              load-generator event loop threads (default 1)
      --sources K              spread subscribers over source addresses 127.0.0.1 .. 127.0.0.K (default 1)
      --connect-concurrency C  connections opened at once (default 100)
      --connect-rate R         connections: connections opened per second at most (default 1000)
      --first-subject K        connections: the first subject is /conn/K (default 0)
      --source-first A         connections: the first source address is 127.0.0.A (default 1)
      --interval SECONDS       connections: seconds between two messages on one subject (default 10)
      --ready-file FILE        connections: written once every connection has its subscribe answered
      --no-subscribe           connections: connect only (no subscription, no publisher); the connections'
                               own cost. IdleTimeout closes them after its time
      --baseline               also run the load against the in-process baseline server and print ratios
      --baseline-only          run only the baseline (no Switchyard needed)
      --rounds N               repeat the runs N times, alternating which target goes first; the report pools
                               the rounds and lists each round's ratios (default 1)
      --baseline-port PORT     the baseline's port (default 0: a free one)
      --watch-rundir DIR       report the CPU use of the stack's stages (DIR/*.pid) during the measured window
      --watch-pid NAME=PID     also report the CPU use of process PID as NAME (repeatable)
      --json-out FILE          also write the one-line JSON summary to FILE
      --timeout SECONDS        give up (exit 4) after this long; default: per run warm-up + duration + drain + 45
      --quiet                  no per-second progress on stderr

    Exit status: 0 clean; 1 error; 2 usage; 3 the run finished but saw gaps, duplicates, missing deliveries,
    failed publishes, failed connections or disconnects; 4 timed out.
    """

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var index = 0
        func value(_ name: String) throws -> String {
            index += 1
            guard index < arguments.count else { throw BenchError("\(name) needs a value") }
            return arguments[index]
        }
        func integer(_ name: String, min: Int = 0) throws -> Int {
            let text = try value(name)
            guard let number = Int(text), number >= min else { throw BenchError("\(name): '\(text)' is not an integer >= \(min)") }
            return number
        }
        /// One of `Choice`'s raw values; `what` names it in the error.
        func choice<Choice: RawRepresentable>(_ name: String, _ what: String) throws -> Choice
        where Choice.RawValue == String {
            let text = try value(name)
            guard let choice = Choice(rawValue: text) else { throw BenchError("unknown \(what) '\(text)'") }
            return choice
        }
        func number(_ name: String, min: Double = 0) throws -> Double {
            let text = try value(name)
            guard let number = Double(text), number >= min, number.isFinite else {
                throw BenchError("\(name): '\(text)' is not a number >= \(min)")
            }
            return number
        }
        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "-h", "--help":
                print(usage)
                exit(0)
            case "--scenario": options.scenario = try choice(argument, "scenario")
            case "--target":
                let text = try value(argument)
                guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else {
                    throw BenchError("--target must be HOST:PORT")
                }
                options.host = String(text[..<colon]).benchTrimmingBrackets()
                options.port = port
            case "--path": options.path = try value(argument)
            case "--protocol": options.wireProtocol = try choice(argument, "protocol")
            case "--name":
                let text = try value(argument)
                guard !text.isEmpty, text.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
                    throw BenchError("--name: letters, digits, - and _ only")
                }
                options.name = text
            case "--watch-pid":
                let text = try value(argument)
                guard let equals = text.firstIndex(of: "="), let pid = Int32(text[text.index(after: equals)...]),
                      pid > 0 else { throw BenchError("--watch-pid NAME=PID") }
                options.watchPids.append((String(text[..<equals]), pid))
            case "--subscribers": options.subscribers = try integer(argument)
            case "--subjects": options.subjects = try integer(argument, min: 1)
            case "--publishers": options.publishers = try integer(argument, min: 1)
            case "--rate": options.rate = try number(argument)
            case "--window": options.window = try integer(argument, min: 1)
            case "--duration": options.duration = try number(argument, min: 0.1)
            case "--warmup": options.warmup = try number(argument)
            case "--drain": options.drain = try number(argument)
            case "--payload": options.payload = try integer(argument)
            case "--burst": options.burst = try integer(argument, min: 1)
            case "--threads": options.threads = try integer(argument, min: 1)
            case "--sources": options.sources = try integer(argument, min: 1)
            case "--connect-concurrency": options.connectConcurrency = try integer(argument, min: 1)
            case "--connect-rate": options.connectRate = try number(argument, min: 1)
            case "--first-subject": options.firstSubject = try integer(argument)
            case "--source-first": options.sourceFirst = try integer(argument, min: 1)
            case "--interval": options.interval = try number(argument, min: 0.1)
            case "--ready-file": options.readyFile = try value(argument)
            case "--no-subscribe": options.subscribe = false
            case "--qos":
                let text = try value(argument)
                guard text == "GUARANTEED" || text == "STANDARD" else { throw BenchError("--qos GUARANTEED|STANDARD") }
                options.qos = text
            case "--retained":
                let text = try value(argument)
                guard text == "true" || text == "false" else { throw BenchError("--retained true|false") }
                options.retained = text == "true"
            case "--baseline": options.baseline = true
            case "--baseline-only": options.baselineOnly = true
            case "--rounds": options.rounds = try integer(argument, min: 1)
            case "--baseline-port": options.baselinePort = try integer(argument)
            case "--json-out": options.jsonOut = try value(argument)
            case "--watch-rundir": options.watchRunDir = try value(argument)
            case "--quiet": options.quiet = true
            case "--timeout": options.timeout = try number(argument, min: 1)
            default:
                throw BenchError("unknown option '\(argument)' (see --help)")
            }
            index += 1
        }
        guard isLoopback(options.host) else {
            throw BenchError("--target must be a loopback address (127.0.0.0/8, ::1 or localhost): '\(options.host)'")
        }
        guard options.sources <= 254 else { throw BenchError("--sources is at most 254") }
        guard options.burst <= 1000 else { throw BenchError("--burst is at most 1000") }
        guard options.burst <= options.window else { throw BenchError("--burst is at most --window") }
        if options.scenario == .connections {
            guard options.sourceFirst + options.sources - 1 <= 254 else {
                throw BenchError("--source-first + --sources - 1 is at most 254")
            }
            guard options.wireProtocol == .switchyard, !options.baseline, !options.baselineOnly else {
                throw BenchError("--scenario connections speaks protocol v1 to Switchyard only")
            }
            guard options.subscribers >= 1 else { throw BenchError("--scenario connections needs --subscribers >= 1") }
        }
        if options.wireProtocol != .switchyard {
            guard options.scenario == .fanout else { throw BenchError("--protocol \(options.wireProtocol.rawValue): fanout only") }
            guard options.rate > 0 else { throw BenchError("--protocol \(options.wireProtocol.rawValue) needs --rate") }
            guard options.publisherCount == 1 else { throw BenchError("--protocol \(options.wireProtocol.rawValue): one publisher") }
            guard !options.baseline && !options.baselineOnly else { throw BenchError("--baseline speaks protocol v1 only") }
        }
        return options
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// The JSON string of the publish options suffix: `,"qos":"...","retained":...}`.
    var publishSuffix: String {
        var suffix = ""
        if let qos { suffix += #","qos":"\#(qos)""# }
        if let retained { suffix += #","retained":\#(retained)"# }
        return suffix + "}"
    }
}

extension String {
    func benchTrimmingBrackets() -> String {
        var result = Substring(self)
        if result.first == "[" { result.removeFirst() }
        if result.last == "]" { result.removeLast() }
        return String(result)
    }
}
