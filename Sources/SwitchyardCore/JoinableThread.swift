import CNanomsg
import Foundation
import NIOConcurrencyHelpers

/// A named OS thread of its own for one blocking C loop (nanomsg receive, librdkafka poll, a Kafka read): never
/// a NIO event loop or the cooperative pool, which must not block. The one threading idiom of the stages.
///
/// The body starts at once and runs once; a loop in it checks `isStopping` between calls that each block for a
/// short time (a receive or poll timeout), so `stop()` takes effect within one such call.
///
///     let receiver = JoinableThread(name: "ingress-receive") { thread in
///         while !thread.isStopping { receiveOne() }
///     }
///     receiver.stop()   // returns once the body has returned
// @unchecked Sendable: `stopping` and `runningOn` are locked boxes; `finished` is a condition lock.
public final class JoinableThread: @unchecked Sendable {
    /// Linux shows (top -H, gdb) the first 15 bytes of a thread's name.
    public static let maxNameLength = 15

    public let name: String
    private let stopping = NIOLockedValueBox(false)
    /// The body's thread, set first thing on it: `stop()` from the body itself must not wait for itself.
    private let runningOn = NIOLockedValueBox<pthread_t?>(nil)
    /// True once the body has returned.
    private let finished = ConditionLock(value: false)

    /// Starts `body` on a new thread called `name` (cut to `maxNameLength` characters).
    public init(name: String, body: @escaping @Sendable (JoinableThread) -> Void) {
        self.name = String(name.prefix(Self.maxNameLength))
        Thread { [self] in
            sy_set_thread_name(name)
            runningOn.withLockedValue { $0 = pthread_self() }
            body(self)
            finished.lock()
            finished.unlock(withValue: true)
        }.start()
    }

    /// True once `stop()` or `requestStop()` was called: the body should return soon.
    public var isStopping: Bool { stopping.withLockedValue { $0 } }

    /// True when called on this thread (from the body).
    public var isCurrent: Bool {
        runningOn.withLockedValue { thread in thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    /// Tells the body to return, without waiting for it.
    public func requestStop() {
        stopping.withLockedValue { $0 = true }
    }

    /// Tells the body to return and waits until it has. Safe to call more than once and from several threads;
    /// called from the body itself it only tells (waiting for itself would never end).
    public func stop() {
        requestStop()
        join()
    }

    /// Waits until the body has returned (at once when it has); from the body itself, returns at once.
    public func join() {
        guard !isCurrent else { return }
        finished.lock(whenValue: true)
        finished.unlock()
    }

}
