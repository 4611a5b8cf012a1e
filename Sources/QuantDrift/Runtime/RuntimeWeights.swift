/// One block in the form the forward pass runs: norms and biases in FP32, the seven matrices
/// behind `LinearLayer` so that each can be FP32 or quantized.
public struct RuntimeLayer: Sendable {
    public var attnNorm: [Float]          // (dim)
    public var wq: any LinearLayer        // (qDim, dim)
    public var wk: any LinearLayer        // (kvDim, dim)
    public var wv: any LinearLayer        // (kvDim, dim)
    public var wo: any LinearLayer        // (dim, qDim)
    public var bq: [Float]?
    public var bk: [Float]?
    public var bv: [Float]?
    public var ffnNorm: [Float]           // (dim)
    public var wGate: any LinearLayer     // (hiddenDim, dim)
    public var wUp: any LinearLayer       // (hiddenDim, dim)
    public var wDown: any LinearLayer     // (dim, hiddenDim)
    /// Q/K and post norms of the families that have them (FP32, never quantized).
    public var extraNorms: ExtraNorms

    public var linears: [any LinearLayer] { [wq, wk, wv, wo, wGate, wUp, wDown] }
}

/// The weights a `Transformer` runs: the FP32 reference or a quantized copy made by a scheme.
public struct RuntimeWeights: Sendable {
    /// Embedding rows looked up by token id, (vocab, dim): the model's (FP32 or its file's
    /// encoding), or under a quantized scheme the rows of its quantized embedding.
    public var tokenEmbedding: any EmbeddingTable
    public var layers: [RuntimeLayer]
    public var outputNorm: [Float]
    public var head: any LinearLayer      // (vocab, dim)

    public init(tokenEmbedding: any EmbeddingTable, layers: [RuntimeLayer], outputNorm: [Float], head: any LinearLayer) {
        self.tokenEmbedding = tokenEmbedding
        self.layers = layers
        self.outputNorm = outputNorm
        self.head = head
    }

    /// The FP32 reference: every matrix on BLAS (matrices the file stores encoded: decoded tiles).
    public init(fp32 w: ModelWeights, config c: ModelConfig) {
        tokenEmbedding = w.embedding
        outputNorm = w.outputNorm
        head = w.headMatrix.fp32Linear(outDim: c.vocabSize, inDim: c.dim)
        layers = w.layers.map { l in
            RuntimeLayer(
                attnNorm: l.attnNorm,
                wq: l.q.fp32Linear(outDim: c.qDim, inDim: c.dim),
                wk: l.k.fp32Linear(outDim: c.kvDim, inDim: c.dim),
                wv: l.v.fp32Linear(outDim: c.kvDim, inDim: c.dim),
                wo: l.o.fp32Linear(outDim: c.dim, inDim: c.qDim),
                bq: l.bq, bk: l.bk, bv: l.bv,
                ffnNorm: l.ffnNorm,
                wGate: l.gate.fp32Linear(outDim: c.hiddenDim, inDim: c.dim),
                wUp: l.up.fp32Linear(outDim: c.hiddenDim, inDim: c.dim),
                wDown: l.down.fp32Linear(outDim: c.dim, inDim: c.hiddenDim),
                extraNorms: l.extraNorms)
        }
    }

    /// Bytes of weights one decode step reads: every matrix and norm, the head, one embedding row.
    public func bytesPerToken(dim: Int) -> Int {
        var n = head.storageBytes + (outputNorm.count + dim) * 4
        for l in layers {
            n += l.linears.reduce(0) { $0 + $1.storageBytes }
            n += (l.attnNorm.count + l.ffnNorm.count + (l.bq?.count ?? 0) + (l.bk?.count ?? 0) + (l.bv?.count ?? 0) + l.extraNorms.parameterCount) * 4
        }
        return n
    }
}
