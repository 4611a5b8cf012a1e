/// Linear layer that quantizes and dequantizes its input rows, then multiplies FP32 weights:
/// the "activations only" part of a scheme, used where the weights stay FP32.
public struct ActivationOnlyLinear: LinearLayer {
    public let base: DenseLinear
    public let activations: ActivationQuantizer

    public var inDim: Int { base.inDim }
    public var outDim: Int { base.outDim }
    public var storageBytes: Int { base.storageBytes }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        let n = inDim
        let codes = scratch.bytes.bindMemory(to: Int8.self, capacity: rows * n)
        activations.quantize(x, rows: rows, inDim: n, codes: codes, scales: scratch.floats.pointer, blockSums: scratch.blockSums)
        let g = activations.groupSize(inDim: n)
        let ng = (n + g - 1) / g
        let xin = scratch.input.pointer
        for r in 0..<rows {
            for i in 0..<n { xin[r * n + i] = Float(codes[r * n + i]) * scratch.floats[r * ng + i / g] }
        }
        base.forward(xin, rows: rows, into: y, scratch: scratch)
    }
}

/// Builds the weights a scheme runs from the model's FP32 weights.
public enum SchemeBuilder {
    /// The quantized copy of `model` under `scheme` (its KV part is applied by `makeCache`).
    public static func weights(for model: Model, scheme: Scheme, calibration: CalibrationSet? = nil) throws -> RuntimeWeights {
        let c = model.config
        let fp32 = RuntimeWeights(fp32: model.weights, config: c)
        if scheme.weights == nil && scheme.activations == nil { return fp32 }
        let act = try activationQuantizer(scheme.activations)
        let skippedLayers = Set(scheme.skip.compactMap { if case .layer(let i) = $0 { return i } else { return nil } })
        let skippedTensors = Set(scheme.skip.compactMap { if case .tensor(let s) = $0 { return s } else { return nil } })
        for l in skippedLayers where l >= c.layerCount {
            throw QuantDriftError.invalidInput("scheme: skip layer \(l) but the model has \(c.layerCount) layers")
        }
        // GPTQ and AWQ run the FP32 model over the calibration data first (AWQ also rescales).
        let calibrated = try CalibratedWeights(model: model, spec: scheme.weights, calibration: calibration)
        let source = calibrated?.weights ?? model.weights

        func linear(_ w: [Float], rows: Int, cols: Int, kind: String, layer: Int?, spec: WeightQuant?) throws -> any LinearLayer {
            let dense = DenseLinear(weight: w, outDim: rows, inDim: cols)
            if skippedTensors.contains(kind) || layer.map(skippedLayers.contains) == true { return dense }
            guard let spec else {
                if let act { return ActivationOnlyLinear(base: dense, activations: act) }
                return dense
            }
            if let m = try calibrated?.quantize(w, rows: rows, cols: cols, kind: kind, layer: layer, spec: spec) {
                return try QuantizedLinear(m, activations: act)
            }
            return try WeightQuantizer.layer(w, rows: rows, cols: cols, spec: spec, activations: act)
        }

        let ws = scheme.weights
        // llama-quantize keeps the token embedding (here also the tied head) in Q8_0 for Q4_0/Q4_1.
        var headSpec = ws
        if let f = ws?.format, f == .q4_0 || f == .q4_1 {
            headSpec = WeightQuant(format: .q8_0, granularity: .group(32), symmetric: true, method: .rtn)
        }
        var layers: [RuntimeLayer] = []
        for (i, l) in source.layers.enumerated() {
            layers.append(RuntimeLayer(
                attnNorm: l.attnNorm,
                wq: try linear(l.wq, rows: c.qDim, cols: c.dim, kind: "attn_q", layer: i, spec: ws),
                wk: try linear(l.wk, rows: c.kvDim, cols: c.dim, kind: "attn_k", layer: i, spec: ws),
                wv: try linear(l.wv, rows: c.kvDim, cols: c.dim, kind: "attn_v", layer: i, spec: ws),
                wo: try linear(l.wo, rows: c.dim, cols: c.qDim, kind: "attn_o", layer: i, spec: ws),
                bq: l.bq, bk: l.bk, bv: l.bv,
                ffnNorm: l.ffnNorm,
                wGate: try linear(l.wGate, rows: c.hiddenDim, cols: c.dim, kind: "ffn_gate", layer: i, spec: ws),
                wUp: try linear(l.wUp, rows: c.hiddenDim, cols: c.dim, kind: "ffn_up", layer: i, spec: ws),
                wDown: try linear(l.wDown, rows: c.dim, cols: c.hiddenDim, kind: "ffn_down", layer: i, spec: ws)))
        }
        let head = try linear(model.weights.head, rows: c.vocabSize, cols: c.dim, kind: "lm_head", layer: nil, spec: headSpec)
        // The embedding follows the scheme too: its rows are looked up from the quantized matrix.
        var embedding = model.weights.tokenEmbedding
        let embedSkipped = skippedTensors.contains("embed") || (c.tiedOutput && skippedTensors.contains("lm_head"))
        if let spec = headSpec, !embedSkipped {
            if c.tiedOutput, let q = head as? any DequantizableLinear {
                embedding = q.dequantizedWeight()
            } else {
                embedding = try WeightQuantizer.layer(embedding, rows: c.vocabSize, cols: c.dim, spec: spec).dequantizedWeight()
            }
        }
        return RuntimeWeights(tokenEmbedding: embedding, layers: layers, outputNorm: model.weights.outputNorm, head: head)
    }

    static func activationQuantizer(_ a: ActivationQuant?) throws -> ActivationQuantizer? {
        guard let a else { return nil }
        if a.format == .q8_0 { return ActivationQuantizer(.q8_0) }
        if a.isStatic {
            throw QuantDriftError.unsupported("scheme: static activation ranges need calibration, which is not built yet")
        }
        if a.smoothAlpha != nil {
            throw QuantDriftError.unsupported("scheme: SmoothQuant (smooth=) is not built yet")
        }
        if a.outlierThreshold != nil {
            throw QuantDriftError.unsupported("scheme: outlier channels (outlier=) are not built yet")
        }
        switch a.granularity {
        case .token: return ActivationQuantizer(.dynamicPerRow)
        case .group(let n):
            guard n % 32 == 0 else { throw QuantDriftError.invalidInput("scheme: activation group size \(n) must be a multiple of 32") }
            return ActivationQuantizer(.dynamicPerGroup(n))
        case .tensor, .channel:
            throw QuantDriftError.invalidInput("scheme: dynamic activations are per token or per group")
        }
    }
}
