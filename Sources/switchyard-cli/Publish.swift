import ArgumentParser
import Foundation
import NIOCore
import SwitchyardClient

struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pub",
        abstract: "Publish CONTENT, or each line of standard input, on SUBJECT and wait for every publish_status.",
        discussion: """
            Exits 0 when every publish was confirmed OK; otherwise 1, with each status that was not OK (FAILED, \
            DENY, MESSAGE_SIZE_LIMIT_EXCEEDED, ...) on standard error.
            """)

    @Argument(help: "The subject, e.g. /vehicles/car1/speed.")
    var subject: String

    @Argument(help: "The content; without it, every line of standard input is one message.")
    var content: String?

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The closure sent with every message (default: one generated per message).")
    var closure: String?

    @Option(help: "Whether the message becomes the subject's retained snapshot (server default: true).")
    var retained: Bool?

    @Option(help: "GUARANTEED (kept for recovery, the server's default) or STANDARD.")
    var qos: String?

    @Option(help: "Publishes sent and not yet confirmed, at most.")
    var window: Int = 100

    @Option(help: "Seconds to wait for a publish_status before giving up.")
    var timeout: Int = 30

    func validate() throws {
        if let qos, qos != "GUARANTEED", qos != "STANDARD" { throw ValidationError("--qos GUARANTEED|STANDARD") }
        guard (1...100_000).contains(window) else { throw ValidationError("--window must be 1...100000") }
        guard (1...3600).contains(timeout) else { throw ValidationError("--timeout must be 1...3600") }
    }

    func run() throws {
        let template = PublishTemplate(subject: subject, closure: closure, retained: retained, qos: qos)
        let input: PublishInput = content.map { .single($0) } ?? .standardInput
        try runSession { loop in
            PublishSession(loop: loop, servers: connection.servers, template: template, window: window,
                           timeout: .seconds(Int64(timeout))).start(input)
        }
    }
}

enum PublishInput {
    case single(String)
    case standardInput
}

/// What every publish of a run shares; each gets its own closure unless one was given.
struct PublishTemplate {
    let subject: String
    let closure: String?
    let retained: Bool?
    let qos: String?
    private let closurePrefix = "cli-\(getpid())-"

    func request(_ content: String, number: Int) -> ClientRequest {
        .publish(subject: subject, content: content, closure: closure ?? closurePrefix + String(number),
                 retained: retained, qos: qos, base64: false)
    }
}

/// One `pub` run, confined to its event loop: connect, publish, count the answers, exit.
// @unchecked Sendable: touched only on `loop` (`start` hops there with `execute`; every callback runs there).
final class PublishSession: @unchecked Sendable {
    private let loop: EventLoop
    private let servers: ServerList
    private let template: PublishTemplate
    private let timeout: TimeAmount
    /// Publishes that may be unanswered at once; the standard-input reader waits on it.
    private let window: DispatchSemaphore
    private let done: EventLoopPromise<Int32>
    private var channel: Channel?
    /// closure → the numbers of the publishes waiting for a status with it, oldest first.
    private var pending: [String: [Int]] = [:]
    private var pendingCount = 0
    private var sent = 0
    private var failures = 0
    private var inputEnded = false
    private var lastProgress = NIODeadline.now()
    private var finished = false

    init(loop: EventLoop, servers: ServerList, template: PublishTemplate, window: Int, timeout: TimeAmount) {
        self.loop = loop
        self.servers = servers
        self.template = template
        self.timeout = timeout
        // Created empty and filled: libdispatch traps when a semaphore is freed below its initial value.
        self.window = DispatchSemaphore(value: 0)
        for _ in 0..<window { self.window.signal() }
        done = loop.makePromise()
    }

    func start(_ input: PublishInput) -> EventLoopFuture<Int32> {
        loop.execute { self.connect(serverIndex: 0, input: input) }
        return done.futureResult
    }

    /// Tries the servers in turn, once each.
    private func connect(serverIndex: Int, input: PublishInput) {
        let server = servers.urls[serverIndex]
        WebSocketConnector.connect(on: loop, host: server.host, port: server.port, path: server.target) { _ in
            // The handler keeps the session alive until the connection is closed.
            ServerConnectionHandler(onFrame: { self.received($0) }, onEnd: { self.connectionEnded($0) })
        }.whenComplete { result in
            switch result {
            case .success(let channel):
                self.opened(channel, input: input)
            case .failure(let error):
                note("cannot connect to \(server): \(error)")
                if serverIndex + 1 < self.servers.urls.count {
                    self.connect(serverIndex: serverIndex + 1, input: input)
                } else {
                    self.finish(ExitStatus.unreachable)
                }
            }
        }
    }

    private func opened(_ channel: Channel, input: PublishInput) {
        self.channel = channel
        if let token = servers.token { channel.send(.connect(token: token)) }
        loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { task in
            guard !self.finished else { return task.cancel() }
            self.checkProgress()
        }
        switch input {
        case .single(let content):
            publish(content)
            endOfInput()
        case .standardInput:
            readStandardInput()
        }
    }

    /// Reads lines on a thread of its own (never on the event loop), at most `window` ahead of the answers.
    private func readStandardInput() {
        let loop = self.loop
        let window = self.window
        let session = NIOLoopBound(self, eventLoop: loop)
        Thread.detachNewThread {
            while let line = readLine(strippingNewline: true) {
                window.wait()
                loop.execute { session.value.publish(line) }
            }
            loop.execute { session.value.endOfInput() }
        }
    }

    private func publish(_ content: String) {
        guard !finished, let channel else { return }
        sent += 1
        let request = template.request(content, number: sent)
        guard case .publish(_, _, let closure?, _, _, _) = request else { return }
        pending[closure, default: []].append(sent)
        pendingCount += 1
        lastProgress = .now()
        channel.send(request)
    }

    private func endOfInput() {
        inputEnded = true
        finishIfDone()
    }

    private func received(_ frame: ServerFrame) {
        switch frame.op {
        case "publish_status":
            answered(closure: frame.closure, status: frame.status ?? "?", reason: frame.reason)
        case "error":
            // An error that names a closure answers that publish; any other is reported and counted.
            if frame.closure != nil {
                answered(closure: frame.closure, status: frame.code ?? "ERROR", reason: frame.reason)
            } else {
                failures += 1
                note("server error \(frame.code ?? "?")\(frame.reason.map { ": \($0)" } ?? "")")
            }
        default:
            break
        }
    }

    private func answered(closure: String?, status: String, reason: String?) {
        guard let closure, var numbers = pending[closure], !numbers.isEmpty else { return }
        let number = numbers.removeFirst()
        pending[closure] = numbers.isEmpty ? nil : numbers
        pendingCount -= 1
        lastProgress = .now()
        window.signal()
        if status != "OK" {
            failures += 1
            note("publish \(number) on \(template.subject): \(status)\(reason.map { " (\($0))" } ?? "")")
        }
        finishIfDone()
    }

    private func finishIfDone() {
        if inputEnded && pendingCount == 0 { finish(failures == 0 ? 0 : ExitStatus.failed) }
    }

    private func checkProgress() {
        guard pendingCount > 0, NIODeadline.now() - lastProgress > timeout else { return }
        note("\(pendingCount) publishes got no publish_status within \(timeout.nanoseconds / 1_000_000_000) s")
        finish(ExitStatus.failed)
    }

    private func connectionEnded(_ end: ConnectionEnd) {
        channel = nil
        guard !finished else { return }
        note("\(end) with \(pendingCount) publishes unconfirmed")
        finish(ExitStatus.failed)
    }

    private func finish(_ code: Int32) {
        guard !finished else { return }
        finished = true
        guard let channel else { return done.succeed(code) }
        self.channel = nil
        channel.closeWebSocket().whenComplete { _ in self.done.succeed(code) }
    }
}
