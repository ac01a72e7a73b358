import SwitchyardCore

/// One entry of a token's permissions: an exact subject (`/a/b`) or a prefix (`/a/b/*`: every subject below
/// `/a/b/`, not `/a/b` itself; `/*` is every subject).
public enum PermissionPattern: Equatable, Hashable, Sendable {
    case exact(String)
    /// The prefix, ending in `/`.
    case below(String)

    /// Parses an entry; nil for anything that is neither a valid subject nor a valid subject followed by `/*`.
    /// A `*` anywhere else (`/a/*/b`, `/a/b*`) is refused rather than read as a literal character: whoever wrote
    /// it meant a wildcard that does not exist.
    public init?(_ entry: String) {
        if entry == "/*" {
            self = .below("/")
        } else if entry.hasSuffix("/*") {
            let parent = String(entry.dropLast(2))
            guard Subject.validate(parent) == nil, !parent.contains("*") else { return nil }
            self = .below(parent + "/")
        } else {
            guard Subject.validate(entry) == nil, !entry.contains("*") else { return nil }
            self = .exact(entry)
        }
    }

    public func matches(_ subject: String) -> Bool {
        switch self {
        case .exact(let exact): return subject == exact
        case .below(let prefix): return subject.utf8.count > prefix.utf8.count && subject.hasPrefix(prefix)
        }
    }
}

/// What one connection may do: subscribe to and publish on which subjects. Independent of the transport, so the
/// WebSocket and MQTT front ends share it.
public struct Permissions: Equatable, Sendable {
    public enum Action: Sendable {
        case subscribe
        case publish
    }

    public var subscribe: Set<PermissionPattern>
    public var publish: Set<PermissionPattern>

    public init(subscribe: Set<PermissionPattern>, publish: Set<PermissionPattern>) {
        self.subscribe = subscribe
        self.publish = publish
    }

    /// `Entitlement = none`, or `basic` with the allow token.
    public static let everything = Permissions(subscribe: [.below("/")], publish: [.below("/")])
    /// `Entitlement = basic` without the allow token.
    public static let subscribeOnly = Permissions(subscribe: [.below("/")], publish: [])
    /// Before a token was accepted.
    public static let nothing = Permissions(subscribe: [], publish: [])

    /// The `permissions` claim of a token: `sub`, `pub` and `all` (both) lists of entries. Nil when an entry is
    /// malformed: a token that grants something we cannot read is refused rather than half-understood.
    public init?(sub: [String], pub: [String], all: [String]) {
        func patterns(_ entries: [String]) -> Set<PermissionPattern>? {
            var set = Set<PermissionPattern>()
            for entry in entries {
                guard let pattern = PermissionPattern(entry) else { return nil }
                set.insert(pattern)
            }
            return set
        }
        guard let sub = patterns(sub), let pub = patterns(pub), let all = patterns(all) else { return nil }
        self.init(subscribe: sub.union(all), publish: pub.union(all))
    }

    /// Whether every subject `pattern` can match may be subscribed to: a prefix entry covers the levels before
    /// its first wildcard (`/a/b/*` or above for `/a/b/+/c`; `/*` for `/+/c`), and for a `#` right after them
    /// (`/a/b/#` also matches `/a/b`) the parent is allowed too.
    public func allowsSubscribe(toEvery pattern: SubjectPattern) -> Bool {
        guard let prefix = pattern.literalPrefix else { return subscribe.contains(.below("/")) }
        let literalLevels = pattern.levels.prefix { $0.isLiteral }.count
        if pattern.levels[literalLevels] == .anyRest, !allows(.subscribe, prefix) { return false }
        // Below `prefix/`: a prefix entry at one of its slashes (`/`, `/a/`, `/a/b/`).
        let below = prefix + "/"
        var index = below.utf8.startIndex
        while let slash = below.utf8[index...].firstIndex(of: UInt8(ascii: "/")) {
            let next = below.utf8.index(after: slash)
            if subscribe.contains(.below(String(below[..<next]))) { return true }
            index = next
        }
        return false
    }

    public func allows(_ action: Action, _ subject: String) -> Bool {
        let patterns = action == .subscribe ? subscribe : publish
        if patterns.contains(.exact(subject)) { return true }
        // A subject `/a/b/c` is below `/`, `/a/` and `/a/b/`: look each prefix up rather than scanning the entries.
        var index = subject.utf8.startIndex
        while let slash = subject.utf8[index...].firstIndex(of: UInt8(ascii: "/")) {
            let next = subject.utf8.index(after: slash)
            guard next < subject.utf8.endIndex else { break }
            if patterns.contains(.below(String(subject[..<next]))) { return true }
            index = next
        }
        return false
    }
}
