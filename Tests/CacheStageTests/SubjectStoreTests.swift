import NIOCore
import SwitchyardCore
import XCTest
@testable import CacheStage

final class SubjectStoreTests: XCTestCase {
    let second: UInt64 = 1_000_000_000

    func published(_ text: String, subject: String = "/a/b", flags: MessageFlags = [.retained, .guaranteed])
        -> Message {
        Message(subject: subject, content: ByteBuffer(string: text), flags: flags)
    }

    func subscribe(_ start: SubscribeStart, subject: String = "/a/b") -> Subscribe {
        Subscribe(requestID: 1, replyTo: "ipc:///x", subject: subject, ingress: 0, registersInterest: true,
                  start: start)
    }

    func answer(_ store: SubjectStore, _ start: SubscribeStart) -> SubscribeReply {
        guard let reply = store.reply(to: subscribe(start)) else {
            XCTFail("the store left \(start) to Kafka")
            return store.resyncReply(to: subscribe(start))
        }
        return reply
    }

    func record(_ offset: UInt64, epoch: String = "p0", subject: String = "/a/b") -> Message {
        var record = published("r\(offset)", subject: subject)
        record.seq = offset
        record.epoch = epoch
        return record
    }

    func contents(_ reply: SubscribeReply) -> [String] {
        reply.messages.map { String(buffer: $0.content) }
    }

    func testNumbersEachSubjectFromOne() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second)
        XCTAssertEqual(store.append(published("m1"), now: 1).seq, 1)
        XCTAssertEqual(store.append(published("m2"), now: 2).seq, 2)
        let other = store.append(published("o1", subject: "/x"), now: 3)
        XCTAssertEqual(other.seq, 1)
        XCTAssertEqual(other.epoch, "E")
    }

    func testSnapshotIsTheLastRetainedMessage() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second)
        XCTAssertEqual(answer(store, .snapshot).messages, [])
        _ = store.append(published("kept"), now: 1)
        _ = store.append(published("not retained", flags: [.guaranteed]), now: 2)
        let reply = answer(store, .snapshot)
        XCTAssertEqual(contents(reply), ["kept"])
        XCTAssertEqual(reply.kind, .snapshot)
        XCTAssertEqual(reply.lastSeq, 2)
    }

    func testAnEmptyRetainedMessageThatClearsTheSnapshotRemovesIt() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second)
        _ = store.append(published("kept"), now: 1)
        _ = store.append(published("ignored: not empty", flags: [.retained, .clearsSnapshot]), now: 2)
        XCTAssertEqual(contents(answer(store, .snapshot)), ["ignored: not empty"], "only an empty message clears")
        let clearing = store.append(published("", flags: [.retained, .guaranteed, .clearsSnapshot]), now: 3)
        XCTAssertEqual(clearing.seq, 3, "still numbered and delivered")
        XCTAssertEqual(answer(store, .snapshot).messages, [])
        XCTAssertEqual(contents(answer(store, .history(count: 10))), ["kept", ""])
        _ = store.append(published("", flags: [.retained]), now: 4)
        XCTAssertEqual(contents(answer(store, .snapshot)), [""], "without the flag an empty message is a snapshot")
    }

    func testHistoryReturnsTheMostRecentOldestFirst() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second)
        for index in 1...5 { _ = store.append(published("m\(index)"), now: UInt64(index)) }
        let reply = answer(store, .history(count: 3))
        XCTAssertEqual(contents(reply), ["m3", "m4", "m5"])
        XCTAssertEqual(reply.kind, .historical)
    }

    func testRecoveryReturnsExactlyWhatWasMissed() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second)
        for index in 1...5 { _ = store.append(published("m\(index)"), now: UInt64(index)) }
        let reply = answer(store, .recover(epoch: "E", seq: 2))
        XCTAssertEqual(reply.status, .sync)
        XCTAssertEqual(reply.kind, .recovered)
        XCTAssertEqual(reply.messages.map(\.seq), [3, 4, 5])
        XCTAssertEqual(answer(store, .recover(epoch: "E", seq: 5)).messages, [])
        XCTAssertEqual(answer(store, .recover(epoch: "E", seq: 5)).status, .sync)
    }

    func testUnknownEpochOrFuturePositionResyncsWithTheSnapshot() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second)
        for index in 1...3 { _ = store.append(published("m\(index)"), now: UInt64(index)) }
        for start in [SubscribeStart.recover(epoch: "old", seq: 1), .recover(epoch: "E", seq: 9)] {
            let reply = answer(store, start)
            XCTAssertEqual(reply.status, .resync)
            XCTAssertEqual(contents(reply), ["m3"])
        }
    }

    func testCountEvictionEndsRecoveryBeyondTheWindow() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 3, maxAge: 60 * second)
        for index in 1...6 { _ = store.append(published("m\(index)"), now: UInt64(index)) }
        XCTAssertEqual(store.messageCount, 3)
        XCTAssertEqual(answer(store, .recover(epoch: "E", seq: 3)).messages.map(\.seq), [4, 5, 6])
        XCTAssertEqual(answer(store, .recover(epoch: "E", seq: 2)).status, .resync)
    }

    func testAgeExpiryEndsRecoveryBeyondTheWindow() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 100, maxAge: 10 * second)
        _ = store.append(published("old"), now: 100 * second)
        _ = store.append(published("new"), now: 105 * second)
        store.expire(now: 112 * second)
        XCTAssertEqual(store.messageCount, 1)
        XCTAssertEqual(answer(store, .recover(epoch: "E", seq: 1)).messages.map(\.seq), [2])
        XCTAssertEqual(answer(store, .recover(epoch: "E", seq: 0)).status, .resync)
        // The snapshot outlives the history.
        store.expire(now: 200 * second)
        XCTAssertEqual(contents(answer(store, .snapshot)), ["new"])
    }

    func testStandardMessagesAreNumberedButNotKept() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second)
        _ = store.append(published("g1"), now: 1)
        XCTAssertEqual(store.append(published("s2", flags: [.retained]), now: 2).seq, 2)
        _ = store.append(published("g3"), now: 3)
        XCTAssertEqual(answer(store, .recover(epoch: "E", seq: 0)).messages.map(\.seq), [1, 3])
    }

    func testKafkaRecordsKeepTheirNumbersAndANewEpochStartsOver() {
        let store = SubjectStore(epoch: "unused", maxMessagesPerSubject: 10, maxAge: 60 * second)
        for offset: UInt64 in [10, 12, 15] {
            var record = published("r\(offset)")
            record.seq = offset
            record.epoch = "p0"
            store.insert(record, now: 1)
        }
        XCTAssertEqual(answer(store, .recover(epoch: "p0", seq: 11)).messages.map(\.seq), [12, 15])
        XCTAssertEqual(answer(store, .recover(epoch: "p0", seq: 8)).status, .resync)
        var recreated = published("fresh")
        recreated.seq = 0
        recreated.epoch = "p0-new"
        store.insert(recreated, now: 1)
        XCTAssertEqual(answer(store, .recover(epoch: "p0", seq: 15)).status, .resync)
    }

    func testKafkaModeLeavesWhatItCannotServeToKafka() {
        let store = SubjectStore(epoch: "unused", maxMessagesPerSubject: 2, maxAge: 60 * second, backedByKafka: true)
        XCTAssertNil(store.reply(to: subscribe(.recover(epoch: "p0", seq: 3))), "unknown subject")
        for offset: UInt64 in [10, 12, 15] { XCTAssertTrue(store.insert(record(offset), now: 1)) }
        XCTAssertFalse(store.insert(record(12), now: 1), "a record read again is not new")
        XCTAssertEqual(answer(store, .recover(epoch: "p0", seq: 12)).messages.map(\.seq), [15])
        XCTAssertNil(store.reply(to: subscribe(.recover(epoch: "p0", seq: 9))), "evicted: deep recovery")
        XCTAssertNil(store.reply(to: subscribe(.recover(epoch: "other", seq: 12))), "another epoch")
        let ahead = answer(store, .recover(epoch: "p0", seq: 20))
        XCTAssertEqual(ahead.status, .sync)
        XCTAssertEqual(ahead.messages, [])
        XCTAssertEqual(ahead.lastSeq, 20, "nothing up to the client's position may be sent again")
        XCTAssertEqual(store.resyncReply(to: subscribe(.snapshot)).messages.map(\.seq), [15])
    }

    func testStandaloneMessagesCarryTheirPredecessor() {
        let store = SubjectStore(epoch: "E", maxMessagesPerSubject: 10, maxAge: 60 * second)
        XCTAssertEqual(store.append(published("m1"), now: 1).previousSeq, 0)
        XCTAssertEqual(store.append(published("m2"), now: 2).previousSeq, 1)
    }

    func testAMissingKafkaRecordSendsOlderRecoveriesToKafka() {
        let store = SubjectStore(epoch: "unused", maxMessagesPerSubject: 10, maxAge: 60 * second, backedByKafka: true)
        var first = record(20)
        first.previousSeq = 12
        store.insert(first, now: 1)
        XCTAssertEqual(answer(store, .recover(epoch: "p0", seq: 12)).messages.map(\.seq), [20],
                       "nothing of the subject lies between 12 and 20")
        XCTAssertNil(store.reply(to: subscribe(.recover(epoch: "p0", seq: 11))))
        var afterLoss = record(40)
        afterLoss.previousSeq = 31  // 31 never arrived
        XCTAssertTrue(store.insert(afterLoss, now: 1))
        XCTAssertEqual(answer(store, .recover(epoch: "p0", seq: 31)).messages.map(\.seq), [40])
        XCTAssertNil(store.reply(to: subscribe(.recover(epoch: "p0", seq: 20))), "31 must come from Kafka")
    }
}
