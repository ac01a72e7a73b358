import Foundation

/// Why a token was refused. The raw value names the refusal in metrics (`tokenRefused_<raw>`) and logs; `reason`
/// is what the client is told (HTTP 401 body or close 1008 reason).
public enum TokenRefusal: String, Error, Equatable, Sendable, CaseIterable {
    /// `Entitlement = jwt` and the connection sent no token (or its first frame was not `connect`).
    case missing
    /// Longer than `TokenGrant.maxTokenBytes`.
    case tooLong
    /// Not three base64url parts, a header or claims that are not JSON, or claims of the wrong type.
    case malformed
    /// `alg` is `none`, or an algorithm the configured key is not for.
    case algorithmNotAllowed
    case badSignature
    case missingExpiry
    case expired
    case notYetValid
    case wrongIssuer
    case wrongAudience
    /// A `permissions` entry that is neither a subject nor `/prefix/*`.
    case badPermissions
    /// `Entitlement = basic`: a token other than `EntitlementAllowToken`.
    case wrongToken

    public var reason: String {
        switch self {
        case .missing: return "a token is required: send {\"op\":\"connect\",\"token\":...} first"
        case .tooLong: return "token longer than \(TokenGrant.maxTokenBytes) bytes"
        case .malformed: return "malformed token"
        case .algorithmNotAllowed: return "token algorithm not accepted"
        case .badSignature: return "token signature does not verify"
        case .missingExpiry: return "token has no exp claim"
        case .expired: return "token expired"
        case .notYetValid: return "token not yet valid (nbf)"
        case .wrongIssuer: return "token issuer not accepted"
        case .wrongAudience: return "token audience not accepted"
        case .badPermissions: return "token permissions malformed"
        case .wrongToken: return "token not accepted"
        }
    }
}

/// What an accepted token grants.
public struct TokenGrant: Equatable, Sendable {
    public var permissions: Permissions
    /// `exp`; nil for a token that does not expire (`Entitlement = basic`).
    public var expiresAt: Date?

    /// Longer tokens are refused unread (a URL, header or `connect` frame cannot make us decode megabytes).
    public static let maxTokenBytes = 8192

    public init(permissions: Permissions, expiresAt: Date?) {
        self.permissions = permissions
        self.expiresAt = expiresAt
    }
}

/// Turns a token into a `TokenGrant` or a `TokenRefusal` (`Entitlement = jwt`). The JWT verifier (vapor/jwt-kit)
/// lives in IngressService, so this module, its parsers and their fuzzers build without a crypto library.
public protocol TokenVerifying: Sendable {
    func verify(_ token: String, now: Date) async -> Result<TokenGrant, TokenRefusal>
}
