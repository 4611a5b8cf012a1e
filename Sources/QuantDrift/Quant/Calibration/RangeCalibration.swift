import Foundation

/// Turns the |x| histogram of a tensor into one clip threshold T for symmetric int8
/// (scale T/127): minmax, percentile, MSE-optimal, or TensorRT's entropy (KL) method.
public enum RangeCalibration {
    /// Positive int8 levels (codes 1…127 plus zero).
    public static let int8Max: Double = 127

    public static func threshold(_ method: CalibrationMethod, histogram: AbsHistogram, maxAbs: Float) -> Float {
        let t: Float
        switch method {
        case .minmax: t = maxAbs
        case .percentile(let p): t = min(maxAbs, histogram.percentile(p))
        case .mse: t = mseThreshold(histogram)
        case .entropy: t = entropyThreshold(histogram)
        }
        // A tensor that is all zeros still needs a usable (positive) scale.
        return t > 0 && t.isFinite ? t : (maxAbs > 0 && maxAbs.isFinite ? maxAbs : 1)
    }

    /// ∫₀ᵘ (s − round(s))² ds for u ≥ 0, in units of the quantization step.
    @inline(__always)
    static func sawtoothIntegral(_ u: Double) -> Double {
        let k = u.rounded(.toNearestOrAwayFromZero)
        let r = u - k
        return k / 12 + r * r * r / 3
    }

    /// Expected squared error per element of symmetric int8 with clip threshold `t` (step t/127),
    /// each bin's values taken as uniform over the bin: rounding error below t, clipping error above.
    public static func expectedSquaredError(_ h: AbsHistogram, threshold t: Double) -> Double {
        let w = h.binWidth
        let step = t / int8Max
        guard step > 0 else { return .infinity }
        var err = 0.0
        for (i, n) in h.counts.enumerated() where n > 0 {
            let a = Double(i) * w, b = a + w
            // Part of the bin below the threshold: rounding error.
            let hi = min(b, t)
            if hi > a {
                let e = step * step * step * (sawtoothIntegral(hi / step) - sawtoothIntegral(a / step))
                err += n * e / w
            }
            // Part above: (x − t)², integrated over [max(a, t), b].
            let lo = max(a, t)
            if b > lo {
                let e = (pow(b - t, 3) - pow(lo - t, 3)) / 3
                err += n * e / w
            }
        }
        let tot = h.total
        return tot > 0 ? err / tot : 0
    }

    /// The bin edge (from 1 bin up to all of them) minimising `expectedSquaredError`.
    public static func mseThreshold(_ h: AbsHistogram) -> Float {
        var best = Double.infinity, bestT = Double(h.upper)
        let w = h.binWidth
        for i in 1...h.bins {
            let t = Double(i) * w
            let e = expectedSquaredError(h, threshold: t)
            if e < best {
                best = e
                bestT = t
            }
        }
        return Float(bestT)
    }

    /// TensorRT's entropy calibration: for every candidate i ≥ `levels` bins, the reference P is
    /// the first i bins with the mass beyond folded into the last; the candidate Q merges those i
    /// bins (without the folded mass) into `levels` levels and spreads each level evenly over the
    /// bins where P is non-zero. The threshold is the upper edge of the i minimising KL(P‖Q).
    /// O(bins × levels) through prefix sums.
    public static func entropyThreshold(_ h: AbsHistogram, levels: Int = 128) -> Float {
        let n = h.bins
        guard n > levels else { return h.upper }
        let b = h.counts
        var cum = [Double](repeating: 0, count: n + 1)      // Σ b
        var nz = [Double](repeating: 0, count: n + 1)       // non-zero bins
        var blogb = [Double](repeating: 0, count: n + 1)    // Σ b log b
        for i in 0..<n {
            cum[i + 1] = cum[i] + b[i]
            nz[i + 1] = nz[i] + (b[i] > 0 ? 1 : 0)
            blogb[i + 1] = blogb[i] + (b[i] > 0 ? b[i] * log(b[i]) : 0)
        }
        let total = cum[n]
        guard total > 0 else { return h.upper }
        let logZ = log(total)
        var best = Double.infinity, bestI = n
        for i in levels...n {
            let outliers = total - cum[i]
            let last = b[i - 1] + outliers
            // Σ p log p over the first i−1 bins, plus the last (folded) bin.
            var plogp = (blogb[i - 1] - cum[i - 1] * logZ) / total
            if last > 0 { plogp += last / total * (log(last) - logZ) }
            // Σ p log q, one level at a time.
            let zq = cum[i]
            guard zq > 0 else { continue }
            let merged = i / levels
            var plogq = 0.0
            for j in 0..<levels {
                let s = j * merged, e = j == levels - 1 ? i : s + merged
                let qj = cum[e] - cum[s]
                var nonzero = nz[e] - nz[s]
                var pj = qj
                if j == levels - 1 {
                    pj += outliers
                    if b[i - 1] == 0 && last > 0 { nonzero += 1 }
                }
                guard pj > 0 else { continue }
                // An empty level under folded mass: smooth with half a count rather than log 0.
                let q = max(qj, 0.5) / (nonzero * zq)
                plogq += pj / total * log(q)
            }
            let kl = plogp - plogq
            if kl < best {
                best = kl
                bestI = i
            }
        }
        return Float(Double(bestI) * h.binWidth)
    }
}
