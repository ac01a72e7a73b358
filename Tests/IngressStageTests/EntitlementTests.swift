import Foundation
import JWTKit
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import SwitchyardCore
import XCTest
@testable import IngressService
@testable import IngressStage

/// Claims as a token issuer would write them.
private struct IssuedClaims: JWTPayload {
    var exp: ExpirationClaim?
    var nbf: NotBeforeClaim?
    var iss: IssuerClaim?
    var aud: AudienceClaim?
    var permissions: [String: [String]]?

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

private struct OddClaims: JWTPayload {
    var exp: ExpirationClaim
    var permissions: [String: String]

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

private func claims(expiresIn seconds: TimeInterval = 60, notBefore: TimeInterval? = nil, issuer: String? = nil,
                    audience: [String]? = nil, permissions: [String: [String]]? = ["all": ["/a/*"]]) -> IssuedClaims {
    IssuedClaims(exp: ExpirationClaim(value: Date(timeIntervalSinceNow: seconds)),
                 nbf: notBefore.map { NotBeforeClaim(value: Date(timeIntervalSinceNow: $0)) },
                 iss: issuer.map { IssuerClaim(value: $0) }, aud: audience.map { AudienceClaim(value: $0) },
                 permissions: permissions)
}

/// 64 bytes: long enough for HS512 (RFC 7518 3.2).
private let secret = String(repeating: "s3cret-k", count: 8)
private let otherSecret = String(repeating: "0ther-k!", count: 8)

private func base64URL(_ text: String) -> String {
    Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
}

/// A token whose header is replaced (its signature then no longer matters: the algorithm is refused first).
private func withHeader(_ token: String, _ header: String) -> String {
    let parts = token.split(separator: ".", omittingEmptySubsequences: false)
    return ([base64URL(header)] + parts.dropFirst().map(String.init)).joined(separator: ".")
}

final class TokenVerifierTests: XCTestCase {
    private func hmacToken(_ claims: IssuedClaims, secret: String = secret, _ digest: DigestAlgorithm = .sha256) async throws -> String {
        try await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: digest).sign(claims)
    }

    func testHMACTokensOfEachDigestAreAcceptedWithTheirPermissionsAndExpiry() async throws {
        let verifier = await TokenVerifier(secret: secret)
        XCTAssertEqual(verifier.algorithms, ["HS256", "HS384", "HS512"])
        for digest in [DigestAlgorithm.sha256, .sha384, .sha512] {
            let issued = claims(permissions: ["sub": ["/s/x"], "pub": ["/p/*"], "all": ["/both"]])
            let result = await verifier.verify(try await hmacToken(issued, digest))
            let grant = try result.get()
            XCTAssertEqual(grant.expiresAt?.timeIntervalSince1970 ?? 0, issued.exp!.value.timeIntervalSince1970, accuracy: 1)
            XCTAssertTrue(grant.permissions.allows(.subscribe, "/s/x"))
            XCTAssertFalse(grant.permissions.allows(.publish, "/s/x"))
            XCTAssertTrue(grant.permissions.allows(.publish, "/p/q/r"))
            XCTAssertFalse(grant.permissions.allows(.subscribe, "/p/q"))
            XCTAssertTrue(grant.permissions.allows(.subscribe, "/both"))
            XCTAssertTrue(grant.permissions.allows(.publish, "/both"))
        }
    }

    func testTheSecretsLengthDecidesItsAlgorithms() async {
        let short = await TokenVerifier(secret: String(repeating: "x", count: 32))
        XCTAssertEqual(short.algorithms, ["HS256"])
        let middle = await TokenVerifier(secret: String(repeating: "x", count: 48))
        XCTAssertEqual(middle.algorithms, ["HS256", "HS384"])
    }

    func testRefusals() async throws {
        let verifier = await TokenVerifier(secret: secret, issuer: "auth.example", audience: "switchyard")
        func verdict(_ claims: IssuedClaims, secret: String = secret) async throws -> TokenRefusal? {
            switch await verifier.verify(try await hmacToken(claims, secret: secret)) {
            case .success: return nil
            case .failure(let refusal): return refusal
            }
        }
        let good = claims(issuer: "auth.example", audience: ["other", "switchyard"])
        let none = try await verdict(good)
        XCTAssertNil(none)
        var missingExp = good
        missingExp.exp = nil
        var badPermissions = good
        badPermissions.permissions = ["sub": ["no-slash"]]
        let cases: [(IssuedClaims, String, TokenRefusal)] = [
            (good, otherSecret, .badSignature),
            (claims(expiresIn: -1, issuer: "auth.example", audience: ["switchyard"]), secret, .expired),
            (claims(notBefore: 30, issuer: "auth.example", audience: ["switchyard"]), secret, .notYetValid),
            (claims(issuer: "evil.example", audience: ["switchyard"]), secret, .wrongIssuer),
            (claims(audience: ["switchyard"]), secret, .wrongIssuer),
            (claims(issuer: "auth.example", audience: ["other"]), secret, .wrongAudience),
            (claims(issuer: "auth.example"), secret, .wrongAudience),
            (missingExp, secret, .missingExpiry),
            (badPermissions, secret, .badPermissions),
        ]
        for (claims, secret, expected) in cases {
            let refusal = try await verdict(claims, secret: secret)
            XCTAssertEqual(refusal, expected)
        }
    }

    func testAlgorithmNoneAndAlgorithmsOtherThanTheKeysAreRefused() async throws {
        let hmac = await TokenVerifier(secret: secret)
        let token = try await hmacToken(claims())
        let unsigned = withHeader(token, #"{"alg":"none","typ":"JWT"}"#).split(separator: ".").prefix(2).joined(separator: ".") + "."
        for forged in [unsigned, withHeader(token, #"{"alg":"none"}"#), withHeader(token, #"{"alg":"RS256"}"#),
                       withHeader(token, #"{"typ":"JWT"}"#)] {
            guard case .failure(let refusal) = await hmac.verify(forged) else { return XCTFail("accepted \(forged)") }
            XCTAssertTrue([.algorithmNotAllowed, .malformed].contains(refusal), "\(forged): \(refusal)")
        }
        if case .failure(let refusal) = await hmac.verify(withHeader(token, #"{"alg":"none"}"#)) {
            XCTAssertEqual(refusal, .algorithmNotAllowed)
        }

        // The classic confusion: an HMAC token keyed with the RSA public key's text.
        let rsa = try await TokenVerifier(publicKeyPEM: TestKeys.rsaPublicKey)
        XCTAssertEqual(rsa.algorithms, ["RS256", "RS384", "RS512"])
        let confused = try await hmacToken(claims(), secret: TestKeys.rsaPublicKey)
        guard case .failure(.algorithmNotAllowed) = await rsa.verify(confused) else { return XCTFail("HS256 accepted by an RSA key") }

        let p256 = try await TokenVerifier(publicKeyPEM: TestKeys.p256PublicKey)
        XCTAssertEqual(p256.algorithms, ["ES256"])
        let es256 = try await JWTKeyCollection().add(ecdsa: ES256PrivateKey(pem: TestKeys.p256PrivateKey)).sign(claims())
        let verifiedEs256 = await p256.verify(es256)
        XCTAssertNoThrow(try verifiedEs256.get())
        guard case .failure(.algorithmNotAllowed) = await p256.verify(withHeader(es256, #"{"alg":"ES384"}"#)) else {
            return XCTFail("ES384 accepted by a P-256 key")
        }
    }

    func testRSAAndECKeysVerifyTheirTokens() async throws {
        let rsa = try await TokenVerifier(publicKeyPEM: TestKeys.rsaPublicKey)
        let privateKey = try Insecure.RSA.PrivateKey(pem: TestKeys.rsaPrivateKey)
        for digest in [DigestAlgorithm.sha256, .sha384, .sha512] {
            let token = try await JWTKeyCollection().add(rsa: privateKey, digestAlgorithm: digest).sign(claims())
            let verifiedToken = await rsa.verify(token)
            XCTAssertNoThrow(try verifiedToken.get())
            guard case .failure(.badSignature) = await rsa.verify(token.dropLast(4) + "AAAA") else {
                return XCTFail("a changed RSA signature was accepted")
            }
        }
        let p384 = try await TokenVerifier(publicKeyPEM: TestKeys.p384PublicKey)
        XCTAssertEqual(p384.algorithms, ["ES384"])
        let es384 = try await JWTKeyCollection().add(ecdsa: ES384PrivateKey(pem: TestKeys.p384PrivateKey)).sign(claims())
        let verifiedEs384 = await p384.verify(es384)
        XCTAssertNoThrow(try verifiedEs384.get())
        // An ES384 token at a P-256 key: refused by its algorithm.
        let p256 = try await TokenVerifier(publicKeyPEM: TestKeys.p256PublicKey)
        guard case .failure(.algorithmNotAllowed) = await p256.verify(es384) else { return XCTFail("ES384 on P-256") }
    }

    func testMalformedAndOversizedTokens() async throws {
        let verifier = await TokenVerifier(secret: secret)
        for garbage in ["", "abc", "a.b.c", "...", "e30.e30.", base64URL(#"{"alg":"HS256"}"#) + ".@@@.x",
                        base64URL("[1]") + ".e30.x"] {
            guard case .failure(let refusal) = await verifier.verify(garbage) else { return XCTFail(garbage) }
            XCTAssertTrue([.malformed, .badSignature].contains(refusal), "\(garbage): \(refusal)")
        }
        // Claims of the wrong type behind a good signature: `sub` a string rather than a list.
        let wrongType = try await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            .sign(OddClaims(exp: ExpirationClaim(value: Date(timeIntervalSinceNow: 60)), permissions: ["sub": "/a"]))
        guard case .failure(.malformed) = await verifier.verify(wrongType) else { return XCTFail("odd claims accepted") }
        guard case .failure(.tooLong) = await verifier.verify(String(repeating: "a", count: TokenVerifier.maxTokenBytes + 1)) else {
            return XCTFail("a long token was read")
        }
    }

    func testKeyFilesThatAreNotAPublicKeyStopStartUp() async throws {
        for pem in [TestKeys.rsaPrivateKey, TestKeys.p521PublicKey, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"] {
            var config = try SwitchyardConfig.parse("Entitlement = jwt\nJwtSecret = \(secret)", file: "/etc/sy.conf")
            config.jwtSecret = nil
            config.jwtPublicKeyFile = "/etc/key.pem"
            config.jwtPublicKeyPEM = pem
            config.parameterLines["JwtPublicKeyFile"] = 7
            do {
                _ = try await TokenVerifier.load(config)
                XCTFail("loaded a bad key")
            } catch let error as ConfigError {
                XCTAssertEqual(error.line, 7)
                XCTAssertEqual(error.parameter, "JwtPublicKeyFile")
                XCTAssertTrue(error.description.contains("/etc/key.pem"), error.description)
            }
        }
    }
}

final class PermissionsTests: XCTestCase {
    func testExactAndPrefixEntries() throws {
        let permissions = try XCTUnwrap(Permissions(sub: ["/a/b", "/c/*"], pub: ["/p"], all: ["/x/y/*"]))
        XCTAssertTrue(permissions.allows(.subscribe, "/a/b"))
        XCTAssertFalse(permissions.allows(.subscribe, "/a/b/c"), "exact is exact")
        XCTAssertFalse(permissions.allows(.subscribe, "/a"))
        XCTAssertTrue(permissions.allows(.subscribe, "/c/d"))
        XCTAssertTrue(permissions.allows(.subscribe, "/c/d/e/f"))
        XCTAssertFalse(permissions.allows(.subscribe, "/c"), "a prefix is below its parent, not the parent")
        XCTAssertFalse(permissions.allows(.subscribe, "/cd/e"))
        XCTAssertFalse(permissions.allows(.publish, "/a/b"))
        XCTAssertTrue(permissions.allows(.publish, "/p"))
        XCTAssertFalse(permissions.allows(.subscribe, "/p"))
        XCTAssertTrue(permissions.allows(.publish, "/x/y/z"))
        XCTAssertTrue(permissions.allows(.subscribe, "/x/y/z"))
        XCTAssertFalse(permissions.allows(.publish, "/x/y"))
    }

    func testEverythingAndNothing() {
        XCTAssertTrue(Permissions.everything.allows(.publish, "/any/thing"))
        XCTAssertTrue(Permissions(sub: ["/*"], pub: [], all: [])!.allows(.subscribe, "/a"))
        XCTAssertTrue(Permissions.subscribeOnly.allows(.subscribe, "/a"))
        XCTAssertFalse(Permissions.subscribeOnly.allows(.publish, "/a"))
        XCTAssertFalse(Permissions.nothing.allows(.subscribe, "/a"))
    }

    func testMalformedEntriesRefuseTheWholeClaim() {
        for bad in ["", "a/b", "/a/", "/a//b", "/a/b*", "/a/*/b", "*", "/a/**", "/bad topic/x"] {
            XCTAssertNil(Permissions(sub: [bad], pub: [], all: []), bad)
            XCTAssertNil(PermissionPattern(bad), bad)
        }
    }
}

final class ConnectionAccessTests: XCTestCase {
    let subscribe = ClientRequest.subscribe(subjects: ["/a"], history: 0, recover: [:])
    let grant = TokenGrant(permissions: .everything, expiresAt: Date(timeIntervalSinceNow: 60))

    func testAJWTConnectionMustSendATokenFirst() {
        var access = ConnectionAccess(initial: nil, checksTokens: true)
        XCTAssertEqual(access.permissions, .nothing)
        XCTAssertEqual(access.receive(.success(.ping)), .refuse(.missing))
        var other = ConnectionAccess(initial: nil, checksTokens: true)
        XCTAssertEqual(other.receive(.success(.connect(token: nil))), .refuse(.missing))
    }

    func testFramesWaitForTheVerdictAndFollowItInOrder() {
        var access = ConnectionAccess(initial: nil, checksTokens: true)
        XCTAssertEqual(access.receive(.success(.connect(token: "t"))), .verify("t"))
        XCTAssertEqual(access.state, .verifying)
        XCTAssertEqual(access.receive(.success(subscribe)), .hold)
        XCTAssertEqual(access.receive(.success(.ping)), .hold)
        XCTAssertEqual(access.verified(.success(grant)), .granted(grant, held: [.success(subscribe), .success(.ping)]))
        XCTAssertEqual(access.permissions, .everything)
        XCTAssertEqual(access.receive(.success(.ping)), .process(.ping))
    }

    func testFramesThatDoNotParseAreHeldInOrderAndRejectedOnlyOnceGranted() {
        let bad = ClientFrameError(code: "INVALID_JSON", reason: "x")
        var access = ConnectionAccess(initial: nil, checksTokens: true)
        XCTAssertEqual(access.receive(.failure(bad)), .refuse(.missing), "not a connect first")
        access = ConnectionAccess(initial: nil, checksTokens: true)
        _ = access.receive(.success(.connect(token: "t")))
        XCTAssertEqual(access.receive(.success(.ping)), .hold)
        XCTAssertEqual(access.receive(.failure(bad)), .hold)
        XCTAssertEqual(access.verified(.success(grant)), .granted(grant, held: [.success(.ping), .failure(bad)]))
        XCTAssertEqual(access.receive(.failure(bad)), .reject(bad))
    }

    func testARefusedTokenRefusesTheHeldFramesToo() {
        var access = ConnectionAccess(initial: nil, checksTokens: true)
        _ = access.receive(.success(.connect(token: "t")))
        XCTAssertEqual(access.receive(.success(subscribe)), .hold)
        XCTAssertEqual(access.verified(.failure(.expired)), .refused(.expired))
    }

    func testHeldFramesAreBounded() {
        var access = ConnectionAccess(initial: nil, checksTokens: true)
        _ = access.receive(.success(.connect(token: "t")))
        for _ in 0..<ConnectionAccess.maxHeld { XCTAssertEqual(access.receive(.success(.ping)), .hold) }
        XCTAssertEqual(access.receive(.success(.ping)), .closeTooManyHeld)
    }

    func testARefreshIsVerifiedAndAConnectWithoutTokenChangesNothing() {
        var access = ConnectionAccess(initial: .subscribeOnly, checksTokens: true)
        XCTAssertEqual(access.receive(.success(subscribe)), .process(subscribe))
        XCTAssertEqual(access.receive(.success(.connect(token: nil))), .process(.connect(token: nil)))
        XCTAssertEqual(access.receive(.success(.connect(token: "new"))), .verify("new"))
        XCTAssertEqual(access.verified(.success(grant)), .granted(grant, held: []))
        XCTAssertEqual(access.permissions, .everything)
    }

    func testEntitlementNoneIgnoresTokens() {
        var access = ConnectionAccess(initial: .everything, checksTokens: false)
        XCTAssertEqual(access.receive(.success(.connect(token: "x"))), .process(.connect(token: "x")))
    }
}

final class TokenLifetimeTests: XCTestCase {
    let start = Date(timeIntervalSince1970: 1_000_000)

    func testNoticeThenExpiry() {
        var lifetime = TokenLifetime(expiresAt: start + 100, notice: 10)
        XCTAssertEqual(lifetime.untilNext(now: start), 90)
        XCTAssertNil(lifetime.due(now: start + 89))
        XCTAssertEqual(lifetime.due(now: start + 90), .expiresSoon)
        XCTAssertNil(lifetime.due(now: start + 91), "the notice is sent once")
        XCTAssertEqual(lifetime.untilNext(now: start + 91), 9)
        XCTAssertEqual(lifetime.due(now: start + 100), .expired)
    }

    func testATokenGrantedWithinItsNoticeIsToldAtOnce() {
        var lifetime = TokenLifetime(expiresAt: start + 5, notice: 60)
        XCTAssertEqual(lifetime.untilNext(now: start), 0)
        XCTAssertEqual(lifetime.due(now: start), .expiresSoon)
        XCTAssertEqual(lifetime.untilNext(now: start), 5)
    }

    func testNoNoticeWhenItIsZero() {
        var lifetime = TokenLifetime(expiresAt: start + 5, notice: 0)
        XCTAssertEqual(lifetime.untilNext(now: start), 5)
        XCTAssertNil(lifetime.due(now: start + 4.9))
        XCTAssertEqual(lifetime.due(now: start + 5), .expired)
    }

    func testDelaysAreClamped() {
        XCTAssertEqual(TokenLifetime.delay(-3), .zero)
        XCTAssertEqual(TokenLifetime.delay(1.5), .milliseconds(1500))
        XCTAssertEqual(TokenLifetime.delay(1e300), .seconds(30 * 86_400))
    }
}

final class EntitlementTests: XCTestCase {
    func testConstantTimeEquals() {
        XCTAssertTrue(Entitlement.constantTimeEquals(Array("abc".utf8), Array("abc".utf8)))
        XCTAssertFalse(Entitlement.constantTimeEquals(Array("abc".utf8), Array("abd".utf8)))
        XCTAssertFalse(Entitlement.constantTimeEquals(Array("abc".utf8), Array("abcd".utf8)))
        XCTAssertFalse(Entitlement.constantTimeEquals([], Array("a".utf8)))
        XCTAssertFalse(Entitlement.constantTimeEquals(Array(repeating: 0, count: 256), []), "lengths differing by 256")
    }

    func testTokensOfAnUpgradeRequest() {
        func head(_ uri: String, _ headers: [(String, String)] = []) -> HTTPRequestHead {
            HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: HTTPHeaders(headers))
        }
        XCTAssertNil(Entitlement.token(in: head("/")))
        XCTAssertEqual(Entitlement.token(in: head("/?token=a.b.c")), "a.b.c")
        XCTAssertEqual(Entitlement.token(in: head("/ws?x=1&token=a%2Eb&y=2")), "a.b")
        XCTAssertEqual(Entitlement.token(in: head("/?token=url", [("Authorization", "Bearer hdr")])), "hdr")
        XCTAssertEqual(Entitlement.token(in: head("/", [("authorization", "bearer  hdr ")])), "hdr")
        XCTAssertNil(Entitlement.token(in: head("/", [("Authorization", "Basic eDp5")])))
        XCTAssertEqual(Entitlement.token(in: head("/?token=a%zzb")), "a%zzb", "broken encoding: refused later, not ignored")
    }

    func testBasicModeComparesTheAllowToken() throws {
        var config = SwitchyardConfig()
        config.entitlement = .basic
        config.entitlementAllowToken = "open-sesame"
        let entitlement = Entitlement(config: config, verifier: nil)
        XCTAssertEqual(entitlement.withoutToken, .subscribeOnly)
        let loop = EmbeddedEventLoop()
        XCTAssertEqual(try entitlement.verify("open-sesame", on: loop).wait(),
                       .success(TokenGrant(permissions: .everything, expiresAt: nil)))
        XCTAssertEqual(try entitlement.verify("open-sesam", on: loop).wait(), .failure(.wrongToken))
    }

    /// A verifier that takes its time, as an RSA key under load might.
    private struct SlowVerifier: TokenVerifying {
        func verify(_ token: String, now: Date) async -> Result<TokenGrant, TokenRefusal> {
            try? await Task.sleep(nanoseconds: 300_000_000)
            return .success(TokenGrant(permissions: .everything, expiresAt: nil))
        }
    }

    func testShutdownWaitsForRunningVerificationsBeforeTheLoopsStop() throws {
        var config = SwitchyardConfig()
        config.entitlement = .jwt
        let entitlement = Entitlement(config: config, verifier: SlowVerifier())
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        XCTAssertTrue(entitlement.awaitVerifications(timeout: 0), "nothing runs yet")
        let verdict = entitlement.verify("t", on: group.next())
        XCTAssertFalse(entitlement.awaitVerifications(timeout: 0.01), "the verification is still running")
        XCTAssertTrue(entitlement.awaitVerifications(timeout: 5))
        XCTAssertEqual(try verdict.wait(), .success(TokenGrant(permissions: .everything, expiresAt: nil)))
        try group.syncShutdownGracefully()
    }
}
/// The client pipeline of `IngressServer.configureClientChannel` under `Entitlement = basic` or `jwt`, fed raw
/// bytes (basic and a jwt node without a key answer at once, so no task is involved).
final class EntitlementChannelTests: XCTestCase {
    var channel: EmbeddedChannel!
    var hub: IngressHub!
    var runDir: TestRunDir!

    override func setUpWithError() throws {
        runDir = try TestRunDir("sy-ent")
        channel = EmbeddedChannel()
    }

    override func tearDownWithError() throws {
        _ = try? channel.finish()
        runDir.remove()
    }

    func configure(_ text: String) throws {
        var config = try SwitchyardConfig.parse(text, file: runDir.url.appendingPathComponent("s.conf").path)
        config.runDir = runDir.path
        hub = try .forTests(on: channel.embeddedEventLoop, runDir: runDir, config: config)
        try IngressServer.configureClientChannel(channel, settings: EdgeSettings(config: config),
                                                 connections: ConnectionCounter(), hub: hub)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    func send(_ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
        channel.embeddedEventLoop.run()
    }

    func sendText(_ text: String) throws {
        let payload = Array(text.utf8), mask: [UInt8] = [1, 2, 3, 4]
        let masked = payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try channel.writeInbound(ByteBuffer(bytes: [0x81, 0x80 | UInt8(payload.count)] + mask + masked))
        channel.embeddedEventLoop.run()
    }

    func outputBytes() throws -> [UInt8] {
        var bytes: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += buffer.readableBytesView }
        return bytes
    }

    func output() throws -> String { String(decoding: try outputBytes(), as: UTF8.self) }

    func upgrade(_ path: String = "/") -> String {
        "GET \(path) HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(HandshakeTests.key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
    }

    func testBasicRefusesAWrongURLTokenWith401AndDeniesPublishingWithoutOne() throws {
        try configure("Entitlement = basic\nEntitlementAllowToken = open-sesame")
        try send(upgrade("/?token=guess"))
        let refused = try output()
        XCTAssertTrue(refused.hasPrefix("HTTP/1.1 401"), refused)
        XCTAssertTrue(refused.contains("WWW-Authenticate: Bearer\r\n") && refused.contains("token not accepted"), refused)
        XCTAssertEqual(hub.connectionCount, 0)
        XCTAssertFalse(channel.isActive)
    }

    func testBasicWithoutATokenMaySubscribeButNotPublish() throws {
        try configure("Entitlement = basic\nEntitlementAllowToken = open-sesame")
        try send(upgrade())
        XCTAssertTrue(try output().hasPrefix("HTTP/1.1 101"))
        try sendText(#"{"op":"publish","subject":"/a/b","content":"x","closure":"c"}"#)
        XCTAssertTrue(try output().contains(#""status":"DENY""#))
    }

    func testJWTClosesAConnectionWhoseFirstFrameIsNotConnect() throws {
        try configure("Entitlement = jwt\nJwtSecret = \(secret)")
        try send(upgrade())
        XCTAssertTrue(try output().hasPrefix("HTTP/1.1 101"))
        try sendText(#"{"op":"subscribe","subjects":["/a"]}"#)
        let closed = try outputBytes()
        XCTAssertEqual(closed.first, 0x88, "a close frame, and nothing before it")
        XCTAssertEqual(Array(closed.dropFirst(2).prefix(2)), [0x03, 0xF0], "1008")
        XCTAssertTrue(String(decoding: closed.dropFirst(4), as: UTF8.self).hasPrefix("a token is required"))
    }

    func testJWTClosesASilentConnectionAfterTheHandshakeTimeout() throws {
        try configure("Entitlement = jwt\nJwtSecret = \(secret)\nHandshakeTimeout = 3")
        try send(upgrade())
        XCTAssertTrue(try output().hasPrefix("HTTP/1.1 101"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2900))
        XCTAssertEqual(try output(), "")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        XCTAssertTrue(try output().contains("no token within 3 s"))
    }
}

/// Keys made for these tests only (openssl genpkey).
enum TestKeys {
    static let rsaPrivateKey = """
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCjxgNJGCo14ouf
YS6lH6zXeZvvG0CkTk9yDP9jKPAXRm3npFOZNlJ13EVd+Pqfzf0jqqEJJz5MRWun
znReu8D2n7b7SIIA3iWcVTfuLJhRA/eXfLmINL/B3lejxSDtUQLHuG0B+Zpw96Fq
AL8o4umUha7IXj6TOtAs71e3Zz9T4oQOx0kKyjqhC1TKd7j46T0pGF5NHzyu9pw3
tTPXvECtZWG5sB6QGCTYtzzeFoY9wQiNPjSzrTVaeYMtakmiyVnPL0Fd9gWsKdC7
0fd1ie2ipJdszeo/HjrMeO2GxCFkeQOPO8pFcqHEgJs/Ah+G1P3zU9VNmhKhEdEh
kXEaFT/xAgMBAAECggEABsQ65QV8Uvsf+S8O+hAPuFxkKrIlztQUeLocQCjUGKYW
iuRRdupVaFy4Ofx8QGeGnrdhTWtDaevRWZ7QVIyt2ZK6QPIbOvVyuN2VgL/zcB95
lpb25G+Hf7dTyCawKFX5Ry6xxEvfi2zTzLkorMQJUhNe6BTqwXMD4GNoLKH1rh3E
D7600EE4KGYKN/SyS+PMJLavq4PL9ll3+hR8vnlwTVEP3hKsPNEc9YL1U9hme9xx
PQDvwCK9PraIGTU5nIdt07x6aiQDijSOMPEEL/Ufc/5Iv29r00omany0I5i3GMPI
J/QThuqhGFG7lSGgHEdJFVuMdvqP3KUBroC7S9NjcQKBgQDcEP22L7DsHlqkrTfa
it7ZZCPxYnvzN5LsaYDF7gmTZYW2WxncaBkX9r9W3A/y1bjZxYLiVvwPluo4/jcO
LoPH+GNzyrOEHKadtvkxpLMOyJRII2KBDW5qi4VC2eagvrfTCeLwvgelhvZY9/cs
p/eAjZjODPhbf/ZHVFHYXPrJGQKBgQC+g+tR9JlNmefRv5y748MNtcvyv1cQQPZp
M1iV0FfRcXA7iRSWHJ4wKMP8VrcOqpLqdDu8JjxlzEdiORi62eDk/33omnm53Tfb
oy/6E78sFTOreDPdmroTXdjgFmnDWYpcoHWFmUWXoJ0/bjAOyymoWpXpxqT9/mYg
OC9s0V2QmQKBgHYryZGjWmXwhswXF/8Kw1AJLiPYtqaMGSFKJhQjFpFH2t1pXiG0
5ISxw11pHkdP7MtD/Fx+SSw15eBk4juDTtB62Sy8lFlE6VOXhYja4Cv4GWgDWEnk
ZH5iHVUgnW+D+kIg9PRBlumT54Uu4lPgfk9RudQrstGvjRgQd0Kv6xtBAoGAdcbR
/FltSJcDxBxjxZf5Zolj6s61ARxX+RNACWXCVH1/d5639lD8ziL1fhMRmeSDbKOs
phUxM3GFE8jea+zz5j24Vcrhw7BprsOEjmIUxijZR4DI94+GxyA2SdoxSg4ZxkeA
P7ZQWnt1mtgAp7SbLTPLB7nBGDBkbDivwOLxp8kCgYEA2NfALJ7PUgrZQegPwc4P
7bS5ewSSBUKsVspjZsNmnNCOjFWDMqXPhdB9U/rwu9fMORuwf0hyQ4vvlv/Mxe5p
1ekE+5KMAzp4c0CJnw4HLLRyqKmjAXscq5U/zIWgGsKkxRlyP3sgdRjMwTpW+78n
1O4azf1pmpKe8n7at/NpTaY=
-----END PRIVATE KEY-----
"""

    static let rsaPublicKey = """
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAo8YDSRgqNeKLn2EupR+s
13mb7xtApE5Pcgz/YyjwF0Zt56RTmTZSddxFXfj6n839I6qhCSc+TEVrp850XrvA
9p+2+0iCAN4lnFU37iyYUQP3l3y5iDS/wd5Xo8Ug7VECx7htAfmacPehagC/KOLp
lIWuyF4+kzrQLO9Xt2c/U+KEDsdJCso6oQtUyne4+Ok9KRheTR88rvacN7Uz17xA
rWVhubAekBgk2Lc83haGPcEIjT40s601WnmDLWpJoslZzy9BXfYFrCnQu9H3dYnt
oqSXbM3qPx46zHjthsQhZHkDjzvKRXKhxICbPwIfhtT981PVTZoSoRHRIZFxGhU/
8QIDAQAB
-----END PUBLIC KEY-----
"""

    static let p256PrivateKey = """
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQge0o7gs022gH1aWeo
Y3uQAWatwr1ywVhoh0ywIxMiG/ihRANCAASTlE5QdDB+N25otW4XBHOVURUZEheT
hW7iyn6DDDV9wqS8+wE5/6hixrCiN6Ob12w6xMVWKwzt58vIzv1PJaWG
-----END PRIVATE KEY-----
"""

    static let p256PublicKey = """
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEk5ROUHQwfjduaLVuFwRzlVEVGRIX
k4Vu4sp+gww1fcKkvPsBOf+oYsawojejm9dsOsTFVisM7efLyM79TyWlhg==
-----END PUBLIC KEY-----
"""

    static let p384PrivateKey = """
-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDK7pyi5CHdh0ray/wo
mkqACvP1XmVnyko9BRUOx3o4GDU7b/keFSZQZs+LiMgKXDihZANiAATYGxXOUlN0
Mjpy+QPfi+5FLfroIVtGvSpAlmiXm8Ex5Za056Q+ZXIrKAXqS4tMuVnPQKo9QzNM
Uni3MwiafGOKqf32h6v6klBuJ4Eq/eO3F0SvX8Kz1cihhIrsOCplHT0=
-----END PRIVATE KEY-----
"""

    static let p384PublicKey = """
-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE2BsVzlJTdDI6cvkD34vuRS366CFbRr0q
QJZol5vBMeWWtOekPmVyKygF6kuLTLlZz0CqPUMzTFJ4tzMImnxjiqn99oer+pJQ
bieBKv3jtxdEr1/Cs9XIoYSK7DgqZR09
-----END PUBLIC KEY-----
"""

    static let p521PublicKey = """
-----BEGIN PUBLIC KEY-----
MIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQASBtQfyIoFR4sW4eIBueMmCGqJ2YY
p443FCxRY3zuygZ85fvsVBSpq4fdBavc8M2L01zADc7wV4bL0FAgBbnVEOkACc9g
EMhwWpfUQvap8/stnz1wGKJL8+FnwVf13q4oM9/+/idsezRmMGgER56/9HR/7OxZ
W9PWMDR7MR0YVehV/4A=
-----END PUBLIC KEY-----
"""
}
