import ArgumentParser
import Foundation
import NIOCore
import SwitchyardClient

struct Subscribe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sub",
        abstract: "Print the messages of SUBJECTs as they arrive, one per line.",
        discussion: """
            Reconnects with backoff (rotating over the --url servers) and recovers every subject from the last \
            message printed: nothing is missed and nothing is printed twice; a gap the server cannot fill is \
            reported on standard error as DATA_RESYNC.
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case json, content
    }

    @Argument(help: "The subjects, e.g. /vehicles/car1/speed.")
    var subjects: [String]

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "On the first subscribe, start with up to N of the most recent messages (default: the retained one).")
    var history: Int = 0

    @Option(help: "Exit after printing N messages.")
    var count: Int?

    @Option(help: "json: one JSON object per message (subject, seq, epoch, type, content, ...); content: the content only.")
    var format: Format = .json

    @Option(help: """
        Seconds without a frame before a ping; as long again without an answer drops the connection. Also the \
        time a connection attempt may take.
        """)
    var keepalive: Int = 15

    func validate() throws {
        guard !subjects.isEmpty else { throw ValidationError("give at least one subject") }
        guard history >= 0 else { throw ValidationError("--history must be >= 0") }
        if let count, count < 1 { throw ValidationError("--count must be >= 1") }
        guard (1...3600).contains(keepalive) else { throw ValidationError("--keepalive must be 1...3600") }
    }

    func run() throws {
        try runSession { loop in SubscribeSession(loop: loop, command: self).start() }
    }
}

/// Writes delivered messages to standard output.
struct MessagePrinter {
    let format: Subscribe.Format

    /// False once standard output is gone (e.g. `| head -3` exited).
    func print(_ message: ServerFrame) -> Bool {
        var bytes: [UInt8]
        switch format {
        case .json:
            bytes = Array(jsonLine(message).utf8)
        case .content:
            let content = message.content ?? ""
            if message.encoding == "base64" {
                bytes = Data(base64Encoded: content).map { [UInt8]($0) } ?? Array(content.utf8)
            } else {
                bytes = Array(content.utf8)
            }
        }
        bytes.append(UInt8(ascii: "\n"))
        let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, standardOutput) }
        return written == bytes.count && fflush(standardOutput) == 0
    }

    private func jsonLine(_ message: ServerFrame) -> String {
        var fields = [
            "\"subject\":" + jsonString(message.subject ?? ""),
            "\"seq\":" + String(message.seq ?? 0),
            "\"epoch\":" + jsonString(message.epoch ?? ""),
            "\"type\":" + jsonString(message.type ?? ""),
            "\"content\":" + jsonString(message.content ?? ""),
        ]
        if let encoding = message.encoding { fields.append("\"encoding\":" + jsonString(encoding)) }
        if let retained = message.retained { fields.append("\"retained\":\(retained)") }
        if let closure = message.closure { fields.append("\"closure\":" + jsonString(closure)) }
        if let qos = message.qos { fields.append("\"qos\":" + jsonString(qos)) }
        return "{" + fields.joined(separator: ",") + "}"
    }
}

/// One `sub` run, confined to its event loop: connect, subscribe (recovering after the first connection),
/// print, and reconnect whenever the connection ends, until `count` messages were printed.
// @unchecked Sendable: touched only on `loop` (`start` hops there with `execute`; every callback runs there).
final class SubscribeSession: @unchecked Sendable {
    private let loop: EventLoop
    private let servers: ServerList
    private var tracker: SubscriptionTracker
    private let count: Int?
    private let keepalive: TimeAmount
    private let printer: MessagePrinter
    private let done: EventLoopPromise<Int32>
    private var backoff = ReconnectBackoff()
    private var serverIndex: Int
    private var printed = 0
    private var channel: Channel?
    private var finished = false

    /// A session for a validated `sub` command.
    init(loop: EventLoop, command: Subscribe) {
        self.loop = loop
        servers = command.connection.servers
        tracker = SubscriptionTracker(subjects: command.subjects, history: command.history)
        count = command.count
        keepalive = .seconds(Int64(command.keepalive))
        printer = MessagePrinter(format: command.format)
        done = loop.makePromise()
        serverIndex = Int.random(in: 0..<max(servers.urls.count, 1))
    }

    func start() -> EventLoopFuture<Int32> {
        loop.execute { self.connect() }
        return done.futureResult
    }

    private func connect() {
        guard !finished else { return }
        let server = servers.urls[serverIndex]
        // The handler is added once the upgrade succeeded: its end is the end of a connection that worked. It
        // keeps the session alive until the connection is closed.
        WebSocketConnector.connect(on: loop, host: server.host, port: server.port, path: server.target,
                                   connectTimeout: keepalive) { _ in
            ServerConnectionHandler(keepalive: self.keepalive, onFrame: { self.received($0) },
                                    onEnd: { self.reconnect(after: $0, wasConnected: true) })
        }.whenComplete { result in
            switch result {
            case .success(let channel):
                self.opened(channel, server: server)
            case .failure(let error):
                self.reconnect(after: ConnectionEnd(closeCode: nil, reason: "\(error)"), wasConnected: false)
            }
        }
    }

    private func opened(_ channel: Channel, server: WebSocketURL) {
        guard !finished else {
            channel.close(promise: nil)
            return
        }
        self.channel = channel
        note("connected to \(server)")
        if let token = servers.token { channel.send(.connect(token: token)) }
        for request in tracker.subscribeRequests() { channel.send(request) }
    }

    private func received(_ frame: ServerFrame) {
        guard !finished else { return }
        switch frame.op {
        case "message":
            guard tracker.accept(frame) else { return }
            guard printer.print(frame) else { return finish(0) }
            printed += 1
            if let count, printed >= count { finish(0) }
        case "subscribed" where frame.status != "ALLOW":
            let subject = frame.subject ?? "?"
            note("subscribe \(subject): \(frame.status ?? "?")\(frame.reason.map { " (\($0))" } ?? "")")
            tracker.remove(subject)
            if tracker.subjects.isEmpty { finish(ExitStatus.failed) }
        case "status":
            note("\(frame.status ?? "?")\(frame.subject.map { " \($0)" } ?? "")")
        case "error":
            note("server error \(frame.code ?? "?")\(frame.reason.map { ": \($0)" } ?? "")")
        default:
            break
        }
    }

    private func reconnect(after end: ConnectionEnd, wasConnected: Bool) {
        channel = nil
        guard !finished else { return }
        let delay = backoff.nextDelayMs(closeCode: end.closeCode, wasConnected: wasConnected)
        note("\(servers.urls[serverIndex]): \(end); reconnecting in \(delay) ms")
        serverIndex = (serverIndex + 1) % servers.urls.count
        loop.scheduleTask(in: .milliseconds(Int64(delay))) { self.connect() }
    }

    private func finish(_ code: Int32) {
        guard !finished else { return }
        finished = true
        guard let channel else { return done.succeed(code) }
        channel.closeWebSocket().whenComplete { _ in self.done.succeed(code) }
    }
}
