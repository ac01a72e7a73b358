// C's `stderr` is a mutable global to Swift 6; the C runtime sets it before `main` and nothing here reassigns it.
#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOCore
import NIOPosix
import SwitchyardClient

/// Messages received per held connection of one event loop (connection `index` is slot `index / loops` of loop
/// `index % loops`). Touched only on its event loop; copied out with `submit`.
// @unchecked Sendable: touched only on its event loop; other threads reach it with `submit`.
final class HeldCounts: @unchecked Sendable {
    var received: [UInt32]

    init(slots: Int) { received = [UInt32](repeating: 0, count: slots) }
}

/// One held connection of the `connections` scenario: subscribes to its own subject and counts what it receives.
final class HeldConnectionHandler: BenchConnectionHandler {
    /// nil: the connection only connects (`--no-subscribe`).
    private let subject: String?
    private let counts: HeldCounts
    private let slot: Int

    init(stats: LoopStats, counts: HeldCounts, slot: Int, subject: String?, seed: UInt64) {
        self.subject = subject
        self.counts = counts
        self.slot = slot
        super.init(stats: stats, seed: seed)
    }

    override func handlerAdded(context: ChannelHandlerContext) {
        guard let subject else { return }
        context.writeAndFlush(wrapOutboundOut(frame(ClientFrames.subscribe([subject]))), promise: nil)
    }

    override func text(context: ChannelHandlerContext, _ data: ByteBuffer) {
        let stats = self.stats
        let kind: Int = data.withUnsafeReadableBytes { bytes in
            if Scan.message.isPrefix(of: bytes) { return 0 }
            if Scan.subscribed.isPrefix(of: bytes) { return Scan.statusAllow.end(in: bytes) != nil ? 1 : 2 }
            return Scan.error.isPrefix(of: bytes) ? 3 : 4
        }
        switch kind {
        case 0:
            stats.counts.delivered += 1
            counts.received[slot] &+= 1
        case 1: stats.counts.subscribed += 1
        case 2: stats.counts.subscribeRefused += 1
        case 3: stats.counts.errors += 1
        default: break
        }
    }
}

/// What the `connections` scenario measured (one bench process).
struct ConnectionsResult {
    var requested = 0
    var established = 0
    var connectFailureReasons: [String: Int] = [:]
    var subscribed = 0
    var subscribeRefused = 0
    var connectSeconds: Double = 0
    var heldSeconds: Double = 0
    /// Publishes acknowledged (each is one expected message: every subject has exactly one subscriber).
    var expected: UInt64 = 0
    var received: UInt64 = 0
    /// Established connections that received nothing at all, and those that received fewer messages than were
    /// published on their subject.
    var receivedNone = 0
    var receivedShort = 0
    var lost: UInt64 = 0
    var disconnects = 0
    var closeReasons: [String: Int] = [:]
    var publishFailed: UInt64 = 0

    var isClean: Bool {
        established == requested && subscribeRefused == 0 && receivedShort == 0
            && (receivedNone == 0 || expected == 0) && receivedShort == 0
            && disconnects == 0 && publishFailed == 0
    }

    func json(_ options: Options) -> String {
        var writer = [String]()
        func add(_ key: String, _ value: String) { writer.append("\"\(key)\":\(value)") }
        add("scenario", "\"connections\"")
        add("firstSubject", "\(options.firstSubject)")
        add("requested", "\(requested)")
        add("established", "\(established)")
        add("subscribed", "\(subscribed)")
        add("subscribeRefused", "\(subscribeRefused)")
        add("connectSeconds", String(format: "%.1f", connectSeconds))
        add("heldSeconds", String(format: "%.1f", heldSeconds))
        add("intervalSeconds", "\(options.interval)")
        add("expected", "\(expected)")
        add("received", "\(received)")
        add("receivedNone", "\(receivedNone)")
        add("receivedShort", "\(receivedShort)")
        add("lost", "\(lost)")
        add("disconnects", "\(disconnects)")
        add("publishFailed", "\(publishFailed)")
        let reasons = (connectFailureReasons.merging(closeReasons, uniquingKeysWith: +))
            .map { "\(jsonString($0.key)):\($0.value)" }.joined(separator: ",")
        add("failures", "{\(reasons)}")
        return "{" + writer.joined(separator: ",") + "}"
    }

    private func jsonString(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

/// The `connections` scenario: opens `subscribers` connections at a bounded rate, each subscribed to its own
/// subject `/conn/<firstSubject + i>`, from source addresses 127.0.0.<sourceFirst> onwards; then one publisher
/// publishes one message per subject every `interval` seconds (round-robin, spread evenly) for `duration`
/// seconds while the connections are held, and every connection's messages are counted against the publishes
/// acknowledged on its subject.
final class ConnectionsRunner {
    let options: Options
    private let progress: Bool

    init(options: Options) {
        self.options = options
        progress = !options.quiet
    }

    private func log(_ line: String) {
        guard progress else { return }
        fputs("[connections] \(line)\n", stderr)
    }

    func run() throws -> ConnectionsResult {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        defer { try? group.syncShutdownGracefully() }
        var loops: [EventLoop] = []
        for loop in group.makeIterator() { loops.append(loop) }
        let total = options.subscribers
        let slotsPerLoop = (total + loops.count - 1) / loops.count
        // Subject statistics per loop are kept by the publisher's loop only: size them for every subject.
        let stats = loops.map { _ in LoopStats(subjects: total) }
        let counts = loops.map { _ in HeldCounts(slots: slotsPerLoop) }
        let subjects = (0..<total).map { "/conn/\(options.firstSubject + $0)" }
        var random = SystemRandomNumberGenerator()
        var result = ConnectionsResult(requested: total)
        var channels: [Channel] = []
        channels.reserveCapacity(total + 1)
        var connected = [Bool](repeating: false, count: total)
        let loopCount = loops.count

        // Connect at most `connectRate` per second, `connectConcurrency` at a time.
        let connectStarted = monotonicNanos()
        var next = 0
        var lastLog = connectStarted
        while next < total {
            let batch = next..<min(next + options.connectConcurrency, total)
            var connects: [(Int, EventLoopFuture<Channel>)] = []
            for index in batch {
                let loopIndex = index % loops.count
                let loopStats = stats[loopIndex]
                let loopCounts = counts[loopIndex]
                let subject = options.subscribe ? subjects[index] : nil
                let seed = random.next()
                let source = try SocketAddress(ipAddress: "127.0.0.\(options.sourceFirst + index % options.sources)",
                                               port: 0)
                connects.append((index, WebSocketConnector.connect(
                    on: loops[loopIndex], host: options.host, port: options.port, path: options.webSocketPath,
                    source: source, connectTimeout: .seconds(30),
                    makeHandler: { _ in
                        HeldConnectionHandler(stats: loopStats, counts: loopCounts, slot: index / loopCount,
                                              subject: subject, seed: seed)
                    })))
            }
            for (index, connect) in connects {
                do {
                    channels.append(try connect.wait())
                    connected[index] = true
                    result.established += 1
                } catch {
                    result.connectFailureReasons["\(error)", default: 0] += 1
                }
            }
            next = batch.upperBound
            // The pace: `next` connections take at least next / rate seconds.
            let due = connectStarted + UInt64(Double(next) / options.connectRate * 1e9)
            let now = monotonicNanos()
            if due > now { usleep(UInt32(min((due - now) / 1000, 999_999))) }
            if now - lastLog >= 5_000_000_000 {
                log("\(result.established)/\(total) connected")
                lastLog = now
            }
        }
        let failures = total - result.established
        log("\(result.established)/\(total) connected"
            + (failures > 0 ? " (\(failures) failed: \(result.connectFailureReasons))" : ""))
        guard result.established > 0 else { throw BenchError("no connection could be made: \(result.connectFailureReasons)") }

        // Every `subscribed` answer (at most 60 s).
        let answerDeadline = monotonicNanos() + 60_000_000_000
        var answered = try snapshot(loops, stats)
        while options.subscribe && monotonicNanos() < answerDeadline
                && answered.subscribed + answered.subscribeRefused < result.established {
            usleep(50_000)
            answered = try snapshot(loops, stats)
        }
        result.connectSeconds = Double(monotonicNanos() - connectStarted) / 1e9
        result.subscribed = answered.subscribed
        result.subscribeRefused = answered.subscribeRefused
        log("\(answered.subscribed) subscriptions allowed, \(answered.subscribeRefused) refused, "
            + String(format: "%.1f s", result.connectSeconds))
        if let path = options.readyFile {
            try "\(result.established)\n".write(toFile: path, atomically: true, encoding: .utf8)
        }
        guard options.subscribe else {
            log("holding \(result.established) connections for \(options.duration) s without subscriptions")
            usleep(UInt32(options.duration * 1e6))
            let final = try snapshot(loops, stats)
            result.disconnects = final.disconnects
            result.closeReasons = final.closeReasons
            for channel in channels { channel.close(promise: nil) }
            usleep(200_000)
            return result
        }

        // One publisher: every subject once per interval, spread evenly.
        let publisherLoop = loops[0]
        var suffix = ByteBuffer()
        suffix.writeString(options.publishSuffix)
        let publisher = NIOLoopBoundBox.makeBoxSendingValue(
            PublisherHandler(stats: stats[0], subjects: subjects, firstSubject: 0, payload: options.payload,
                             window: options.window, ratePerSecond: Double(total) / options.interval,
                             burst: 1, suffix: suffix, seed: random.next()),
            eventLoop: publisherLoop)
        channels.append(try WebSocketConnector.connect(on: publisherLoop, host: options.host, port: options.port,
                                                       path: options.webSocketPath,
                                                       makeHandler: { _ in publisher.value }).wait())
        let start = monotonicNanos() + 100_000_000
        let stop = start + UInt64(options.duration * 1e9)
        publisherLoop.execute { publisher.value.run(start: start, stop: stop) }
        log("holding \(result.established) connections for \(options.duration) s, one message per subject every "
            + "\(options.interval) s")
        var lastProgress = monotonicNanos()
        while monotonicNanos() < stop {
            usleep(UInt32(min((stop - min(monotonicNanos(), stop)) / 1000, 999_999)))
            guard monotonicNanos() - lastProgress >= 5_000_000_000 else { continue }
            lastProgress = monotonicNanos()
            let now = try snapshot(loops, stats)
            log("received \(now.delivered), published \(now.acksOK) acknowledged, disconnects \(now.disconnects)")
        }

        // Drain: the last acknowledged messages reach their connections.
        let drainDeadline = stop + UInt64(options.drain * 1e9)
        var final = try snapshot(loops, stats)
        while (final.inflight > 0 || final.delivered < final.acksOK) && monotonicNanos() < drainDeadline {
            usleep(50_000)
            final = try snapshot(loops, stats)
        }
        result.heldSeconds = Double(monotonicNanos() - start) / 1e9
        result.expected = final.acksOK
        result.received = final.delivered
        result.disconnects = final.disconnects
        result.closeReasons = final.closeReasons
        result.publishFailed = final.acksFailed
        // Per connection: what it received against what was acknowledged on its subject.
        let perSubject = final.okPerSubject
        for (loopIndex, loop) in loops.enumerated() {
            let received = try loop.submit { counts[loopIndex].received }.wait()
            for (slot, count) in received.enumerated() {
                let index = slot * loops.count + loopIndex
                guard index < total else { break }
                guard connected[index] else { continue }  // counted among the failed connections
                let expected = index < perSubject.count ? perSubject[index] : 0
                if count == 0 { result.receivedNone += 1 }
                if UInt64(count) < expected {
                    result.receivedShort += 1
                    result.lost += expected - UInt64(count)
                }
            }
        }
        for channel in channels { channel.close(promise: nil) }
        usleep(200_000)
        return result
    }

    private func snapshot(_ loops: [EventLoop], _ stats: [LoopStats]) throws -> StatsSnapshot {
        var parts: [StatsSnapshot] = []
        for (loop, loopStats) in zip(loops, stats) {
            parts.append(try loop.submit { loopStats.snapshot(histograms: false) }.wait())
        }
        return StatsSnapshot.merged(parts)
    }
}
