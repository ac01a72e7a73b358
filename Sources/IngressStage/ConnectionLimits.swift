import NIOCore
import SwitchyardCore

/// The per-connection bounds of `switchyard.conf`, as the hub applies them.
struct ConnectionLimits {
    /// `MaxSubjectsPerConnection`: subjects one connection may subscribe to at once.
    var maxSubjects: Int
    /// `SubscribeRateLimit`: subjects per second one connection may subscribe to.
    var subscribeRate: Int
    /// `PublishRateLimit`: publishes per second one connection may send (burst: one second's worth).
    var publishRate: Int
    /// `PingRateLimit`: `{"op":"ping"}` frames per second one connection gets a pong for (burst: one second's worth).
    var pingRate: Int
    /// `MaxSubscribesInFlight`: subscribes of one connection sent to the pipeline at once; the rest wait in order.
    var maxSubscribesInFlight: Int
    /// `MaxPendingSubscribeBytes`: live message bytes held for one subscribe while it is answered.
    var maxPendingSubscribeBytes: Int
    /// `IdleTimeout` in nanoseconds; 0: never.
    var idleTimeoutNanoseconds: UInt64
    /// `SlowClientTimeout` in nanoseconds; 0: never.
    var slowClientTimeoutNanoseconds: UInt64
    /// Live output one connection may leave queued: the `ClientBufferLimit` less the channel's own buffer.
    var liveBacklogLimit: Int

    /// What the channel of a client connection buffers before it is no longer writable and output waits in the
    /// connection's queue (NIO's write-buffer watermarks): 64 KiB, or half a smaller `ClientBufferLimit`.
    var channelWaterMark: ChannelOptions.Types.WriteBufferWaterMark

    /// A reconnecting client resubscribes all its subjects in one frame: the burst allows that much.
    var subscribeBurst: Int { max(subscribeRate, maxSubjects) }

    init(_ config: SwitchyardConfig) {
        maxSubjects = config.maxSubjectsPerConnection
        subscribeRate = config.subscribeRateLimit
        publishRate = config.publishRateLimit
        pingRate = config.pingRateLimit
        maxSubscribesInFlight = config.maxSubscribesInFlight
        maxPendingSubscribeBytes = config.maxPendingSubscribeBytes
        idleTimeoutNanoseconds = UInt64(clamping: min(config.idleTimeout, 365 * 86_400)) * 1_000_000_000
        slowClientTimeoutNanoseconds = UInt64(clamping: min(config.slowClientTimeout, 365 * 86_400)) * 1_000_000_000
        let channelBuffer = min(64 * 1024, config.clientBufferLimit / 2)
        channelWaterMark = .init(low: channelBuffer / 2, high: channelBuffer)
        liveBacklogLimit = config.clientBufferLimit - channelBuffer
    }
}

/// A token bucket: `perSecond` tokens a second, at most `burst` saved up. Times are monotonic nanoseconds.
struct TokenBucket {
    let perSecond: Int
    let burst: Int
    private var tokens: Double
    private var updatedAt: UInt64

    init(perSecond: Int, burst: Int, now: UInt64) {
        self.perSecond = max(perSecond, 1)
        self.burst = max(burst, 1)
        tokens = Double(self.burst)
        updatedAt = now
    }

    /// Takes `count` tokens if there are that many; false (and nothing taken) otherwise.
    mutating func take(_ count: Int, now: UInt64) -> Bool {
        if now > updatedAt {
            let elapsed = Double(now - updatedAt) / 1e9
            tokens = min(Double(burst), tokens + elapsed * Double(perSecond))
            updatedAt = now
        }
        guard Double(count) <= tokens else { return false }
        tokens -= Double(count)
        return true
    }
}

/// Persistent abuse of a rate limit: more than `maxRefusals` refused frames within `window` nanoseconds. One
/// refusal now and then is a client at its limit; thousands are a client that ignores the answers.
struct RateLimitStrikes {
    static let maxRefusals = 1000
    static let windowNanoseconds: UInt64 = 10_000_000_000

    private var windowStart: UInt64 = 0
    private var refusals = 0

    /// Counts one refused frame; true when the connection should be closed.
    mutating func refused(now: UInt64) -> Bool {
        if refusals == 0 || now < windowStart || now - windowStart >= Self.windowNanoseconds {
            windowStart = now
            refusals = 0
        }
        refusals += 1
        return refusals > Self.maxRefusals
    }
}
