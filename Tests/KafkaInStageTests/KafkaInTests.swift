import Foundation
import NIOConcurrencyHelpers
import NIOCore
import SwitchyardCore
import XCTest
@testable import KafkaInStage
@testable import SwitchyardKafka

final class KafkaInTests: XCTestCase {
    func record(_ offset: Int64, key: [UInt8]?, value: [UInt8] = Array("v".utf8)) -> KafkaRecord {
        KafkaRecord(topic: "notifications", partition: 2, offset: offset, key: key.map { ByteBuffer(bytes: $0) },
                    value: ByteBuffer(bytes: value), timestamp: 1_700_000_000_000, epoch: "T.2")
    }

    func testRecordsBecomeMessagesOnTopicAndKey() throws {
        let keyed = try XCTUnwrap(KafkaIn.message(from: record(7, key: Array("car66".utf8))))
        XCTAssertEqual(keyed.subject, "/notifications/car66")
        XCTAssertEqual(keyed.seq, 7)
        XCTAssertEqual(keyed.epoch, "T.2")
        XCTAssertEqual(keyed.timestamp, 1_700_000_000_000_000_000)
        XCTAssertTrue(keyed.flags.contains(.retained) && keyed.flags.contains(.guaranteed))
        XCTAssertFalse(keyed.flags.contains(.binary))
        XCTAssertEqual(KafkaIn.message(from: record(8, key: nil))?.subject, "/notifications")
        XCTAssertEqual(KafkaIn.message(from: record(9, key: []))?.subject, "/notifications")
        XCTAssertTrue(KafkaIn.message(from: record(10, key: nil, value: [0xff, 0xfe]))!.flags.contains(.binary))
    }

    func testKeysThatMakeNoValidSubjectAreSkipped() {
        XCTAssertNil(KafkaIn.message(from: record(1, key: Array("a//b".utf8))))
        XCTAssertNil(KafkaIn.message(from: record(2, key: Array("a/".utf8))))
        XCTAssertNil(KafkaIn.message(from: record(3, key: [0xc3, 0x28])))
    }

    func testHeadersBecomeMessageHeadersWithinTheBoundsAndHostileOnesAreDropped() throws {
        var withHeaders = record(11, key: nil)
        withHeaders.headers = [
            KafkaHeader(name: "unit", value: ByteBuffer(string: "km/h")), KafkaHeader(name: "null", value: nil),
            KafkaHeader(name: "binary", value: ByteBuffer(bytes: [0xc3, 0x28])),
            KafkaHeader(name: "nul", value: ByteBuffer(bytes: [0x61, 0x00])),
            KafkaHeader(name: "nul\u{0}name", value: ByteBuffer(string: "x")),
            KafkaHeader(name: "unit", value: ByteBuffer(string: "")),
        ]
        withHeaders.headersNotRead = 2
        var dropped = 0
        let message = try XCTUnwrap(KafkaIn.message(from: withHeaders, droppedHeaders: &dropped))
        XCTAssertEqual(message.headers, [MessageHeader("unit", "km/h"), MessageHeader("null", ""), MessageHeader("unit", "")])
        XCTAssertEqual(dropped, 3 + 2)

        var many = record(12, key: nil)
        many.headers = (0..<40).map { KafkaHeader(name: "h\($0)", value: ByteBuffer(string: "v")) }
        dropped = 0
        XCTAssertEqual(KafkaIn.message(from: many, droppedHeaders: &dropped)?.headers.count, MessageHeader.maxCount)
        XCTAssertEqual(dropped, 40 - MessageHeader.maxCount)

        var large = record(13, key: nil)
        large.headers = [KafkaHeader(name: "a", value: ByteBuffer(repeating: 0x61, count: 5000)),
                         KafkaHeader(name: "b", value: ByteBuffer(string: "c"))]
        dropped = 0
        XCTAssertEqual(KafkaIn.message(from: large, droppedHeaders: &dropped)?.headers, [], "past the byte bound: dropped from there on")
        XCTAssertEqual(dropped, 2)
        XCTAssertEqual(KafkaIn.message(from: record(14, key: nil))?.headers, [])
    }

    func testPreviousOffsetsChainEachSubjectAndIgnoreRereads() {
        let offsets = PreviousOffsets()
        func message(_ subject: String, _ seq: UInt64, epoch: String = "T.2") -> Message {
            Message(subject: subject, content: ByteBuffer(), seq: seq, epoch: epoch)
        }
        XCTAssertEqual(offsets.previous(of: message("/n/a", 3)), 0)
        XCTAssertEqual(offsets.previous(of: message("/n/b", 4)), 0)
        XCTAssertEqual(offsets.previous(of: message("/n/a", 9)), 3)
        XCTAssertEqual(offsets.previous(of: message("/n/a", 3)), 0, "a record read again")
        XCTAssertEqual(offsets.previous(of: message("/n/a", 12)), 9)
        XCTAssertEqual(offsets.previous(of: message("/n/a", 13, epoch: "T.0")), 0, "another partition")
    }
}

final class WarmUpTests: XCTestCase {
    let second: UInt64 = 1_000_000_000
    let p0 = KafkaTopicPartition(topic: "t", partition: 0)
    let p1 = KafkaTopicPartition(topic: "t", partition: 1)

    func testReadyOnceEveryPartitionAssignedAtStartIsReadToItsEnd() {
        var warmUp = WarmUp(now: 0)
        XCTAssertFalse(warmUp.note(.reachable(true), now: 1))
        XCTAssertFalse(warmUp.note(.assigned([p0, p1]), now: 2))
        XCTAssertFalse(warmUp.note(.caughtUp(p0), now: 3))
        XCTAssertFalse(warmUp.tick(now: 5 * second), "an assignment is waiting")
        XCTAssertTrue(warmUp.note(.caughtUp(p1), now: 6 * second))
        XCTAssertFalse(warmUp.note(.caughtUp(p1), now: 7 * second), "only once")
    }

    func testNothingToConsumeOrKafkaDownOrTooLongDoesNotHoldTheStart() {
        var empty = WarmUp(now: 0)
        XCTAssertFalse(empty.note(.reachable(true), now: 0))
        XCTAssertFalse(empty.tick(now: second / 2))
        XCTAssertTrue(empty.tick(now: second))
        var down = WarmUp(now: 0)
        XCTAssertTrue(down.note(.reachable(false), now: 1))
        var slow = WarmUp(now: 0)
        XCTAssertFalse(slow.note(.assigned([p0]), now: 1))
        XCTAssertTrue(slow.tick(now: WarmUp.maxWait))
    }

    func testAnEarlierNowNeverTraps() {
        var warmUp = WarmUp(now: 100 * second)
        XCTAssertFalse(warmUp.note(.reachable(true), now: 90 * second))
        XCTAssertFalse(warmUp.tick(now: 50 * second), "no time has passed")
        XCTAssertTrue(warmUp.tick(now: 100 * second + WarmUp.maxWait))
    }
}

final class KafkaInNumbersTests: XCTestCase {
    func record(offset: Int64 = 7, timestamp: Int64) -> KafkaRecord {
        KafkaRecord(topic: "notifications", partition: 0, offset: offset, key: nil, value: ByteBuffer(string: "v"),
                    timestamp: timestamp, epoch: "T.0")
    }

    func testAFarFutureTimestampBecomesTheArrivalTime() throws {
        let before = wallClockNanoseconds()
        for timestamp in [Int64.max, 18_446_744_073_710, -1] {
            let message = try XCTUnwrap(KafkaIn.message(from: record(timestamp: timestamp)))
            XCTAssertGreaterThanOrEqual(message.timestamp, before, "timestamp \(timestamp)")
            XCTAssertLessThan(message.timestamp, before + 60_000_000_000, "timestamp \(timestamp)")
        }
        XCTAssertEqual(KafkaIn.message(from: record(timestamp: 18_446_744_073_709))?.timestamp,
                       18_446_744_073_709_000_000, "the largest that fits is kept")
    }

    func testANegativeOffsetMakesNoMessage() {
        XCTAssertNil(KafkaIn.message(from: record(offset: -1, timestamp: 0)))
    }
}

final class DeepRecoveryQueueTests: XCTestCase {
    func recover(_ subject: String, after seq: UInt64, id: UInt64 = 1, epoch: String = "T.0") -> Subscribe {
        Subscribe(requestID: id, replyTo: "ipc:///cache-0", subject: subject, ingress: 0, registersInterest: false,
                  start: .recover(epoch: epoch, seq: seq))
    }

    func admit(_ queue: inout DeepRecoveryQueue, _ request: Subscribe) -> DeepRecoveryQueue.Admission {
        queue.admit(request, as: DeepRecoveryQueue.read(for: request)!)
    }

    func testIdenticalRequestsShareOneReadAndTheQueueIsBounded() throws {
        var queue = DeepRecoveryQueue(maxRunning: 2)
        XCTAssertEqual(admit(&queue, recover("/n/a", after: 5, id: 1)), .queued)
        XCTAssertEqual(admit(&queue, recover("/n/a", after: 5, id: 2)), .merged)
        XCTAssertEqual(admit(&queue, recover("/n/a", after: 6, id: 3)), .queued)
        XCTAssertEqual(admit(&queue, recover("/n/b", after: 5, id: 4)), .refused, "two waiting already")
        let first = try XCTUnwrap(queue.start())
        let second = try XCTUnwrap(queue.start())
        XCTAssertNil(queue.start(), "nothing left waiting")
        XCTAssertEqual(admit(&queue, recover("/n/b", after: 5, id: 5)), .queued)
        XCTAssertEqual(admit(&queue, recover("/n/a", after: 5, id: 6)), .merged, "joins the running read")
        XCTAssertEqual(admit(&queue, recover("/n/a", after: 5, id: 7, epoch: "T.1")), .queued)
        XCTAssertEqual(admit(&queue, recover("/n/c", after: 5, id: 8)), .refused)
        XCTAssertNil(queue.start(), "both workers busy")
        XCTAssertEqual(queue.finish(first).map(\.requestID), [1, 2, 6])
        XCTAssertEqual(queue.finish(second).map(\.requestID), [3])
        XCTAssertEqual(queue.start()?.subject, "/n/b")
        XCTAssertEqual(queue.inFlight, 2)
    }

    func testOneReadTakesABoundedNumberOfRequests() {
        var queue = DeepRecoveryQueue(maxRunning: 1)
        for id in 0..<DeepRecoveryQueue.maxRequestsPerRead {
            XCTAssertNotEqual(admit(&queue, recover("/n/a", after: 1, id: UInt64(id))), .refused)
        }
        XCTAssertEqual(admit(&queue, recover("/n/a", after: 1)), .refused)
    }

    func testOnlyRecoveriesMakeReads() {
        let snapshot = Subscribe(requestID: 1, replyTo: "x", subject: "/n", ingress: 0, registersInterest: false,
                                 start: .snapshot)
        XCTAssertNil(DeepRecoveryQueue.read(for: snapshot))
    }

    func testTheWorkerAnswersMergedRequestsOnceReadAndRefusesBeyondItsBound() throws {
        let release = DispatchSemaphore(value: 0)
        let answered = expectation(description: "answered")
        answered.expectedFulfillmentCount = 2
        let reads = NIOLockedValueBox(0)
        let answers = NIOLockedValueBox<[UInt64]>([])
        let worker = DeepRecoveryWorker(
            maxRunning: 1,
            perform: { _, request in
                reads.withLockedValue { $0 += 1 }
                release.wait()
                return KafkaIn.reply(to: request, .sync, epoch: "T.0", lastSeq: 9)
            },
            answer: { reply, requests in
                XCTAssertEqual(reply.status, .sync)
                answers.withLockedValue { $0 += requests.map(\.requestID) }
                answered.fulfill()
            })
        defer { worker.stop() }
        XCTAssertEqual(worker.submit(recover("/n/a", after: 5, id: 1)), .queued)
        while reads.withLockedValue({ $0 }) == 0 { usleep(1000) }  // the worker runs it
        XCTAssertEqual(worker.submit(recover("/n/a", after: 5, id: 2)), .merged)
        XCTAssertEqual(worker.submit(recover("/n/b", after: 5, id: 3)), .queued, "waits for the busy worker")
        XCTAssertEqual(worker.submit(recover("/n/c", after: 5, id: 4)), .refused)
        release.signal()
        release.signal()
        wait(for: [answered], timeout: 10)
        XCTAssertEqual(answers.withLockedValue { $0 }.sorted(), [1, 2, 3])
        XCTAssertEqual(reads.withLockedValue { $0 }, 2, "the merged request made no read of its own")
    }

    func testStopReturnsOnceTheWorkersHaveFinishedTheirRead() {
        let started = DispatchSemaphore(value: 0)
        let finished = NIOLockedValueBox(false)
        let worker = DeepRecoveryWorker(
            maxRunning: 1,
            perform: { _, request in
                started.signal()
                usleep(100_000)
                finished.withLockedValue { $0 = true }
                return KafkaIn.reply(to: request, .resync, epoch: "T.0", lastSeq: 0)
            },
            answer: { _, _ in })
        XCTAssertEqual(worker.submit(recover("/n/a", after: 5, id: 1)), .queued)
        started.wait()
        worker.stop()
        XCTAssertTrue(finished.withLockedValue { $0 }, "stop() returned while a worker was still reading")
        XCTAssertEqual(worker.submit(recover("/n/b", after: 5, id: 2)), .refused)
        worker.stop()
    }
}

final class DeepRecoveryCollectorTests: XCTestCase {
    let partition = KafkaPartitionInfo(topic: "n", partition: 0, topicID: nil, epoch: "n.0")

    func records(_ offsets: ClosedRange<Int64>, key: String = "a", bytes: Int = 100) -> [KafkaRecord] {
        offsets.map {
            KafkaRecord(topic: "n", partition: 0, offset: $0, key: ByteBuffer(string: key),
                        value: ByteBuffer(repeating: 0x61, count: bytes), timestamp: 0, epoch: "n.0")
        }
    }

    func outcome(maxBytes: Int, _ feed: (DeepRecoveryReader.Collector) -> Void) -> DeepRecoveryReader.Outcome {
        let collector = DeepRecoveryReader.Collector(partition: 0, first: 3, key: "a", maxBytes: maxBytes)
        feed(collector)
        return collector.wait(until: monotonicNanoseconds() + 1_000_000_000, unless: { false })
    }

    func testTheKeysRecordsUpToTheEndWithinTheByteCap() {
        let result = outcome(maxBytes: 1000) {
            $0.add(self.records(3...6) + self.records(7...7, key: "b"))
            $0.note(.partitionEOF(self.partition, offset: 8), epoch: "n.0")
        }
        guard case .records(let kept, let end) = result else { return XCTFail("\(result)") }
        XCTAssertEqual(kept.map(\.offset), [3, 4, 5, 6])
        XCTAssertEqual(end, 8)
    }

    func testAReplyOverTheByteCapIsUnavailableNotCut() {
        let result = outcome(maxBytes: 350) {
            $0.add(self.records(3...6))
            $0.note(.partitionEOF(self.partition, offset: 7), epoch: "n.0")
        }
        guard case .unavailable(let reason) = result else { return XCTFail("cut instead of refused: \(result)") }
        XCTAssertTrue(reason.contains("bytes"), reason)
    }

    func testALogThatStartsAfterThePositionIsUnavailable() {
        let result = outcome(maxBytes: 1000) { $0.add(self.records(5...6)) }
        guard case .unavailable = result else { return XCTFail("a gap was served: \(result)") }
    }

    func testNoPositionBeyondAnyOffsetIsRead() {
        let reader = DeepRecoveryReader(config: KafkaConfig(properties: [:]), isStopping: { false })
        guard case .unavailable = reader.read(partition, after: Int64.max, key: "a") else {
            return XCTFail("Int64.max + 1 is no offset")
        }
    }
}
