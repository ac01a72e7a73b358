import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS
import IngressStage
import SwitchyardCore

/// A certificate chain and its private key read from PEM files, checked, and turned into a TLS server context:
/// TLS 1.2 and 1.3 only, forward-secret AEAD cipher suites for TLS 1.2.
struct TLSCredentials {
    /// A problem with one of the two files, named by its parameter and path.
    struct FileError: Error, Equatable, CustomStringConvertible {
        /// `TLSCertificateFile` or `TLSKeyFile`.
        var parameter: String
        var path: String
        var problem: String

        var description: String { "\(path): \(problem)" }
    }

    /// The larger file of a real certificate chain or key is a few KiB: anything past this is not one.
    static let maxFileSize = 1024 * 1024

    /// TLS 1.2 suites: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 (TLS 1.3 has only such suites).
    static let tls12CipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    let context: NIOSSLContext
    /// The server's own certificate (the chain's first).
    let leaf: NIOSSLCertificate
    let chainLength: Int

    /// The leaf's serial number in hex, for logs.
    var serial: String { leaf.serialNumber.map { String(format: "%02x", $0) }.joined() }

    /// Reads and checks both files. Blocks on file I/O: never call it on an event loop.
    static func load(certificateFile: String, keyFile: String) throws -> TLSCredentials {
        let chain = try certificates(in: certificateFile)
        let key = try privateKey(in: keyFile)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv13
        configuration.cipherSuites = tls12CipherSuites
        do {
            let context = try NIOSSLContext(configuration: configuration)
            return TLSCredentials(context: context, leaf: chain[0], chainLength: chain.count)
        } catch NIOSSLError.failedToLoadPrivateKey {
            throw FileError(parameter: "TLSKeyFile", path: keyFile,
                            problem: "this key does not match the certificate in \(certificateFile) (the server's own"
                                + " certificate must come first, then its intermediates)")
        } catch {
            throw FileError(parameter: "TLSCertificateFile", path: certificateFile,
                            problem: "the certificate cannot be used for a TLS server (\(error)); an ECDSA certificate"
                                + " needs the digitalSignature key usage")
        }
    }

    /// One or more PEM certificates, the server's first.
    static func certificates(in path: String) throws -> [NIOSSLCertificate] {
        let bytes = try read(path, parameter: "TLSCertificateFile")
        guard let chain = try? NIOSSLCertificate.fromPEMBytes(bytes), !chain.isEmpty else {
            throw FileError(parameter: "TLSCertificateFile", path: path,
                            problem: "no PEM certificate ('-----BEGIN CERTIFICATE-----') or a malformed one")
        }
        return chain
    }

    /// An unencrypted PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or traditional RSA/EC; RSA, ECDSA or Ed25519.
    static func privateKey(in path: String) throws -> NIOSSLPrivateKey {
        let bytes = try read(path, parameter: "TLSKeyFile")
        if String(decoding: bytes, as: UTF8.self).contains("ENCRYPTED") {
            throw FileError(parameter: "TLSKeyFile", path: path,
                            problem: "the key is encrypted: give the key without a passphrase"
                                + " (openssl pkey -in KEY -out PLAIN_KEY)")
        }
        guard let key = try? NIOSSLPrivateKey(bytes: bytes, format: .pem) else {
            throw FileError(parameter: "TLSKeyFile", path: path,
                            problem: "no PEM private key ('-----BEGIN PRIVATE KEY-----') or a malformed one")
        }
        return key
    }

    private static func read(_ path: String, parameter: String) throws -> [UInt8] {
        guard let file = FileHandle(forReadingAtPath: path) else {
            throw FileError(parameter: parameter, path: path,
                            problem: "cannot read the file (missing or no permission)")
        }
        defer { try? file.close() }
        let data: Data
        do {
            data = try file.read(upToCount: maxFileSize + 1) ?? Data()  // nil: an empty file
        } catch {
            throw FileError(parameter: parameter, path: path, problem: "cannot read the file (\(error))")
        }
        guard data.count <= maxFileSize else {
            throw FileError(parameter: parameter, path: path,
                            problem: "larger than \(maxFileSize) bytes: not a PEM file")
        }
        return [UInt8](data)
    }
}

/// The TLS side of the encrypted listeners of one ingress: the current server context, which any listener puts
/// in front of its pipeline (`addHandlers`), and `reload`, which swaps in a context read anew from the files for
/// the connections accepted from then on. Connections already open keep the context they started with.
///
/// Stats: `tlsHandshakes`, `tlsHandshakeFailures`, `tlsReloads` (reloads tried), `tlsReloadFailures`,
/// `tlsCertificateNotAfter` (Unix seconds: the serving certificate's expiry).
// @unchecked Sendable: the credentials are swapped only in the locked box `current`; the rest is immutable.
public final class ServerTLS: ListenerTLS, @unchecked Sendable {
    private let certificateFile: String
    private let keyFile: String
    private let logger: Logger
    private let metrics: StageMetrics
    private let current: NIOLockedValueBox<TLSCredentials>

    /// Reads the files named by `TLSCertificateFile` and `TLSKeyFile`; a problem is a `ConfigError` naming the
    /// configuration file, the parameter's line and the PEM file.
    public init(config: SwitchyardConfig, logger: Logger, metrics: StageMetrics) throws {
        func missing(_ parameter: String) -> ConfigError {
            let listener = config.listenEncrypted.isEmpty ? "ListenMqttEncrypted" : "ListenEncrypted"
            return ConfigError(file: config.file, line: config.parameterLines[listener] ?? 0,
                               parameter: parameter, problem: "needed by \(listener)")
        }
        guard let certificateFile = config.tlsCertificateFile else { throw missing("TLSCertificateFile") }
        guard let keyFile = config.tlsKeyFile else { throw missing("TLSKeyFile") }
        let credentials: TLSCredentials
        do {
            credentials = try TLSCredentials.load(certificateFile: certificateFile, keyFile: keyFile)
        } catch let error as TLSCredentials.FileError {
            throw ConfigError(file: config.file, line: config.parameterLines[error.parameter] ?? 0,
                              parameter: error.parameter, problem: error.description)
        }
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.logger = logger
        self.metrics = metrics
        current = NIOLockedValueBox(credentials)
        metrics.setGauge("tlsReloads", 0)
        metrics.setGauge("tlsReloadFailures", 0)
        metrics.setGauge("tlsHandshakes", 0)
        metrics.setGauge("tlsHandshakeFailures", 0)
        serving(credentials, "TLS certificate loaded")
    }

    /// Reads both files again. On success new connections get the new certificate; on failure the current one
    /// stays and the error is logged. Blocks on file I/O: never call it on an event loop.
    @discardableResult
    public func reload() -> Bool {
        defer { metrics.addToGauge("tlsReloads", 1) }
        do {
            let credentials = try TLSCredentials.load(certificateFile: certificateFile, keyFile: keyFile)
            current.withLockedValue { $0 = credentials }
            serving(credentials, "TLS certificate reloaded")
            return true
        } catch {
            metrics.addToGauge("tlsReloadFailures", 1)
            logger.error("TLS reload failed: still serving the previous certificate", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Puts TLS in front of a new connection's pipeline, with the current context. On the channel's event loop.
    public func addHandlers(to channel: Channel) throws {
        let context = current.withLockedValue { $0.context }
        try channel.pipeline.syncOperations.addHandlers([
            NIOSSLServerHandler(context: context), TLSErrorHandler(logger: logger, metrics: metrics),
        ])
    }

    private func serving(_ credentials: TLSCredentials, _ message: Logger.Message) {
        let notAfter = credentials.leaf.notValidAfter
        metrics.setGauge("tlsCertificateNotAfter", Int(clamping: notAfter))
        let expiry = Date(timeIntervalSince1970: TimeInterval(notAfter))
        logger.info(message, metadata: ["file": "\(certificateFile)", "serial": "\(credentials.serial)",
                                        "chain": "\(credentials.chainLength)", "notAfter": "\(expiry)"])
        if notAfter < time(nil) {
            logger.warning("the TLS certificate has expired: clients will refuse it",
                           metadata: ["notAfter": "\(expiry)"])
        }
    }
}

/// Counts TLS handshakes and turns TLS errors (a bad or plain-text ClientHello, a protocol version below 1.2, a
/// peer gone without close_notify) into a quiet close: logged at debug level, never passed on. Sits right after
/// `NIOSSLServerHandler`.
final class TLSErrorHandler: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    private enum Handshake { case running, completed, failed }

    private let logger: Logger
    private let metrics: StageMetrics
    private var handshake = Handshake.running

    init(logger: Logger, metrics: StageMetrics) {
        self.logger = logger
        self.metrics = metrics
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            handshake = .completed
            metrics.addToGauge("tlsHandshakes", 1)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard error is NIOSSLError || error is BoringSSLError else {
            context.fireErrorCaught(error)
            return
        }
        let peer = context.channel.remoteAddress.map { "\($0)" } ?? "unknown"
        switch handshake {
        case .running:
            handshake = .failed
            metrics.addToGauge("tlsHandshakeFailures", 1)
            logger.debug("TLS handshake failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
        case .completed, .failed:
            logger.debug("TLS connection error", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
        context.close(promise: nil)
    }
}
