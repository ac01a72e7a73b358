// C's `stdout` is a mutable global to Swift 6; the C runtime sets it before `main` and nothing here
// reassigns it. (Imported before Foundation, which re-exports Glibc without the attribute.)
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import SwitchyardClient

/// switchyard-cli: subscribe and publish from a shell, the way kcat and mosquitto_pub/sub are used.
@main
struct SwitchyardCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard-cli",
        abstract: "Subscribe to and publish on a Switchyard broker from the command line.",
        discussion: """
            Exit status: 0 success; 1 a publish was not confirmed OK, the connection was lost, or every subject \
            was refused; 3 no server could be reached; 64 a usage error.
            """,
        subcommands: [Subscribe.self, Publish.self])
}

/// Options every subcommand has.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .customLong("url"),
            help: "A server's WebSocket URL (ws://HOST:PORT/); repeat it to give several: the client rotates.")
    var urls: [String] = ["ws://127.0.0.1:8800/"]

    @Option(help: "A token, sent with a `connect` frame on every connection.")
    var token: String?

    func validate() throws {
        for url in urls where WebSocketURL(url) == nil {
            throw ValidationError("--url \(url) is not a ws://HOST[:PORT][/PATH] URL")
        }
    }

    var servers: ServerList { ServerList(urls: urls.compactMap(WebSocketURL.init), token: token) }
}

/// The servers a session connects to (at least one, validated), and the token it sends on each connection.
struct ServerList {
    let urls: [WebSocketURL]
    let token: String?
}

/// C's standard output stream, line-buffered by `runSession`.
var standardOutput: UnsafeMutablePointer<FILE> { stdout }

/// Runs `body` on a one-thread event loop and blocks the main thread until the session's exit code is known.
func runSession(_ body: (EventLoop) -> EventLoopFuture<Int32>) throws {
    setvbuf(stdout, nil, _IOLBF, 0)
    signal(SIGPIPE, SIG_IGN)  // a closed pipe is seen as a failed write, and ends `sub` quietly
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let code = (try? body(group.next()).wait()) ?? 1
    try? group.syncShutdownGracefully()
    if code != 0 { throw ExitCode(code) }
}

/// Writes `line` to standard error, prefixed with the program's name.
func note(_ line: String) {
    FileHandle.standardError.write(Data("switchyard-cli: \(line)\n".utf8))
}

enum ExitStatus {
    static let failed: Int32 = 1
    static let unreachable: Int32 = 3
}
