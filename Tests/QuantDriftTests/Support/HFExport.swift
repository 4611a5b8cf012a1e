import Foundation
@testable import QuantDrift

/// Writes a loaded model as an HF folder (config.json, model.safetensors, tokenizer.json), as
/// transformers would save it: Q/K rows of a GGUF llama un-permuted back to rotate-half order,
/// Gemma's norms stored as `w - 1` (HF computes x·(1+w)), RoPE scaling given as `rope_scaling`.
/// Byte-level BPE vocabularies only (the tiny family models share SmolLM2's).
enum HFExport {
    static func write(_ model: Model, to dir: URL, ropeScaling: [String: Any]?, extraConfig: [String: Any] = [:]) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let c = model.config, w = model.weights
        let unpermute = c.ropeStyle == .adjacentPairs
        let normOffset: Float = c.architecture == .gemma3 ? 1 : 0
        var tensors: [SafetensorsWriter.Tensor] = []
        func add(_ name: String, _ shape: [Int], _ x: [Float]) {
            tensors.append(.init(name: name, dtype: "F32", shape: shape, data: encodeFloats(x, as: .f32)))
        }
        func norm(_ name: String, _ x: [Float]) { add(name, [x.count], x.map { $0 - normOffset }) }
        add("model.embed_tokens.weight", [c.vocabSize, c.dim], w.tokenEmbedding)
        for (i, l) in w.layers.enumerated() {
            let b = "model.layers.\(i)."
            norm(b + "input_layernorm.weight", l.attnNorm)
            add(b + "self_attn.q_proj.weight", [c.qDim, c.dim],
                unpermute ? TinyModel.unpermuteFromGGUF(l.wq, heads: c.headCount, cols: c.dim) : l.wq)
            add(b + "self_attn.k_proj.weight", [c.kvDim, c.dim],
                unpermute ? TinyModel.unpermuteFromGGUF(l.wk, heads: c.kvHeadCount, cols: c.dim) : l.wk)
            add(b + "self_attn.v_proj.weight", [c.kvDim, c.dim], l.wv)
            add(b + "self_attn.o_proj.weight", [c.dim, c.qDim], l.wo)
            if let q = l.extraNorms.q { norm(b + "self_attn.q_norm.weight", q) }
            if let k = l.extraNorms.k { norm(b + "self_attn.k_norm.weight", k) }
            if let p = l.extraNorms.postAttention {
                norm(b + "post_attention_layernorm.weight", p)
                norm(b + "pre_feedforward_layernorm.weight", l.ffnNorm)
            } else {
                norm(b + "post_attention_layernorm.weight", l.ffnNorm)
            }
            if let p = l.extraNorms.postFeedForward { norm(b + "post_feedforward_layernorm.weight", p) }
            add(b + "mlp.gate_proj.weight", [c.hiddenDim, c.dim], l.wGate)
            add(b + "mlp.up_proj.weight", [c.hiddenDim, c.dim], l.wUp)
            add(b + "mlp.down_proj.weight", [c.dim, c.hiddenDim], l.wDown)
        }
        norm("model.norm.weight", w.outputNorm)
        if let o = w.output { add("lm_head.weight", [c.vocabSize, c.dim], o) }
        try SafetensorsWriter(tensors: tensors).write(to: dir.appendingPathComponent("model.safetensors").path)

        let modelType = c.architecture == .gemma3 ? "gemma3_text" : c.architecture.rawValue
        var config: [String: Any] = [
            "model_type": modelType,
            "hidden_size": c.dim, "intermediate_size": c.hiddenDim, "num_hidden_layers": c.layerCount,
            "num_attention_heads": c.headCount, "num_key_value_heads": c.kvHeadCount, "head_dim": c.headDim,
            "vocab_size": c.vocabSize, "max_position_embeddings": c.contextLength,
            "rope_theta": Double(c.ropeBase), "rms_norm_eps": Double(c.normEps), "tie_word_embeddings": c.tiedOutput,
            "rope_scaling": ropeScaling ?? NSNull(), "torch_dtype": "float32",
        ]
        for (k, v) in extraConfig { config[k] = v }
        try writeJSON(config, to: dir.appendingPathComponent("config.json"))
        try writeJSON(tokenizerJSON(model.tokenizer.spec), to: dir.appendingPathComponent("tokenizer.json"))
    }

    /// A byte-level BPE `tokenizer.json` with SmolLM's pre-tokenizer (digits split, ByteLevel).
    static func tokenizerJSON(_ spec: TokenizerSpec) -> [String: Any] {
        precondition(spec.kind == .byteLevelBPE, "HFExport writes byte-level BPE vocabularies only")
        var vocab: [String: Int] = [:]
        var added: [[String: Any]] = []
        for (id, t) in spec.tokens.enumerated() {
            if spec.tokenTypes[id] == .control || spec.tokenTypes[id] == .userDefined {
                added.append(["id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": spec.tokenTypes[id] == .control])
            } else {
                vocab[t] = id
            }
        }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        return [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added, "normalizer": NSNull(),
            "pre_tokenizer": ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]],
            "post_processor": byteLevel, "decoder": byteLevel,
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false,
                      "vocab": vocab, "merges": spec.merges] as [String: Any],
        ]
    }
}
