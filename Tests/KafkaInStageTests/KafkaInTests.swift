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
}
