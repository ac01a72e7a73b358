import Foundation
import JWTKit
import IngressStage
import SwitchyardCore

/// The claims Switchyard reads. Time, issuer and audience are checked by `TokenVerifier` (against its clock and
/// configuration, each with its own refusal), so `verify(using:)` has nothing left to do.
struct SwitchyardClaims: JWTPayload {
    struct PermissionsClaim: Codable, Sendable {
        var sub: [String]?
        var pub: [String]?
        var all: [String]?
    }

    var exp: ExpirationClaim?
    var nbf: NotBeforeClaim?
    var iss: IssuerClaim?
    var aud: AudienceClaim?
    var permissions: PermissionsClaim?

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Verifies JWTs with vapor/jwt-kit: turns a token string into a `TokenGrant` or a `TokenRefusal`. Holds one key
/// collection per accepted algorithm: `JwtSecret` accepts HS256/384/512, an RSA `JwtPublicKeyFile` RS256/384/512,
/// an EC P-256 key ES256 and a P-384 key ES384. A token is verified only by the collection of its header's `alg`,
/// so `none` and any algorithm the key is not for are refused before a signature is looked at.
/// Independent of any transport (the WebSocket and MQTT front ends share it).
public final class TokenVerifier: TokenVerifying {
    /// Longer tokens are refused unread.
    public static let maxTokenBytes = TokenGrant.maxTokenBytes

    private let keys: [String: JWTKeyCollection]
    private let issuer: String?
    private let audience: String?

    /// The algorithms tokens may be signed with.
    public var algorithms: [String] { keys.keys.sorted() }

    /// The shortest `JwtSecret`: an HMAC key shorter than its hash's output weakens it (RFC 7518 section 3.2).
    public static let minimumSecretBytes = 32

    /// An HMAC secret of at least `minimumSecretBytes`; it accepts each of HS256, HS384 and HS512 whose hash
    /// output is no longer than the secret (32, 48 and 64 bytes).
    public init(secret: String, issuer: String? = nil, audience: String? = nil) async {
        var keys: [String: JWTKeyCollection] = [:]
        let key = HMACKey(from: secret)
        let length = secret.utf8.count
        if length >= 32 { keys["HS256"] = await JWTKeyCollection().add(hmac: key, digestAlgorithm: .sha256) }
        if length >= 48 { keys["HS384"] = await JWTKeyCollection().add(hmac: key, digestAlgorithm: .sha384) }
        if length >= 64 { keys["HS512"] = await JWTKeyCollection().add(hmac: key, digestAlgorithm: .sha512) }
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
    }

    /// A PEM public key (or certificate) of RSA, EC P-256 or EC P-384.
    public init(publicKeyPEM pem: String, issuer: String? = nil, audience: String? = nil) async throws {
        var keys: [String: JWTKeyCollection] = [:]
        if let rsa = try? Insecure.RSA.PublicKey(pem: pem) {
            keys["RS256"] = await JWTKeyCollection().add(rsa: rsa, digestAlgorithm: .sha256)
            keys["RS384"] = await JWTKeyCollection().add(rsa: rsa, digestAlgorithm: .sha384)
            keys["RS512"] = await JWTKeyCollection().add(rsa: rsa, digestAlgorithm: .sha512)
        } else if let p256 = try? ES256PublicKey(pem: pem) {
            keys["ES256"] = await JWTKeyCollection().add(ecdsa: p256)
        } else if let p384 = try? ES384PublicKey(pem: pem) {
            keys["ES384"] = await JWTKeyCollection().add(ecdsa: p384)
        } else {
            throw TokenKeyError()
        }
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
    }

    /// The verifier `config` asks for (`Entitlement = jwt`), nil otherwise. A key file that does not hold an RSA,
    /// P-256 or P-384 public key is a `ConfigError` naming the configuration file and line.
    public static func load(_ config: SwitchyardConfig) async throws -> TokenVerifier? {
        guard config.entitlement == .jwt else { return nil }
        if let secret = config.jwtSecret {
            return await TokenVerifier(secret: secret, issuer: config.jwtIssuer, audience: config.jwtAudience)
        }
        guard let pem = config.jwtPublicKeyPEM else {
            throw ConfigError(file: config.file, line: config.parameterLines["Entitlement"] ?? 0, parameter: "Entitlement",
                              problem: "Entitlement = jwt needs JwtSecret or JwtPublicKeyFile")
        }
        do {
            return try await TokenVerifier(publicKeyPEM: pem, issuer: config.jwtIssuer, audience: config.jwtAudience)
        } catch {
            throw ConfigError(file: config.file, line: config.parameterLines["JwtPublicKeyFile"] ?? 0,
                              parameter: "JwtPublicKeyFile",
                              problem: "\(config.jwtPublicKeyFile ?? "") holds no RSA, EC P-256 or EC P-384 "
                                + "public key in PEM")
        }
    }

    public func verify(_ token: String, now: Date = Date()) async -> Result<TokenGrant, TokenRefusal> {
        guard token.utf8.count <= Self.maxTokenBytes else { return .failure(.tooLong) }
        guard let algorithm = Self.headerAlgorithm(token) else { return .failure(.malformed) }
        guard let collection = keys[algorithm] else { return .failure(.algorithmNotAllowed) }
        let claims: SwitchyardClaims
        do {
            claims = try await collection.verify(token, as: SwitchyardClaims.self)
        } catch let error as JWTError where error.errorType == .signatureVerificationFailed {
            return .failure(.badSignature)
        } catch {
            return .failure(.malformed)
        }
        return check(claims, now: now)
    }

    private func check(_ claims: SwitchyardClaims, now: Date) -> Result<TokenGrant, TokenRefusal> {
        guard let exp = claims.exp else { return .failure(.missingExpiry) }
        guard (try? exp.verifyNotExpired(currentDate: now)) != nil else { return .failure(.expired) }
        if let nbf = claims.nbf, now < nbf.value { return .failure(.notYetValid) }
        if let issuer, claims.iss?.value != issuer { return .failure(.wrongIssuer) }
        if let audience {
            guard let aud = claims.aud, (try? aud.verifyIntendedAudience(includes: audience)) != nil else {
                return .failure(.wrongAudience)
            }
        }
        let claim = claims.permissions
        guard let permissions = Permissions(sub: claim?.sub ?? [], pub: claim?.pub ?? [], all: claim?.all ?? []) else {
            return .failure(.badPermissions)
        }
        return .success(TokenGrant(permissions: permissions, expiresAt: exp.value))
    }

    /// The `alg` of a token's header (its first base64url part, a JSON object); nil when there is none.
    static func headerAlgorithm(_ token: String) -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let header = Data(base64URLEncoded: parts[0]),
              let object = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else { return nil }
        return object["alg"] as? String
    }
}

/// The PEM text is not a public key jwt-kit can verify with.
struct TokenKeyError: Error {}

extension Data {
    /// Decodes base64url without padding (RFC 7515 section 2).
    init?(base64URLEncoded text: Substring) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !base64.contains("=") else { return nil }
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        self.init(base64Encoded: base64)
    }
}
