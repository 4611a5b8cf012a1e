/// Plain scalar twins of the SIMD kernels: the algorithmic reference the fast paths are tested
/// against (written for clarity, not speed).
public enum ReferenceKernels {
    /// y = dequantize(W) · x, accumulated in Double.
    public static func gemv(_ m: QuantizedMatrix, _ x: [Float]) -> [Float] {
        precondition(x.count == m.cols)
        return (0..<m.rows).map { r in
            var s = 0.0
            for c in 0..<m.cols { s += Double(m.value(r, c)) * Double(x[c]) }
            return Float(s)
        }
    }

    /// Exact integer dot product.
    public static func dot(_ a: [Int], _ b: [Int8]) -> Int32 {
        var s: Int32 = 0
        for i in a.indices { s += Int32(a[i]) * Int32(b[i]) }
        return s
    }

    /// Integer-activation product for one activation row (codes, per-group scales): over spans of
    /// min(group, xgroup) elements, y += s_w·s_x·Σ code_w·code_x + m_w·s_x·Σ code_x, the same
    /// formula and order as the kernels.
    public static func gemvInt(_ m: QuantizedMatrix, codes x: [Int8], scales xs: [Float], xgroup: Int) -> [Float] {
        let span = min(m.groupSize, xgroup)
        return (0..<m.rows).map { r in
            var acc: Float = 0
            var lo = 0
            while lo < m.cols {
                let hi = min(lo + span, m.cols)
                let g = r * m.groupsPerRow + lo / m.groupSize
                var dot: Int32 = 0, sum: Int32 = 0
                for c in lo..<hi {
                    dot += Int32(m.code(r, c)) * Int32(x[c])
                    sum += Int32(x[c])
                }
                let sx = xs[lo / xgroup]
                acc += m.scales[g] * sx * Float(dot)
                if let mins = m.mins { acc += mins[g] * sx * Float(sum) }
                lo = hi
            }
            return acc
        }
    }

    /// An activation code: x·inv rounded half away from zero, clamped to ±127, NaN coded 0.
    public static func activationCode(_ x: Float, inv: Float) -> Int8 {
        let q = (x * inv).rounded(.toNearestOrAwayFromZero)
        return Int8(max(-127, min(127, q.isNaN ? 0 : q)))
    }

    /// max |x|, NaN ignored (Swift's `max` keeps the running value when the new one is NaN).
    public static func absMax(_ x: [Float]) -> Float { x.reduce(0) { max($0, abs($1)) } }

    /// `gemvInt` of one activation row `x` quantized by `act` (the integer paths' scalar twin).
    public static func gemvInt(_ m: QuantizedMatrix, activations act: ActivationQuantizer, _ x: [Float]) -> [Float] {
        let n = x.count
        var codes = [Int8](repeating: 0, count: n)
        var scales = [Float](repeating: 0, count: n)
        var sums = [Int32](repeating: 0, count: n / 32 + 1)
        act.quantize(x, rows: 1, inDim: n, codes: &codes, scales: &scales, blockSums: &sums)
        return gemvInt(m, codes: codes, scales: scales, xgroup: act.groupSize(inDim: n))
    }
}
