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

/// What one run (one target) measured.
struct RunResult {
    var name: String
    var scenario: Scenario
    var subscribersConnected = 0
    var subscribersRequested = 0
    var connectFailures = 0
    var connectFailureReasons: [String: Int] = [:]
    var subscribeRefused = 0
    var publishers = 0
    var measuredSeconds: Double = 0
    var setupSeconds: Double = 0
    var drainSeconds: Double = 0
    var drained = false
    var stats = StatsSnapshot()
    var expectedDeliveries: UInt64 = 0
    /// Cores used during the measured window: by this process (load generator, and the baseline server when it
    /// runs) and by each watched process.
    var benchCores: Double = 0
    var watchedCores: [String: Double] = [:]

    var acksPerSecond: Double { Double(stats.acksOKInWindow) / measuredSeconds }
    var sendsPerSecond: Double { Double(stats.sentInWindow) / measuredSeconds }
    var deliveriesPerSecond: Double { Double(stats.deliveredInWindow) / measuredSeconds }
    var uniqueDelivered: UInt64 { stats.delivered - min(stats.delivered, stats.duplicates) }
    var missing: UInt64 { expectedDeliveries > uniqueDelivered ? expectedDeliveries - uniqueDelivered : 0 }

    /// CPU seconds of every watched (server) process per million deliveries in the measured window; nil when no
    /// process was watched or nothing was delivered.
    var serverCPUPerMillionDeliveries: Double? {
        guard !watchedCores.isEmpty, deliveriesPerSecond > 0 else { return nil }
        return watchedCores.values.reduce(0, +) / deliveriesPerSecond * 1e6
    }

    func latencyMillis(_ histogram: Histogram?, _ percentile: Double) -> Double {
        Double(histogram?.value(atPercentile: percentile) ?? 0) / 1e6
    }
}

extension RunResult {
    /// Several rounds against the same target as one result: counts and histograms added up, rates over the
    /// total measured time.
    static func pooled(_ parts: [RunResult]) -> RunResult {
        guard var result = parts.first, parts.count > 1 else { return parts[0] }
        result.stats = StatsSnapshot.merged(parts.map(\.stats))
        result.measuredSeconds = parts.reduce(0) { $0 + $1.measuredSeconds }
        result.expectedDeliveries = parts.reduce(0) { $0 + $1.expectedDeliveries }
        result.connectFailures = parts.reduce(0) { $0 + $1.connectFailures }
        result.subscribeRefused = parts.reduce(0) { $0 + $1.subscribeRefused }
        result.subscribersConnected = parts.map(\.subscribersConnected).min() ?? 0
        result.connectFailureReasons = parts.reduce(into: [:]) { $0.merge($1.connectFailureReasons, uniquingKeysWith: +) }
        result.drained = parts.allSatisfy(\.drained)
        result.drainSeconds = parts.map(\.drainSeconds).max() ?? 0
        result.setupSeconds = parts.map(\.setupSeconds).max() ?? 0
        result.benchCores = parts.reduce(0) { $0 + $1.benchCores * $1.measuredSeconds } / result.measuredSeconds
        var cores: [String: Double] = [:]
        for part in parts {
            for (name, value) in part.watchedCores { cores[name, default: 0] += value * part.measuredSeconds }
        }
        result.watchedCores = cores.mapValues { $0 / result.measuredSeconds }
        return result
    }
}

/// Runs one scenario against one WebSocket server.
final class ScenarioRunner {
    let options: Options
    let name: String
    let host: String
    let port: Int
    let progress: Bool
    /// Processes whose CPU time is reported for the measured window (the stages of the stack under test).
    let watched: [(name: String, pid: Int32)]

    init(options: Options, name: String, host: String, port: Int, watched: [(name: String, pid: Int32)] = []) {
        self.watched = watched
        self.options = options
        self.name = name
        self.host = host
        self.port = port
        progress = !options.quiet
    }

    private func log(_ line: String) {
        guard progress else { return }
        fputs("[\(name)] \(line)\n", stderr)
    }

    func run() throws -> RunResult {
        let setupStarted = monotonicNanos()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        defer { try? group.syncShutdownGracefully() }
        var loops: [EventLoop] = []
        for loop in group.makeIterator() { loops.append(loop) }
        let stats = loops.map { _ in LoopStats(subjects: options.subjects) }
        let runID = "\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        let subjects = (0..<options.subjects).map { options.wireProtocol.subject(runID: runID, target: name, index: $0) }
        let session = options.wireProtocol.session(subjects: subjects)
        var suffix = ByteBuffer()
        suffix.writeString(options.publishSuffix)
        var random = SystemRandomNumberGenerator()

        var result = RunResult(name: name, scenario: options.scenario)
        result.subscribersRequested = options.subscriberCount
        var channels: [Channel] = []
        var subscribersPerSubject = [UInt64](repeating: 0, count: subjects.count)

        // Subscribers, a bounded number of connections at a time.
        var allowed: [EventLoopFuture<Void>] = []
        var next = 0
        while next < options.subscriberCount {
            let batch = next..<min(next + options.connectConcurrency, options.subscriberCount)
            var connects: [(Int, EventLoopFuture<Channel>)] = []
            for index in batch {
                let loopIndex = index % loops.count
                let loop = loops[loopIndex]
                let subject = subjects[index % subjects.count]
                let promise = loop.makePromise(of: Void.self)
                let source = try sourceAddress(index)
                let seed = random.next()
                let loopStats = stats[loopIndex]
                let subjectIndex = index % subjects.count
                let connect = self.connect(on: loop, source: source, stats: loopStats, seed: seed) {
                    if let session {
                        return PeerSubscriberHandler(stats: loopStats, session: session, subjectIndex: subjectIndex,
                                                     allowed: promise)
                    }
                    return SubscriberHandler(stats: loopStats, subjects: [subject], allowed: promise, seed: seed)
                }
                connect.whenFailure { promise.fail($0) }
                connects.append((index, connect))
                allowed.append(promise.futureResult)
            }
            for (index, connect) in connects {
                do {
                    channels.append(try connect.wait())
                    subscribersPerSubject[index % subjects.count] += 1
                    result.subscribersConnected += 1
                } catch {
                    result.connectFailures += 1
                    result.connectFailureReasons["\(error)", default: 0] += 1
                }
            }
            next = batch.upperBound
        }
        if options.subscriberCount > 0 {
            log("\(result.subscribersConnected)/\(options.subscriberCount) subscribers connected"
                + (result.connectFailures > 0 ? " (\(result.connectFailures) failed: \(result.connectFailureReasons))" : ""))
            guard result.subscribersConnected > 0 else {
                throw BenchError("no subscriber could connect to \(host):\(port): \(result.connectFailureReasons)")
            }
            // Wait for every `subscribed` answer (at most 30 s).
            let deadline = monotonicNanos() + 30_000_000_000
            while monotonicNanos() < deadline {
                let answered = try snapshot(loops, stats, histograms: false)
                if answered.subscribed + answered.subscribeRefused >= result.subscribersConnected { break }
                usleep(20_000)
            }
            let answered = try snapshot(loops, stats, histograms: false)
            result.subscribeRefused = answered.subscribeRefused
            log("\(answered.subscribed) subscriptions allowed, \(answered.subscribeRefused) refused")
            // Let the subscribes settle in the pipeline (ingress holds live messages meanwhile anyway).
            usleep(500_000)
        }
        _ = allowed

        // Publishers.
        var publisherHandlers: [(EventLoop, NIOLoopBoundBox<BenchPublisher & ChannelHandler>)] = []
        let perPublisherRate = options.rate / Double(options.publisherCount)
        for index in 0..<options.publisherCount {
            let loopIndex = (options.subscriberCount + index) % loops.count
            let loop = loops[loopIndex]
            let loopStats = stats[loopIndex]
            // The handler is sent to its loop at once: the pipeline adds it there, and `run` is called there.
            let publisher: NIOLoopBoundBox<BenchPublisher & ChannelHandler>
            if let session {
                publisher = .makeBoxSendingValue(
                    PeerPublisherHandler(stats: loopStats, session: session, subjectCount: subjects.count,
                                         firstSubject: index, payload: options.payload,
                                         ratePerSecond: perPublisherRate, burst: options.burst),
                    eventLoop: loop)
            } else {
                publisher = .makeBoxSendingValue(
                    PublisherHandler(stats: loopStats, subjects: subjects, firstSubject: index,
                                     payload: options.payload, window: options.window,
                                     ratePerSecond: perPublisherRate, burst: options.burst, suffix: suffix,
                                     seed: random.next()),
                    eventLoop: loop)
            }
            let channel = try connect(on: loop, source: nil, stats: loopStats, seed: random.next()) { publisher.value }
                .wait()
            channels.append(channel)
            publisherHandlers.append((loop, publisher))
        }
        result.publishers = publisherHandlers.count

        // Publish: warm-up, then the measured window.
        let start = monotonicNanos() + 100_000_000
        let windowStart = start + UInt64(options.warmup * 1e9)
        let windowEnd = windowStart + UInt64(options.duration * 1e9)
        for (loop, loopStats) in zip(loops, stats) {
            try loop.submit {
                loopStats.windowStart = windowStart
                loopStats.windowEnd = windowEnd
            }.wait()
        }
        result.setupSeconds = Double(start - setupStarted) / 1e9
        for (loop, publisher) in publisherHandlers {
            loop.execute { publisher.value.run(start: start, stop: windowEnd) }
        }
        log("publishing: \(options.warmup)s warm-up, then \(options.duration)s measured")

        var previous = StatsSnapshot()
        var previousAt = monotonicNanos()
        var cpuAtStart: CPUSample?
        while monotonicNanos() < windowEnd {
            let now0 = monotonicNanos()
            // Wake at the start of the window (to sample CPU time there), else every second.
            let boundary = cpuAtStart == nil && now0 < windowStart ? windowStart : windowEnd
            usleep(UInt32(min((boundary - min(now0, boundary)) / 1000, 1_000_000)))
            let now = monotonicNanos()
            if cpuAtStart == nil && now >= windowStart { cpuAtStart = CPUSample.take(watching: watched) }
            let current = try snapshot(loops, stats, histograms: false)
            let seconds = Double(now - previousAt) / 1e9
            let phase = now < windowStart ? "warm-up" : "measure"
            if seconds > 0.5 {
                log(phase + String(format: " acks %.0f/s, deliveries %.0f/s, in flight %d, failed %llu, gaps %llu, disconnects %d",
                           Double(current.acksOK - previous.acksOK) / seconds,
                           Double(current.delivered - previous.delivered) / seconds, current.inflight,
                           current.acksFailed, current.gaps, current.disconnects))
                previous = current
                previousAt = now
            }
        }
        let cpuAtEnd = CPUSample.take(watching: watched)
        if let cpuAtStart {
            let seconds = Double(monotonicNanos() - windowStart) / 1e9
            result.benchCores = (cpuAtEnd.own - cpuAtStart.own) / seconds
            for (name, end) in cpuAtEnd.watched {
                if let start = cpuAtStart.watched[name] { result.watchedCores[name] = (end - start) / seconds }
            }
        }

        // Drain: the last acks and deliveries.
        let drainDeadline = windowEnd + UInt64(options.drain * 1e9)
        var final = try snapshot(loops, stats, histograms: false)
        while true {
            final = try snapshot(loops, stats, histograms: false)
            let expected = zip(final.okPerSubject, subscribersPerSubject).reduce(UInt64(0)) { $0 + $1.0 * $1.1 }
            let unique = final.delivered - min(final.delivered, final.duplicates)
            if final.inflight == 0 && unique >= expected {
                result.drained = true
                break
            }
            if monotonicNanos() >= drainDeadline { break }
            usleep(20_000)
        }
        result.drainSeconds = Double(monotonicNanos() - windowEnd) / 1e9
        final = try snapshot(loops, stats, histograms: true)
        result.stats = final
        result.expectedDeliveries = zip(final.okPerSubject, subscribersPerSubject).reduce(UInt64(0)) { $0 + $1.0 * $1.1 }
        result.measuredSeconds = options.duration

        for channel in channels { channel.close(promise: nil) }
        usleep(100_000)
        return result
    }

    private func snapshot(_ loops: [EventLoop], _ stats: [LoopStats], histograms: Bool) throws -> StatsSnapshot {
        var parts: [StatsSnapshot] = []
        for (loop, loopStats) in zip(loops, stats) {
            parts.append(try loop.submit { loopStats.snapshot(histograms: histograms) }.wait())
        }
        return StatsSnapshot.merged(parts)
    }

    /// A connection to the target in its protocol's transport: WebSocket (with the MQTT subprotocol for MQTT, and
    /// a byte-stream adapter under a peer protocol's handler) or, for the floor, plain TCP.
    private func connect(on loop: EventLoop, source: SocketAddress?, stats: LoopStats, seed: UInt64,
                         makeHandler: @escaping @Sendable () -> ChannelHandler) -> EventLoopFuture<Channel> {
        switch options.wireProtocol {
        case .switchyard:
            return WebSocketConnector.connect(on: loop, host: host, port: port, path: options.webSocketPath,
                                              source: source, makeHandler: { _ in makeHandler() })
        case .mqtt, .nats:
            return WebSocketConnector.connect(
                on: loop, host: host, port: port, path: options.webSocketPath,
                subprotocol: options.wireProtocol == .mqtt ? "mqtt" : nil, source: source,
                makeHandler: { channel in
                    do {
                        try channel.pipeline.syncOperations.addHandler(WebSocketStreamAdapter(stats: stats, seed: seed))
                    } catch {
                        channel.close(promise: nil)  // counted as a disconnect by the peer handler
                    }
                    return makeHandler()
                })
        case .raw:
            var bootstrap = ClientBootstrap(group: loop)
                .connectTimeout(.seconds(10))
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            if let source { bootstrap = bootstrap.bind(to: source) }
            return bootstrap.channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(makeHandler()) }
            }.connect(host: host, port: port)
        }
    }

    private func sourceAddress(_ index: Int) throws -> SocketAddress? {
        guard options.sources > 1 else { return nil }
        return try SocketAddress(ipAddress: "127.0.0.\(1 + index % options.sources)", port: 0)
    }
}
