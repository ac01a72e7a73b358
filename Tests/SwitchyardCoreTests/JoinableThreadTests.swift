import Foundation
import NIOConcurrencyHelpers
import XCTest
@testable import SwitchyardCore

final class JoinableThreadTests: XCTestCase {
    func testStopReturnsOnlyAfterTheBodyHasReturned() {
        let returned = NIOLockedValueBox(false)
        let thread = JoinableThread(name: "test-loop") { thread in
            while !thread.isStopping { usleep(1_000) }
            usleep(50_000)
            returned.withLockedValue { $0 = true }
        }
        XCTAssertFalse(thread.isStopping)
        thread.stop()
        XCTAssertTrue(returned.withLockedValue { $0 }, "stop() returned before the body did")
        thread.stop()
        thread.join()
    }

    func testJoinWaitsForABodyThatEndsByItself() {
        let count = NIOLockedValueBox(0)
        let thread = JoinableThread(name: "test-once") { _ in
            usleep(20_000)
            count.withLockedValue { $0 += 1 }
        }
        thread.join()
        XCTAssertEqual(count.withLockedValue { $0 }, 1)
    }

    func testStopFromTheBodyItselfDoesNotWaitForItself() {
        let sawCurrent = NIOLockedValueBox(false)
        let thread = JoinableThread(name: "test-self-stop") { thread in
            sawCurrent.withLockedValue { $0 = thread.isCurrent }
            thread.stop()
        }
        thread.join()
        XCTAssertTrue(sawCurrent.withLockedValue { $0 })
        XCTAssertFalse(thread.isCurrent)
        XCTAssertTrue(thread.isStopping)
    }

    func testStopFromSeveralThreadsAtOnce() {
        let thread = JoinableThread(name: "test-many") { thread in
            while !thread.isStopping { usleep(1_000) }
        }
        DispatchQueue.concurrentPerform(iterations: 4) { _ in thread.stop() }
        thread.join()
    }

    func testTheThreadHasItsNameCutToWhatLinuxShows() {
        let seen = NIOLockedValueBox("")
        let thread = JoinableThread(name: "a-very-long-thread-name") { _ in
            let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
            seen.withLockedValue { $0 = comm.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        thread.join()
        XCTAssertEqual(thread.name, "a-very-long-thr")
#if os(Linux)
        XCTAssertEqual(seen.withLockedValue { $0 }, "a-very-long-thr", "the name top -H and gdb show")
#endif
    }
}
