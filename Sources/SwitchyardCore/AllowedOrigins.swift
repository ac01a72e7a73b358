/// `AllowedOrigins`: the web origins (`scheme://host[:port]`) whose pages may open a WebSocket connection.
///
/// Browsers send `Origin` with every WebSocket upgrade; a page of another site gets 403 before the upgrade (no
/// cross-site WebSocket hijacking). A request without `Origin` comes from a non-browser client and is allowed:
/// the check protects browsers' users, it does not authenticate. Origins compare case-insensitively, with a
/// default port (80 for http/ws, 443 for https/wss) the same as none.
public struct AllowedOrigins: Equatable, Sendable {
    /// Normalised origins; nil allows any origin (the default).
    public private(set) var origins: Set<String>?

    public static let any = AllowedOrigins(origins: nil)

    private init(origins: Set<String>?) {
        self.origins = origins
    }

    /// Parses `https://app.example.com, http://localhost:8080` or `*` (any); nil if an entry is not an origin.
    public init?(parsing text: String) {
        let entries = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        if entries == ["*"] {
            self = .any
            return
        }
        var origins = Set<String>()
        for entry in entries {
            guard let origin = Self.normalise(entry) else { return nil }
            origins.insert(origin)
        }
        guard !origins.isEmpty else { return nil }
        self.init(origins: origins)
    }

    /// Whether an upgrade with this `Origin` header (nil: none sent) may proceed.
    public func allows(_ origin: String?) -> Bool {
        guard let origins, let origin else { return true }
        guard let normalised = Self.normalise(origin) else { return false }
        return origins.contains(normalised)
    }

    /// `scheme://host[:port]` lowercased, without a default port; nil for anything else (a path, `null`, ...).
    static func normalise(_ text: String) -> String? {
        let lower = text.lowercased()
        guard let separator = lower.range(of: "://") else { return nil }
        let scheme = lower[..<separator.lowerBound]
        var authority = lower[separator.upperBound...]
        guard !scheme.isEmpty, scheme.allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) }),
              !authority.isEmpty, !authority.contains(where: { "/?#@ \\".contains($0) }) else { return nil }
        if let colon = authority.lastIndex(of: ":"), !authority[colon...].contains("]") {
            let port = authority[authority.index(after: colon)...]
            guard let number = Int(port), (1...65535).contains(number), colon != authority.startIndex else {
                return nil
            }
            let defaultPort = ["http": 80, "ws": 80, "https": 443, "wss": 443][String(scheme)]
            if number == defaultPort { authority = authority[..<colon] }
        }
        return "\(scheme)://\(authority)"
    }
}
