import Foundation
import NIOCore
import NIOEmbedded
import NIOSSL
import XCTest
@testable import IngressService
@testable import IngressStage
@testable import SwitchyardCore

/// Certificates and keys made with the `openssl` command line in a fresh temporary folder.
final class TestPKI {
    let folder: String

    init() throws {
        folder = NSTemporaryDirectory() + "switchyard-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: folder)
    }

    func path(_ name: String) -> String { folder + "/" + name }

    func openssl(_ arguments: String...) throws {
        try run(arguments)
    }

    /// A self-signed certificate `NAME.pem` with its key `NAME.key`: `P-256`, `P-384` or an `openssl req -newkey`
    /// argument (`rsa:2048`, `ed25519`).
    @discardableResult
    func selfSigned(_ name: String, key: String = "P-256") throws -> (certificate: String, key: String) {
        let keyOptions = key.hasPrefix("P-") ? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:\(key)"]
            : ["-newkey", key]
        let arguments = ["req", "-x509", "-nodes"] + keyOptions
            + ["-keyout", "\(name).key", "-out", "\(name).pem", "-days", "2", "-subj", "/CN=\(name)"]
        try run(arguments)
        return (path("\(name).pem"), path("\(name).key"))
    }

    /// `NAME.pem`: a leaf with serial `serial` signed by a new CA, followed by that CA (a chain); key `NAME.key`.
    func chain(_ name: String, serial: Int) throws -> (certificate: String, key: String) {
        try selfSigned("\(name)-ca")
        try run(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(name)"])
        try run(["x509", "-req", "-in", "\(name).csr", "-CA", "\(name)-ca.pem", "-CAkey", "\(name)-ca.key",
                 "-set_serial", String(serial), "-days", "2", "-out", "\(name)-leaf.pem"])
        let leaf = try String(contentsOfFile: path("\(name)-leaf.pem"), encoding: .utf8)
        let ca = try String(contentsOfFile: path("\(name)-ca.pem"), encoding: .utf8)
        try (leaf + ca).write(toFile: path("\(name).pem"), atomically: true, encoding: .utf8)
        return (path("\(name).pem"), path("\(name).key"))
    }

    private func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "openssl \(arguments.joined(separator: " ")) failed", code: 1)
        }
    }
}

final class TLSCredentialsTests: XCTestCase {
    var pki: TestPKI!

    override func setUpWithError() throws {
        pki = try TestPKI()
    }

    func testLoadsAChainAndRSAECDSAAndEd25519Keys() throws {
        let chain = try pki.chain("server", serial: 1234)
        let credentials = try TLSCredentials.load(certificateFile: chain.certificate, keyFile: chain.key)
        XCTAssertEqual(credentials.chainLength, 2)
        XCTAssertEqual(credentials.serial, "04d2")
        XCTAssertGreaterThan(credentials.leaf.notValidAfter, time(nil))

        for key in ["rsa:2048", "P-384", "ed25519"] {
            let files = try pki.selfSigned(key.replacingOccurrences(of: ":", with: "-"), key: key)
            XCTAssertEqual(try TLSCredentials.load(certificateFile: files.certificate, keyFile: files.key).chainLength,
                           1, key)
        }
        // The traditional RSA key format (`BEGIN RSA PRIVATE KEY`) too.
        try pki.openssl("pkey", "-in", pki.path("rsa-2048.key"), "-traditional", "-out", "traditional.key")
        XCTAssertNoThrow(try TLSCredentials.load(certificateFile: pki.path("rsa-2048.pem"),
                                                 keyFile: pki.path("traditional.key")))
    }

    func testEveryFileProblemNamesTheParameterFileAndProblem() throws {
        let good = try pki.selfSigned("good")
        let other = try pki.selfSigned("other")
        try "not a certificate\n".write(toFile: pki.path("garbage.pem"), atomically: true, encoding: .utf8)
        try "".write(toFile: pki.path("empty.pem"), atomically: true, encoding: .utf8)
        try pki.openssl("pkey", "-in", good.key, "-aes256", "-passout", "pass:secret", "-out", "encrypted.key")
        let cases: [(certificate: String, key: String, parameter: String, problem: String)] = [
            (pki.path("missing.pem"), good.key, "TLSCertificateFile", "cannot read"),
            (pki.path("garbage.pem"), good.key, "TLSCertificateFile", "no PEM certificate"),
            (pki.path("empty.pem"), good.key, "TLSCertificateFile", "no PEM certificate"),
            (good.certificate, pki.path("missing.key"), "TLSKeyFile", "cannot read"),
            (good.certificate, good.certificate, "TLSKeyFile", "no PEM private key"),
            (good.certificate, pki.path("encrypted.key"), "TLSKeyFile", "encrypted"),
            (good.certificate, other.key, "TLSKeyFile", "does not match"),
        ]
        for (certificate, key, parameter, problem) in cases {
            XCTAssertThrowsError(try TLSCredentials.load(certificateFile: certificate, keyFile: key)) {
                guard let error = $0 as? TLSCredentials.FileError else { return XCTFail("\($0)") }
                XCTAssertEqual(error.parameter, parameter, "\(error)")
                XCTAssertEqual(error.path, parameter == "TLSKeyFile" ? key : certificate, "\(error)")
                XCTAssertTrue(error.problem.contains(problem), "\(error)")
            }
        }
    }

    func testAFileAboveTheSizeBoundIsRefusedWithoutParsing() throws {
        let good = try pki.selfSigned("good")
        let huge = pki.path("huge.pem")
        let tooLarge = Data(count: TLSCredentials.maxFileSize + 1)
        XCTAssertTrue(FileManager.default.createFile(atPath: huge, contents: tooLarge))
        XCTAssertThrowsError(try TLSCredentials.load(certificateFile: huge, keyFile: good.key)) {
            XCTAssertTrue(($0 as? TLSCredentials.FileError)?.problem.contains("larger than") == true, "\($0)")
        }
    }
}

final class ServerTLSTests: XCTestCase {
    var pki: TestPKI!
    var metrics: StageMetrics!
    let logger = LogWriter(stage: "test", instance: 0, level: .error).makeLogger()

    override func setUpWithError() throws {
        pki = try TestPKI()
        metrics = StageMetrics()
    }

    func makeServerTLS(certificate: String, key: String) throws -> ServerTLS {
        let config = try SwitchyardConfig.parse("""
            ListenEncrypted = 127.0.0.1:8443
            TLSCertificateFile = \(certificate)
            TLSKeyFile = \(key)
            """, file: pki.path("switchyard.conf"))
        return try ServerTLS(config: config, logger: logger, metrics: metrics)
    }

    func gauge(_ name: String) -> Int? {
        metrics.snapshot(stage: "test", instance: 0).figures[name]
    }

    /// The errors that reach the end of the client's pipeline.
    final class ErrorRecorder: ChannelInboundHandler {
        typealias InboundIn = NIOAny
        var errors: [Error] = []

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            errors.append(error)
        }
    }

    /// A client and a server channel in memory, the server's pipeline from `ServerTLS.addHandlers`.
    struct Connection {
        let client: EmbeddedChannel
        let server: EmbeddedChannel
        let clientTLS: NIOSSLClientHandler
        let clientErrors: ErrorRecorder

        /// Moves bytes both ways until neither side has any to send.
        func interact() throws {
            var moved = true
            while moved {
                moved = false
                if let data = try client.readOutbound(as: ByteBuffer.self) {
                    if server.isActive { try server.writeInbound(data) }
                    moved = true
                }
                if let data = try server.readOutbound(as: ByteBuffer.self) {  // also what it sent as it closed
                    if client.isActive { try client.writeInbound(data) }
                    moved = true
                }
            }
        }
    }

    func connect(_ tls: ServerTLS, minimum: TLSVersion = .tlsv1, maximum: TLSVersion? = nil) throws -> Connection {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        configuration.minimumTLSVersion = minimum
        configuration.maximumTLSVersion = maximum
        let clientTLS = try NIOSSLClientHandler(context: NIOSSLContext(configuration: configuration),
                                                serverHostname: nil)
        let clientErrors = ErrorRecorder()
        let client = EmbeddedChannel(handlers: [clientTLS, clientErrors])
        let server = EmbeddedChannel()
        try tls.addHandlers(to: server)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 8443)
        try server.connect(to: address).wait()
        try client.connect(to: address).wait()
        let connection = Connection(client: client, server: server, clientTLS: clientTLS,
                                    clientErrors: clientErrors)
        try connection.interact()
        return connection
    }

    func testStartUpProblemsNameTheConfigurationLine() throws {
        let good = try pki.selfSigned("good")
        XCTAssertThrowsError(try makeServerTLS(certificate: pki.path("nope.pem"), key: good.key)) {
            guard let error = $0 as? ConfigError else { return XCTFail("\($0)") }
            XCTAssertEqual(error.file, pki.path("switchyard.conf"))
            XCTAssertEqual(error.line, 2)
            XCTAssertEqual(error.parameter, "TLSCertificateFile")
            XCTAssertTrue(error.problem.contains(pki.path("nope.pem")), error.problem)
        }
        XCTAssertThrowsError(try makeServerTLS(certificate: good.certificate, key: good.certificate)) {
            XCTAssertEqual(($0 as? ConfigError)?.line, 3)
        }
    }

    func testTLS12And13AreAcceptedOlderVersionsRefused() throws {
        let good = try pki.selfSigned("good")
        let tls = try makeServerTLS(certificate: good.certificate, key: good.key)
        XCTAssertEqual(try connect(tls).clientTLS.tlsVersion, .tlsv13)
        XCTAssertEqual(try connect(tls, maximum: .tlsv12).clientTLS.tlsVersion, .tlsv12)
        XCTAssertEqual(gauge("tlsHandshakes"), 2)
        for old in [TLSVersion.tlsv1, .tlsv11] {
            let refused = try connect(tls, maximum: old)
            XCTAssertNil(refused.clientTLS.peerCertificate, "no certificate for a client that offers only \(old)")
            XCTAssertTrue(refused.clientErrors.errors.contains { "\($0)".contains("PROTOCOL_VERSION") },
                          "the server answers the protocol_version alert: \(refused.clientErrors.errors)")
            XCTAssertFalse(refused.server.isActive, "the server closes a connection that offers only \(old)")
        }
        XCTAssertEqual(gauge("tlsHandshakeFailures"), 2)
    }

    func testPlainTextOnTheTLSPortIsClosedQuietly() throws {
        let good = try pki.selfSigned("good")
        let tls = try makeServerTLS(certificate: good.certificate, key: good.key)
        let server = EmbeddedChannel()
        try tls.addHandlers(to: server)
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8443)).wait()
        // The TLS error is handled: writeInbound would throw one that reached the end of the pipeline.
        XCTAssertNoThrow(try server.writeInbound(ByteBuffer(string: "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")))
        XCTAssertFalse(server.isActive)
        XCTAssertEqual(gauge("tlsHandshakeFailures"), 1)
    }

    func testReloadServesNewConnectionsTheNewCertificateAndKeepsOpenOnes() throws {
        let first = try pki.chain("first", serial: 1)
        let second = try pki.chain("second", serial: 2)
        let served = (certificate: pki.path("served.pem"), key: pki.path("served.key"))
        func install(_ files: (certificate: String, key: String)) throws {
            for (from, to) in [(files.certificate, served.certificate), (files.key, served.key)] {
                try? FileManager.default.removeItem(atPath: to)
                try FileManager.default.copyItem(atPath: from, toPath: to)
            }
        }
        try install(first)
        let tls = try makeServerTLS(certificate: served.certificate, key: served.key)
        let open = try connect(tls)
        XCTAssertEqual(open.clientTLS.peerCertificate?.serialNumber, [1])

        try install(second)
        XCTAssertTrue(tls.reload())
        XCTAssertEqual(try connect(tls).clientTLS.peerCertificate?.serialNumber, [2])
        XCTAssertEqual(gauge("tlsReloads"), 1)
        XCTAssertEqual(gauge("tlsReloadFailures"), 0)

        // The connection opened before the reload still carries data, with its own certificate.
        try open.client.writeAndFlush(ByteBuffer(string: "still here")).wait()
        try open.interact()
        XCTAssertEqual(try open.server.readInbound(as: ByteBuffer.self), ByteBuffer(string: "still here"))
        XCTAssertEqual(open.clientTLS.peerCertificate?.serialNumber, [1])

        // A broken key: the reload fails and the previous certificate keeps serving.
        try "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n"
            .write(toFile: served.key, atomically: true, encoding: .utf8)
        XCTAssertFalse(tls.reload())
        XCTAssertEqual(try connect(tls).clientTLS.peerCertificate?.serialNumber, [2])
        XCTAssertEqual(gauge("tlsReloads"), 2)
        XCTAssertEqual(gauge("tlsReloadFailures"), 1)
        XCTAssertEqual(gauge("tlsCertificateNotAfter").map { $0 > Int(time(nil)) }, true)
    }
}
