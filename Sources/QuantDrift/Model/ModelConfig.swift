import Foundation

/// Decoder-only architectures this runtime implements. What sets a family apart is one row of
/// `traits`: the loaders and the forward pass read these, never the case itself.
public enum Architecture: String, Sendable, Codable, CaseIterable {
    /// Llama family: SmolLM, TinyLlama, Llama 2/3 (with RoPE frequency scaling), Mistral.
    case llama
    /// Qwen2: llama with biases on the Q, K and V projections.
    case qwen2
    /// Qwen3: per-head RMSNorm of Q and K before RoPE, no QKV bias, explicit head size.
    case qwen3
    /// Gemma 3: scaled embeddings, Q/K norms, norms after attention and FFN, GeGLU, local
    /// sliding-window layers with their own RoPE base.
    case gemma3

    public struct Traits: Sendable {
        /// Per-head RMSNorm of Q and K (after the projections, before RoPE).
        public var qkNorm: Bool
        /// RMSNorm of the attention and FFN outputs before they join the residual stream.
        public var postNorms: Bool
        public var activation: FeedForwardActivation
        /// Token embeddings are multiplied by √dim.
        public var scaledEmbedding: Bool
        /// RoPE pairing of a GGUF file (llama.cpp's converter permutes llama Q/K only).
        public var ggufRopeStyle: RopeStyle
        /// Biases on Q, K and V are allowed.
        public var qkvBias: Bool
    }

    public var traits: Traits {
        switch self {
        case .llama: Traits(qkNorm: false, postNorms: false, activation: .silu, scaledEmbedding: false, ggufRopeStyle: .adjacentPairs, qkvBias: false)
        case .qwen2: Traits(qkNorm: false, postNorms: false, activation: .silu, scaledEmbedding: false, ggufRopeStyle: .rotateHalf, qkvBias: true)
        case .qwen3: Traits(qkNorm: true, postNorms: false, activation: .silu, scaledEmbedding: false, ggufRopeStyle: .rotateHalf, qkvBias: false)
        case .gemma3: Traits(qkNorm: true, postNorms: true, activation: .geluTanh, scaledEmbedding: true, ggufRopeStyle: .rotateHalf, qkvBias: false)
        }
    }
}

/// The gate nonlinearity of the gated FFN: act(gate) · up.
public enum FeedForwardActivation: String, Sendable, Codable {
    /// SwiGLU: g · sigmoid(g).
    case silu
    /// GeGLU with the tanh approximation of GELU (Gemma's `gelu_pytorch_tanh`).
    case geluTanh
}

/// How RoPE pairs the dimensions of a head.
public enum RopeStyle: String, Sendable, Codable {
    /// (0,1), (2,3), …: GGUF llama files, whose converter permuted the Q/K rows into this order.
    case adjacentPairs
    /// (i, i + d/2): HF checkpoints and GGUF qwen2/qwen3/gemma3 ("NEOX" in ggml).
    case rotateHalf
}

/// Frequency scaling of RoPE for contexts longer than the model was trained on.
public enum RopeScaling: Sendable, Hashable, Codable {
    case none
    /// Positions divided by `factor` (HF `linear`, GGUF `rope.scaling.type = linear`).
    case linear(factor: Float)
    /// One divisor per frequency pair (Llama 3's scaling as llama.cpp's converter stores it in
    /// the `rope_freqs` tensor; HF `rope_type: llama3` computes the same divisors).
    case perPairDivisors([Float])

    /// The divisors of Llama 3 RoPE scaling for a head size and base, as HF computes them.
    public static func llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double,
                              originalContext: Double, base: Double, headDim: Int) -> RopeScaling {
        let lowWavelength = originalContext / lowFreqFactor
        let highWavelength = originalContext / highFreqFactor
        let divisors = (0..<(headDim / 2)).map { i -> Float in
            let freq = pow(base, -2 * Double(i) / Double(headDim))
            let wavelength = 2 * Double.pi / freq
            if wavelength < highWavelength { return 1 }
            if wavelength > lowWavelength { return Float(factor) }
            let smooth = (originalContext / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor)
            return Float(1 / ((1 - smooth) / factor + smooth))
        }
        return .perPairDivisors(divisors)
    }
}

/// Hyperparameters of a loaded model.
public struct ModelConfig: Sendable, Codable, Hashable {
    public var architecture: Architecture
    public var layerCount: Int
    public var dim: Int
    public var hiddenDim: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var vocabSize: Int
    public var contextLength: Int
    public var ropeBase: Float
    public var normEps: Float
    public var ropeStyle: RopeStyle
    public var tiedOutput: Bool
    /// Multiplies Q·Kᵀ before the softmax (1/√headDim unless the model says otherwise).
    public var attentionScale: Float
    public var ropeScaling: RopeScaling = .none
    /// Keys a local (sliding-window) layer sees, the current one included; nil: every layer is global.
    public var slidingWindow: Int?
    /// Which layers are local; empty when there is no sliding window.
    public var localLayers: [Bool] = []
    /// RoPE base of local layers when it differs from `ropeBase` (Gemma 3: 10,000 vs 1,000,000).
    public var localRopeBase: Float?

    public var qDim: Int { headCount * headDim }
    public var kvDim: Int { kvHeadCount * headDim }
    public var traits: Architecture.Traits { architecture.traits }

    /// Whether layer `l` attends through the sliding window only.
    public func isLocal(_ l: Int) -> Bool { slidingWindow != nil && l < localLayers.count && localLayers[l] }

    public init(architecture: Architecture, layerCount: Int, dim: Int, hiddenDim: Int, headCount: Int,
                kvHeadCount: Int, headDim: Int, vocabSize: Int, contextLength: Int, ropeBase: Float,
                normEps: Float, ropeStyle: RopeStyle, tiedOutput: Bool, attentionScale: Float? = nil) {
        self.architecture = architecture
        self.layerCount = layerCount
        self.dim = dim
        self.hiddenDim = hiddenDim
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDim = headDim
        self.vocabSize = vocabSize
        self.contextLength = contextLength
        self.ropeBase = ropeBase
        self.normEps = normEps
        self.ropeStyle = ropeStyle
        self.tiedOutput = tiedOutput
        self.attentionScale = attentionScale ?? 1 / Float(headDim).squareRoot()
    }

    /// Gemma 3's layer pattern: `pattern - 1` local layers, then one global, repeated.
    public static func localLayers(count: Int, pattern: Int) -> [Bool] {
        (0..<count).map { pattern > 0 && $0 % pattern < pattern - 1 }
    }

    /// Checks that the numbers are positive, consistent and small enough to allocate.
    public func validate(source: String) throws {
        func bad(_ m: String) -> QuantDriftError { .invalidInput("\(source): \(m)") }
        let limits: [(String, Int, Int)] = [
            ("layer count", layerCount, 1024), ("embedding size", dim, 1 << 16), ("feed-forward size", hiddenDim, 1 << 18),
            ("head count", headCount, 1024), ("KV head count", kvHeadCount, 1024), ("head size", headDim, 4096),
            ("vocabulary size", vocabSize, 1 << 22), ("context length", contextLength, 1 << 22),
        ]
        for (name, v, hi) in limits where v < 1 || v > hi {
            throw bad("\(name) \(v) out of range 1...\(hi)")
        }
        guard headCount % kvHeadCount == 0 else { throw bad("head count \(headCount) is not a multiple of KV head count \(kvHeadCount)") }
        guard headDim % 2 == 0 else { throw bad("head size \(headDim) must be even for RoPE") }
        guard ropeBase.isFinite, ropeBase > 0 else { throw bad("RoPE base \(ropeBase) must be positive") }
        if let b = localRopeBase, !(b.isFinite && b > 0) { throw bad("local RoPE base \(b) must be positive") }
        guard normEps.isFinite, normEps >= 0 else { throw bad("norm epsilon \(normEps) must be non-negative") }
        guard attentionScale.isFinite, attentionScale > 0 else { throw bad("attention scale \(attentionScale) must be positive") }
        if let w = slidingWindow {
            guard w >= 1 else { throw bad("sliding window \(w) must be positive") }
            guard localLayers.count == layerCount else { throw bad("sliding-window layer pattern covers \(localLayers.count) of \(layerCount) layers") }
        }
        switch ropeScaling {
        case .none: break
        case .linear(let f):
            guard f.isFinite, f > 0 else { throw bad("RoPE linear scaling factor \(f) must be positive") }
        case .perPairDivisors(let d):
            guard d.count == headDim / 2 else { throw bad("RoPE frequency factors: \(d.count) values for \(headDim / 2) frequency pairs") }
            guard d.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw bad("RoPE frequency factors must be positive and finite") }
        }
    }
}

/// FP32 weights of one transformer block. Matrices are row-major `(out, in)`, held as
/// `WeightMatrix` (FP32 values, or the file's encoding decoded on demand); the `[Float]`
/// accessors give their values (a decoded copy for an encoded matrix: read each once where you
/// need it) and store new values.
public struct LayerWeights: Sendable {
    public var attnNorm: [Float]      // (dim)
    public var q: WeightMatrix        // (qDim, dim)
    public var k: WeightMatrix        // (kvDim, dim)
    public var v: WeightMatrix        // (kvDim, dim)
    public var o: WeightMatrix        // (dim, qDim)
    public var bq: [Float]?           // (qDim), qwen2
    public var bk: [Float]?           // (kvDim), qwen2
    public var bv: [Float]?           // (kvDim), qwen2
    public var ffnNorm: [Float]       // (dim)
    public var gate: WeightMatrix     // (hiddenDim, dim)
    public var up: WeightMatrix       // (hiddenDim, dim)
    public var down: WeightMatrix     // (dim, hiddenDim)
    /// The norms only some families have (`Architecture.Traits`); nil otherwise.
    public var extraNorms: ExtraNorms

    public init(attnNorm: [Float], q: WeightMatrix, k: WeightMatrix, v: WeightMatrix, o: WeightMatrix, bq: [Float]?,
                bk: [Float]?, bv: [Float]?, ffnNorm: [Float], gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix,
                extraNorms: ExtraNorms = ExtraNorms()) {
        self.attnNorm = attnNorm; self.q = q; self.k = k; self.v = v; self.o = o
        self.bq = bq; self.bk = bk; self.bv = bv
        self.ffnNorm = ffnNorm; self.gate = gate; self.up = up; self.down = down
        self.extraNorms = extraNorms
    }

    public init(attnNorm: [Float], wq: [Float], wk: [Float], wv: [Float], wo: [Float], bq: [Float]?, bk: [Float]?,
                bv: [Float]?, ffnNorm: [Float], wGate: [Float], wUp: [Float], wDown: [Float],
                extraNorms: ExtraNorms = ExtraNorms()) {
        self.init(attnNorm: attnNorm, q: WeightMatrix(values: wq), k: WeightMatrix(values: wk), v: WeightMatrix(values: wv),
                  o: WeightMatrix(values: wo), bq: bq, bk: bk, bv: bv, ffnNorm: ffnNorm, gate: WeightMatrix(values: wGate),
                  up: WeightMatrix(values: wUp), down: WeightMatrix(values: wDown), extraNorms: extraNorms)
    }

    public var wq: [Float] { get { q.values } set { q = WeightMatrix(values: newValue) } }
    public var wk: [Float] { get { k.values } set { k = WeightMatrix(values: newValue) } }
    public var wv: [Float] { get { v.values } set { v = WeightMatrix(values: newValue) } }
    public var wo: [Float] { get { o.values } set { o = WeightMatrix(values: newValue) } }
    public var wGate: [Float] { get { gate.values } set { gate = WeightMatrix(values: newValue) } }
    public var wUp: [Float] { get { up.values } set { up = WeightMatrix(values: newValue) } }
    public var wDown: [Float] { get { down.values } set { down = WeightMatrix(values: newValue) } }

    /// The seven matrices, in the order q, k, v, o, gate, up, down.
    public var matrices: [WeightMatrix] { [q, k, v, o, gate, up, down] }
}

/// Norm weights of the families that have more than the two pre-norms (as multipliers: Gemma's
/// HF `1 + w` is applied at load).
public struct ExtraNorms: Sendable, Equatable {
    public var q: [Float]?            // (headDim), Qwen3, Gemma 3
    public var k: [Float]?            // (headDim)
    public var postAttention: [Float]?  // (dim), Gemma 3
    public var postFeedForward: [Float]?  // (dim)

    public init(q: [Float]? = nil, k: [Float]? = nil, postAttention: [Float]? = nil, postFeedForward: [Float]? = nil) {
        self.q = q; self.k = k; self.postAttention = postAttention; self.postFeedForward = postFeedForward
    }

    public var parameterCount: Int {
        (q?.count ?? 0) + (k?.count ?? 0) + (postAttention?.count ?? 0) + (postFeedForward?.count ?? 0)
    }
}

/// FP32 weights of a whole model (matrices as in `LayerWeights`).
public struct ModelWeights: Sendable {
    public var embedding: WeightMatrix  // (vocab, dim)
    public var layers: [LayerWeights]
    public var outputNorm: [Float]      // (dim)
    /// Untied output head `(vocab, dim)`; nil when the head is the token embedding.
    public var outputMatrix: WeightMatrix?

    public init(embedding: WeightMatrix, layers: [LayerWeights], outputNorm: [Float], outputMatrix: WeightMatrix?) {
        self.embedding = embedding
        self.layers = layers
        self.outputNorm = outputNorm
        self.outputMatrix = outputMatrix
    }

    public init(tokenEmbedding: [Float], layers: [LayerWeights], outputNorm: [Float], output: [Float]?) {
        self.init(embedding: WeightMatrix(values: tokenEmbedding), layers: layers, outputNorm: outputNorm,
                  outputMatrix: output.map { WeightMatrix(values: $0) })
    }

    public var tokenEmbedding: [Float] {
        get { embedding.values }
        set { embedding = WeightMatrix(values: newValue) }
    }
    public var output: [Float]? {
        get { outputMatrix?.values }
        set { outputMatrix = newValue.map { WeightMatrix(values: $0) } }
    }

    /// The matrix that maps the final hidden state to logits.
    public var headMatrix: WeightMatrix { outputMatrix ?? embedding }
    /// Its values (a decoded copy when encoded).
    public var head: [Float] { headMatrix.values }

    /// Number of parameters (tied head counted once).
    public var parameterCount: Int {
        var n = embedding.count + outputNorm.count + (outputMatrix?.count ?? 0)
        for l in layers {
            n += l.attnNorm.count + l.ffnNorm.count + l.matrices.reduce(0) { $0 + $1.count }
            n += (l.bq?.count ?? 0) + (l.bk?.count ?? 0) + (l.bv?.count ?? 0) + l.extraNorms.parameterCount
        }
        return n
    }
}
