import Foundation
import Testing
@testable import QuantDrift

/// The tiny Qwen3 and Llama-3-RoPE models of shared/reference/families (copied into
/// Fixtures/families): llama.cpp's exact-FP32 perplexity on eval.txt at ctx 128, the same models
/// as HF folders, and configs the runtime must refuse.
@Suite("Model families: Qwen3 Q/K norm, Llama 3 RoPE scaling")
struct ModelFamilyTests {
    static func familyModel(_ file: String) throws -> Model {
        try Model.load(path: fixtureURL("families/\(file)").path)
    }

    static func llamaCppPPL(_ file: String) throws -> Double {
        let j = try Golden.json("families/families.json") as! [String: Any]
        let eval = j["eval"] as! [String: Any]
        let key = String(file.dropLast(".gguf".count))
        guard let ppl = (eval[key] as? [String: Any])?["ppl"] as? Double else {
            throw MissingTestData(description: "families.json has no llama.cpp perplexity for \(key)")
        }
        return ppl
    }

    @Test("perplexity on eval.txt at ctx 128 equals llama.cpp's within 1e-3", arguments: ["qwen3-tiny.gguf", "llama3rope-tiny.gguf"])
    func perplexityMatchesLlamaCpp(_ file: String) throws {
        let model = try Self.familyModel(file)
        let r = try Perplexity.run(model: model, tokens: try Golden.evalTokens(model), nCtx: 128)
        let want = try Self.llamaCppPPL(file)
        #expect(r.chunks == 37 && r.tokensScored == 2331)
        #expect(abs(r.ppl / want - 1) <= 1e-3, "\(file): PPL \(r.ppl) vs llama.cpp \(want)")
    }

    @Test("the features are read: Q/K norms and rope_freqs reach the config and change the result")
    func featuresAreRead() throws {
        let qwen = try Self.familyModel("qwen3-tiny.gguf")
        #expect(qwen.config.architecture == .qwen3 && qwen.config.headDim == 64 && qwen.config.qDim == 256)
        #expect(qwen.config.ropeStyle == .rotateHalf && qwen.weights.layers.allSatisfy { $0.extraNorms.q?.count == 64 })
        let llama = try Self.familyModel("llama3rope-tiny.gguf")
        let j = try Golden.json("families/families.json") as! [String: Any]
        let params = (j["params"] as! [String: Any])["llama3rope"] as! [String: Any]
        let want = (params["rope_freqs"] as! [Double]).map(Float.init)
        guard case .perPairDivisors(let d) = llama.config.ropeScaling else {
            Issue.record("rope_freqs not read: \(llama.config.ropeScaling)")
            return
        }
        #expect(d == want)
        // The HF llama3 formula gives the same divisors as llama.cpp's converter stored.
        let scaling = params["rope_scaling"] as! [String: Any]
        guard case .perPairDivisors(let hf) = RopeScaling.llama3(
            factor: scaling["factor"] as! Double, lowFreqFactor: scaling["low_freq_factor"] as! Double,
            highFreqFactor: scaling["high_freq_factor"] as! Double,
            originalContext: Double(scaling["original_max_position_embeddings"] as! Int), base: 500000, headDim: 32) else {
            Issue.record("llama3 scaling must give per-pair divisors")
            return
        }
        for (a, b) in zip(hf, want) { #expect(abs(a - b) <= 1e-6 * b) }
        // Without the factors the model is a different one (llama.cpp: PPL 4599.7 instead of 4220.5).
        var plain = llama.config
        plain.ropeScaling = .none
        let tokens = Array(try Golden.evalTokens(llama).prefix(128))
        let scaled = try Transformer(model: llama, contextLength: 128)
        let a = Array(try scaled.forward(tokens, logits: .last))
        let unscaled = try Transformer(model: Model(name: "x", path: "x", config: plain, weights: llama.weights,
                                                     tokenizer: llama.tokenizer, sourceTensorTypes: []), contextLength: 128)
        let b = Array(try unscaled.forward(tokens, logits: .last))
        #expect(zip(a, b).map { abs($0 - $1) }.max()! > 1e-2)
    }

    /// The same weights written as an HF folder (config.json with head_dim and rope_scaling) give
    /// the GGUF's logits within 1e-5 relative. (These logits are ~100-125, where float32's own
    /// spacing is 8e-6; the HF order of Q/K dimensions sums the scores in another order.)
    @Test("HF folders give the GGUF's logits", arguments: ["qwen3-tiny.gguf", "llama3rope-tiny.gguf"])
    func hfFolderMatchesGGUF(_ file: String) throws {
        let gguf = try Self.familyModel(file)
        let j = try Golden.json("families/families.json") as! [String: Any]
        let params = (j["params"] as! [String: Any])
        let scaling: [String: Any]? = file.hasPrefix("llama3")
            ? ((params["llama3rope"] as! [String: Any])["rope_scaling"] as! [String: Any]).merging(["rope_type": "llama3"]) { a, _ in a }
            : nil
        try withTemporaryDirectory { dir in
            let folder = dir.appendingPathComponent("hf")
            try HFExport.write(gguf, to: folder, ropeScaling: scaling)
            let hf = try Model.load(path: folder.path)
            #expect(hf.config.architecture == gguf.config.architecture && hf.config.headDim == gguf.config.headDim)
            let tokens = Array(try Golden.evalTokens(gguf).prefix(96))
            #expect(hf.tokenizer.encode("Hello world, 123") == gguf.tokenizer.encode("Hello world, 123"))
            let tg = try Transformer(model: gguf, contextLength: 96, allLogits: true)
            let th = try Transformer(model: hf, contextLength: 96, allLogits: true)
            let lg = Array(try tg.forward(tokens, logits: .all)), lh = Array(try th.forward(tokens, logits: .all))
            #expect(lg.count == tokens.count * gguf.config.vocabSize)
            var worst = 0.0
            for i in lg.indices { worst = max(worst, abs(Double(lg[i]) - Double(lh[i])) / max(1, abs(Double(lg[i])))) }
            #expect(worst <= 1e-5, "\(file): largest relative logit difference HF vs GGUF \(worst)")
        }
    }

    /// An HF Gemma 3 folder: a synthetic Gemma made from the tiny Qwen3's weights (its Q/K norms,
    /// plus post norms, GeGLU, √dim embeddings, a 16-token window on alternate layers with their own
    /// RoPE base) is written with HF names, norms stored as w − 1, layer_types and
    /// query_pre_attn_scalar; loading it back gives the same config and logits.
    /// A Gemma 3-shaped model from the tiny Qwen3's weights: post norms added, GeGLU, √dim
    /// embeddings, a 16-token window on alternate layers with RoPE base 10,000 there.
    static func syntheticGemma() throws -> Model {
        let qwen = try familyModel("qwen3-tiny.gguf")
        var c = qwen.config
        c.architecture = .gemma3
        c.attentionScale = Float(1 / Double(48).squareRoot())  // as the loader computes it from query_pre_attn_scalar
        c.slidingWindow = 16
        c.localLayers = ModelConfig.localLayers(count: c.layerCount, pattern: 2)
        c.localRopeBase = 10000
        var w = qwen.weights
        for i in w.layers.indices {
            w.layers[i].extraNorms.postAttention = (0..<c.dim).map { 0.5 + Float(($0 * 7 + i) % 11) / 10 }
            w.layers[i].extraNorms.postFeedForward = (0..<c.dim).map { 0.6 + Float(($0 * 5 + i) % 13) / 10 }
        }
        return Model(name: "tiny-gemma", path: "memory", config: c, weights: w, tokenizer: qwen.tokenizer, sourceTensorTypes: [])
    }

    /// A sliding-window layer's cache holds window − 1 + chunk rows and slides; chunked prefill
    /// and one-token decode through it give the same logits, bit for bit, as a cache holding
    /// every position.
    /// Prefills 40 tokens in chunks of 8, then decodes the rest one at a time through both
    /// transformers, expecting the same logits bit for bit at every step.
    static func expectSameLogits(_ windowed: Transformer, _ full: Transformer, tokens: [Int]) throws {
        var a = Array(try windowed.forward(tokens[0..<40], logits: .last))
        var b = Array(try full.forward(tokens[0..<40], logits: .last))
        #expect(a == b)
        for t in tokens[40...] {
            a = Array(try windowed.forward([t], logits: .last))
            b = Array(try full.forward([t], logits: .last))
            #expect(a == b, "position \(windowed.position)")
            if a != b { break }
        }
    }

    @Test("a windowed KV cache gives the same logits as a full one, in less memory")
    func windowedCache() throws {
        let gemma = try Self.syntheticGemma()
        let c = gemma.config
        let tokens = Array(try Golden.evalTokens(gemma).prefix(96))
        let windowed = try Transformer(model: gemma, contextLength: 96, maxBatch: 8)
        let full = try Transformer(model: gemma, contextLength: 96, maxBatch: 8) { shape in
            FP32KVCache(layerCount: shape.layerCount, contextLength: shape.contextLength, kvDim: shape.kvDim)
        }
        // Local layers hold 16 − 1 + 8 = 23 rows, global ones 96.
        let rows = (0..<c.layerCount).reduce(0) { $0 + (c.isLocal($1) ? 23 : 96) }
        #expect(windowed.cache.byteCount == 2 * rows * c.kvDim * 4 && full.cache.byteCount == 2 * 4 * 96 * c.kvDim * 4)
        try Self.expectSameLogits(windowed, full, tokens: tokens)
        #expect(c.isLocal(0) && !c.isLocal(1))
    }

    /// A quantized KV cache holds only a window's rows (codes and scales) on sliding-window layers
    /// and gives the same logits, bit for bit, as one holding every position: per-token and
    /// per-channel (KIVI) parts, FP8, sinks and pre-RoPE keys.
    @Test("a windowed quantized KV cache gives the same logits as a full one", arguments: [
        "kv4", "kivi2", "kv=fp8e4m3,sink=2,prerope", "kv=int4,k=channel,v=token,g8,res=4"])
    func windowedQuantizedCache(spec: String) throws {
        let gemma = try Self.syntheticGemma()
        let c = gemma.config
        let tokens = Array(try Golden.evalTokens(gemma).prefix(96))
        let scheme = try Scheme(parsing: spec)
        let windowed = try SchemeRuntime(model: gemma, scheme: scheme).transformer(model: gemma, contextLength: 96, maxBatch: 8)
        let full = try Transformer(model: gemma, contextLength: 96, maxBatch: 8) { shape in
            try QuantizedKVCache(spec: scheme.kv!, layerCount: shape.layerCount, contextLength: shape.contextLength,
                                 kvDim: shape.kvDim, headDim: c.headDim)
        }
        #expect(windowed.cache.byteCount < full.cache.byteCount)
        try Self.expectSameLogits(windowed, full, tokens: tokens)
        let (wq, fq) = (windowed.cache as! QuantizedKVCache, full.cache as! QuantizedKVCache)
        #expect(wq.relativeErrors(count: 96) == fq.relativeErrors(count: 96))
        #expect(wq.quantizedPositions(layer: 0).keys > 0)
        // A second run after a reset (position 0 again) still agrees.
        windowed.reset()
        full.reset()
        #expect(Array(try windowed.forward(tokens[0..<50], logits: .last)) == Array(try full.forward(tokens[0..<50], logits: .last)))
    }

    /// An HF Gemma 3 folder: the synthetic Gemma written with HF names, norms stored as w − 1,
    /// layer_types and query_pre_attn_scalar; loading it back gives the same config and logits.
    @Test("an HF Gemma 3 folder loads as the model it was written from")
    func hfGemmaFolder() throws {
        let gemma = try Self.syntheticGemma()
        let qwen = gemma
        let c = gemma.config
        let w = gemma.weights
        try withTemporaryDirectory { dir in
            let folder = dir.appendingPathComponent("hf-gemma")
            try HFExport.write(gemma, to: folder, ropeScaling: nil, extraConfig: [
                "architectures": ["Gemma3ForCausalLM"], "hidden_activation": "gelu_pytorch_tanh", "sliding_window": 16,
                "layer_types": c.localLayers.map { $0 ? "sliding_attention" : "full_attention" },
                "query_pre_attn_scalar": 48, "rope_local_base_freq": 10000.0,
                "final_logit_softcapping": NSNull(), "attn_logit_softcapping": NSNull(),
            ])
            let hf = try Model.load(path: folder.path)
            #expect(hf.config == c)
            let tokens = Array(try Golden.evalTokens(qwen).prefix(64))
            let a = try Transformer(model: gemma, contextLength: 64, allLogits: true).copiedLogits(tokens, logits: .all)
            let b = try Transformer(model: hf, contextLength: 64, allLogits: true).copiedLogits(tokens, logits: .all)
            var worst = 0.0
            for i in a.indices { worst = max(worst, abs(Double(a[i]) - Double(b[i])) / max(1, abs(Double(a[i])))) }
            #expect(worst <= 1e-5, "largest relative logit difference \(worst)")
            // The window is in force: the same model with every layer global differs.
            var global = c
            global.slidingWindow = nil
            global.localLayers = []
            global.localRopeBase = nil
            let g = Model(name: "x", path: "x", config: global, weights: w, tokenizer: qwen.tokenizer, sourceTensorTypes: [])
            let d = try Transformer(model: g, contextLength: 64, allLogits: true).copiedLogits(tokens, logits: .all)
            #expect(zip(a, d).map { abs($0 - $1) }.max()! > 1e-3)
        }
    }

    // MARK: - Refused configs

    /// "loaded", or the loader's one-line error.
    static func loadOutcome(_ path: String) -> String {
        do {
            _ = try Model.load(path: path)
            return "loaded"
        } catch {
            return "\(error)"
        }
    }

    static func refusal(_ file: String, editing edit: (inout [String: Any]) -> Void) throws -> String {
        let model = try familyModel(file)
        return try withTemporaryDirectory { dir in
            let folder = dir.appendingPathComponent("hf")
            try HFExport.write(model, to: folder, ropeScaling: nil)
            let url = folder.appendingPathComponent("config.json")
            var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&config)
            try writeJSON(config, to: url)
            return loadOutcome(folder.path)
        }
    }

    @Test("configs asking for what is not built are refused, naming file and key")
    func refusedConfigs() throws {
        let yarn = try Self.refusal("llama3rope-tiny.gguf") { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0] }
        #expect(yarn.contains("config.json") && yarn.contains("rope_scaling.rope_type") && yarn.contains("yarn"), "\(yarn)")
        let softcap = try Self.refusal("qwen3-tiny.gguf") { $0["final_logit_softcapping"] = 30.0 }
        #expect(softcap.contains("config.json") && softcap.contains("final_logit_softcapping"), "\(softcap)")
        let window = try Self.refusal("qwen3-tiny.gguf") { $0["use_sliding_window"] = true }
        #expect(window.contains("use_sliding_window"), "\(window)")
        let headDim = try Self.refusal("qwen3-tiny.gguf") { $0["head_dim"] = 48 }
        #expect(headDim.contains("config.json: head_dim 48") && headDim.contains("q_proj"), "\(headDim)")
        let llama3 = try Self.refusal("llama3rope-tiny.gguf") { $0["rope_scaling"] = ["rope_type": "llama3", "factor": 8.0] }
        #expect(llama3.contains("rope_scaling.low_freq_factor"), "\(llama3)")
    }

    /// The fixture with the first occurrence of `from` replaced by `to` (same length), loaded.
    static func loadRenamed(_ file: String, _ from: String, _ to: String) throws -> String {
        precondition(from.utf8.count == to.utf8.count)
        var bytes = [UInt8](try Data(contentsOf: fixtureURL("families/\(file)")))
        let needle = Array(from.utf8)
        guard let at = (0...(bytes.count - needle.count)).first(where: { i in
            bytes[i] == needle[0] && bytes[i..<(i + needle.count)].elementsEqual(needle)
        }) else { throw MissingTestData(description: "\(from) not found in \(file)") }
        bytes.replaceSubrange(at..<(at + needle.count), with: Array(to.utf8))
        return try withTemporaryDirectory { dir in
            let url = dir.appendingPathComponent("edited-\(file)")
            try Data(bytes).write(to: url)
            return loadOutcome(url.path)
        }
    }

    @Test("a GGUF missing a norm, or carrying a tensor or key the runtime would ignore, is refused")
    func refusedGGUF() throws {
        let noNorm = try Self.loadRenamed("qwen3-tiny.gguf", "blk.0.attn_q_norm.weight", "blk.0.attn_q_nore.weight")
        #expect(noNorm.contains("edited-qwen3-tiny.gguf") && noNorm.contains("missing tensor blk.0.attn_q_norm.weight"), "\(noNorm)")
        // Before this runtime read rope_freqs, such a file loaded and the tensor was ignored.
        let unknown = try Self.loadRenamed("llama3rope-tiny.gguf", "rope_freqs.weight", "rope_freqz.weight")
        #expect(unknown.contains("tensor rope_freqz.weight is not used"), "\(unknown)")
        let key = try Self.loadRenamed("llama3rope-tiny.gguf", "llama.vocab_size", "llama.vocab_sizz")
        #expect(key.contains("metadata key llama.vocab_sizz is not supported"), "\(key)")
    }
}
