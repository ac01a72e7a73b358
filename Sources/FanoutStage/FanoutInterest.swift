import SwitchyardCore

/// Which ingress instances want a subject's messages: those with subscribers of the subject itself, and those
/// with subscribers of a pattern matching it (MQTT wildcards). Pure logic, for the fanout and its tests.
final class FanoutInterest {
    /// Subject → the ingress instances with at least one subscriber.
    private var exact: [String: IngressSet] = [:]
    private let patterns = PatternMatcher<UInt32>()

    var subjectCount: Int { exact.count }
    var patternCount: Int { patterns.count }

    func apply(_ interest: Interest) {
        if interest.isAdded {
            exact[interest.subject, default: []].insert(interest.ingress)
        } else if var ingresses = exact[interest.subject] {
            ingresses.remove(interest.ingress)
            exact[interest.subject] = ingresses.isEmpty ? nil : ingresses
        }
    }

    /// False (and nothing changed) for a pattern that does not parse.
    func apply(_ interest: PatternInterest) -> Bool {
        guard let pattern = try? SubjectPattern(interest.pattern) else { return false }
        if interest.isAdded {
            patterns.insert(pattern, owner: interest.ingress)
        } else {
            patterns.remove(pattern, owner: interest.ingress)
        }
        return true
    }

    /// Calls `body` once for each ingress interested in `subject`. Without patterns this is the one lookup it
    /// always was.
    func forEachIngress(interestedIn subject: String, _ body: (UInt32) -> Void) {
        if patterns.isEmpty {
            exact[subject]?.forEach(body)
            return
        }
        var ingresses = exact[subject] ?? []
        patterns.forEachOwner(matching: subject) { ingresses.insert($0) }
        ingresses.forEach(body)
    }

    /// Forgets every pattern of one ingress instance (it restarted).
    func forgetPatterns(of ingress: UInt32) {
        patterns.removeOwners { $0 == ingress }
    }

    /// Forgets the ingress instances from `count` on (scaled away).
    func keepIngresses(below count: UInt32) {
        for (subject, ingresses) in exact {
            let kept = ingresses.filtered { $0 < count }
            exact[subject] = kept.isEmpty ? nil : kept
        }
        patterns.removeOwners { $0 >= count }
    }
}
