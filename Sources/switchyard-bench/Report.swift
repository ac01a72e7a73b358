import Foundation
import SwitchyardClient

/// A JSON value that keeps the order of object fields, for a readable summary line.
indirect enum JSON {
    case number(Double)
    case integer(Int64)
    case string(String)
    case bool(Bool)
    case null
    case object([(String, JSON)])
    case array([JSON])

    var text: String {
        switch self {
        case .number(let value):
            guard value.isFinite else { return "null" }
            return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(format: "%.4g", value)
        case .integer(let value): return String(value)
        case .string(let value): return jsonString(value)
        case .bool(let value): return value ? "true" : "false"
        case .null: return "null"
        case .array(let values):
            return "[" + values.map(\.text).joined(separator: ",") + "]"
        case .object(let fields):
            return "{" + fields.map { jsonString($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }
}

struct Report {
    let options: Options
    let results: [RunResult]
    /// Each round's results (switchyard first); more than one when --rounds was given.
    var rounds: [[RunResult]] = []

    private var switchyard: RunResult? { results.first { $0.name != "baseline" } }
    private var baseline: RunResult? { results.first { $0.name == "baseline" } }

    private struct Row {
        let label: String
        let value: (RunResult) -> Double
        let format: String
        /// Ratios for rates (higher is better) and latencies (lower is better) alike are Switchyard/baseline.
        let ratio: Bool
    }

    private var rows: [Row] {
        var rows = [
            Row(label: "publishes/s sent", value: { $0.sendsPerSecond }, format: "%.0f", ratio: true),
            Row(label: "publishes/s acked", value: { $0.acksPerSecond }, format: "%.0f", ratio: true),
        ]
        if options.scenario == .fanout {
            rows += [
                Row(label: "deliveries/s", value: { $0.deliveriesPerSecond }, format: "%.0f", ratio: true),
                Row(label: "latency p50 ms", value: { $0.latencyMillis($0.stats.latency, 50) }, format: "%.2f", ratio: true),
                Row(label: "latency p90 ms", value: { $0.latencyMillis($0.stats.latency, 90) }, format: "%.2f", ratio: true),
                Row(label: "latency p99 ms", value: { $0.latencyMillis($0.stats.latency, 99) }, format: "%.2f", ratio: true),
                Row(label: "latency max ms", value: { $0.latencyMillis($0.stats.latency, 100) }, format: "%.2f", ratio: true),
            ]
        }
        rows += [
            Row(label: "ack latency p50 ms", value: { $0.latencyMillis($0.stats.ackLatency, 50) }, format: "%.2f", ratio: true),
            Row(label: "ack latency p99 ms", value: { $0.latencyMillis($0.stats.ackLatency, 99) }, format: "%.2f", ratio: true),
            Row(label: "ack latency max ms", value: { $0.latencyMillis($0.stats.ackLatency, 100) }, format: "%.2f", ratio: true),
        ]
        if options.scenario == .fanout {
            rows += [
                Row(label: "subscribers", value: { Double($0.subscribersConnected) }, format: "%.0f", ratio: false),
                Row(label: "gaps", value: { Double($0.stats.gaps) }, format: "%.0f", ratio: false),
                Row(label: "duplicates", value: { Double($0.stats.duplicates) }, format: "%.0f", ratio: false),
                Row(label: "missing at end", value: { Double($0.missing) }, format: "%.0f", ratio: false),
            ]
        }
        rows += [
            Row(label: "publishes failed", value: { Double($0.stats.acksFailed) }, format: "%.0f", ratio: false),
            Row(label: "disconnects", value: { Double($0.stats.disconnects) }, format: "%.0f", ratio: false),
            Row(label: "drain s", value: { $0.drainSeconds }, format: "%.2f", ratio: false),
        ]
        return rows
    }

    private func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
        let padding = String(repeating: " ", count: max(0, width - text.count))
        return left ? text + padding : padding + text
    }

    func table() -> String {
        var lines: [String] = []
        let parameters: String
        switch options.scenario {
        case .fanout:
            parameters = "\(options.subscriberCount) subscribers, \(options.subjects) subjects, "
                + "\(options.publisherCount) publisher(s), window \(options.window), "
                + "rate \(options.rate > 0 ? String(format: "%.0f/s", options.rate) : "max"), payload \(options.payload) B, "
                + "\(fmt(options.duration))s measured after \(fmt(options.warmup))s warm-up"
        case .publish, .connections:  // connections: its own report (ConnectionsResult)
            parameters = "\(options.publisherCount) publishers, \(options.subjects) subjects, window \(options.window) each, "
                + "rate \(options.rate > 0 ? String(format: "%.0f/s", options.rate) : "max"), payload \(options.payload) B, "
                + "\(fmt(options.duration))s measured after \(fmt(options.warmup))s warm-up"
        }
        lines.append("scenario \(options.scenario.rawValue), protocol \(options.wireProtocol.rawValue): \(parameters)")
        var header = pad("", 22, left: true)
        for result in results { header += pad(result.name, 14) }
        let showRatio = switchyard != nil && baseline != nil
        if showRatio { header += pad("ratio", 10) }
        lines.append(header)
        for row in rows {
            var line = pad(row.label, 22, left: true)
            for result in results { line += pad(String(format: row.format, row.value(result)), 14) }
            if showRatio, row.ratio, let switchyard, let baseline {
                let base = row.value(baseline)
                line += pad(base > 0 ? String(format: "%.2f", row.value(switchyard) / base) : "-", 10)
            }
            lines.append(line)
        }
        for result in results {
            var cpu = "\(result.name) CPU in the measured window (cores): bench process " + String(format: "%.2f", result.benchCores)
            if result.name == "baseline" { cpu += " (load generator + baseline server)" }
            for (name, cores) in result.watchedCores.sorted(by: { $0.key < $1.key }) {
                cpu += ", \(name) " + String(format: "%.2f", cores)
            }
            if let perMillion = result.serverCPUPerMillionDeliveries {
                cpu += String(format: "; server CPU-s per million deliveries %.2f", perMillion)
            }
            lines.append(cpu)
        }
        for result in results {
            if !result.drained {
                lines.append("\(result.name): not drained within \(fmt(options.drain))s after the end "
                             + "(\(result.stats.inflight) publishes unanswered, \(result.missing) deliveries missing)")
            }
            if result.connectFailures > 0 {
                lines.append("\(result.name): \(result.connectFailures) connections failed: \(result.connectFailureReasons)")
            }
            if !result.stats.closeReasons.isEmpty {
                lines.append("\(result.name): connections closed by the server: \(result.stats.closeReasons)")
            }
            if !result.stats.failureReasons.isEmpty {
                lines.append("\(result.name): failed publishes: \(result.stats.failureReasons.sorted { $0.value > $1.value }.prefix(3))")
            }
            if result.stats.errors > 0 || result.stats.unparsable > 0 {
                lines.append("\(result.name): \(result.stats.errors) error frames, \(result.stats.unparsable) unparsable frames")
            }
        }
        if rounds.count > 1 {
            lines.append("pooled over \(rounds.count) rounds of \(fmt(options.duration))s each; per round:")
            for (index, round) in rounds.enumerated() {
                var line = "  round \(index + 1):"
                for result in round {
                    line += " \(result.name) " + String(format: "%.0f acks/s", result.acksPerSecond)
                    if options.scenario == .fanout { line += String(format: " %.0f deliveries/s", result.deliveriesPerSecond) }
                    line += ";"
                }
                if round.count == 2, round[1].acksPerSecond > 0 {
                    line += String(format: " ratio %.2f", round[0].acksPerSecond / round[1].acksPerSecond)
                }
                lines.append(line)
            }
        }
        if showRatio {
            lines.append("ratio = switchyard / baseline (rates: higher is better; latencies: lower is better)")
        }
        return lines.joined(separator: "\n")
    }

    private func fmt(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }

    private func latencyJSON(_ result: RunResult, _ histogram: Histogram?) -> JSON {
        .object([
            ("p50", .number(round3(result.latencyMillis(histogram, 50)))),
            ("p90", .number(round3(result.latencyMillis(histogram, 90)))),
            ("p99", .number(round3(result.latencyMillis(histogram, 99)))),
            ("p999", .number(round3(result.latencyMillis(histogram, 99.9)))),
            ("max", .number(round3(result.latencyMillis(histogram, 100)))),
            ("mean", .number(round3((histogram?.mean ?? 0) / 1e6))),
            ("count", .integer(Int64(histogram?.total ?? 0))),
        ])
    }

    private func round3(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }

    private func resultJSON(_ result: RunResult) -> JSON {
        var fields: [(String, JSON)] = [
            ("publishes_sent_per_s", .number(result.sendsPerSecond.rounded())),
            ("publishes_acked_per_s", .number(result.acksPerSecond.rounded())),
        ]
        if options.scenario == .fanout {
            fields += [
                ("deliveries_per_s", .number(result.deliveriesPerSecond.rounded())),
                ("latency_ms", latencyJSON(result, result.stats.latency)),
            ]
        }
        fields += [
            ("ack_latency_ms", latencyJSON(result, result.stats.ackLatency)),
            ("publishes_acked", .integer(Int64(result.stats.acksOK))),
            ("publishes_failed", .integer(Int64(result.stats.acksFailed))),
        ]
        if options.scenario == .fanout {
            fields += [
                ("subscribers", .integer(Int64(result.subscribersConnected))),
                ("delivered", .integer(Int64(result.stats.delivered))),
                ("expected_deliveries", .integer(Int64(result.expectedDeliveries))),
                ("gaps", .integer(Int64(result.stats.gaps))),
                ("duplicates", .integer(Int64(result.stats.duplicates))),
                ("missing", .integer(Int64(result.missing))),
            ]
        }
        fields += [
            ("connect_failures", .integer(Int64(result.connectFailures))),
            ("disconnects", .integer(Int64(result.stats.disconnects))),
            ("drained", .bool(result.drained)),
            ("drain_s", .number(round3(result.drainSeconds))),
            ("cpu_cores", .object([("bench_process", .number(round3(result.benchCores)))]
                + result.watchedCores.sorted(by: { $0.key < $1.key }).map { ($0.key, .number(round3($0.value))) })),
        ]
        if let perMillion = result.serverCPUPerMillionDeliveries {
            fields.append(("server_cpu_s_per_million_deliveries", .number(round3(perMillion))))
        }
        return .object(fields)
    }

    func json() -> String {
        var fields: [(String, JSON)] = [
            ("bench", .string("switchyard-bench")),
            ("scenario", .string(options.scenario.rawValue)),
            ("protocol", .string(options.wireProtocol.rawValue)),
            ("params", .object([
                ("subscribers", .integer(Int64(options.subscriberCount))),
                ("subjects", .integer(Int64(options.subjects))),
                ("publishers", .integer(Int64(options.publisherCount))),
                ("window", .integer(Int64(options.window))),
                ("rate", .number(options.rate)),
                ("payload", .integer(Int64(options.payload))),
                ("duration_s", .number(options.duration)),
                ("warmup_s", .number(options.warmup)),
                ("threads", .integer(Int64(options.threads))),
                ("rounds", .integer(Int64(max(rounds.count, 1)))),
            ])),
        ]
        for result in results { fields.append((result.name, resultJSON(result))) }
        if rounds.count > 1 {
            fields.append(("rounds", .array(rounds.map { round -> JSON in
                .object(round.map { result -> (String, JSON) in
                    (result.name, .object([
                        ("publishes_acked_per_s", .number(result.acksPerSecond.rounded())),
                        ("deliveries_per_s", .number(result.deliveriesPerSecond.rounded())),
                        ("latency_p50_ms", .number(round3(result.latencyMillis(result.stats.latency, 50)))),
                    ]))
                })
            })))
        }
        if let switchyard, let baseline {
            func ratio(_ a: Double, _ b: Double) -> JSON { b > 0 ? .number((a / b * 1000).rounded() / 1000) : .null }
            var ratios: [(String, JSON)] = [
                ("publishes_acked_per_s", ratio(switchyard.acksPerSecond, baseline.acksPerSecond)),
            ]
            if options.scenario == .fanout {
                ratios += [
                    ("deliveries_per_s", ratio(switchyard.deliveriesPerSecond, baseline.deliveriesPerSecond)),
                    ("latency_p50", ratio(switchyard.latencyMillis(switchyard.stats.latency, 50),
                                          baseline.latencyMillis(baseline.stats.latency, 50))),
                    ("latency_p99", ratio(switchyard.latencyMillis(switchyard.stats.latency, 99),
                                          baseline.latencyMillis(baseline.stats.latency, 99))),
                ]
            }
            ratios += [
                ("ack_latency_p50", ratio(switchyard.latencyMillis(switchyard.stats.ackLatency, 50),
                                          baseline.latencyMillis(baseline.stats.ackLatency, 50))),
                ("ack_latency_p99", ratio(switchyard.latencyMillis(switchyard.stats.ackLatency, 99),
                                          baseline.latencyMillis(baseline.stats.ackLatency, 99))),
            ]
            fields.append(("ratio", .object(ratios)))
        }
        return JSON.object(fields).text
    }
}
