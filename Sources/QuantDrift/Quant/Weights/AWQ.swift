import COpenBLAS
import Foundation

/// AWQ (Lin et al. 2023): before round-to-nearest, every input channel j of a weight is scaled by
/// s_j = mean|x_j|^α (normalised by √(max·min), as in the reference), so channels that carry large
/// activations lose less to rounding; the input is divided by s, which is folded exactly into the
/// operation that produces it:
/// - attention and feed-forward inputs: the RMSNorm weight;
/// - the attention output (input of attn_o): the rows of attn_v (and its bias), one s per KV
///   channel since with GQA a KV channel feeds several heads (the heads' mean |x| are averaged);
/// - the input of ffn_down: the rows of ffn_up (SwiGLU is linear in up).
/// α is searched on {0, 0.05, …, 1} per site, minimising ‖X·Ŵᵀ − X·Wᵀ‖² summed over the site's
/// matrices on sampled calibration rows X (and at most 256 evenly spaced weight rows), where
/// Ŵ = RTN(W·diag(s))·diag(1/s) on `WeightQuantizer.uniform`'s grid. α = 0 is plain RTN, so the
/// chosen scales never do worse than RTN on the calibration rows.
public enum AWQ {
    public static let alphas: [Float] = (0...20).map { Float($0) / 20 }
    /// Most weight rows per matrix used to score an α.
    static let scoredRows = 256

    /// The scales of one layer, per input channel of each site.
    public struct LayerScales: Sendable {
        public var attentionInput: [Float]      // (dim)
        public var attentionOutput: [Float]     // (qDim), equal across the heads sharing a KV head
        public var feedForwardInput: [Float]    // (dim)
        public var feedForwardDown: [Float]     // (hiddenDim)
        /// The α chosen per site, in the order above.
        public var alphas: [Float]
    }

    /// The grid to search on.
    struct Grid {
        let uniform: UniformGrid
        let group: Int          // ≤ cols of each matrix: min(group, cols) is taken
        let sharedAcrossRows: Bool
    }

    // MARK: - Applying scales (exact in FP32 up to rounding)

    /// W·diag(s) for every weight reading a site, 1/s folded into what produces the site's input.
    public static func apply(_ scales: [LayerScales], to w: ModelWeights, config c: ModelConfig) -> ModelWeights {
        var out = w
        let hd = c.headDim, group = c.headCount / c.kvHeadCount
        for (l, s) in scales.enumerated() {
            var L = out.layers[l]
            // Attention output: s per KV channel (kvh·hd + d), read from head kvh·group.
            var sKV = [Float](repeating: 1, count: c.kvDim)
            for kvh in 0..<c.kvHeadCount { for d in 0..<hd { sKV[kvh * hd + d] = s.attentionOutput[kvh * group * hd + d] } }
            scaleRows(&L.wv, cols: c.dim, by: sKV, inverse: true)
            if var bv = L.bv { for i in bv.indices { bv[i] /= sKV[i] }; L.bv = bv }
            scaleColumns(&L.wo, cols: c.qDim, by: s.attentionOutput)
            // Attention input.
            for i in L.attnNorm.indices { L.attnNorm[i] /= s.attentionInput[i] }
            scaleColumns(&L.wq, cols: c.dim, by: s.attentionInput)
            scaleColumns(&L.wk, cols: c.dim, by: s.attentionInput)
            scaleColumns(&L.wv, cols: c.dim, by: s.attentionInput)
            // ffn_down input: SwiGLU(g, u) = silu(g)·u, so 1/s goes into the rows of up.
            scaleRows(&L.wUp, cols: c.dim, by: s.feedForwardDown, inverse: true)
            scaleColumns(&L.wDown, cols: c.hiddenDim, by: s.feedForwardDown)
            // Feed-forward input.
            for i in L.ffnNorm.indices { L.ffnNorm[i] /= s.feedForwardInput[i] }
            scaleColumns(&L.wGate, cols: c.dim, by: s.feedForwardInput)
            scaleColumns(&L.wUp, cols: c.dim, by: s.feedForwardInput)
            out.layers[l] = L
        }
        return out
    }

    static func scaleColumns(_ w: inout [Float], cols: Int, by s: [Float]) {
        w.withUnsafeMutableBufferPointer { p in
            for r in 0..<(p.count / cols) { for c in 0..<cols { p[r * cols + c] *= s[c] } }
        }
    }

    static func scaleRows(_ w: inout [Float], cols: Int, by s: [Float], inverse: Bool) {
        w.withUnsafeMutableBufferPointer { p in
            for r in 0..<(p.count / cols) {
                let f = s[r]
                for c in 0..<cols { p[r * cols + c] = inverse ? p[r * cols + c] / f : p[r * cols + c] * f }
            }
        }
    }

    /// The scales of one fixed α at every site (no search): for ablations and the folding test.
    static func fixed(alpha: Float, stats: LinearInputStats, config c: ModelConfig) -> [LayerScales] {
        let hd = c.headDim, group = c.headCount / c.kvHeadCount
        func scales(_ mean: [Double]) -> [Float] {
            let s = mean.map { max(alpha == 0 ? 1 : pow(Float(max($0, 0)), alpha), 1e-4) }
            let norm = (s.max()! * s.min()!).squareRoot()
            return norm > 0 ? s.map { $0 / norm } : s
        }
        return (0..<c.layerCount).map { l in
            let mOut = stats.meanAbs(layer: l, site: .attentionOutput)
            var kvMean = [Double](repeating: 0, count: c.kvDim)
            for h in 0..<c.headCount { for d in 0..<hd { kvMean[(h / group) * hd + d] += mOut[h * hd + d] / Double(group) } }
            let sKV = scales(kvMean)
            return LayerScales(attentionInput: scales(stats.meanAbs(layer: l, site: .attentionInput)),
                               attentionOutput: (0..<c.qDim).map { sKV[(($0 / hd) / group) * hd + $0 % hd] },
                               feedForwardInput: scales(stats.meanAbs(layer: l, site: .feedForwardInput)),
                               feedForwardDown: scales(stats.meanAbs(layer: l, site: .feedForwardDownInput)),
                               alphas: [alpha, alpha, alpha, alpha])
        }
    }

    // MARK: - Search

    /// Searches the scales of every layer on calibration statistics (mean |x| and sampled rows).
    static func search(weights w: ModelWeights, config c: ModelConfig, stats: LinearInputStats, grid: Grid) -> [LayerScales] {
        var result: [LayerScales] = []
        let hd = c.headDim, group = c.headCount / c.kvHeadCount
        for l in 0..<c.layerCount {
            var L = w.layers[l]
            func xs(_ site: LinearSite) -> (x: [Float], n: Int) {
                let i = stats.index(layer: l, site: site)!
                return (stats.samples[i], stats.samples[i].count / stats.widths[i % 4])
            }
            // 1. Attention output, one s per KV channel.
            let mOut = stats.meanAbs(layer: l, site: .attentionOutput)
            var kvMean = [Double](repeating: 0, count: c.kvDim)
            for h in 0..<c.headCount { for d in 0..<hd { kvMean[(h / group) * hd + d] += mOut[h * hd + d] / Double(group) } }
            let expand: ([Float]) -> [Float] = { sKV in (0..<c.qDim).map { sKV[(($0 / hd) / group) * hd + $0 % hd] } }
            let xo = xs(.attentionOutput)
            let (sKV, aOut) = best(mean: kvMean, samples: xo.x, n: xo.n, width: c.qDim, grid: grid, expand: expand,
                                   matrices: [(L.wo, c.dim)])
            let sOut = expand(sKV)
            scaleRows(&L.wv, cols: c.dim, by: sKV, inverse: true)  // fold before q/k/v are scored
            // 2. Attention input: q, k, v together.
            let xi = xs(.attentionInput)
            let (sIn, aIn) = best(mean: stats.meanAbs(layer: l, site: .attentionInput), samples: xi.x, n: xi.n, width: c.dim,
                                  grid: grid, expand: { $0 }, matrices: [(L.wq, c.qDim), (L.wk, c.kvDim), (L.wv, c.kvDim)])
            // 3. ffn_down input.
            let xd = xs(.feedForwardDownInput)
            let (sDown, aDown) = best(mean: stats.meanAbs(layer: l, site: .feedForwardDownInput), samples: xd.x, n: xd.n,
                                      width: c.hiddenDim, grid: grid, expand: { $0 }, matrices: [(L.wDown, c.dim)])
            scaleRows(&L.wUp, cols: c.dim, by: sDown, inverse: true)
            // 4. Feed-forward input: gate and up together.
            let xf = xs(.feedForwardInput)
            let (sFfn, aFfn) = best(mean: stats.meanAbs(layer: l, site: .feedForwardInput), samples: xf.x, n: xf.n, width: c.dim,
                                    grid: grid, expand: { $0 }, matrices: [(L.wGate, c.hiddenDim), (L.wUp, c.hiddenDim)])
            result.append(LayerScales(attentionInput: sIn, attentionOutput: sOut, feedForwardInput: sFfn,
                                      feedForwardDown: sDown, alphas: [aIn, aOut, aFfn, aDown]))
        }
        return result
    }

    /// The α (and its scales, before `expand`) with the least output error over `matrices`
    /// ((weights, rows); each has `width` columns) on the sampled inputs.
    static func best(mean: [Double], samples x: [Float], n: Int, width: Int, grid: Grid, expand: ([Float]) -> [Float],
                     matrices: [([Float], Int)]) -> (scales: [Float], alpha: Float) {
        precondition(n > 0 && x.count == n * width)
        // Each matrix: its scored rows (evenly spaced), their reference outputs X·Wᵀ.
        struct Scored { let rows: [Int]; let w: [Float]; let ref: [Float]; let full: [Float]; let fullRows: Int }
        let scored: [Scored] = matrices.map { (w, rows) in
            let pick = rows <= scoredRows ? Array(0..<rows) : (0..<scoredRows).map { $0 * rows / scoredRows }
            var sub = [Float](repeating: 0, count: pick.count * width)
            for (k, r) in pick.enumerated() { for c in 0..<width { sub[k * width + c] = w[r * width + c] } }
            var ref = [Float](repeating: 0, count: n * pick.count)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(pick.count), Int32(width), 1, x, Int32(width),
                        sub, Int32(width), 0, &ref, Int32(pick.count))
            return Scored(rows: pick, w: sub, ref: ref, full: w, fullRows: rows)
        }
        let clamped = mean.map { Float(max($0, 0)) }
        var bestErr = Double.infinity, bestAlpha: Float = 0, bestScales = [Float](repeating: 1, count: mean.count)
        for alpha in alphas {
            var s = clamped.map { max(alpha == 0 ? 1 : pow($0, alpha), 1e-4) }
            let norm = (s.max()! * s.min()!).squareRoot()
            if norm > 0 { s = s.map { $0 / norm } }
            let sx = expand(s)
            var err = 0.0
            for m in scored {
                let k = m.rows.count
                // Ŵ for the scored rows: RTN(W·diag(s))·diag(1/s).
                var eff = [Float](repeating: 0, count: k * width)
                var global: UniformCell? = nil
                if grid.sharedAcrossRows {
                    var lo = Float.infinity, hi = -Float.infinity
                    for r in 0..<m.fullRows { for c in 0..<width { let v = m.full[r * width + c] * sx[c]; lo = min(lo, v); hi = max(hi, v) } }
                    global = grid.uniform.cell(lo: lo, hi: hi)
                }
                let g = min(grid.group, width)
                var buf = [Float](repeating: 0, count: width)
                for r in 0..<k {
                    for c in 0..<width { buf[c] = m.w[r * width + c] * sx[c] }
                    buf.withUnsafeBufferPointer { bp in
                        var c0 = 0
                        while c0 < width {
                            let c1 = min(width, c0 + g)
                            let cell = global ?? grid.uniform.cell(of: bp.baseAddress! + c0, count: c1 - c0)
                            for c in c0..<c1 { eff[r * width + c] = grid.uniform.value(grid.uniform.code(bp[c], cell), cell) / sx[c] }
                            c0 = c1
                        }
                    }
                }
                var out = [Float](repeating: 0, count: n * k)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(k), Int32(width), 1, x, Int32(width),
                            eff, Int32(width), 0, &out, Int32(k))
                for i in 0..<(n * k) { let d = Double(out[i] - m.ref[i]); err += d * d }
            }
            if err < bestErr { bestErr = err; bestAlpha = alpha; bestScales = s }
        }
        return (bestScales, bestAlpha)
    }
}
