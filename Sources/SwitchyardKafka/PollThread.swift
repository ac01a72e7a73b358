import CRdKafka
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A dedicated OS thread that runs a blocking poll loop (never a NIO event loop or the cooperative pool).
/// `body` is called repeatedly while the thread runs; each call should block for at most a short time
/// (~100 ms) so `stop()` takes effect quickly.
// @unchecked Sendable: `thread` and `joined` are touched only under `lock`; `running` is a locked box.
final class PollThread: @unchecked Sendable {
    private let running = NIOLockedValueBox(true)
    private let lock = NIOLock()
    private var thread: pthread_t?
    private var joined = false

    private final class Box {
        let name: String
        let body: () -> Void
        let owner: PollThread
        init(name: String, body: @escaping () -> Void, owner: PollThread) {
            self.name = name
            self.body = body
            self.owner = owner
        }
    }

    var isRunning: Bool { running.withLockedValue { $0 } }

    init(name: String, body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(name: name, body: body, owner: self))
        lock.lock()
        defer { lock.unlock() }
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            sy_set_thread_name(box.name)
            while box.owner.isRunning {
                box.body()
            }
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        thread = tid
    }

    /// True when called on this poll thread itself.
    var isCurrent: Bool {
        lock.withLock {
            guard let thread else { return false }
            return pthread_equal(thread, pthread_self()) != 0
        }
    }

    /// Stops the loop after the current iteration and waits for the thread to end (unless called from the
    /// thread itself, in which case the loop just ends after this iteration).
    func stop() {
        running.withLockedValue { $0 = false }
        let toJoin: pthread_t? = lock.withLock {
            guard let thread, !joined else { return nil }
            if pthread_equal(thread, pthread_self()) != 0 {
                joined = true
                pthread_detach(thread)
                return nil
            }
            joined = true
            return thread
        }
        if let toJoin {
            pthread_join(toJoin, nil)
        }
    }

    deinit {
        stop()
    }
}
