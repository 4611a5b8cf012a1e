/// A scheme made ready to run on one model: its quantized weights (built once) and the KV cache
/// it wants. Make as many Transformers from it as needed.
public struct SchemeRuntime: Sendable {
    public let scheme: Scheme
    public let weights: RuntimeWeights
    /// The static activation ranges per site (empty unless the scheme has static ranges).
    public let staticRanges: [SiteID: SiteCalibration]

    /// - Parameter calibration: data for the parts of the scheme that need it (static activation
    ///   ranges, SmoothQuant, GPTQ, AWQ); nil when the scheme needs none.
    public init(model: Model, scheme: Scheme, calibration: CalibrationSet? = nil) throws {
        self.scheme = scheme
        (weights, staticRanges) = try SchemeBuilder.build(for: model, scheme: scheme, calibration: calibration)
        // Fail early on a KV spec the cache cannot hold.
        if let kv = scheme.kv {
            try QuantizedKVCache.validate(kv, kvDim: model.config.kvDim, headDim: model.config.headDim)
        }
    }

    /// Weights put together elsewhere (`MixedPrecisionSearch` swaps matrices between two builds).
    init(scheme: Scheme, weights: RuntimeWeights) {
        self.scheme = scheme
        self.weights = weights
        staticRanges = [:]
    }

    /// Bytes of the weight matrices: every layer's seven and the head (a tied embedding is the
    /// head's matrix; a separate embedding table is not counted).
    public var weightBytes: Int { weights.layers.reduce(weights.head.storageBytes) { $0 + $1.linears.reduce(0) { $0 + $1.storageBytes } } }

    public func transformer(model: Model, contextLength: Int? = nil, maxBatch: Int = 512,
                            allLogits: Bool = false, sequences: Int = 1) throws -> Transformer {
        let kv = scheme.kv
        let headDim = model.config.headDim
        let fp32Layers = Set(scheme.skip.compactMap { if case .layer(let l) = $0 { l } else { nil } })
        return try Transformer(model: model, contextLength: contextLength, maxBatch: maxBatch, allLogits: allLogits,
                               weights: weights, sequences: sequences) { shape in
            guard let kv else { return nil }  // the transformer's FP32 cache (windowed where the model has windows)
            return try QuantizedKVCache(spec: kv, shape: shape, headDim: headDim, fp32Layers: fp32Layers)
        }
    }
}
