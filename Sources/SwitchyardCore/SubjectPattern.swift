/// A subject pattern: an MQTT topic filter with wildcards, in subject form. `+` stands for one whole level
/// (`/vehicles/+/speed`), `#` for any number of levels, zero included, and only as the last level
/// (`/vehicles/#` matches `/vehicles`, `/vehicles/car7` and `/vehicles/car7/speed`). The first level may be a
/// wildcard (`/+/speed`, `/#`), but a subject whose first level starts with `$` is never matched by a pattern
/// starting with a wildcard (MQTT 4.7.2). Literal levels follow the subject rules (no empty level; a literal
/// first level is a valid Kafka topic name), and a pattern has at least one wildcard: one without is a subject.
public struct SubjectPattern: Hashable, Sendable, CustomStringConvertible {
    /// The most levels of a pattern (a subject's levels are bounded only by its length).
    public static let maxLevels = 64

    public enum Level: Hashable, Sendable {
        case literal(Substring)
        /// `+`
        case anyOne
        /// `#`, always the last level.
        case anyRest
    }

    public enum ValidationError: Error, Equatable, CustomStringConvertible {
        case notAPattern
        case tooLong
        case tooManyLevels
        case missingLeadingSlash
        case emptyLevel
        case misplacedWildcard
        case invalidTopicName

        public var description: String {
            switch self {
            case .notAPattern: return "a pattern has at least one wildcard level ('+' or '#')"
            case .tooLong: return "pattern is longer than \(Subject.maxLength) bytes"
            case .tooManyLevels: return "pattern has more than \(SubjectPattern.maxLevels) levels"
            case .missingLeadingSlash: return "pattern must start with '/'"
            case .emptyLevel: return "pattern has an empty level"
            case .misplacedWildcard: return "'+' and '#' must be a whole level, and '#' only the last"
            case .invalidTopicName:
                return "a literal first level must be 1-\(Subject.maxTopicLength) characters of [a-zA-Z0-9._-]"
            }
        }
    }

    /// The pattern as written: `/vehicles/+/speed`.
    public let text: String
    public let levels: [Level]

    public var description: String { text }

    /// Parses `text`, or throws why it is not a pattern.
    public init(_ text: String) throws(ValidationError) {
        let bytes = text.utf8
        guard bytes.count <= Subject.maxLength else { throw .tooLong }
        guard bytes.first == UInt8(ascii: "/") else { throw .missingLeadingSlash }
        let parts = text.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= Self.maxLevels else { throw .tooManyLevels }
        var levels: [Level] = []
        levels.reserveCapacity(parts.count)
        for (index, part) in parts.enumerated() {
            if part.isEmpty { throw .emptyLevel }
            if part == "+" {
                levels.append(.anyOne)
            } else if part == "#" {
                guard index == parts.count - 1 else { throw .misplacedWildcard }
                levels.append(.anyRest)
            } else {
                guard !part.utf8.contains(UInt8(ascii: "+")), !part.utf8.contains(UInt8(ascii: "#")) else {
                    throw .misplacedWildcard
                }
                if index == 0, Subject.topicNameProblem(part) != nil { throw .invalidTopicName }
                levels.append(.literal(part))
            }
        }
        guard levels.contains(where: { $0 == .anyOne || $0 == .anyRest }) else { throw .notAPattern }
        self.text = text
        self.levels = levels
    }

    /// The literal levels before the first wildcard, as a subject (`/vehicles/+/speed` → `/vehicles`); nil when
    /// the first level is a wildcard.
    public var literalPrefix: String? {
        var prefix = ""
        for level in levels {
            guard case .literal(let name) = level else { break }
            prefix += "/" + name
        }
        return prefix.isEmpty ? nil : prefix
    }

    /// Whether the (valid) `subject` matches.
    public func matches(_ subject: String) -> Bool {
        let subjectLevels = subject.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        if subjectLevels.first?.first == "$", levels.first?.isLiteral == false { return false }
        for (index, level) in levels.enumerated() {
            switch level {
            case .anyRest:
                return true
            case .anyOne:
                guard index < subjectLevels.count else { return false }
            case .literal(let name):
                guard index < subjectLevels.count, subjectLevels[index] == name else { return false }
            }
        }
        return levels.count == subjectLevels.count
    }
}

extension SubjectPattern.Level {
    public var isLiteral: Bool {
        if case .literal = self { return true }
        return false
    }
}

/// Many patterns and their owners in a level trie, to find every owner of a pattern matching a subject in time
/// that depends on the subject's levels and the trie's wildcard branches, not on the number of patterns.
/// Owners are whatever holds a pattern: an ingress instance (fanout), a connection (ingress).
/// Not thread-safe: owned by one thread.
public final class PatternMatcher<Owner: Hashable> {
    private final class Node {
        var literals: [Substring: Node] = [:]
        /// The `+` branch.
        var anyOne: Node?
        /// Owners of the pattern that ends here.
        var owners: Set<Owner> = []
        /// Owners of the pattern that ends here with `#`.
        var anyRestOwners: Set<Owner> = []

        var isEmpty: Bool { literals.isEmpty && anyOne == nil && owners.isEmpty && anyRestOwners.isEmpty }
    }

    private let root = Node()
    /// Every pattern with its owners: for re-announcing, and forgetting owners.
    public private(set) var ownersByPattern: [SubjectPattern: Set<Owner>] = [:]

    public init() {}

    /// No pattern at all: callers test this first, so exact subjects pay nothing for patterns.
    public var isEmpty: Bool { ownersByPattern.isEmpty }
    /// Distinct patterns.
    public var count: Int { ownersByPattern.count }

    public func owners(of pattern: SubjectPattern) -> Set<Owner> { ownersByPattern[pattern] ?? [] }

    /// Adds `owner` to `pattern`; true when the pattern had no owner before.
    @discardableResult
    public func insert(_ pattern: SubjectPattern, owner: Owner) -> Bool {
        let isNew = ownersByPattern[pattern] == nil
        guard ownersByPattern[pattern, default: []].insert(owner).inserted else { return false }
        var node = root
        for level in pattern.levels {
            switch level {
            case .literal(let name):
                if let next = node.literals[name] {
                    node = next
                } else {
                    let next = Node()
                    node.literals[name] = next
                    node = next
                }
            case .anyOne:
                let next = node.anyOne ?? Node()
                node.anyOne = next
                node = next
            case .anyRest:
                node.anyRestOwners.insert(owner)
                return isNew
            }
        }
        node.owners.insert(owner)
        return isNew
    }

    /// Removes `owner` from `pattern`; true when it was the pattern's last owner.
    @discardableResult
    public func remove(_ pattern: SubjectPattern, owner: Owner) -> Bool {
        guard var owners = ownersByPattern[pattern], owners.remove(owner) != nil else { return false }
        ownersByPattern[pattern] = owners.isEmpty ? nil : owners
        remove(owner, of: pattern.levels[...], from: root)
        return owners.isEmpty
    }

    /// Removes every owner `isGone` says is gone, from every pattern.
    public func removeOwners(where isGone: (Owner) -> Bool) {
        for (pattern, owners) in ownersByPattern {
            for owner in owners where isGone(owner) { remove(pattern, owner: owner) }
        }
    }

    /// Calls `body` for each owner of each pattern matching `subject` (an owner of several matching patterns
    /// more than once).
    public func forEachOwner(matching subject: String, _ body: (Owner) -> Void) {
        guard !isEmpty else { return }
        let levels = subject.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        // MQTT 4.7.2: a wildcard first level does not match a topic starting with `$`.
        let wildcardsAtRoot = levels.first?.first != "$"
        visit(root, levels: levels, index: 0, wildcards: wildcardsAtRoot, body)
    }

    /// The owners of patterns matching `subject`, each once.
    public func owners(matching subject: String) -> Set<Owner> {
        var owners = Set<Owner>()
        forEachOwner(matching: subject) { owners.insert($0) }
        return owners
    }

    private func visit(_ node: Node, levels: [Substring], index: Int, wildcards: Bool, _ body: (Owner) -> Void) {
        if wildcards { for owner in node.anyRestOwners { body(owner) } }
        guard index < levels.count else {
            for owner in node.owners { body(owner) }
            return
        }
        if let next = node.literals[levels[index]] { visit(next, levels: levels, index: index + 1, wildcards: true, body) }
        if wildcards, let next = node.anyOne { visit(next, levels: levels, index: index + 1, wildcards: true, body) }
    }

    /// Removes `owner` where `levels` end below `node`, and prunes the nodes left empty.
    private func remove(_ owner: Owner, of levels: ArraySlice<SubjectPattern.Level>, from node: Node) {
        guard let level = levels.first else {
            node.owners.remove(owner)
            return
        }
        switch level {
        case .anyRest:
            node.anyRestOwners.remove(owner)
        case .anyOne:
            guard let next = node.anyOne else { return }
            remove(owner, of: levels.dropFirst(), from: next)
            if next.isEmpty { node.anyOne = nil }
        case .literal(let name):
            guard let next = node.literals[name] else { return }
            remove(owner, of: levels.dropFirst(), from: next)
            if next.isEmpty { node.literals[name] = nil }
        }
    }
}
