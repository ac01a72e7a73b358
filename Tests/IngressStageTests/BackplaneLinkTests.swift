import Foundation
import NIOEmbedded
import SwitchyardCore
import XCTest
@testable import IngressStage

/// The ingress → router direction of `BackplaneLink`: an idle pipe is sent to from the event loop at once, a
/// backlog waits for the sender thread, and the order holds across both.
final class BackplaneLinkTests: XCTestCase {
    private let logger = LogWriter(stage: "ws-ingress", instance: 0, level: .error).makeLogger()

    private func makeLink(_ runDir: TestRunDir, on loop: EmbeddedEventLoop) throws -> BackplaneLink {
        try BackplaneLink(eventLoop: loop, inboundAddress: "ipc://\(runDir.path)/ws-ingress-0.ipc",
                          routerAddress: "ipc://\(runDir.path)/router-0.ipc", logger: logger,
                          metrics: StageMetrics())
    }

    private func bindRouter(_ runDir: TestRunDir) throws -> NanomsgSocket {
        try NanomsgSocket.pipeline(.pull, "ipc://\(runDir.path)/router-0.ipc", timeoutMilliseconds: 2000)
    }

    private func marker(_ name: String) -> Envelope { .peerUp(PeerUp(stage: name, instance: 0)) }

    /// The markers of the envelopes of the next batches the router receives, until `count` are in (or a timeout).
    private func receiveMarkers(_ router: NanomsgSocket, count: Int) throws -> [String] {
        var markers: [String] = []
        while markers.count < count, let batch = try router.receive() {
            for case .peerUp(let peer) in try EnvelopeCodec.decodeBatch(batch).envelopes { markers.append(peer.stage) }
        }
        return markers
    }

    func testAnIdlePipeIsSentToFromTheEventLoopWithoutTheSenderThread() throws {
        let runDir = try TestRunDir("backplane-idle")
        defer { runDir.remove() }
        let loop = EmbeddedEventLoop()
        let router = try bindRouter(runDir)
        // Never started: no sender thread exists, so only the loop itself can send.
        let link = try makeLink(runDir, on: loop)
        Thread.sleep(forTimeInterval: 0.2)  // nanomsg connects in the background

        link.send(marker("a"))
        link.send(marker("b"))
        loop.run()

        XCTAssertEqual(link.queuedBatches, 0)
        XCTAssertEqual(try receiveMarkers(router, count: 2), ["a", "b"], "one batch per loop tick, sent at once")
    }

    func testABacklogQueuesForTheSenderThreadAndIsNotOvertaken() throws {
        let runDir = try TestRunDir("backplane-backlog")
        defer { runDir.remove() }
        let loop = EmbeddedEventLoop()
        let link = try makeLink(runDir, on: loop)

        // No router yet: nanomsg cannot take the batch at once, so it is queued for the sender thread.
        link.send(marker("first"))
        loop.run()
        XCTAssertEqual(link.queuedBatches, 1)

        let router = try bindRouter(runDir)
        Thread.sleep(forTimeInterval: 1.2)  // past the longest reconnect interval: the router is connected now
        // "first" still waits (no sender thread yet): sending "second" from the loop would overtake it.
        link.send(marker("second"))
        loop.run()
        XCTAssertEqual(link.queuedBatches, 2)

        link.start { _ in }
        defer { link.stop() }
        XCTAssertEqual(try receiveMarkers(router, count: 2), ["first", "second"])
    }
}
