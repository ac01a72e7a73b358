import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import SwitchyardCore

/// The entitlement policy of one ingress (`Entitlement = none | basic | jwt`): what a connection without a token
/// may do, and what a token grants. Tokens are checked off the event loop; the verdict comes back on it.
final class Entitlement: Sendable {
    let mode: EntitlementMode
    /// `TokenExpireNotice` in seconds.
    let expireNotice: TimeInterval
    private let allowToken: [UInt8]
    private let verifier: (any TokenVerifying)?
    private let metrics: StageMetrics?
    /// Token verifications running off the event loops: shutdown waits for them (`awaitVerifications`), since a
    /// verdict delivered to an event loop that has shut down is an error in NIO.
    private let verificationsInFlight = NIOLockedValueBox(0)

    /// `verifier` is the loaded key of `Entitlement = jwt` (without one, every token is refused).
    init(config: SwitchyardConfig, verifier: (any TokenVerifying)?, metrics: StageMetrics? = nil) {
        mode = config.entitlement
        expireNotice = TimeInterval(config.tokenExpireNotice)
        allowToken = Array((config.entitlementAllowToken ?? "").utf8)
        self.verifier = verifier
        self.metrics = metrics
    }

    /// What a connection that presented no token may do; nil when it must present one (`jwt`).
    var withoutToken: Permissions? {
        switch mode {
        case .none: return .everything
        case .basic: return .subscribeOnly
        case .jwt: return nil
        }
    }

    /// Whether tokens are read at all (`none` ignores them).
    var checksTokens: Bool { mode != .none }

    /// The verdict on a token, completed on `eventLoop`. Every refusal is counted (`tokenRefused<Reason>`).
    func verify(_ token: String, on eventLoop: EventLoop) -> EventLoopFuture<Result<TokenGrant, TokenRefusal>> {
        let verdict: EventLoopFuture<Result<TokenGrant, TokenRefusal>>
        switch mode {
        case .none:
            verdict = eventLoop.makeSucceededFuture(.success(TokenGrant(permissions: .everything, expiresAt: nil)))
        case .basic:
            let granted = Self.constantTimeEquals(Array(token.utf8), allowToken)
            let grant = TokenGrant(permissions: .everything, expiresAt: nil)
            verdict = eventLoop.makeSucceededFuture(granted ? .success(grant) : .failure(.wrongToken))
        case .jwt:
            guard let verifier else { return eventLoop.makeSucceededFuture(.failure(.badSignature)) }
            let promise = eventLoop.makePromise(of: Result<TokenGrant, TokenRefusal>.self)
            verificationsInFlight.withLockedValue { $0 += 1 }
            Task { [verificationsInFlight] in
                promise.succeed(await verifier.verify(token, now: Date()))
                verificationsInFlight.withLockedValue { $0 -= 1 }
            }
            verdict = promise.futureResult
        }
        return verdict.map { result in
            if case .failure(let refusal) = result { self.count(refusal) }
            return result
        }
    }

    /// Waits until no token verification is running, or `timeout` has passed; true when none is. Called at shutdown,
    /// after every connection is closed (no new verification starts) and before the event loops stop.
    func awaitVerifications(timeout: TimeInterval) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while verificationsInFlight.withLockedValue({ $0 }) > 0 {
            guard Date() < deadline else { return false }
            usleep(5_000)
        }
        return true
    }

    func count(_ refusal: TokenRefusal) {
        let name = refusal.rawValue
        metrics?.addToGauge("tokenRefused" + name.prefix(1).uppercased() + name.dropFirst(), 1)
    }

    /// Compares without an early exit, so the time taken does not tell how much of a guess was right.
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for index in 0..<max(a.count, b.count) {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= x ^ y
        }
        return difference == 0 && a.count == b.count
    }

    /// The token of an upgrade request: `Authorization: Bearer T`, else `?token=T` on the URL.
    static func token(in head: HTTPRequestHead) -> String? {
        for value in head.headers[canonicalForm: "authorization"] {
            let parts = value.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                return parts[1].trimmingCharacters(in: .whitespaces)
            }
        }
        guard let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") where pair.hasPrefix("token=") {
            // A token whose percent-encoding is broken is still a token: verified (and refused) as it came.
            let raw = String(pair.dropFirst("token=".count))
            return raw.removingPercentEncoding ?? raw
        }
        return nil
    }
}

/// The verdict of the upgrade on a token that came with the request (URL or header), for the handlers after it.
/// Touched only on the connection's event loop.
// @unchecked Sendable: touched only on the connection's event loop (the upgrade's callbacks, then its handlers).
final class UpgradeAccess: @unchecked Sendable {
    var grant: TokenGrant?
    var refusal: TokenRefusal?
}

/// What one connection may do and what its frames wait for, as a state machine without a socket. A connection
/// without a token under `Entitlement = jwt` must send `connect` with a token first; while a token is verified the
/// connection's later frames (also those that did not parse) are held (at most `maxHeld`) and then handled, in
/// order, under its verdict.
struct ConnectionAccess {
    /// Frames held while a token is verified; beyond it the connection is closed (its reads are paused meanwhile,
    /// so only a client that pipelines this many frames in one go gets here).
    static let maxHeld = 1024

    /// A client frame as parsed.
    typealias Frame = Result<ClientRequest, ClientFrameError>

    enum State: Equatable {
        /// No token yet, and one is required: the first frame must be `connect`.
        case awaitingToken
        case verifying
        case granted
    }

    enum Action: Equatable {
        case process(ClientRequest)
        /// Answer with an `error` frame.
        case reject(ClientFrameError)
        /// Verify this token; hand the verdict to `verified(_:)`.
        case verify(String)
        /// Kept until the verdict.
        case hold
        /// Close 1008 with this reason.
        case refuse(TokenRefusal)
        case closeTooManyHeld
    }

    enum Verdict: Equatable {
        /// Permissions replaced; pass the held frames to `receive` again, in order.
        case granted(TokenGrant, held: [Frame])
        case refused(TokenRefusal)
    }

    private(set) var state: State
    private(set) var permissions: Permissions
    private let checksTokens: Bool
    private var held: [Frame] = []

    /// `initial` nil: a token is required before anything else.
    init(initial: Permissions?, checksTokens: Bool) {
        state = initial == nil ? .awaitingToken : .granted
        permissions = initial ?? .nothing
        self.checksTokens = checksTokens
    }

    mutating func receive(_ frame: Frame) -> Action {
        switch (state, frame) {
        case (.awaitingToken, .success(.connect(let token?))):
            state = .verifying
            return .verify(token)
        case (.awaitingToken, _):
            return .refuse(.missing)
        case (.verifying, _):
            guard held.count < Self.maxHeld else { return .closeTooManyHeld }
            held.append(frame)
            return .hold
        case (.granted, .failure(let error)):
            return .reject(error)
        case (.granted, .success(.connect(let token?))) where checksTokens:
            state = .verifying
            return .verify(token)
        case (.granted, .success(let request)):
            return .process(request)
        }
    }

    /// A refused token closes the connection, also one sent to replace a valid token: the client is told at once
    /// that its new credential is bad, rather than finding out when the old one expires.
    mutating func verified(_ result: Result<TokenGrant, TokenRefusal>) -> Verdict {
        defer { held.removeAll() }
        switch result {
        case .success(let grant):
            state = .granted
            permissions = grant.permissions
            return .granted(grant, held: held)
        case .failure(let refusal):
            return .refused(refusal)
        }
    }
}

/// When a connection's token expires: `TOKEN_TO_EXPIRE` `notice` seconds before `exp`, then `TOKEN_EXPIRED` at
/// `exp`. One timer per connection asks `untilNext` and, when it fires, `due`.
struct TokenLifetime {
    enum Event: Equatable {
        case expiresSoon
        case expired
    }

    let expiresAt: Date
    let notice: TimeInterval
    private(set) var noticeSent = false

    init(expiresAt: Date, notice: TimeInterval) {
        self.expiresAt = expiresAt
        self.notice = notice
    }

    /// The event due at `now`, if any.
    mutating func due(now: Date) -> Event? {
        let left = expiresAt.timeIntervalSince(now)
        if left <= 0 { return .expired }
        if !noticeSent && notice > 0 && left <= notice {
            noticeSent = true
            return .expiresSoon
        }
        return nil
    }

    /// Seconds until the next event.
    func untilNext(now: Date) -> TimeInterval {
        let left = expiresAt.timeIntervalSince(now)
        if !noticeSent && notice > 0 { return max(left - notice, 0) }
        return max(left, 0)
    }

    /// `seconds` as a timer delay: at most 30 days (a later event is found when the timer fires and looks again).
    static func delay(_ seconds: TimeInterval) -> TimeAmount {
        let clamped = min(max(seconds, 0), 30 * 86_400)
        return .nanoseconds(Int64(clamped * 1e9))
    }
}
