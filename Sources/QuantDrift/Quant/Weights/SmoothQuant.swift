import Foundation

/// SmoothQuant (Xiao et al. 2023): move activation outliers into the weights with a per-input-channel
/// factor s_j = max|X_j|^α / max|W_j|^(1−α): the activation is divided by s (folded into the
/// producer of the activation), the consuming weight columns are multiplied by s, before the
/// weights are quantized. In FP32 the product is unchanged.
///
/// Sites smoothed and where 1/s is folded:
/// - `attn_in`  (q, k, v): into the attention RMSNorm weight;
/// - `ffn_in`   (gate, up): into the feed-forward RMSNorm weight;
/// - `attn_out` (o): into the rows of attn_v (and its bias). Attention mixes positions, not
///   channels, so channel d of KV head g reaches output channel h·hd + d of every query head h of
///   its group; s is computed per KV channel (maxima over the heads sharing it) and shared by them;
/// - `ffn_down_in` (down): into the rows of ffn_up (SwiGLU: silu(gate) · up is linear in up).
/// The head input is not smoothed: with a tied head its columns are the token embedding.
public enum SmoothQuant {
    /// The sites smoothing touches.
    public static let sites: [LinearSite] = [.attentionInput, .attentionOutput, .feedForwardInput, .feedForwardDownInput]

    /// s_j from activation and weight maxima; 1 where either is zero, at least 1e-5.
    static func factor(act: Float, weight: Float, alpha: Double) -> Float {
        guard act > 0, weight > 0, act.isFinite, weight.isFinite else { return 1 }
        let s = pow(Double(act), alpha) / pow(Double(weight), 1 - alpha)
        return Float(max(1e-5, min(1e5, s)))
    }

    /// max |W[:, j]| over the columns of every matrix in `ws` ((rows, cols) row-major each).
    static func columnMax(_ ws: [[Float]], cols: Int) -> [Float] {
        var m = [Float](repeating: 0, count: cols)
        for w in ws {
            w.withUnsafeBufferPointer { p in
                let rows = p.count / cols
                for r in 0..<rows {
                    for j in 0..<cols { m[j] = max(m[j], abs(p[r * cols + j])) }
                }
            }
        }
        return m
    }

    /// Smoothing factors per site (width of the site's input) from the FP32 activation channel
    /// maxima `channelMax` and the FP32 weights.
    public static func factors(alpha: Double, channelMax: [SiteID: [Float]], weights: ModelWeights,
                               config c: ModelConfig) throws -> [SiteID: [Float]] {
        var out: [SiteID: [Float]] = [:]
        for (l, lw) in weights.layers.enumerated() {
            func maxima(_ site: LinearSite, _ width: Int) throws -> [Float] {
                guard let m = channelMax[SiteID(l, site)], m.count == width else {
                    throw QuantDriftError.invalidInput("SmoothQuant: no channel maxima of width \(width) for layer \(l) \(site.rawValue)")
                }
                return m
            }
            let ain = try maxima(.attentionInput, c.dim)
            let win = columnMax([lw.wq, lw.wk, lw.wv], cols: c.dim)
            out[SiteID(l, .attentionInput)] = (0..<c.dim).map { factor(act: ain[$0], weight: win[$0], alpha: alpha) }

            let fin = try maxima(.feedForwardInput, c.dim)
            let wfin = columnMax([lw.wGate, lw.wUp], cols: c.dim)
            out[SiteID(l, .feedForwardInput)] = (0..<c.dim).map { factor(act: fin[$0], weight: wfin[$0], alpha: alpha) }

            let dn = try maxima(.feedForwardDownInput, c.hiddenDim)
            let wdn = columnMax([lw.wDown], cols: c.hiddenDim)
            out[SiteID(l, .feedForwardDownInput)] = (0..<c.hiddenDim).map { factor(act: dn[$0], weight: wdn[$0], alpha: alpha) }

            // attn_out: one factor per KV channel, shared by the query heads of its group.
            let ao = try maxima(.attentionOutput, c.qDim)
            let wao = columnMax([lw.wo], cols: c.qDim)
            let hd = c.headDim, group = c.headCount / c.kvHeadCount
            var perKV = [Float](repeating: 1, count: c.kvDim)
            for g in 0..<c.kvHeadCount {
                for d in 0..<hd {
                    var a: Float = 0, w: Float = 0
                    for h in (g * group)..<((g + 1) * group) {
                        a = max(a, ao[h * hd + d])
                        w = max(w, wao[h * hd + d])
                    }
                    perKV[g * hd + d] = factor(act: a, weight: w, alpha: alpha)
                }
            }
            out[SiteID(l, .attentionOutput)] = (0..<c.qDim).map { i in perKV[(i / hd) / group * hd + i % hd] }
        }
        return out
    }

    /// The weights with the factors folded in: activations divided by s, consuming columns
    /// multiplied by s. Sites missing from `factors` are left alone. The matrices are rescaled as
    /// they are read (`WeightMatrix.scaled`): no FP32 copy of the model is made.
    public static func apply(_ factors: [SiteID: [Float]], to weights: ModelWeights, config c: ModelConfig) throws -> ModelWeights {
        var out = weights
        for l in out.layers.indices {
            var lw = out.layers[l]
            var columnsIn: [Float]?, columnsFFN: [Float]?, down: [Float]?, perKV: [Float]?, columnsOut: [Float]?
            if let s = factors[SiteID(l, .attentionInput)] {
                for j in 0..<c.dim { lw.attnNorm[j] /= s[j] }
                columnsIn = s
            }
            if let s = factors[SiteID(l, .feedForwardInput)] {
                for j in 0..<c.dim { lw.ffnNorm[j] /= s[j] }
                columnsFFN = s
            }
            if let s = factors[SiteID(l, .feedForwardDownInput)] { down = s }
            if let s = factors[SiteID(l, .attentionOutput)] {
                // The factor of KV channel g·hd + d, read from the first query head of group g.
                let hd = c.headDim, group = c.headCount / c.kvHeadCount
                var kv = [Float](repeating: 1, count: c.kvDim)
                for g in 0..<c.kvHeadCount {
                    for d in 0..<hd {
                        let v = s[g * group * hd + d]
                        for h in (g * group)..<((g + 1) * group) where s[h * hd + d] != v {
                            throw QuantDriftError.invalidInput("SmoothQuant: attn_out factors differ across the query heads of KV head \(g) (layer \(l))")
                        }
                        kv[g * hd + d] = v
                    }
                }
                if var bv = lw.bv {
                    for i in 0..<c.kvDim { bv[i] /= kv[i] }
                    lw.bv = bv
                }
                perKV = kv
                columnsOut = s
            }
            lw.q = lw.q.scaled(columns: columnsIn, rowDivisors: nil)
            lw.k = lw.k.scaled(columns: columnsIn, rowDivisors: nil)
            lw.v = lw.v.scaled(columns: columnsIn, rowDivisors: perKV)
            lw.o = lw.o.scaled(columns: columnsOut, rowDivisors: nil)
            lw.gate = lw.gate.scaled(columns: columnsFFN, rowDivisors: nil)
            lw.up = lw.up.scaled(columns: columnsFFN, rowDivisors: down)
            lw.down = lw.down.scaled(columns: down, rowDivisors: nil)
            out.layers[l] = lw
        }
        return out
    }
}
