import SwitchyardCore
import XCTest
@testable import IngressStage

final class ConnectionLimitsTests: XCTestCase {
    static let second: UInt64 = 1_000_000_000

    func testTokenBucketAllowsItsBurstThenItsRate() {
        var bucket = TokenBucket(perSecond: 10, burst: 20, now: 0)
        XCTAssertTrue(bucket.take(20, now: 0))
        XCTAssertFalse(bucket.take(1, now: 0))
        XCTAssertFalse(bucket.take(2, now: Self.second / 10), "one token after 100 ms")
        XCTAssertTrue(bucket.take(1, now: Self.second / 10))
        XCTAssertTrue(bucket.take(20, now: 100 * Self.second), "saved up to the burst")
        XCTAssertFalse(bucket.take(1, now: 100 * Self.second))
    }

    func testTokenBucketRefusesMoreThanItsBurstAndSurvivesAClockGoingBack() {
        var bucket = TokenBucket(perSecond: 10, burst: 5, now: 10 * Self.second)
        XCTAssertFalse(bucket.take(6, now: 10 * Self.second))
        XCTAssertTrue(bucket.take(5, now: Self.second))
        XCTAssertFalse(bucket.take(1, now: Self.second))
    }

    func testSubscribeBurstLetsAReconnectingClientResubscribeEverything() {
        var config = SwitchyardConfig()
        config.maxSubjectsPerConnection = 5000
        config.subscribeRateLimit = 100
        XCTAssertEqual(ConnectionLimits(config).subscribeBurst, 5000)
        config.subscribeRateLimit = 9000
        XCTAssertEqual(ConnectionLimits(config).subscribeBurst, 9000)
    }

    func testManyRefusalsWithinTheWindowAreAbuse() {
        var strikes = RateLimitStrikes()
        for index in 0..<RateLimitStrikes.maxRefusals {
            XCTAssertFalse(strikes.refused(now: UInt64(index)))
        }
        XCTAssertTrue(strikes.refused(now: 5 * Self.second))
    }

    func testRefusalsSpreadOverTimeAreNotAbuse() {
        var strikes = RateLimitStrikes()
        for index in 0..<(3 * RateLimitStrikes.maxRefusals) {
            XCTAssertFalse(strikes.refused(now: UInt64(index) * 20_000_000), "one refusal every 20 ms")
        }
    }

    func testIdleTimeoutInNanoseconds() {
        var config = SwitchyardConfig()
        config.idleTimeout = 7
        XCTAssertEqual(ConnectionLimits(config).idleTimeoutNanoseconds, 7 * Self.second)
    }
}

final class PendingPublishesTests: XCTestCase {
    func testAcknowledgedOnceAndExpiredAtTheDeadline() {
        var publishes = PendingPublishes(timeoutSeconds: 2)
        publishes.add(requestID: 1, connectionID: 9, closure: "a", now: 0)
        publishes.add(requestID: 2, connectionID: 9, closure: "b", now: 1_000_000_000)
        XCTAssertEqual(publishes.acknowledge(1)?.closure, "a")
        XCTAssertNil(publishes.acknowledge(1), "answered once")
        XCTAssertTrue(publishes.expire(now: 2_999_999_999).isEmpty)
        XCTAssertEqual(publishes.expire(now: 3_000_000_000).map(\.closure), ["b"])
        XCTAssertEqual(publishes.count, 0)
    }

    func testDeadlineNearTheEndOfTheClockDoesNotOverflow() {
        var publishes = PendingPublishes(timeoutSeconds: 10)
        publishes.add(requestID: 1, connectionID: 1, closure: "c", now: .max - 5)
        XCTAssertEqual(publishes.expire(now: .max).count, 1)
    }
}
