import Foundation

/// HQQ (Badri & Shaji 2023, "Half-Quadratic Quantization"): calibration-free asymmetric
/// quantization that fits each group's zero point by half-quadratic splitting of an l_p (p < 1)
/// reconstruction loss, which tolerates the few large errors outliers cause instead of letting
/// them pull the whole grid. As the reference implementation's `optimize_weights_proximal_legacy`:
///
///     scale = (2^b − 1) / (max − min) (capped at 2·10⁴), zero = −min·scale
///     repeat ≤ 20 times:  W_q = clamp(round(W·scale + zero))      W_r = (W_q − zero) / scale
///                         W_e = shrink_p(W − W_r, β)              zero = mean_group(W_q − (W − W_e)·scale)
///                         β ← κ·β;  stop once the mean |W − W_r| over the matrix stops falling
///     shrink_p(x, β) = sign(x)·max(0, |x| − |x|^(p−1)/β),  p = 0.7, β₀ = 10, κ = 1.01
///
/// The scale stays the min–max one; only the zero moves (a float, not rounded). Groups run along
/// the input dimension (HQQ's axis=1, the layout of our integer kernels; its default axis=0
/// groups along outputs). Codes u in 0…2^b − 1 decode as (1/scale)·u − zero/scale.
public enum HQQ {
    public static let lpNorm: Float = 0.7
    public static let beta0: Float = 10
    public static let kappa: Float = 1.01
    public static let iterations = 20

    public static func quantize(_ w: [Float], rows: Int, cols: Int, bits: Int, group: Int) -> QuantizedMatrix {
        precondition(w.count == rows * cols && bits >= 2 && bits <= 4 && group >= 1)
        let grid = UniformGrid(bits: bits, symmetric: false)
        let maxV = Float((1 << bits) - 1)
        let ng = (cols + group - 1) / group
        var scale = [Float](repeating: 0, count: rows * ng), zero = [Float](repeating: 0, count: rows * ng)
        @inline(__always) func span(_ gi: Int) -> Range<Int> {
            let r = gi / ng, g = gi % ng
            return (r * cols + g * group)..<(r * cols + min(cols, g * group + group))
        }
        w.withUnsafeBufferPointer { x in
            for gi in 0..<(rows * ng) {
                var lo = Float.infinity, hi = -Float.infinity
                for i in span(gi) { lo = min(lo, x[i]); hi = max(hi, x[i]) }
                let s = min(maxV / (hi - lo), 2e4)  // hi == lo: +inf, capped
                scale[gi] = s
                zero[gi] = -lo * s
            }
            var beta = beta0, best = Double.infinity
            for _ in 0..<iterations {
                var errorSum = 0.0
                let invBeta = 1 / beta
                // shrink_p(e) > 0 needs |e|·(|e| + 1e-8)^(1−p) > 1/β: below `surelyZero` (90% of the |e|
                // solving |e|^(2−p) = 1/β) the shrink is exactly 0, so pow is skipped there.
                let surelyZero = 0.9 * pow(invBeta, 1 / (2 - lpNorm))
                for gi in 0..<(rows * ng) {
                    let s = scale[gi], z = zero[gi]
                    var acc: Float = 0
                    let range = span(gi)
                    for i in range {
                        let q = min(max((x[i] * s + z).rounded(.toNearestOrEven), 0), maxV)
                        let e = x[i] - (q - z) / s
                        errorSum += Double(abs(e))
                        let a = abs(e)
                        let shrunk = a <= surelyZero ? 0 : max(0, a - invBeta * pow(a + 1e-8, lpNorm - 1))
                        let we = e < 0 ? -shrunk : (e > 0 ? shrunk : 0)
                        acc += q - (x[i] - we) * s
                    }
                    zero[gi] = acc / Float(range.count)
                }
                beta *= kappa
                let current = errorSum / Double(w.count)
                if current < best { best = current } else { break }
            }
        }
        var codes = [Int](repeating: 0, count: rows * cols)
        var cells = [UniformCell](repeating: UniformCell(scale: 0, inv: 0, zero: 0, min: 0), count: rows * ng)
        for gi in 0..<(rows * ng) {
            let s = scale[gi], z = zero[gi]
            cells[gi] = UniformCell(scale: 1 / s, inv: s, zero: z, min: -z / s)
            for i in span(gi) { codes[i] = Int(min(max((w[i] * s + z).rounded(.toNearestOrEven), 0), maxV)) }
        }
        return grid.matrix(rows: rows, cols: cols, group: group, codes: codes, cells: cells)
    }
}
