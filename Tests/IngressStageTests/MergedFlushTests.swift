import Foundation
import NIOCore
import NIOEmbedded
import SwitchyardCore
import XCTest
@testable import IngressStage

/// `MergedFlushRule`: batches waiting back to back for the loop are flushed once after the last, within the bound.
final class MergedFlushRuleTests: XCTestCase {
    func testALoneBatchIsFlushedAtOnce() {
        var rule = MergedFlushRule()
        XCTAssertTrue(rule.flushes(afterBatchOf: 100, moreWaiting: false))
        XCTAssertTrue(rule.flushes(afterBatchOf: 100, moreWaiting: false))
    }

    func testWaitingBatchesAreFlushedAfterTheLast() {
        var rule = MergedFlushRule()
        XCTAssertEqual([true, true, false].map { rule.flushes(afterBatchOf: 100, moreWaiting: $0) },
                       [false, false, true])
    }

    func testABacklogIsFlushedEveryMaxBatches() {
        var rule = MergedFlushRule()
        let flushes = (0..<20).map { _ in rule.flushes(afterBatchOf: 10, moreWaiting: true) }
        XCTAssertEqual(flushes.indices.filter { flushes[$0] }, [7, 15], "every \(MergedFlushRule.maxBatches) batches")
    }

    func testABacklogOfLargeBatchesIsFlushedAtMaxBytes() {
        var rule = MergedFlushRule()
        let half = MergedFlushRule.maxBytes / 2
        XCTAssertFalse(rule.flushes(afterBatchOf: half, moreWaiting: true))
        XCTAssertTrue(rule.flushes(afterBatchOf: half, moreWaiting: true))
        XCTAssertFalse(rule.flushes(afterBatchOf: 10, moreWaiting: true), "counted afresh after the flush")
        XCTAssertTrue(rule.flushes(afterBatchOf: Int.max, moreWaiting: true), "an outside size cannot overflow")
        XCTAssertTrue(rule.flushes(afterBatchOf: -1, moreWaiting: false))
    }
}

/// The hub leaves what a batch wrote unflushed when the link says another batch follows, and flushes all of it
/// after the last (one flush per subscriber: on a socket, NIO writes its pending output in one `writev`).
final class MergedFlushHubTests: XCTestCase, MQTTPipelineTest {
    var channel: EmbeddedChannel!
    var hub: IngressHub!
    var runDir: TestRunDir!

    override func setUpWithError() throws {
        (channel, _, hub, runDir) = try Self.makePipeline("sy-merged-flush", config: SwitchyardConfig())
        try send(.connect(MQTTConnect(version: .v5, clientID: "dev1", cleanSession: true, keepAlive: 60)), .v5)
        _ = try received(.v5)
        try send(.subscribe(MQTTSubscribe(packetID: 1, subscriptions: [
            MQTTSubscription(filter: "vehicles/+/speed", options: 0x20),  // Retain Handling 2: no retained messages
        ])), .v5)
        guard case .suback = try received(.v5).first else { return XCTFail("no SUBACK") }
    }

    override func tearDownWithError() throws {
        _ = try? channel.finish()
        runDir.remove()
    }

    func batch(_ seq: UInt64) -> [Envelope] {
        [.message(Message(subject: "/vehicles/car7/speed", content: ByteBuffer(string: "m\(seq)"), seq: seq,
                          previousSeq: seq - 1, epoch: "e", flags: []))]
    }

    /// The number of writes flushed to the channel so far, and the payloads they carry.
    func flushedWrites() throws -> (writes: Int, payloads: [String]) {
        var writes = 0
        var bytes = ByteBuffer()
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            writes += 1
            bytes.writeBuffer(&buffer)
        }
        var payloads: [String] = []
        while let raw = try MQTTFraming.next(from: &bytes, maxBodySize: .max) {
            if case .publish(let publish) = try MQTTCodec.decode(raw, version: .v5) {
                payloads.append(String(buffer: publish.payload))
            }
        }
        return (writes, payloads)
    }

    func testBatchesWaitingBackToBackAreFlushedOnceAfterTheLast() throws {
        hub.handle(batch(1), flush: false)
        hub.handle(batch(2), flush: false)
        XCTAssertEqual(try flushedWrites().writes, 0, "nothing flushed while another batch waits")
        hub.handle(batch(3), flush: true)
        let flushed = try flushedWrites()
        XCTAssertEqual(flushed.payloads, ["m1", "m2", "m3"])
        hub.handle(batch(4))
        XCTAssertEqual(try flushedWrites().payloads, ["m4"], "a lone batch is flushed at once")
    }
}
