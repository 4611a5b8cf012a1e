import Foundation

/// Statistics over positions grouped by prompt. Positions of one prompt are not independent
/// (an early error shifts everything after it), so uncertainty is computed with the prompt as
/// the unit: standard errors clustered by prompt and a bootstrap that resamples whole prompts.
public struct ClusteredStatistics: Sendable {
    /// How many times each prompt is drawn in each bootstrap resample: (resamples, prompts).
    let weights: [[Double]]
    let clusters: Int

    public static let resamples = 1000

    /// The same seed gives the same resamples, so intervals are reproducible byte for byte.
    public init(clusters: Int, seed: UInt64, resamples: Int = ClusteredStatistics.resamples) {
        self.clusters = clusters
        var random = RandomStream(seed: seed ^ 0xB007_5742)
        var w: [[Double]] = []
        w.reserveCapacity(resamples)
        for _ in 0..<resamples {
            var row = [Double](repeating: 0, count: clusters)
            for _ in 0..<clusters where clusters > 0 { row[Int(random.next() % UInt64(clusters))] += 1 }
            w.append(row)
        }
        weights = w
    }

    /// Mean of all positions = Σ sums / Σ counts, with the cluster-robust standard error
    /// sqrt(G/(G−1) · Σ_g (S_g − n_g·m)²) / N.
    public func mean(sums: [Double], counts: [Int]) -> (mean: Double, se: Double) {
        let n = counts.reduce(0, +)
        guard n > 0 else { return (.nan, .nan) }
        let m = sums.reduce(0, +) / Double(n)
        let g = sums.count
        guard g > 1 else { return (m, 0) }
        var s = 0.0
        for i in 0..<g {
            let r = sums[i] - Double(counts[i]) * m
            s += r * r
        }
        return (m, (Double(g) / Double(g - 1) * s).squareRoot() / Double(n))
    }

    /// Percentile 95% interval of the ratio estimator over prompt resamples.
    public func interval(sums: [Double], counts: [Int]) -> (Double, Double) {
        precondition(sums.count == clusters && counts.count == clusters)
        var values: [Double] = []
        values.reserveCapacity(weights.count)
        for w in weights {
            var s = 0.0, n = 0.0
            for g in 0..<clusters where w[g] > 0 {
                s += w[g] * sums[g]
                n += w[g] * Double(counts[g])
            }
            if n > 0 { values.append(s / n) }
        }
        guard !values.isEmpty else { return (.nan, .nan) }
        values.sort()
        return (LlamaCppStatistics.percentile(values, 0.025), LlamaCppStatistics.percentile(values, 0.975))
    }

    /// The percentile set llama.cpp prints, from sorted values.
    public static func percentiles(sorted: [Double]) -> [(String, Double)] {
        LlamaCppStatistics.percentileKeys.map { ($0.0, LlamaCppStatistics.percentile(sorted, $0.1)) }
    }
}

/// Position bins: log-spaced (1, 2–3, 4–7, …) and fixed 64-token bins, positions 1-based.
public struct PositionBins: Sendable {
    public let ranges: [ClosedRange<Int>]

    public static func logSpaced(upTo maxPosition: Int) -> PositionBins {
        var r: [ClosedRange<Int>] = []
        var start = 1
        while start <= maxPosition {
            r.append(start...min(2 * start - 1, maxPosition))
            start *= 2
        }
        return PositionBins(ranges: r)
    }

    public static func fixed(_ width: Int, upTo maxPosition: Int) -> PositionBins {
        PositionBins(ranges: stride(from: 1, through: max(maxPosition, 1), by: width).map { $0...min($0 + width - 1, max(maxPosition, 1)) })
    }

    /// Index of the bin holding `position`.
    public func index(of position: Int) -> Int? {
        var lo = 0, hi = ranges.count - 1
        while lo <= hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < position { lo = mid + 1 }
            else if ranges[mid].lowerBound > position { hi = mid - 1 }
            else { return mid }
        }
        return nil
    }
}

/// Least-squares slope of y on x.
func leastSquaresSlope(_ xs: [Double], _ ys: [Double]) -> Double? {
    guard xs.count >= 2 else { return nil }
    let n = Double(xs.count)
    let mx = xs.reduce(0, +) / n, my = ys.reduce(0, +) / n
    var sxy = 0.0, sxx = 0.0
    for i in 0..<xs.count {
        sxy += (xs[i] - mx) * (ys[i] - my)
        sxx += (xs[i] - mx) * (xs[i] - mx)
    }
    return sxx > 0 ? sxy / sxx : nil
}

/// Share of the 4-grams of `tokens` that already occurred earlier in `tokens` (degeneration).
func repeatedNGramShare(_ tokens: [Int], n: Int = 4) -> Double {
    guard tokens.count >= n else { return 0 }
    var seen = Set<[Int]>()
    var repeated = 0
    for i in 0...(tokens.count - n) {
        if !seen.insert(Array(tokens[i..<(i + n)])).inserted { repeated += 1 }
    }
    return Double(repeated) / Double(tokens.count - n + 1)
}

/// Whether two continuations that differ from `firstDivergence` (0-based) meet again: a run of
/// `run` identical tokens after it, at the same place give or take `maxShift` tokens.
func reconverges(_ a: [Int], _ b: [Int], after firstDivergence: Int, run: Int = 8, maxShift: Int = 8) -> Bool {
    guard firstDivergence + 1 < a.count else { return false }
    for i in (firstDivergence + 1)..<a.count where i + run <= a.count {
        for shift in -maxShift...maxShift {
            let j = i + shift
            guard j > firstDivergence, j + run <= b.count else { continue }
            var k = 0
            while k < run && a[i + k] == b[j + k] { k += 1 }
            if k == run { return true }
        }
    }
    return false
}
