/// QuaRot-style rotations (Ashkboos et al. 2024), folded into the FP32 weights before a scheme
/// quantizes them, so that weights and activations lose their outlier channels:
///
/// - **residual** (`rot=residual`): the residual stream is carried rotated, x' = R·x, with R an
///   orthogonal Hadamard matrix of the model width (`Rotation`). RMSNorm commutes with R once its
///   gain is folded into the matrices that read the norm's output, so: the gains of the attention
///   and FFN norms are folded into the columns of q/k/v and gate/up, the final norm's into the
///   head; the readers become W·diag(γ)·Rᵀ, the writers (attn_output, ffn_down) R·W, the token
///   embedding rows R·e. A tied head is untied (the embedding and the head differ by the final
///   norm's gain). Biases and the per-head Q/K norms are untouched (q = W·n is unchanged).
/// - **down** (`rot=down`): an online rotation of the FFN down projection's input, a' = H·a with
///   H the Hadamard matrix of the FFN width, and W_down·Hᵀ folded into its columns
///   (`RotatedInputLinear` applies H at run time).
///
/// Without quantization the model computes the same function: the logits equal the reference's
/// to float rounding (a test). Families with norms after the projections (Gemma 3's post-norms)
/// cannot carry a rotated residual and are refused.
public enum QuaRot {
    /// Refuses what a rotated residual cannot run.
    public static func check(config c: ModelConfig, weights: ModelWeights) throws {
        if weights.layers.contains(where: { $0.extraNorms.postAttention != nil || $0.extraNorms.postFeedForward != nil }) {
            throw QuantDriftError.unsupported("scheme: rot=residual needs pre-norm blocks; \(c.architecture.rawValue) normalizes the projections' outputs before the residual add (post-norms), which a rotation of the residual stream cannot pass through")
        }
    }

    /// The matrices `spec` asks for: of the model width for the residual, of the FFN width for the
    /// down projection's input (the same one is folded into ffn_down and applied online).
    public static func rotations(_ spec: WeightRotation, config c: ModelConfig) -> (residual: Rotation?, down: Rotation?) {
        (spec.residual ? Rotation(order: c.dim) : nil, spec.down ? Rotation(order: c.hiddenDim) : nil)
    }

    /// The weights with the rotations folded in (norm gains set to 1 where folded).
    public static func apply(residual: Rotation?, down: Rotation?, to weights: ModelWeights, config c: ModelConfig) throws -> ModelWeights {
        var out = weights
        if residual != nil { try check(config: c, weights: weights) }
        var scratch = [Double](repeating: 0, count: max(c.dim, c.hiddenDim, c.qDim))
        /// R·diag(gain) applied to `rows` contiguous vectors of `values`, in Double, rounded once to Float.
        func rotate(_ values: UnsafeMutableBufferPointer<Float>, rows: Int, _ r: Rotation, gain: [Float]? = nil) {
            let n = r.order
            let g = gain.map { $0.map(Double.init) } ?? [Double](repeating: 1, count: n)
            var row = [Double](repeating: 0, count: n)
            row.withUnsafeMutableBufferPointer { rp in
                scratch.withUnsafeMutableBufferPointer { sp in
                    for i in 0..<rows {
                        for j in 0..<n { rp[j] = Double(values[i * n + j]) * g[j] }
                        r.apply(rp.baseAddress!, rows: 1, scratch: sp.baseAddress!)
                        for j in 0..<n { values[i * n + j] = Float(rp[j]) }
                    }
                }
            }
        }

        /// Rows (each of `cols`) × gain, then R applied to each row: W·diag(γ)·Rᵀ.
        func readers(_ m: WeightMatrix, gain: [Float]?, _ r: Rotation) -> WeightMatrix {
            var v = m.values
            let cols = r.order, rows = v.count / cols
            v.withUnsafeMutableBufferPointer { rotate($0, rows: rows, r, gain: gain) }
            return WeightMatrix(values: v)
        }
        /// R applied to each column of a (r.order, cols) matrix: R·W.
        func writers(_ v: [Float], cols: Int, _ r: Rotation) -> [Float] {
            let rows = r.order
            var t = [Float](repeating: 0, count: v.count)  // transposed: (cols, rows)
            for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = v[i * cols + j] } }
            t.withUnsafeMutableBufferPointer { rotate($0, rows: cols, r) }
            var w = v
            for i in 0..<rows { for j in 0..<cols { w[i * cols + j] = t[j * rows + i] } }
            return w
        }

        let ones = [Float](repeating: 1, count: c.dim)
        for l in out.layers.indices {
            var lw = out.layers[l]
            if let r = residual {
                lw.q = readers(lw.q, gain: lw.attnNorm, r)
                lw.k = readers(lw.k, gain: lw.attnNorm, r)
                lw.v = readers(lw.v, gain: lw.attnNorm, r)
                lw.gate = readers(lw.gate, gain: lw.ffnNorm, r)
                lw.up = readers(lw.up, gain: lw.ffnNorm, r)
                lw.attnNorm = ones
                lw.ffnNorm = ones
                lw.o = WeightMatrix(values: writers(lw.o.values, cols: c.qDim, r))
            }
            if residual != nil || down != nil {
                var d = lw.down.values
                if let h = down {
                    d.withUnsafeMutableBufferPointer { rotate($0, rows: c.dim, h) }
                }
                if let r = residual { d = writers(d, cols: c.hiddenDim, r) }
                lw.down = WeightMatrix(values: d)
            }
            out.layers[l] = lw
        }
        if let r = residual {
            let head = weights.headMatrix
            out.outputMatrix = readers(head, gain: weights.outputNorm, r)
            out.outputNorm = ones
            out.embedding = readers(weights.embedding, gain: nil, r)
        }
        return out
    }
}
