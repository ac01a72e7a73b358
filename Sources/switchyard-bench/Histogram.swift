/// A log-linear latency histogram (HdrHistogram-like, ~0.8 % resolution): values below 256 are exact, above that
/// each power of two is split into 128 sub-buckets. Values are nanoseconds. Not thread-safe: one per event loop,
/// merged when the run is over.
struct Histogram {
    private static let exactBelow: UInt64 = 256
    private static let subBuckets = 128
    static let bucketCount = 256 + (63 - 8 + 1) * 128

    private(set) var counts = [UInt64](repeating: 0, count: Histogram.bucketCount)
    private(set) var total: UInt64 = 0
    private(set) var max: UInt64 = 0
    private(set) var sum: Double = 0

    @inline(__always)
    static func index(_ value: UInt64) -> Int {
        if value < exactBelow { return Int(value) }
        let exponent = 63 - value.leadingZeroBitCount  // >= 8
        let sub = Int(truncatingIfNeeded: value >> UInt64(exponent - 7))  // 128...255
        return 256 + (exponent - 8) * subBuckets + (sub - subBuckets)
    }

    /// The middle of the values that fall in bucket `index`.
    static func representative(_ index: Int) -> UInt64 {
        if index < 256 { return UInt64(index) }
        let exponent = (index - 256) / subBuckets + 8
        let sub = UInt64((index - 256) % subBuckets + subBuckets)
        let width = UInt64(1) << UInt64(exponent - 7)
        return sub * width + width / 2
    }

    @inline(__always)
    mutating func record(_ value: UInt64) {
        counts[Self.index(value)] &+= 1
        total &+= 1
        sum += Double(value)
        if value > max { max = value }
    }

    mutating func merge(_ other: Histogram) {
        for index in 0..<counts.count where other.counts[index] != 0 { counts[index] &+= other.counts[index] }
        total &+= other.total
        sum += other.sum
        if other.max > max { max = other.max }
    }

    /// The value at `percentile` (0...100); the exact maximum for 100.
    func value(atPercentile percentile: Double) -> UInt64 {
        guard total > 0 else { return 0 }
        if percentile >= 100 { return max }
        let rank = Swift.max(UInt64(1), UInt64((percentile / 100 * Double(total)).rounded(.up)))
        var seen: UInt64 = 0
        for (index, count) in counts.enumerated() where count != 0 {
            seen += count
            if seen >= rank { return Swift.min(Self.representative(index), max) }
        }
        return max
    }

    var mean: Double { total == 0 ? 0 : sum / Double(total) }
}
