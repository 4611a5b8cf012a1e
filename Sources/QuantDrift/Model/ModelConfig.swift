/// Decoder-only architectures this runtime implements.
public enum Architecture: String, Sendable, Codable, CaseIterable {
    /// Llama family: SmolLM, TinyLlama, Llama 2/3, Mistral without sliding window.
    case llama
    /// Qwen2: llama with biases on the Q, K and V projections.
    case qwen2
}

/// How RoPE pairs the dimensions of a head.
public enum RopeStyle: String, Sendable, Codable {
    /// (0,1), (2,3), …: GGUF llama files, whose converter permuted the Q/K rows into this order.
    case adjacentPairs
    /// (i, i + d/2): HF checkpoints and GGUF qwen2 ("NEOX" in ggml).
    case rotateHalf
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

    public var qDim: Int { headCount * headDim }
    public var kvDim: Int { kvHeadCount * headDim }

    public init(architecture: Architecture, layerCount: Int, dim: Int, hiddenDim: Int, headCount: Int,
                kvHeadCount: Int, headDim: Int, vocabSize: Int, contextLength: Int, ropeBase: Float,
                normEps: Float, ropeStyle: RopeStyle, tiedOutput: Bool) {
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
        guard normEps.isFinite, normEps >= 0 else { throw bad("norm epsilon \(normEps) must be non-negative") }
    }
}

/// FP32 weights of one transformer block. Matrices are row-major `(out, in)`.
public struct LayerWeights: Sendable {
    public var attnNorm: [Float]      // (dim)
    public var wq: [Float]            // (qDim, dim)
    public var wk: [Float]            // (kvDim, dim)
    public var wv: [Float]            // (kvDim, dim)
    public var wo: [Float]            // (dim, qDim)
    public var bq: [Float]?           // (qDim), qwen2
    public var bk: [Float]?           // (kvDim), qwen2
    public var bv: [Float]?           // (kvDim), qwen2
    public var ffnNorm: [Float]       // (dim)
    public var wGate: [Float]         // (hiddenDim, dim)
    public var wUp: [Float]           // (hiddenDim, dim)
    public var wDown: [Float]         // (dim, hiddenDim)

    public init(attnNorm: [Float], wq: [Float], wk: [Float], wv: [Float], wo: [Float], bq: [Float]?, bk: [Float]?,
                bv: [Float]?, ffnNorm: [Float], wGate: [Float], wUp: [Float], wDown: [Float]) {
        self.attnNorm = attnNorm; self.wq = wq; self.wk = wk; self.wv = wv; self.wo = wo
        self.bq = bq; self.bk = bk; self.bv = bv
        self.ffnNorm = ffnNorm; self.wGate = wGate; self.wUp = wUp; self.wDown = wDown
    }
}

/// FP32 weights of a whole model.
public struct ModelWeights: Sendable {
    public var tokenEmbedding: [Float]  // (vocab, dim)
    public var layers: [LayerWeights]
    public var outputNorm: [Float]      // (dim)
    /// Untied output head `(vocab, dim)`; nil when the head is the token embedding.
    public var output: [Float]?

    public init(tokenEmbedding: [Float], layers: [LayerWeights], outputNorm: [Float], output: [Float]?) {
        self.tokenEmbedding = tokenEmbedding
        self.layers = layers
        self.outputNorm = outputNorm
        self.output = output
    }

    /// The matrix that maps the final hidden state to logits.
    public var head: [Float] { output ?? tokenEmbedding }

    /// Number of parameters (tied head counted once).
    public var parameterCount: Int {
        var n = tokenEmbedding.count + outputNorm.count + (output?.count ?? 0)
        for l in layers {
            n += l.attnNorm.count + l.wq.count + l.wk.count + l.wv.count + l.wo.count + l.ffnNorm.count
            n += l.wGate.count + l.wUp.count + l.wDown.count
            n += (l.bq?.count ?? 0) + (l.bk?.count ?? 0) + (l.bv?.count ?? 0)
        }
        return n
    }
}
