import CKernels
import COpenBLAS
import Foundation

/// Which rows of a forward pass need logits.
public enum LogitsRows: Sendable, Equatable {
    case none, last, all
    /// Rows `first` ..< tokens.count of the call: only the positions that are scored (as
    /// llama.cpp's perplexity asks for the second half of a chunk), so the head runs on those alone.
    case from(Int)
    /// No logits, but every row's head input (the final norm's output) is shown to the observer:
    /// calibration needs the head's input statistics, not its product (a fifth of a small model's
    /// multiply-adds).
    case headInputOnly

    /// The first row with logits when rows are asked from a point on (`.all` is `.from(0)`).
    var firstRow: Int { if case .from(let f) = self { f } else { 0 } }
}

/// The FP32 forward pass of a decoder (every `Architecture`) on OpenBLAS, with its KV caches and run
/// state allocated once. `forward` takes a batch of tokens at the next positions of one sequence:
/// a prompt is one sgemm-based prefill (in chunks of `maxBatch`), decode is the same path with one
/// row (whose products use `step`'s row kernels, not sgemv). `step` advances several sequences (slots, each with its own KV cache and
/// position) by one token each in one pass: every weight matrix is read once for all of them.
public final class Transformer: @unchecked Sendable {
    public let config: ModelConfig
    public let weights: RuntimeWeights
    /// Positions the KV cache holds (≤ the model's context length).
    public let contextLength: Int
    /// Most tokens in one forward chunk.
    public let maxBatch: Int
    /// Sequences that can be decoded together (`step`), each with its own cache and position.
    public let sequences: Int
    /// Tokens already in slot 0's cache: the position of its next token.
    public var position: Int { positions[0] }
    /// Per slot, the tokens already in its cache.
    public private(set) var positions: [Int]
    /// Sees the input of every linear layer as the forward pass runs (calibration, profiling).
    public var observer: (any ActivationObserver)?
    /// Cores one forward pass may use (1 or 2): with 2, attention heads and the packed integer
    /// products are divided between two threads. Every value is computed as with 1 (heads are
    /// independent, panels are split by output), so results do not depend on it. For a lone
    /// chunk while the other core has nothing to do.
    public var cores = 1 {
        didSet {
            cores = min(max(cores, 1), 2)
            scratch.cores = cores
            if cores == 2 && secondScores == nil { secondScores = FloatBuffer(count: scoreRows * contextLength) }
        }
    }

    /// Every product on the row kernels (`LinearScratch.rowStable`), prefill included, instead of
    /// OpenBLAS for several rows: the same weights and arithmetic in a different summation order.
    /// The noise floor's FP32 twin of the reference (`TrackerCandidate.Role.noiseFloor`).
    public var rowKernelsOnly = false {
        didSet { scratch.rowStable = rowKernelsOnly }
    }

    // Run state, (maxBatch, …) rows.
    let x: FloatBuffer        // (maxBatch, dim) residual stream
    let xb: FloatBuffer       // (maxBatch, dim) normed input of a block
    let q: FloatBuffer        // (maxBatch, qDim)
    let k: FloatBuffer        // (maxBatch, kvDim)
    let v: FloatBuffer        // (maxBatch, kvDim)
    let attOut: FloatBuffer   // (maxBatch, qDim) attention output before wo
    let proj: FloatBuffer     // (maxBatch, dim) output of wo / w_down
    let hb: FloatBuffer       // (maxBatch, hiddenDim) gate, then SwiGLU
    let hb2: FloatBuffer      // (maxBatch, hiddenDim) up
    let scores: FloatBuffer   // (scoreRows, contextLength) attention scores of one head's rows, or of a decode step's heads
    /// Rows of a score buffer: a chunk's rows for one head, or one row for each query head in a
    /// decode step.
    let scoreRows: Int
    var secondScores: FloatBuffer?  // the same for the second core's heads (when cores == 2)
    let rope: RotaryEmbedding
    let logitsBuffer: FloatBuffer  // (maxBatch, vocab) when all rows are requested, else (1, vocab)
    let logitsCapacityRows: Int
    let scratch: LinearScratch
    /// Keys and values of past positions, one cache per slot.
    public let caches: [any KVCache]
    /// Slot 0's cache (the only one unless `sequences` > 1).
    public var cache: any KVCache { caches[0] }
    /// The row groups of the pass being run (one per sequence), kept to avoid allocating per step.
    private var segments: [Segment] = []

    /// - Parameters:
    ///   - contextLength: positions to allocate the KV cache for (default: the model's limit).
    ///   - maxBatch: tokens per prefill chunk.
    ///   - allLogits: whether `forward(…, logits: .all)` will be used (allocates (maxBatch, vocab)).
    ///   - weights: the weights to run (default: the model's FP32 weights).
    ///   - makeCache: builds the KV cache for a shape (layers, context, KV width, windows, chunk),
    ///     or nil for the default: FP32, sliding-window layers holding only their window.
    ///   - sequences: slots that `step` can decode together (each gets its own cache).
    public init(model: Model, contextLength: Int? = nil, maxBatch: Int = 512, allLogits: Bool = false,
                weights: RuntimeWeights? = nil, sequences: Int = 1,
                makeCache: ((KVCacheShape) throws -> (any KVCache)?)? = nil) throws {
        BLAS.ensureConfigured()
        let c = model.config
        let ctx = contextLength ?? c.contextLength
        guard ctx >= 1 else { throw QuantDriftError.invalidInput("context length must be at least 1") }
        guard ctx <= c.contextLength else {
            throw QuantDriftError.invalidInput("context length \(ctx) exceeds the model's limit of \(c.contextLength)")
        }
        self.config = c
        self.weights = weights ?? RuntimeWeights(fp32: model.weights, config: c)
        self.contextLength = ctx
        guard sequences >= 1 && sequences <= 4096 else {
            throw QuantDriftError.invalidInput("sequences per batch must be in 1…4096 (got \(sequences))")
        }
        self.maxBatch = max(1, min(maxBatch, ctx))
        self.sequences = sequences
        positions = Array(repeating: 0, count: sequences)
        // Run-state rows: a prefill chunk or one row per sequence, whichever is more.
        let b = max(self.maxBatch, sequences)
        x = FloatBuffer(count: b * c.dim)
        xb = FloatBuffer(count: b * c.dim)
        q = FloatBuffer(count: b * c.qDim)
        k = FloatBuffer(count: b * c.kvDim)
        v = FloatBuffer(count: b * c.kvDim)
        attOut = FloatBuffer(count: b * c.qDim)
        proj = FloatBuffer(count: b * c.dim)
        hb = FloatBuffer(count: b * c.hiddenDim)
        hb2 = FloatBuffer(count: b * c.hiddenDim)
        scoreRows = max(self.maxBatch, c.headCount)
        scores = FloatBuffer(count: scoreRows * ctx)
        logitsCapacityRows = allLogits ? b : sequences
        logitsBuffer = FloatBuffer(count: logitsCapacityRows * c.vocabSize)
        scratch = LinearScratch(maxRows: b, maxInDim: max(c.dim, c.qDim, c.hiddenDim))
        let shape = KVCacheShape(layerCount: c.layerCount, contextLength: ctx, kvDim: c.kvDim,
                                 windows: (0..<c.layerCount).map { c.isLocal($0) ? c.slidingWindow : nil },
                                 maxBatch: self.maxBatch, headDim: c.headDim)
        caches = try (0..<sequences).map { _ in try makeCache?(shape) ?? FP32KVCache(shape: shape) }
        rope = RotaryEmbedding(config: c, contextLength: ctx)
        for cache in caches { cache.attach(rope: rope) }
        segments.reserveCapacity(sequences)
    }

    /// Forgets the cached context of `slot`.
    public func reset(slot: Int = 0) { positions[slot] = 0 }

    /// Rolls slot 0's cache back to `position` (e.g. to re-run a suffix). A sliding-window layer
    /// keeps only the rows its window still sees, so it cannot go back further than the window.
    public func truncate(to newPosition: Int) {
        precondition(newPosition >= 0 && newPosition <= position)
        positions[0] = newPosition
    }

    /// `forward`, copied into an array that outlives the transformer.
    public func copiedLogits(_ tokens: some Collection<Int>, logits rows: LogitsRows = .last, slot: Int = 0) throws -> [Float] {
        try withExtendedLifetime(self) { Array(try forward(tokens, logits: rows, slot: slot)) }
    }

    /// Runs `tokens` at the next positions and returns the logits of the requested rows:
    /// `.last` gives (1, vocab) for the final token; `.all` gives (tokens.count, vocab) and
    /// `.from(f)` (tokens.count - f, vocab) when the batch fits one chunk. The buffer is the
    /// transformer's: valid until the next call and only while the transformer lives. A temporary
    /// (`Transformer(…).forward(…)`) may be freed as soon as the call returns, before the buffer is
    /// read; use `copiedLogits` there.
    @discardableResult
    public func forward(_ tokens: some Collection<Int>, logits rows: LogitsRows = .last, slot: Int = 0) throws
        -> UnsafeBufferPointer<Float> {
        let n = tokens.count
        guard n > 0 else { throw QuantDriftError.invalidInput("no tokens to run") }
        guard (0..<sequences).contains(slot) else { throw QuantDriftError.internalError("slot \(slot) of \(sequences)") }
        guard positions[slot] + n <= contextLength else {
            throw QuantDriftError.invalidInput("context full: \(positions[slot]) + \(n) tokens exceed the context length \(contextLength)")
        }
        try checkIDs(tokens)
        if rows != .last && rows != .none && rows != .headInputOnly {
            guard logitsCapacityRows >= n, n <= maxBatch else {
                throw QuantDriftError.internalError("all-row logits need a Transformer made with allLogits and a batch ≤ maxBatch")
            }
        }
        if case .from(let f) = rows, !(0..<n).contains(f) {
            throw QuantDriftError.internalError("logits from row \(f) of a \(n)-token call")
        }
        var start = tokens.startIndex
        var remaining = n
        while remaining > 0 {
            let chunk = min(remaining, maxBatch)
            let end = tokens.index(start, offsetBy: chunk)
            let isLast = remaining == chunk
            segments.removeAll(keepingCapacity: true)
            segments.append(Segment(slot: slot, firstRow: 0, rows: chunk))
            runChunk(tokens[start..<end], logits: isLast || rows == .headInputOnly ? rows : .none)
            start = end
            remaining -= chunk
        }
        switch rows {
        case .none, .headInputOnly: return UnsafeBufferPointer(start: logitsBuffer.pointer, count: 0)
        case .last: return UnsafeBufferPointer(start: logitsBuffer.pointer, count: config.vocabSize)
        case .all, .from: return UnsafeBufferPointer(start: logitsBuffer.pointer, count: (n - rows.firstRow) * config.vocabSize)
        }
    }

    /// Advances each slot in `slots` (distinct) by one token, `tokens[i]` for `slots[i]`, all in one
    /// pass, and returns the logits (slots.count, vocab) in that order; valid until the next call.
    /// Each row is computed from its own sequence only, and every product gives a row the same value
    /// in any batch (`LinearScratch.rowStable`: FP32 products on `qd_gemm_f32_rows`, not OpenBLAS,
    /// whose sgemm result for a row changes with the row count, its place and the thread count),
    /// so a sequence decodes the same alone or with others. One-token `forward` runs its products
    /// on the same kernels; its attention is not checked to match `step`'s bit for bit.
    public func step(_ tokens: [Int], slots: [Int]) throws -> UnsafeBufferPointer<Float> {
        let n = tokens.count
        guard n > 0, n == slots.count, n <= logitsCapacityRows else {
            throw QuantDriftError.internalError("step of \(n) tokens for \(slots.count) slots (capacity \(logitsCapacityRows))")
        }
        try checkIDs(tokens)
        segments.removeAll(keepingCapacity: true)
        for (r, s) in slots.enumerated() {
            guard (0..<sequences).contains(s) else { throw QuantDriftError.internalError("slot \(s) of \(sequences)") }
            guard positions[s] + 1 <= contextLength else {
                throw QuantDriftError.invalidInput("context full: sequence \(s) holds \(positions[s]) of \(contextLength) positions")
            }
            guard !segments.contains(where: { $0.slot == s }) else { throw QuantDriftError.internalError("slot \(s) twice in a step") }
            segments.append(Segment(slot: s, firstRow: r, rows: 1))
        }
        scratch.rowStable = true
        defer { scratch.rowStable = rowKernelsOnly }
        runChunk(tokens, logits: n == 1 ? .last : .all)
        return UnsafeBufferPointer(start: logitsBuffer.pointer, count: n * config.vocabSize)
    }

    private func checkIDs(_ tokens: some Collection<Int>) throws {
        for t in tokens where t < 0 || t >= config.vocabSize {
            throw QuantDriftError.invalidInput("token id \(t) out of range 0..<\(config.vocabSize)")
        }
    }

    /// The logits of the last `.all` (or `.from`) forward: (rows, vocab).
    public func allLogits(rows: Int) -> UnsafeBufferPointer<Float> {
        precondition(rows <= logitsCapacityRows)
        return UnsafeBufferPointer(start: logitsBuffer.pointer, count: rows * config.vocabSize)
    }

    // MARK: - One chunk

    /// Rows of one sequence inside a pass: `rows` tokens from `firstRow`, at the slot's next positions.
    struct Segment {
        let slot: Int
        let firstRow: Int
        let rows: Int
    }

    /// One pass over the rows of `segments` (set by the caller): the linear layers see all rows at
    /// once; RoPE, the cache and attention are per segment, each in its own slot.
    private func runChunk(_ tokens: some Collection<Int>, logits rows: LogitsRows) {
        let c = config
        let n = tokens.count
        let dim = c.dim, qDim = c.qDim, kvDim = c.kvDim, hidden = c.hiddenDim

        // Token embeddings into the residual stream (× √dim in families that scale them).
        for (r, t) in tokens.enumerated() { weights.tokenEmbedding.copyRow(t, dim: dim, into: x.pointer + r * dim) }
        if c.traits.scaledEmbedding {
            let s = Float(c.dim).squareRoot()
            for i in 0..<(n * dim) { x.pointer[i] *= s }
        }

        for (l, lw) in weights.layers.enumerated() {
            // Attention block.
            rmsNorm(x.pointer, lw.attnNorm, rows: n, into: xb.pointer)
            observer?.observe(layer: l, site: .attentionInput, x: xb.pointer, rows: n, width: dim)
            linear(xb.pointer, n, dim, lw.wq, qDim, q.pointer, bias: lw.bq)
            linear(xb.pointer, n, dim, lw.wk, kvDim, k.pointer, bias: lw.bk)
            linear(xb.pointer, n, dim, lw.wv, kvDim, v.pointer, bias: lw.bv)
            // Per-head Q/K norms come before RoPE (and before a pre-RoPE cache stores the keys).
            if let qn = lw.extraNorms.q { rmsNorm(q.pointer, qn, rows: n * c.headCount, into: q.pointer) }
            if let kn = lw.extraNorms.k { rmsNorm(k.pointer, kn, rows: n * c.kvHeadCount, into: k.pointer) }
            attendSegments(layer: l)
            observer?.observe(layer: l, site: .attentionOutput, x: attOut.pointer, rows: n, width: qDim)
            linear(attOut.pointer, n, qDim, lw.wo, dim, proj.pointer, bias: nil)
            if let pn = lw.extraNorms.postAttention { rmsNorm(proj.pointer, pn, rows: n, into: proj.pointer) }
            addInPlace(x.pointer, proj.pointer, count: n * dim)

            // Feed-forward block: act(gate) · up, then down.
            rmsNorm(x.pointer, lw.ffnNorm, rows: n, into: xb.pointer)
            observer?.observe(layer: l, site: .feedForwardInput, x: xb.pointer, rows: n, width: dim)
            linear(xb.pointer, n, dim, lw.wGate, hidden, hb.pointer, bias: nil)
            linear(xb.pointer, n, dim, lw.wUp, hidden, hb2.pointer, bias: nil)
            switch c.traits.activation {
            case .silu: qd_silu_mul(hb.pointer, hb2.pointer, Int32(n * hidden))  // g / (1 + exp(-g)) · up, 8 at a time
            case .geluTanh: qd_gelu_tanh_mul(hb.pointer, hb2.pointer, Int32(n * hidden))
            }
            observer?.observe(layer: l, site: .feedForwardDownInput, x: hb.pointer, rows: n, width: hidden)
            linear(hb.pointer, n, hidden, lw.wDown, dim, proj.pointer, bias: nil)
            if let pn = lw.extraNorms.postFeedForward { rmsNorm(proj.pointer, pn, rows: n, into: proj.pointer) }
            addInPlace(x.pointer, proj.pointer, count: n * dim)
        }
        for seg in segments { positions[seg.slot] += seg.rows }

        switch rows {
        case .none: return
        case .headInputOnly:
            rmsNorm(x.pointer, weights.outputNorm, rows: n, into: xb.pointer)
            observer?.observe(layer: c.layerCount, site: .headInput, x: xb.pointer, rows: n, width: dim)
        case .last:
            rmsNorm(x.pointer + (n - 1) * dim, weights.outputNorm, rows: 1, into: xb.pointer)
            observer?.observe(layer: c.layerCount, site: .headInput, x: xb.pointer, rows: 1, width: dim)
            linear(xb.pointer, 1, dim, weights.head, c.vocabSize, logitsBuffer.pointer, bias: nil)
        case .all, .from:
            let f = rows.firstRow
            rmsNorm(x.pointer + f * dim, weights.outputNorm, rows: n - f, into: xb.pointer)
            observer?.observe(layer: c.layerCount, site: .headInput, x: xb.pointer, rows: n - f, width: dim)
            linear(xb.pointer, n - f, dim, weights.head, c.vocabSize, logitsBuffer.pointer, bias: nil)
        }
    }

    // MARK: - Pieces

    @inline(__always)
    private func linear(_ input: UnsafePointer<Float>, _ rows: Int, _ inDim: Int, _ w: any LinearLayer, _ outDim: Int,
                        _ out: UnsafeMutablePointer<Float>, bias: [Float]?) {
        w.forward(input, rows: rows, into: out, scratch: scratch)
        if let bias {
            bias.withUnsafeBufferPointer { b in
                for r in 0..<rows {
                    let o = out + r * outDim
                    for i in 0..<outDim { o[i] += b[i] }
                }
            }
        }
    }

    /// out = x / sqrt(mean(x²) + eps) · w, row by row, rows as wide as `w` (the model width, or a
    /// head for Q/K norms); the sum of squares in Double (as ggml does). `out` may be `input`.
    private func rmsNorm(_ input: UnsafePointer<Float>, _ w: [Float], rows: Int, into out: UnsafeMutablePointer<Float>) {
        let dim = w.count
        let eps = Double(config.normEps)
        w.withUnsafeBufferPointer { wp in
            for r in 0..<rows {
                let xr = input + r * dim, o = out + r * dim
                var ss = 0.0
                for i in 0..<dim { ss += Double(xr[i]) * Double(xr[i]) }
                let scale = Float(1.0 / (ss / Double(dim) + eps).squareRoot())
                for i in 0..<dim { o[i] = xr[i] * scale * wp[i] }
            }
        }
    }

    /// RoPE, the cache and attention for every segment of the pass (q, k, v hold all rows). With
    /// two cores, one multi-row segment divides its heads and several segments divide themselves.
    private func attendSegments(layer l: Int) {
        if cores == 2, segments.count > 1, let second = secondScores {
            let first = scores
            splitOutputs(segments.count, parts: 2) { range in
                let s = range.lowerBound == 0 ? first : second
                for i in range { self.attend(self.segments[i], layer: l, heads: 0..<self.config.headCount, scores: s.pointer) }
            }
            return
        }
        for seg in segments { attend(seg, layer: l, heads: nil, scores: scores.pointer) }
    }

    /// One segment's keys into its slot's cache and its causal GQA attention (of `heads`, or all
    /// heads split over the cores when nil) over positions pos0…pos0+rows-1.
    private func attend(_ seg: Segment, layer l: Int, heads: Range<Int>?, scores: UnsafeMutablePointer<Float>) {
        let c = config
        let qDim = c.qDim, kvDim = c.kvDim
        let n = seg.rows, pos0 = positions[seg.slot], cache = caches[seg.slot]
        let qs = q.pointer + seg.firstRow * qDim, ks = k.pointer + seg.firstRow * kvDim, vs = v.pointer + seg.firstRow * kvDim
        // A cache that quantizes keys before RoPE stores them first and rotates on read.
        let preRoPE = cache.storesPreRoPEKeys
        if preRoPE { cache.store(layer: l, position: pos0, rows: n, keys: ks, values: vs) }
        for r in 0..<n {
            rope.apply(qs + r * qDim, heads: c.headCount, position: pos0 + r, layer: l)
            rope.apply(ks + r * kvDim, heads: c.kvHeadCount, position: pos0 + r, layer: l)
        }
        // A cache that rotates before it quantizes (llama.cpp's quantized caches): Q and K alike,
        // so Q·Kᵀ is unchanged; V here and the attention output back below.
        if cache.keyRotation > 0 {
            hadamardInPlace(qs, count: n * qDim, order: cache.keyRotation)
            hadamardInPlace(ks, count: n * kvDim, order: cache.keyRotation)
        }
        if cache.valueRotation > 0 { hadamardInPlace(vs, count: n * kvDim, order: cache.valueRotation) }
        if cache.roundsQueries { q8_0RoundTripInPlace(qs, count: n * qDim) }
        if !preRoPE { cache.store(layer: l, position: pos0, rows: n, keys: ks, values: vs) }
        // Keys first0 ..< pos0 + n are visible to some row; a window hides the older ones.
        let window = c.isLocal(l) ? c.slidingWindow : nil
        let first0 = window.map { max(0, pos0 - $0 + 1) } ?? 0
        let out = attOut.pointer + seg.firstRow * qDim
        // Values were stored rotated: so is their weighted sum; rotate it back (H is its own inverse).
        defer { if cache.valueRotation > 0 { hadamardInPlace(out, count: n * qDim, order: cache.valueRotation) } }
        if n == 1 && c.headDim % 16 == 0 {
            return decodeAttention(cache, layer: l, heads: heads ?? 0..<c.headCount, q: qs, out: out, first0: first0,
                                   keys: pos0 + 1 - first0, scores: scores)
        }
        let layerK = cache.keyHeads(layer: l, from: first0, count: pos0 + n, headDim: c.headDim)
        let layerV = cache.valueHeads(layer: l, from: first0, count: pos0 + n, headDim: c.headDim)
        if let heads {
            return attention(heads: heads, q: qs, out: out, layerK: layerK, layerV: layerV, rows: n, pos0: pos0, first0: first0,
                             window: window, scores: scores)
        }
        let all = c.headCount
        guard cores == 2, n > 1, all > 1, let second = secondScores else {
            return attention(heads: 0..<all, q: qs, out: out, layerK: layerK, layerV: layerV, rows: n, pos0: pos0, first0: first0,
                             window: window, scores: scores)
        }
        let shared = SharedKV(keys: layerK, values: layerV, q: qs, out: out)
        let first = self.scores
        DispatchQueue.concurrentPerform(iterations: 2) { k in
            self.attention(heads: k == 0 ? 0..<(all / 2) : (all / 2)..<all, q: shared.q, out: shared.out,
                           layerK: shared.keys, layerV: shared.values, rows: n, pos0: pos0, first0: first0, window: window,
                           scores: (k == 0 ? first : second).pointer)
        }
    }

    /// Attention of the heads in `heads`, with `s` as the (rows, keys) score scratch.
    private func attention(heads: Range<Int>, q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                           layerK: KVHeads, layerV: KVHeads, rows n: Int,
                           pos0: Int, first0: Int, window: Int?, scores s: UnsafeMutablePointer<Float>) {
        let c = config
        let hd = c.headDim, qDim = c.qDim
        let group = c.headCount / c.kvHeadCount
        let keys = pos0 + n - first0
        let scale = c.attentionScale
        for h in heads {
            let kvh = h / group
            let qh = q + h * hd
            let kh = layerK.head(kvh), ldk = Int32(layerK.rowStride)
            let vh = layerV.head(kvh), ldv = Int32(layerV.rowStride)
            // scores(n, keys) = scale · Q_h · K_hᵀ
            if n == 1 {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(keys), Int32(hd), scale, kh, ldk, qh, 1, 0, s, 1)
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(keys), Int32(hd),
                            scale, qh, Int32(qDim), kh, ldk, 0, s, Int32(keys))
            }
            // Causal softmax per row: row r sees keys first…pos0+r (first > first0 only inside a window).
            qd_softmax_causal(s, Int32(n), Int32(keys), Int32(pos0), Int32(first0), Int32(window ?? 0))
            // out(n, hd) = P · V_h
            let oh = out + h * hd
            if n == 1 {
                cblas_sgemv(CblasRowMajor, CblasTrans, Int32(keys), Int32(hd), 1, vh, ldv, s, 1, 0, oh, 1)
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(hd), Int32(keys),
                            1, s, Int32(keys), vh, ldv, 0, oh, Int32(qDim))
            }
        }
    }

    /// One row's attention (a decode step, every key visible) with the query heads that share a KV
    /// head together: `qd_attention_scores` and `qd_attention_values` read each key and value row
    /// once for the group instead of once per head, with the arithmetic of the per-head sgemv
    /// calls above, so the values are the same bits. The cache is read in runs of
    /// `decodeKeyRun` positions, each run for every head before the next: a quantized cache
    /// decodes a run into a buffer that stays in L2 while the kernels read it (decoding every
    /// position first wrote ~1.7 MB per layer at 2,300 positions, out to L3 and back). `s` holds
    /// the score rows of `heads` (`scoreRows` ≥ the model's heads).
    private func decodeAttention(_ cache: any KVCache, layer l: Int, heads: Range<Int>, q: UnsafeMutablePointer<Float>,
                                 out: UnsafeMutablePointer<Float>, first0: Int, keys: Int, scores s: UnsafeMutablePointer<Float>) {
        let c = config
        let hd = c.headDim, group = c.headCount / c.kvHeadCount
        /// The query groups of `heads`: their first head, KV head and size.
        func eachGroup(_ body: (_ h: Int, _ kvh: Int, _ g: Int) -> Void) {
            var h = heads.lowerBound
            while h < heads.upperBound {
                let kvh = h / group
                let end = min(heads.upperBound, (kvh + 1) * group)
                body(h, kvh, end - h)
                h = end
            }
        }
        /// The runs of keys, [b0, b1) of `keys`, in order.
        func eachRun(_ body: (_ b0: Int, _ b1: Int) -> Void) {
            for b0 in stride(from: 0, to: keys, by: Self.decodeKeyRun) { body(b0, min(keys, b0 + Self.decodeKeyRun)) }
        }
        @inline(__always) func rows(_ h: Int) -> UnsafeMutablePointer<Float> { s + (h - heads.lowerBound) * keys }
        eachRun { b0, b1 in
            let k = cache.keyHeads(layer: l, from: first0 + b0, count: first0 + b1, headDim: hd)
            eachGroup { h, kvh, g in
                qd_attention_scores(k.head(kvh), Int32(k.rowStride), Int32(b1 - b0), Int32(hd), q + h * hd, Int32(g),
                                    c.attentionScale, rows(h) + b0, Int32(keys))
            }
        }
        // Every head's row is softmaxed on its own (the same bits however rows are grouped).
        qd_softmax_rows(s, Int32(heads.count), Int32(keys), Int32(keys), Int32(keys))
        eachRun { b0, b1 in
            let v = cache.valueHeads(layer: l, from: first0 + b0, count: first0 + b1, headDim: hd)
            eachGroup { h, kvh, g in
                qd_attention_values(v.head(kvh), Int32(v.rowStride), Int32(b1 - b0), Int32(hd), rows(h) + b0, Int32(keys),
                                    Int32(g), out + h * hd, b0 > 0 ? 1 : 0)
            }
        }
    }

    /// Positions per run of a decode step's cache reads: a multiple of 8, so every run but the
    /// last is whole blocks of the kernels (the same bits as one call), and 256 rows of a
    /// 3 × 64-wide KV layer (192 KB) stay in L2.
    static let decodeKeyRun = 256

    @inline(__always)
    private func addInPlace(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { a[i] += b[i] }
    }
}

/// The cache's key and value rows of one layer and a segment's queries and output, read by both
/// cores of a split attention.
private struct SharedKV: @unchecked Sendable {
    let keys: KVHeads
    let values: KVHeads
    let q: UnsafeMutablePointer<Float>
    let out: UnsafeMutablePointer<Float>
}
