import Foundation

/// A histogram of |x| over [0, upper] in equal bins (values ≥ upper land in the last bin).
public struct AbsHistogram: Sendable, Equatable {
    /// Upper edge of the last bin.
    public var upper: Float
    /// Counts per bin (Double: exact up to 2⁵³).
    public var counts: [Double]

    public init(upper: Float, bins: Int = AbsHistogram.defaultBins) {
        precondition(bins >= 1)
        self.upper = upper
        counts = [Double](repeating: 0, count: bins)
    }

    /// 2048 bins, as TensorRT's entropy calibration uses.
    public static let defaultBins = 2048

    public var bins: Int { counts.count }
    public var binWidth: Double { Double(upper) / Double(counts.count) }
    public var total: Double { counts.reduce(0, +) }

    public mutating func add(_ values: some Sequence<Float>) {
        let n = counts.count
        let inv = upper > 0 ? Double(n) / Double(upper) : 0
        for v in values {
            let b = min(n - 1, Int(Double(abs(v)) * inv))
            counts[max(0, b)] += 1
        }
    }

    /// The value below which `p` percent of the counts lie, interpolated linearly inside its bin.
    public func percentile(_ p: Double) -> Float {
        let tot = total
        guard tot > 0 else { return 0 }
        let target = p / 100 * tot
        var cum = 0.0
        for (i, c) in counts.enumerated() {
            if cum + c >= target && c > 0 {
                let frac = min(1, max(0, (target - cum) / c))
                return Float((Double(i) + frac) * binWidth)
            }
            cum += c
        }
        return upper
    }
}
