import Foundation
import QuantDrift

/// A small random llama or qwen2 (with Q/K/V biases) model, made deterministically from a seed,
/// with a byte-level BPE vocabulary: the 256 GPT-2 byte tokens, a few merges and the control
/// tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`. It writes itself as a GGUF file (Q/K rows
/// permuted for llama, as llama.cpp's converter does) and as an HF safetensors folder (HF layout).
///
/// Weights are multiples of 1/128 of small size, so F32, F16 and BF16 hold them exactly.
struct TinyModel {
    /// `ropeStyle` is `.rotateHalf`: `weights` are in the HF layout.
    var config: ModelConfig
    var weights: ModelWeights
    var tokens: [String]
    var tokenTypes: [TokenizerSpec.TokenType]
    var merges: [String]
    var bosID: Int
    var eosID: Int

    static let chatTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

    init(architecture: Architecture = .llama, seed: UInt64 = 1, layers: Int = 2, dim: Int = 32, heads: Int = 4,
         kvHeads: Int = 2, hiddenDim: Int = 64, tiedOutput: Bool = false) {
        (tokens, tokenTypes, merges) = Self.vocabulary()
        bosID = tokens.firstIndex(of: "<|im_start|>")!
        eosID = tokens.firstIndex(of: "<|im_end|>")!
        let headDim = dim / heads
        config = ModelConfig(
            architecture: architecture, layerCount: layers, dim: dim, hiddenDim: hiddenDim, headCount: heads,
            kvHeadCount: kvHeads, headDim: headDim, vocabSize: tokens.count, contextLength: 64,
            ropeBase: 10000, normEps: 1e-5, ropeStyle: .rotateHalf, tiedOutput: tiedOutput)
        var rng = SplitMix64(seed: seed)
        func matrix(_ n: Int) -> [Float] { (0..<n).map { _ in Float(Int(rng.next() % 65) - 32) / 128 } }
        func norm(_ n: Int) -> [Float] { (0..<n).map { _ in 1 + Float(Int(rng.next() % 33) - 16) / 128 } }
        let qDim = heads * headDim, kvDim = kvHeads * headDim, bias = architecture == .qwen2
        let embedding = matrix(tokens.count * dim)
        var layerWeights: [LayerWeights] = []
        for _ in 0..<layers {
            layerWeights.append(LayerWeights(
                attnNorm: norm(dim), wq: matrix(qDim * dim), wk: matrix(kvDim * dim), wv: matrix(kvDim * dim),
                wo: matrix(dim * qDim),
                bq: bias ? matrix(qDim) : nil, bk: bias ? matrix(kvDim) : nil, bv: bias ? matrix(kvDim) : nil,
                ffnNorm: norm(dim), wGate: matrix(hiddenDim * dim), wUp: matrix(hiddenDim * dim),
                wDown: matrix(dim * hiddenDim)))
        }
        weights = ModelWeights(tokenEmbedding: embedding, layers: layerWeights, outputNorm: norm(dim),
                               output: tiedOutput ? nil : matrix(tokens.count * dim))
    }

    // MARK: - Vocabulary

    /// GPT-2's byte → printable character map, in the order of GPT-2's first 256 token ids.
    static let byteTokens: [(byte: UInt8, token: String)] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var chars = printable
        var n = 0
        for b in 0..<256 where !printable.contains(b) {
            printable.append(b)
            chars.append(256 + n)
            n += 1
        }
        return zip(printable, chars).map { (UInt8($0), String(Character(Unicode.Scalar(UInt32($1))!))) }
    }()

    static let mergePairs: [(String, String)] = [
        ("Ġ", "t"), ("h", "e"), ("Ġ", "a"), ("i", "n"), ("Ġt", "he"), ("e", "r"), ("o", "n"), ("Ġ", "s"),
        ("r", "e"), ("a", "t"), ("Ġ", "w"), ("o", "r"), ("e", "n"), ("Ġ", "o"), ("i", "s"), ("Ġ", "c"),
        ("a", "n"), ("Ġ", "f"), ("e", "s"), ("Ġ", "p"), ("l", "l"), ("Ġ", "b"), ("Ġ", "m"), ("i", "t"),
        ("a", "r"), ("Ġ", "d"), ("e", "d"), ("n", "g"), ("i", "ng"), ("n", "d"), ("Ġa", "nd"), ("Ġ", "i"),
        ("o", "u"), ("Ġ", "h"), ("Ġ", "Ġ"), ("Ċ", "Ċ"), ("Ġo", "f"), ("Ġ", "l"), ("Ġi", "s"), ("Ġi", "n"),
        ("Ġw", "or"),
    ]

    static let controlTokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

    static func vocabulary() -> ([String], [TokenizerSpec.TokenType], [String]) {
        var tokens = byteTokens.map(\.token)
        var seen = Set(tokens)
        for (a, b) in mergePairs {
            precondition(seen.contains(a) && seen.contains(b) && !seen.contains(a + b), "bad merge \(a) \(b)")
            tokens.append(a + b)
            seen.insert(a + b)
        }
        let types = [TokenizerSpec.TokenType](repeating: .normal, count: tokens.count)
            + [TokenizerSpec.TokenType](repeating: .control, count: controlTokens.count)
        return (tokens + controlTokens, types, mergePairs.map { "\($0) \($1)" })
    }

    // MARK: - Q/K permutation

    /// Reorders the rows of an HF Q or K projection `(heads × headDim, cols)` the way llama.cpp's
    /// converter does (`w.reshape(heads, 2, headDim/2, cols).swapaxes(1, 2)`), so that adjacent-pair
    /// RoPE on the result equals rotate-half RoPE on the input. Works on biases with `cols == 1`.
    static func permuteForGGUF(_ w: [Float], heads: Int, cols: Int) -> [Float] {
        let rows = w.count / cols, headDim = rows / heads, half = headDim / 2
        var out = w
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    let dst = h * headDim + 2 * i + j, src = h * headDim + j * half + i
                    for c in 0..<cols { out[dst * cols + c] = w[src * cols + c] }
                }
            }
        }
        return out
    }

    /// Inverse of `permuteForGGUF`.
    static func unpermuteFromGGUF(_ w: [Float], heads: Int, cols: Int) -> [Float] {
        let rows = w.count / cols, headDim = rows / heads, half = headDim / 2
        var out = w
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    let src = h * headDim + 2 * i + j, dst = h * headDim + j * half + i
                    for c in 0..<cols { out[dst * cols + c] = w[src * cols + c] }
                }
            }
        }
        return out
    }

    // MARK: - GGUF

    /// The model as a GGUF writer (ready to be edited by a test). Matrices are written as
    /// `type(name)`; norms and biases stay F32, as llama.cpp's converter keeps them.
    func ggufWriter(version: UInt32 = 3, type: (String) -> GGMLType = { _ in .f32 }) -> GGUFWriter {
        let c = config, arch = c.architecture.rawValue, p = arch + "."
        var g = GGUFWriter(version: version)
        g.set("general.architecture", .string(arch))
        g.set("general.name", .string("tiny-\(arch)"))
        g.set(p + "block_count", .uint32(UInt32(c.layerCount)))
        g.set(p + "context_length", .uint32(UInt32(c.contextLength)))
        g.set(p + "embedding_length", .uint32(UInt32(c.dim)))
        g.set(p + "feed_forward_length", .uint32(UInt32(c.hiddenDim)))
        g.set(p + "attention.head_count", .uint32(UInt32(c.headCount)))
        g.set(p + "attention.head_count_kv", .uint32(UInt32(c.kvHeadCount)))
        g.set(p + "rope.freq_base", .float32(c.ropeBase))
        g.set(p + "attention.layer_norm_rms_epsilon", .float32(c.normEps))
        g.set(p + "rope.dimension_count", .uint32(UInt32(c.headDim)))
        g.set(p + "vocab_size", .uint32(UInt32(c.vocabSize)))
        g.set("tokenizer.ggml.model", .string("gpt2"))
        g.set("tokenizer.ggml.pre", .string(c.architecture == .qwen2 ? "qwen2" : "smollm"))
        g.set("tokenizer.ggml.tokens", .array(tokens.map { .string($0) }))
        g.set("tokenizer.ggml.token_type", .array(tokenTypes.map { .int32(Int32($0.rawValue)) }))
        g.set("tokenizer.ggml.merges", .array(merges.map { .string($0) }))
        g.set("tokenizer.ggml.bos_token_id", .uint32(UInt32(bosID)))
        g.set("tokenizer.ggml.eos_token_id", .uint32(UInt32(eosID)))
        g.set("tokenizer.ggml.add_bos_token", .bool(false))
        g.set("tokenizer.chat_template", .string(Self.chatTemplate))

        let permute = c.architecture == .llama
        func matrix(_ name: String, _ rows: Int, _ cols: Int, _ w: [Float]) {
            g.addTensor(name, shape: [rows, cols], floats: w, type: type(name))
        }
        func vector(_ name: String, _ v: [Float]) {
            g.addTensor(name, shape: [v.count], floats: v, type: .f32)
        }
        func qk(_ w: [Float], _ heads: Int, _ cols: Int) -> [Float] {
            permute ? Self.permuteForGGUF(w, heads: heads, cols: cols) : w
        }
        matrix("token_embd.weight", c.vocabSize, c.dim, weights.tokenEmbedding)
        for (i, l) in weights.layers.enumerated() {
            let b = "blk.\(i)."
            vector(b + "attn_norm.weight", l.attnNorm)
            matrix(b + "attn_q.weight", c.qDim, c.dim, qk(l.wq, c.headCount, c.dim))
            matrix(b + "attn_k.weight", c.kvDim, c.dim, qk(l.wk, c.kvHeadCount, c.dim))
            matrix(b + "attn_v.weight", c.kvDim, c.dim, l.wv)
            matrix(b + "attn_output.weight", c.dim, c.qDim, l.wo)
            if let bq = l.bq { vector(b + "attn_q.bias", qk(bq, c.headCount, 1)) }
            if let bk = l.bk { vector(b + "attn_k.bias", qk(bk, c.kvHeadCount, 1)) }
            if let bv = l.bv { vector(b + "attn_v.bias", bv) }
            vector(b + "ffn_norm.weight", l.ffnNorm)
            matrix(b + "ffn_gate.weight", c.hiddenDim, c.dim, l.wGate)
            matrix(b + "ffn_up.weight", c.hiddenDim, c.dim, l.wUp)
            matrix(b + "ffn_down.weight", c.dim, c.hiddenDim, l.wDown)
        }
        vector("output_norm.weight", weights.outputNorm)
        if let out = weights.output { matrix("output.weight", c.vocabSize, c.dim, out) }
        return g
    }

    /// Writes the model as the GGUF file `url` with matrices of `type` (F32, F16, BF16 or Q8_0).
    func writeGGUF(to url: URL, type: GGMLType = .f32, version: UInt32 = 3) throws {
        try ggufWriter(version: version, type: { _ in type }).write(to: url.path)
    }

    // MARK: - HF folder

    /// The weights under their HF names, encoded as `dtype` (`F32`, `F16` or `BF16`).
    func hfTensors(dtype: String = "F32") -> [SafetensorsWriter.Tensor] {
        let type: GGMLType = ["F32": .f32, "F16": .f16, "BF16": .bf16][dtype]!
        let c = config
        var out: [SafetensorsWriter.Tensor] = []
        func add(_ name: String, _ shape: [Int], _ w: [Float]) {
            out.append(.init(name: name, dtype: dtype, shape: shape, data: encodeFloats(w, as: type)))
        }
        add("model.embed_tokens.weight", [c.vocabSize, c.dim], weights.tokenEmbedding)
        for (i, l) in weights.layers.enumerated() {
            let b = "model.layers.\(i)."
            add(b + "input_layernorm.weight", [c.dim], l.attnNorm)
            add(b + "self_attn.q_proj.weight", [c.qDim, c.dim], l.wq)
            add(b + "self_attn.k_proj.weight", [c.kvDim, c.dim], l.wk)
            add(b + "self_attn.v_proj.weight", [c.kvDim, c.dim], l.wv)
            add(b + "self_attn.o_proj.weight", [c.dim, c.qDim], l.wo)
            if let bq = l.bq { add(b + "self_attn.q_proj.bias", [c.qDim], bq) }
            if let bk = l.bk { add(b + "self_attn.k_proj.bias", [c.kvDim], bk) }
            if let bv = l.bv { add(b + "self_attn.v_proj.bias", [c.kvDim], bv) }
            add(b + "post_attention_layernorm.weight", [c.dim], l.ffnNorm)
            add(b + "mlp.gate_proj.weight", [c.hiddenDim, c.dim], l.wGate)
            add(b + "mlp.up_proj.weight", [c.hiddenDim, c.dim], l.wUp)
            add(b + "mlp.down_proj.weight", [c.dim, c.hiddenDim], l.wDown)
        }
        add("model.norm.weight", [c.dim], weights.outputNorm)
        if let o = weights.output { add("lm_head.weight", [c.vocabSize, c.dim], o) }
        return out
    }

    /// `config.json`.
    func hfConfig() -> [String: Any] {
        let c = config
        let qwen = c.architecture == .qwen2
        return [
            "architectures": [qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"],
            "model_type": c.architecture.rawValue,
            "hidden_size": c.dim,
            "intermediate_size": c.hiddenDim,
            "num_hidden_layers": c.layerCount,
            "num_attention_heads": c.headCount,
            "num_key_value_heads": c.kvHeadCount,
            "vocab_size": c.vocabSize,
            "max_position_embeddings": c.contextLength,
            "rope_theta": Double(c.ropeBase),
            "rms_norm_eps": Double(c.normEps),
            "tie_word_embeddings": c.tiedOutput,
            "hidden_act": "silu",
            "rope_scaling": NSNull(),
            "torch_dtype": "float32",
            "bos_token_id": bosID,
            "eos_token_id": eosID,
        ]
    }

    /// `tokenizer.json`: SmolLM's pre-tokenizer for llama, Qwen2's for qwen2.
    func tokenizerJSON() -> [String: Any] {
        var vocab: [String: Int] = [:]
        for (id, t) in tokens.enumerated() where tokenTypes[id] == .normal { vocab[t] = id }
        let added: [[String: Any]] = Self.controlTokens.map {
            ["id": tokens.firstIndex(of: $0)!, "content": $0, "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true]
        }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                                        "use_regex": config.architecture != .qwen2]
        let pre: [Any] = config.architecture == .qwen2
            ? [["type": "Split", "pattern": ["Regex": Self.qwen2Regex], "behavior": "Isolated", "invert": false], byteLevel]
            : [["type": "Digits", "individual_digits": true], byteLevel]
        return [
            "version": "1.0",
            "truncation": NSNull(),
            "padding": NSNull(),
            "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": ["type": "Sequence", "pretokenizers": pre],
            "post_processor": byteLevel,
            "decoder": byteLevel,
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false,
                "vocab": vocab,
                // Qwen2-style files write merges as pairs, older ones as "left right" strings.
                "merges": config.architecture == .qwen2
                    ? Self.mergePairs.map { [$0.0, $0.1] } as [Any]
                    : merges as [Any],
            ] as [String: Any],
        ]
    }

    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// `tokenizer_config.json`.
    func tokenizerConfigJSON() -> [String: Any] {
        ["add_bos_token": false, "bos_token": tokens[bosID], "eos_token": tokens[eosID],
         "chat_template": Self.chatTemplate, "model_max_length": config.contextLength]
    }

    /// Writes an HF folder: `config.json`, `tokenizer.json`, `tokenizer_config.json` and the weights
    /// in `tensors` (default: `hfTensors(dtype:)`), in one `model.safetensors` or, with `shards > 1`,
    /// in `model-0000i-of-0000n.safetensors` files with `model.safetensors.index.json`.
    func writeSafetensors(to directory: URL, dtype: String = "F32", shards: Int = 1,
                          tensors: [SafetensorsWriter.Tensor]? = nil) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try writeJSON(hfConfig(), to: directory.appendingPathComponent("config.json"))
        try writeJSON(tokenizerJSON(), to: directory.appendingPathComponent("tokenizer.json"))
        try writeJSON(tokenizerConfigJSON(), to: directory.appendingPathComponent("tokenizer_config.json"))
        let all = tensors ?? hfTensors(dtype: dtype)
        if shards <= 1 {
            try SafetensorsWriter(tensors: all).write(to: directory.appendingPathComponent("model.safetensors").path)
            return
        }
        var weightMap: [String: String] = [:]
        let per = (all.count + shards - 1) / shards
        for s in 0..<shards {
            let name = String(format: "model-%05d-of-%05d.safetensors", s + 1, shards)
            let part = Array(all[min(s * per, all.count)..<min((s + 1) * per, all.count)])
            for t in part { weightMap[t.name] = name }
            try SafetensorsWriter(tensors: part).write(to: directory.appendingPathComponent(name).path)
        }
        let total = all.reduce(0) { $0 + $1.data.count }
        try writeJSON(["metadata": ["total_size": total], "weight_map": weightMap],
                      to: directory.appendingPathComponent("model.safetensors.index.json"))
    }
}

// MARK: - Random numbers

/// SplitMix64: a tiny deterministic generator for test data.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
