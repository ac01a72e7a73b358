/// A set of ingress instance numbers, as the cache and the fanout keep one per subject: a bit per instance below
/// 64 (`IngressInstances` is at most 64), held inline, so a subject's interest costs no allocation. Any other
/// number (none comes from this pipeline) goes to a set beside the bits.
public struct IngressSet: Sequence, Equatable, ExpressibleByArrayLiteral, Sendable {
    private var bits: UInt64 = 0
    private var others: Set<UInt32>?

    public init() {}

    public init(arrayLiteral ingresses: UInt32...) {
        for ingress in ingresses { insert(ingress) }
    }

    public var isEmpty: Bool { bits == 0 && (others?.isEmpty ?? true) }

    public func contains(_ ingress: UInt32) -> Bool {
        ingress < 64 ? bits & (1 << UInt64(ingress)) != 0 : others?.contains(ingress) ?? false
    }

    public mutating func insert(_ ingress: UInt32) {
        if ingress < 64 {
            bits |= 1 << UInt64(ingress)
        } else {
            others = (others ?? []).union([ingress])
        }
    }

    public mutating func remove(_ ingress: UInt32) {
        if ingress < 64 {
            bits &= ~(1 << UInt64(ingress))
        } else {
            others?.remove(ingress)
            if others?.isEmpty == true { others = nil }
        }
    }

    /// The members for which `isIncluded` is true.
    public func filtered(_ isIncluded: (UInt32) -> Bool) -> IngressSet {
        var kept = IngressSet()
        for ingress in self where isIncluded(ingress) { kept.insert(ingress) }
        return kept
    }

    /// The members below 64 in increasing order, then the others.
    public struct Iterator: IteratorProtocol {
        fileprivate var bits: UInt64
        fileprivate var others: Set<UInt32>.Iterator?

        public mutating func next() -> UInt32? {
            guard bits != 0 else { return others?.next() }
            let lowest = UInt32(bits.trailingZeroBitCount)
            bits &= bits - 1
            return lowest
        }
    }

    public func makeIterator() -> Iterator {
        Iterator(bits: bits, others: others?.makeIterator())
    }
}
