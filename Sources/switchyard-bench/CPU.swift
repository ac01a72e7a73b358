#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// CPU time (user + system, seconds) of this process and of watched processes, to tell where the cores went
/// during the measured window.
struct CPUSample {
    var own: Double
    var watched: [String: Double]

    static func take(watching processes: [(name: String, pid: Int32)]) -> CPUSample {
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        let own = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        var watched: [String: Double] = [:]
        for (name, pid) in processes {
            if let seconds = processSeconds(pid) { watched[name] = seconds }
        }
        return CPUSample(own: own, watched: watched)
    }

    /// utime + stime of `pid` from /proc/PID/stat (Linux only).
    static func processSeconds(_ pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after "(comm) ": state is field 3, utime 14, stime 15 (1-based).
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Stage processes of a Switchyard RunDir: every `NAME.pid` except the supervisor's.
    static func stageProcesses(runDir: String) -> [(name: String, pid: Int32)] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: runDir) else { return [] }
        return names.sorted().compactMap { file in
            guard file.hasSuffix(".pid"), file != "supervisor.pid",
                  let text = try? String(contentsOfFile: runDir + "/" + file, encoding: .utf8),
                  let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
            return (String(file.dropLast(4)), pid)
        }
    }
}
