/// Builds the weights a scheme runs from the model's FP32 weights.
public enum SchemeBuilder {
    /// The quantized copy of `model` under `scheme` (its KV part is applied by `makeCache`).
    /// - Parameter calibration: data for static activation ranges, SmoothQuant and outlier
    ///   channels when the scheme has no `calib=FILE.json`.
    public static func weights(for model: Model, scheme: Scheme, calibration: CalibrationSet? = nil) throws -> RuntimeWeights {
        try build(for: model, scheme: scheme, calibration: calibration).weights
    }

    /// The weights, and the static activation ranges they quantize with (per site; empty unless
    /// the scheme has static ranges): the clipping recorder compares activations with them.
    static func build(for model: Model, scheme: Scheme, calibration: CalibrationSet? = nil) throws
        -> (weights: RuntimeWeights, staticRanges: [SiteID: SiteCalibration]) {
        let c = model.config
        if scheme.weights == nil && scheme.activations == nil && scheme.rotation == nil { return (RuntimeWeights(fp32: model.weights, config: c), [:]) }
        try checkActivations(scheme.activations)
        let skippedLayers = Set(scheme.skip.compactMap { if case .layer(let i) = $0 { return i } else { return nil } })
        let skippedTensors = Set(scheme.skip.compactMap { if case .tensor(let s) = $0 { return s } else { return nil } })
        for l in skippedLayers where l >= c.layerCount {
            throw QuantDriftError.invalidInput("scheme: skip layer \(l) but the model has \(c.layerCount) layers")
        }
        if let w = scheme.weights, w.method.needsCalibration, scheme.activations?.smoothAlpha != nil {
            throw QuantDriftError.unsupported("scheme: \(w.method.rawValue) together with SmoothQuant is not supported")
        }
        // GPTQ and AWQ run the FP32 model over the calibration data first (AWQ also rescales).
        let calibrated = try CalibratedWeights(model: model, spec: scheme.weights, calibration: calibration)

        // Calibration: SmoothQuant factors folded into the FP32 weights, outlier channels, static scales.
        var source = calibrated?.weights ?? model.weights
        // QuaRot: rotations folded into the FP32 weights (the parser refuses calibrated methods with them).
        let rotations = scheme.rotation.map { QuaRot.rotations($0, config: c) }
        if let r = rotations { source = try QuaRot.apply(residual: r.residual, down: r.down, to: source, config: c) }
        var plan = ActivationPlan.none
        var staticScales: [SiteID: SiteCalibration] = [:]
        if let a = scheme.activations, a.needsCalibration {
            let artifact: CalibrationArtifact
            if let file = scheme.calibrationFile {
                artifact = try CalibrationArtifact.load(path: file)
                try artifact.check(for: model, scheme: scheme, path: file, modelSHA256: try FileDigest.sha256(path: model.path))
            } else if let calibration {
                artifact = try ActivationCalibrator.calibrate(model: model, scheme: scheme, data: calibration, ranges: a.isStatic)
            } else {
                let what = [a.isStatic ? "static activation ranges" : nil, a.smoothAlpha != nil ? "SmoothQuant" : nil,
                            a.outlierThreshold != nil ? "outlier channels" : nil].compactMap { $0 }.joined(separator: ", ")
                throw QuantDriftError.invalidInput("scheme \(scheme.name): \(what) need calibration data: pass --calibration DIR (a folder of .txt files) or calib=FILE.json made by quantdrift calibrate")
            }
            plan = try ActivationPlan.make(a, channelMax: artifact.channelMaxAbs, model: model)
            if let s = plan.smoothing { source = try SmoothQuant.apply(s, to: source, config: c) }
            if a.isStatic { staticScales = Dictionary(uniqueKeysWithValues: artifact.sites.map { ($0.id, $0) }) }
        }

        func quantizer(_ site: SiteID, weights: WeightQuant?) throws -> ActivationQuantizer? {
            guard let a = scheme.activations else { return nil }
            if a.followsWeights == true {
                // ggml's vec_dot pairs: q8_K for the 256-element k-quants, q8_0 (or q8_1, the same codes) otherwise.
                return ActivationQuantizer(weights.map { $0.format.blockSize == 256 } == true ? .q8_K : .q8_0)
            }
            if a.isStatic {
                guard let cal = staticScales[site], cal.scale > 0, cal.scale.isFinite else {
                    throw QuantDriftError.invalidInput("scheme: no static activation scale for site \(site)")
                }
                if case .group(let n) = a.granularity {
                    guard cal.groupSize == n, let scales = cal.groupScales else {
                        throw QuantDriftError.invalidInput("scheme: no static activation scales per group of \(n) for site \(site)")
                    }
                    return ActivationQuantizer(.staticPerGroup(n, scales))
                }
                return ActivationQuantizer(.staticPerTensor(cal.scale))
            }
            return try activationQuantizer(a)
        }

        func linear(_ w: [Float], rows: Int, cols: Int, kind: String, layer: Int?, spec: WeightQuant?,
                    site: SiteID) throws -> any LinearLayer {
            let dense = DenseLinear(weight: w, outDim: rows, inDim: cols)
            if skippedTensors.contains(kind) || layer.map(skippedLayers.contains) == true { return dense }
            let upgraded = scheme.upgrade?.covers(kind: kind, layer: layer) == true
            let spec = (upgraded ? scheme.upgrade?.weights : spec).map { Self.tensorSpec($0, kind: kind, layer: layer, cols: cols, config: c) }
            let act = try quantizer(site, weights: spec)
            func build(_ w: [Float]) throws -> any LinearLayer {
                guard let spec else {
                    let d = DenseLinear(weight: w, outDim: rows, inDim: cols)
                    if let act { return ActivationOnlyLinear(base: d, activations: act) }
                    return d
                }
                if !upgraded, let m = try calibrated?.quantize(w, rows: rows, cols: cols, kind: kind, layer: layer, spec: spec) {
                    return try QuantizedLinear(m, activations: act)
                }
                return try WeightQuantizer.layer(w, rows: rows, cols: cols, spec: spec, activations: act)
            }
            if let channels = plan.outliers[site], act != nil {
                return try OutlierLinear(weight: w, outDim: rows, inDim: cols, channels: channels, makeInner: build)
            }
            return try build(w)
        }

        let ws = scheme.weights
        // llama-quantize keeps the token embedding (here also the tied head) in Q8_0 for Q4_0/Q4_1.
        var headSpec = ws
        if let f = ws?.format.traits.weights.headFormat {
            headSpec = WeightQuant(format: f, granularity: f.traits.weights.granularity, symmetric: f.traits.weights.symmetric, method: .rtn)
        }
        var layers: [RuntimeLayer] = []
        for (i, l) in source.layers.enumerated() {
            let ain = SiteID(i, .attentionInput), aout = SiteID(i, .attentionOutput)
            let fin = SiteID(i, .feedForwardInput), down = SiteID(i, .feedForwardDownInput)
            // With rot=down, ffn_down's input is rotated online by the matrix folded into its columns.
            let wDown = try linear(l.wDown, rows: c.dim, cols: c.hiddenDim, kind: "ffn_down", layer: i, spec: ws, site: down)
            layers.append(RuntimeLayer(
                attnNorm: l.attnNorm,
                wq: try linear(l.wq, rows: c.qDim, cols: c.dim, kind: "attn_q", layer: i, spec: ws, site: ain),
                wk: try linear(l.wk, rows: c.kvDim, cols: c.dim, kind: "attn_k", layer: i, spec: ws, site: ain),
                wv: try linear(l.wv, rows: c.kvDim, cols: c.dim, kind: "attn_v", layer: i, spec: ws, site: ain),
                wo: try linear(l.wo, rows: c.dim, cols: c.qDim, kind: "attn_o", layer: i, spec: ws, site: aout),
                bq: l.bq, bk: l.bk, bv: l.bv,
                ffnNorm: l.ffnNorm,
                wGate: try linear(l.wGate, rows: c.hiddenDim, cols: c.dim, kind: "ffn_gate", layer: i, spec: ws, site: fin),
                wUp: try linear(l.wUp, rows: c.hiddenDim, cols: c.dim, kind: "ffn_up", layer: i, spec: ws, site: fin),
                wDown: rotations?.down.map { RotatedInputLinear(rotation: $0, inner: wDown) } ?? wDown,
                extraNorms: l.extraNorms))
        }
        let head = try linear(source.head, rows: c.vocabSize, cols: c.dim, kind: "lm_head", layer: nil, spec: headSpec,
                              site: SiteID(c.layerCount, .headInput))
        // The embedding follows the scheme too: its rows are looked up from the quantized matrix
        // (decoded a row at a time, never held as FP32).
        var embedding: any EmbeddingTable = source.embedding
        let embedSkipped = skippedTensors.contains("embed") || (c.tiedOutput && skippedTensors.contains("lm_head"))
        // A rotated residual unties the head (it carries the final norm's gain, the embedding does not).
        let tied = c.tiedOutput && source.outputMatrix == nil
        if let spec = headSpec, !embedSkipped {
            if tied, let q = head as? any DequantizableLinear {
                embedding = q
            } else {
                let embedSpec = scheme.upgrade.flatMap { $0.covers(kind: "embed", layer: nil) ? $0.weights : nil } ?? spec
                embedding = try WeightQuantizer.layer(source.tokenEmbedding, rows: c.vocabSize, cols: c.dim,
                                                      spec: tensorSpec(embedSpec, kind: "embed", layer: nil, cols: c.dim, config: c))
            }
        }
        return (RuntimeWeights(tokenEmbedding: embedding, layers: layers, outputNorm: source.outputNorm, head: head), staticScales)
    }

    /// The format each weight matrix gets under `scheme`, in file order and named as in a GGUF
    /// file (token_embd.weight, blk.N.attn_q.weight, …, output.weight for a separate head):
    /// ggml type names for llama.cpp formats (for a mix, what llama-quantize writes), the
    /// scheme's own spec otherwise, F32 where nothing is quantized.
    public static func tensorFormats(config c: ModelConfig, scheme: Scheme) -> [(tensor: String, format: String)] {
        let ws = scheme.weights
        var headSpec = ws
        if let f = ws?.format.traits.weights.headFormat {
            headSpec = WeightQuant(format: f, granularity: f.traits.weights.granularity, symmetric: f.traits.weights.symmetric, method: .rtn)
        }
        let skippedLayers = Set(scheme.skip.compactMap { if case .layer(let i) = $0 { return i } else { return nil } })
        let skippedTensors = Set(scheme.skip.compactMap { if case .tensor(let s) = $0 { return s } else { return nil } })
        func format(_ spec: WeightQuant?, kind: String, layer: Int?, cols: Int, skipped: Bool) -> String {
            guard var spec, !skipped else { return "F32" }
            if let up = scheme.upgrade, up.covers(kind: kind, layer: layer) { spec = up.weights }
            let t = tensorSpec(spec, kind: kind, layer: layer, cols: cols, config: c)
            if let g = t.format.ggmlType { return g.name }
            if t.format.isBlockFormat { return t.format.rawValue.uppercased() }
            return "\(t.format.rawValue),\(t.granularity),\(t.symmetric ? "sym" : "asym")" + (t.method == .rtn ? "" : ",\(t.method.rawValue)")
        }
        let embedSkipped = skippedTensors.contains("embed") || (c.tiedOutput && skippedTensors.contains("lm_head"))
        var out = [("token_embd.weight", format(headSpec, kind: c.tiedOutput ? "lm_head" : "embed", layer: nil, cols: c.dim, skipped: embedSkipped))]
        let kinds: [(kind: String, file: String, cols: Int)] = [
            ("attn_q", "attn_q", c.dim), ("attn_k", "attn_k", c.dim), ("attn_v", "attn_v", c.dim), ("attn_o", "attn_output", c.qDim),
            ("ffn_gate", "ffn_gate", c.dim), ("ffn_up", "ffn_up", c.dim), ("ffn_down", "ffn_down", c.hiddenDim),
        ]
        for i in 0..<c.layerCount {
            for k in kinds {
                let skipped = skippedLayers.contains(i) || skippedTensors.contains(k.kind)
                out.append(("blk.\(i).\(k.file).weight", format(ws, kind: k.kind, layer: i, cols: k.cols, skipped: skipped)))
            }
        }
        if !c.tiedOutput {
            out.append(("output.weight", format(headSpec, kind: "lm_head", layer: nil, cols: c.dim, skipped: skippedTensors.contains("lm_head"))))
        }
        return out
    }

    /// The format tensor `kind` of `layer` (rows of `cols`) gets under `spec`: a llama.cpp mix's
    /// rule, or for a llama.cpp block format llama-quantize's fallback where a row does not hold
    /// whole blocks (as its --pure mode); otherwise `spec` itself.
    public static func tensorSpec(_ spec: WeightQuant, kind: String, layer: Int?, cols: Int, config c: ModelConfig) -> WeightQuant {
        let f: NumberFormat
        if let mix = spec.mix {
            f = mix.format(kind: kind, layer: layer, cols: cols, layers: c.layerCount, gqa: c.headCount / max(1, c.kvHeadCount),
                           tiedHead: c.tiedOutput)
        } else if spec.format.ggmlType != nil {
            f = LlamaCppMix.fallback(spec.format, cols: cols)
        } else {
            return spec
        }
        let t = f.traits.weights
        return WeightQuant(format: f, granularity: t.granularity, symmetric: t.symmetric, method: .rtn)
    }

    /// Refuses activation options this build cannot run.
    static func checkActivations(_ a: ActivationQuant?) throws {
        guard let a else { return }
        if a.isStatic {
            if a.format.traits.activations?.fixedLayout == true {
                throw QuantDriftError.unsupported("scheme: \(a.format.rawValue) activations are dynamic; static ranges need a=int8,tensor,static")
            }
            if case .group(let n) = a.granularity, n % 32 != 0 {
                throw QuantDriftError.invalidInput("scheme: activation group size \(n) must be a multiple of 32")
            }
        } else {
            _ = try activationQuantizer(a)
        }
    }

    /// The dynamic activation quantizer of `a` (static ranges come from calibration per site).
    static func activationQuantizer(_ a: ActivationQuant?) throws -> ActivationQuantizer? {
        guard let a else { return nil }
        if let mode = a.format.traits.activations?.fixedQuantizer { return ActivationQuantizer(mode) }
        // Symmetric codes: ±127 for int8, ±7 for int4.
        let maxCode = (1 << (a.format.bits - 1)) - 1
        switch a.granularity {
        case .token: return ActivationQuantizer(.dynamicPerRow, maxCode: maxCode)
        case .group(let n):
            guard n % 32 == 0 else { throw QuantDriftError.invalidInput("scheme: activation group size \(n) must be a multiple of 32") }
            return ActivationQuantizer(.dynamicPerGroup(n), maxCode: maxCode)
        case .tensor, .channel:
            throw QuantDriftError.invalidInput("scheme: dynamic activations are per token or per group")
        }
    }
}
