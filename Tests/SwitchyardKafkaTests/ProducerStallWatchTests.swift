import XCTest
@testable import SwitchyardKafka

final class ProducerStallWatchTests: XCTestCase {
    let timedOut = KafkaError(code: KafkaError.messageTimedOutCode, name: "_MSG_TIMED_OUT", message: "timed out")
    let second: UInt64 = 1_000_000_000

    func testATimeoutWhileKafkaAnsweredForTheRecordsWholeLifeIsAStall() {
        var watch = ProducerStallWatch(messageTimeoutMilliseconds: 2000)
        watch.reachabilityChanged(true, now: 10 * second)
        XCTAssertFalse(watch.isStalled(afterFailure: timedOut, now: 11 * second), "produced before Kafka came back")
        XCTAssertTrue(watch.isStalled(afterFailure: timedOut, now: 12 * second))
        watch.reachabilityChanged(true, now: 13 * second)  // still reachable: the start stays
        XCTAssertTrue(watch.isStalled(afterFailure: timedOut, now: 13 * second))
    }

    func testTimeoutsWhileKafkaIsAwayOrOtherFailuresAreNot() {
        var watch = ProducerStallWatch(messageTimeoutMilliseconds: 2000)
        XCTAssertFalse(watch.isStalled(afterFailure: timedOut, now: 100 * second), "never reachable")
        watch.reachabilityChanged(true, now: 0)
        watch.reachabilityChanged(false, now: 5 * second)
        XCTAssertFalse(watch.isStalled(afterFailure: timedOut, now: 9 * second), "Kafka away")
        watch.reachabilityChanged(true, now: 10 * second)
        XCTAssertFalse(watch.isStalled(afterFailure: timedOut, now: 11 * second))
        let refused = KafkaError(code: 10, name: "MSG_SIZE_TOO_LARGE", message: "too large")
        XCTAssertFalse(watch.isStalled(afterFailure: refused, now: 60 * second), "not a timeout")
        XCTAssertFalse(watch.isStalled(afterFailure: timedOut, now: 0), "a clock reading before the start")
    }
}
