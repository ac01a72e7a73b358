import NIOCore
import SwitchyardCore
import XCTest
@testable import CacheStage

/// The store's own bounds: bytes, subjects, idle subjects, and what a recovery is told after an eviction.
final class SubjectStoreBoundsTests: XCTestCase {
    let second: UInt64 = 1_000_000_000

    func published(_ subject: String, bytes: Int, flags: MessageFlags = [.retained, .guaranteed]) -> Message {
        Message(subject: subject, content: ByteBuffer(repeating: 0x61, count: bytes), flags: flags)
    }

    func reply(_ store: SubjectStore, _ subject: String, _ start: SubscribeStart) -> SubscribeReply? {
        store.reply(to: Subscribe(requestID: 1, replyTo: "ipc:///x", subject: subject, ingress: 0,
                                  registersInterest: false, start: start))
    }

    func testBytesHeldCountASnapshotInTheHistoryOnce() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 2, maxAge: 60 * second)
        _ = store.append(published("/a", bytes: 100), now: 1)
        XCTAssertEqual(store.bytesHeld, 100, "history message and snapshot are one")
        _ = store.append(published("/a", bytes: 10, flags: [.guaranteed]), now: 2)
        XCTAssertEqual(store.bytesHeld, 110)
        _ = store.append(published("/a", bytes: 1, flags: [.guaranteed]), now: 3)
        XCTAssertEqual(store.bytesHeld, 111, "the first left the history but stays as the snapshot")
        _ = store.append(published("/a", bytes: 5), now: 4)
        XCTAssertEqual(store.bytesHeld, 6, "history 1 + 5, the new snapshot is the 5")
        _ = store.append(published("/a", bytes: 7, flags: [.retained]), now: 5)
        XCTAssertEqual(store.bytesHeld, 13, "history 1 + 5, snapshot 7 on its own")
    }

    func testHeadersAreKeptWithTheMessageAndCountInTheBytesHeld() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 2, maxAge: 60 * second)
        var message = published("/a", bytes: 10)
        message.headers = [MessageHeader("unit", "km/h")]
        _ = store.append(message, now: 1)
        XCTAssertEqual(store.bytesHeld, 18)
        XCTAssertEqual(reply(store, "/a", .snapshot)?.messages.map(\.headers), [[MessageHeader("unit", "km/h")]])
        XCTAssertEqual(reply(store, "/a", .history(count: 1))?.messages.map(\.headers), [[MessageHeader("unit", "km/h")]])
        var clearing = published("/a", bytes: 0, flags: [.retained, .clearsSnapshot])
        clearing.headers = [MessageHeader("why", "gone")]
        _ = store.append(clearing, now: 2)
        XCTAssertEqual(store.bytesHeld, 18, "the first stays in the history; the clearing message is held nowhere")
    }

    func testTheByteBoundDropsTheLeastRecentlyUsedSubjects() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 100, maxAge: 60 * second, maxBytes: 1000)
        _ = store.append(published("/old", bytes: 400), now: 1)
        _ = store.append(published("/used", bytes: 400), now: 2)
        _ = store.append(published("/old", bytes: 100), now: 3)  // /old is now the more recently used
        XCTAssertEqual(store.bytesHeld, 900)
        _ = store.append(published("/new", bytes: 300), now: 4)
        XCTAssertEqual(store.bytesHeld, 800)
        XCTAssertEqual(store.subjectCount, 2)
        XCTAssertEqual(store.evictedSubjects, 1)
        XCTAssertEqual(reply(store, "/used", .snapshot)?.messages, [], "/used was the least recently used")
        XCTAssertEqual(reply(store, "/old", .history(count: 10))?.messages.count, 2)
        XCTAssertLessThanOrEqual(store.bytesHeld, store.maxBytes)
    }

    func testASubjectAloneOverTheByteBoundShedsItsOldestAndResyncsRecoveriesFromBefore() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 100, maxAge: 60 * second, maxBytes: 1000)
        for index in 1...5 { _ = store.append(published("/a", bytes: 300, flags: [.guaranteed]), now: UInt64(index)) }
        XCTAssertEqual(store.bytesHeld, 900)
        XCTAssertEqual(store.messageCount, 3)
        XCTAssertEqual(store.shedMessages, 2)
        XCTAssertEqual(reply(store, "/a", .recover(epoch: "E", seq: 2))?.messages.map(\.seq), [3, 4, 5])
        XCTAssertEqual(reply(store, "/a", .recover(epoch: "E", seq: 1))?.status, .resync, "message 2 was shed")
        let oversized = store.append(published("/a", bytes: 2000), now: 6)
        XCTAssertEqual(oversized.seq, 6, "still numbered and delivered live")
        XCTAssertEqual(store.bytesHeld, 0, "but not held")
        XCTAssertEqual(reply(store, "/a", .recover(epoch: "E", seq: 5))?.status, .resync)
    }

    func testADroppedSubjectComesBackInANewEpochSoOldPositionsResync() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 100, maxAge: 60 * second, maxSubjects: 2)
        for _ in 1...5 { _ = store.append(published("/a", bytes: 1), now: 1) }
        _ = store.append(published("/b", bytes: 1), now: 2)
        _ = store.append(published("/c", bytes: 1), now: 3)  // drops /a, the least recently used
        XCTAssertEqual(store.subjectCount, 2)
        XCTAssertEqual(store.evictedSubjects, 1)
        var again = store.append(published("/a", bytes: 1), now: 4)  // drops /b
        XCTAssertNotEqual(again.epoch, "E")
        XCTAssertEqual(again.seq, 1)
        for _ in 1...6 { again = store.append(published("/a", bytes: 1), now: 5) }
        let recovery = reply(store, "/a", .recover(epoch: "E", seq: 3))
        XCTAssertEqual(recovery?.status, .resync, "seq 4 of the new /a is not seq 4 of the old one")
        XCTAssertEqual(reply(store, "/a", .recover(epoch: again.epoch, seq: 5))?.messages.map(\.seq), [6, 7])
        XCTAssertEqual(reply(store, "/c", .recover(epoch: "E", seq: 0))?.messages.count, 1, "/c keeps epoch E")
    }

    func testTheSubjectBoundHoldsUnderManySubjects() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second, maxBytes: 50_000,
                                 maxSubjects: 100)
        for index in 0..<10_000 { _ = store.append(published("/s/\(index)", bytes: 16), now: UInt64(index)) }
        XCTAssertEqual(store.subjectCount, 100)
        XCTAssertEqual(store.bytesHeld, 1600)
        XCTAssertEqual(store.messageCount, 100)
        XCTAssertEqual(reply(store, "/s/9999", .snapshot)?.messages.count, 1)
    }

    func testIdleSubjectsGoButNotThoseWithInterestOrASnapshot() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 10 * second)
        _ = store.append(published("/standard", bytes: 1, flags: []), now: 1 * second)
        _ = store.append(published("/watched", bytes: 1, flags: []), now: 1 * second)
        store.noteInterest(Interest(subject: "/watched", ingress: 0, isAdded: true), now: 1 * second)
        _ = store.append(published("/retained", bytes: 1), now: 1 * second)
        store.expire(now: 5 * second)
        XCTAssertEqual(store.subjectCount, 3, "not idle for long enough yet")
        store.expire(now: 20 * second)
        XCTAssertEqual(store.subjectCount, 2)
        XCTAssertEqual(store.messageCount, 0, "the history expired")
        XCTAssertNotEqual(store.append(published("/standard", bytes: 1, flags: []), now: 21 * second).epoch, "E")
        store.noteInterest(Interest(subject: "/watched", ingress: 0, isAdded: false), now: 22 * second)
        store.expire(now: 40 * second)
        XCTAssertEqual(reply(store, "/retained", .snapshot)?.messages.count, 1, "the snapshot outlives the history")
        XCTAssertEqual(store.subjectCount, 1)
    }

    func testAnEmptySubjectUsedAgainIsDroppedOnlyOnceUnusedForTheExpiryTime() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 10 * second)
        _ = store.append(published("/s", bytes: 1, flags: []), now: 1 * second)
        store.noteInterest(Interest(subject: "/s", ingress: 0, isAdded: true), now: 8 * second)
        store.noteInterest(Interest(subject: "/s", ingress: 0, isAdded: false), now: 8 * second)
        store.expire(now: 12 * second)
        XCTAssertEqual(store.subjectCount, 1, "used 4 s ago")
        store.expire(now: 19 * second)
        XCTAssertEqual(store.subjectCount, 0)
    }

    func testEachSubjectsHistoryExpiresWhenItsOwnMessagesAreOld() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 10 * second)
        for index in 0..<1000 {
            _ = store.append(published("/s/\(index % 10)", bytes: 1), now: UInt64(index) * second / 100)
        }
        store.noteInterest(Interest(subject: "/s/0", ingress: 0, isAdded: true), now: 10 * second)
        XCTAssertEqual(store.messageCount, 100, "10 per subject")
        store.expire(now: 19 * second + 955 * second / 1000)
        XCTAssertEqual(store.messageCount, 4, "stored at 9.96 s and later: one each for /s/6 ... /s/9")
        store.expire(now: 21 * second)
        XCTAssertEqual(store.messageCount, 0)
        XCTAssertEqual(store.subjectCount, 10, "the snapshots stay")
    }

    func testExpiryCountsFromStorageSoAnEarlierNowNeverTraps() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 10 * second)
        _ = store.append(published("/a", bytes: 1), now: 100 * second)
        store.expire(now: 50 * second)  // a clock that went back: nothing happens
        store.expire(now: 0)
        XCTAssertEqual(store.messageCount, 1)
        store.expire(now: 111 * second)
        XCTAssertEqual(store.messageCount, 0)
    }

    func testKeptContentIsCopiedOutOfItsBatch() throws {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second)
        var batch = ByteBuffer(repeating: 0x62, count: 64 * 1024)
        batch.setString("payload", at: 1000)
        var message = published("/a", bytes: 0)
        message.content = batch.getSlice(at: 1000, length: 7)!
        _ = store.append(message, now: 1)
        let kept = try XCTUnwrap(reply(store, "/a", .history(count: 1))?.messages.first)
        XCTAssertEqual(String(buffer: kept.content), "payload")
        XCTAssertLessThan(kept.content.capacity, 64, "right-sized, not the batch")
        let batchRange = batch.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress!)..<UInt(bitPattern: $0.baseAddress! + $0.count) }
        kept.content.withUnsafeReadableBytes {
            XCTAssertFalse(batchRange.contains(UInt(bitPattern: $0.baseAddress!)), "the kept content points into the batch")
        }
    }

    func testKafkaModeLeavesADroppedSubjectToKafkaAndRefusesImpossiblePositions() {
        let store = SubjectStore(epoch: "unused", maxMessagesPerSubject: 10, maxAge: 60 * second, maxSubjects: 1,
                                 backedByKafka: true)
        var record = published("/n/a", bytes: 1)
        record.seq = 5
        record.epoch = "p0"
        XCTAssertTrue(store.insert(record, now: 1))
        var other = published("/n/b", bytes: 1)
        other.seq = 6
        other.epoch = "p0"
        XCTAssertTrue(store.insert(other, now: 2))
        XCTAssertNil(reply(store, "/n/a", .recover(epoch: "p0", seq: 4)), "dropped: Kafka answers")
        let impossible = reply(store, "/n/b", .recover(epoch: "p0", seq: 9_300_000_000_000_000_000))
        XCTAssertEqual(impossible?.status, .resync, "no Kafka offset is that large")
        XCTAssertEqual(impossible?.messages.map(\.seq), [6])
    }
}

final class PendingDeepRecoveriesTests: XCTestCase {
    func subscribe(_ id: UInt64) -> Subscribe {
        Subscribe(requestID: id, replyTo: "ipc:///ingress", subject: "/n/a", ingress: 0, registersInterest: false,
                  start: .recover(epoch: "p0", seq: 1))
    }

    func testBoundedAndForgottenAfterTheTimeoutEvenWhenTheClockGoesBack() throws {
        var pending = PendingDeepRecoveries(capacity: 2, timeout: 30)
        let first = try XCTUnwrap(pending.add(subscribe(7), now: 100))
        let second = try XCTUnwrap(pending.add(subscribe(7), now: 110))
        XCTAssertNotEqual(first, second, "the cache's own ids, not the ingress's")
        XCTAssertNil(pending.add(subscribe(8), now: 111), "full: the caller resyncs")
        pending.expire(now: 50)  // earlier than both: kept, no trap
        XCTAssertEqual(pending.count, 2)
        pending.expire(now: 131)
        XCTAssertNil(pending.take(first), "forgotten after 30")
        XCTAssertEqual(pending.take(second)?.requestID, 7)
        XCTAssertNil(pending.take(second), "answered once")
        XCTAssertNotNil(pending.add(subscribe(9), now: 140))
    }
}
