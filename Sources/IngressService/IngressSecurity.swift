import Foundation
import IngressStage
import SwitchyardCore

/// What ws-ingress takes from this module: the TLS of its encrypted listeners (swift-nio-ssl) and the JWT
/// verifier of `Entitlement = jwt` (vapor/jwt-kit). Kept apart from IngressStage, so the edge, the hub and the
/// parsers (and their sanitizer-built fuzzers) build without either crypto library.
public enum IngressSecurity {
    /// The TLS of the `ListenEncrypted` and `ListenMqttEncrypted` listeners (one certificate); nil without them.
    public static func tls(_ context: StageContext) throws -> (any ListenerTLS)? {
        guard !context.config.listenEncrypted.isEmpty || !context.config.listenMqttEncrypted.isEmpty else { return nil }
        return try ServerTLS(config: context.config, logger: context.logger, metrics: context.metrics)
    }

    /// Reads the JWT key once, at start-up (jwt-kit's key collections are actors: this waits for a task, before
    /// any event loop serves a client). A key that does not parse stops start-up with a `ConfigError`.
    public static func verifier(_ config: SwitchyardConfig) throws -> (any TokenVerifying)? {
        // @unchecked Sendable: the task writes `result` before `done.signal()`, read only after `done.wait()`.
        final class Outcome: @unchecked Sendable { var result: Result<TokenVerifier?, Error> = .success(nil) }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { outcome.result = .success(try await TokenVerifier.load(config)) } catch { outcome.result = .failure(error) }
            done.signal()
        }
        done.wait()
        return try outcome.result.get()
    }
}
