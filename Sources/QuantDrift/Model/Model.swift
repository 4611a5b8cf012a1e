import Foundation

/// A loaded model: configuration, FP32 weights and tokenizer.
public final class Model: @unchecked Sendable {
    public let name: String
    public let path: String
    public let config: ModelConfig
    public let weights: ModelWeights
    public let tokenizer: Tokenizer
    /// Storage type of each weight tensor in the source file (for `inspect`).
    public let sourceTensorTypes: [(name: String, type: String, shape: [Int])]

    public init(name: String, path: String, config: ModelConfig, weights: ModelWeights, tokenizer: Tokenizer,
                sourceTensorTypes: [(name: String, type: String, shape: [Int])]) {
        self.name = name
        self.path = path
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        self.sourceTensorTypes = sourceTensorTypes
    }

    /// Refuses weights holding NaN or ±Inf: every divergence measured against such a reference
    /// would be NaN. One pass of integer max over the exponent bits (it vectorizes), so the
    /// check costs about a memory read of the weights at load.
    static func checkFinite(_ w: [Float], tensor: String, file: String) throws {
        if let bad = nonFinite(w) { throw nonFiniteError(bad.count, first: w[bad.first], at: bad.first, tensor: tensor, file: file) }
    }

    /// The number of NaN/±Inf values in `w` and the index of the first, or nil when all are finite.
    static func nonFinite(_ w: [Float]) -> (count: Int, first: Int)? {
        let exponentMask: UInt32 = 0x7F80_0000
        let largest = w.withUnsafeBufferPointer { buf in
            buf.withMemoryRebound(to: UInt32.self) { bits in
                var m: UInt32 = 0
                for b in bits { m = max(m, b & exponentMask) }
                return m
            }
        }
        guard largest == exponentMask else { return nil }
        return (w.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }, w.firstIndex { !$0.isFinite }!)
    }

    static func nonFiniteError(_ n: Int, first: Float, at i: Int, tensor: String, file: String) -> QuantDriftError {
        .invalidInput("\(file): tensor \(tensor) holds \(n) NaN/Inf weight\(n == 1 ? "" : "s") (first: \(first) at element \(i))")
    }

    /// Loads a GGUF file, or an HF folder (`config.json`, `*.safetensors`, `tokenizer.json`).
    public static func load(path: String) throws -> Model {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw QuantDriftError.invalidInput("\(path): no such file or directory")
        }
        if isDir.boolValue { return try SafetensorsModelLoader.load(directory: path) }
        return try GGUFModelLoader.load(path: path)
    }
}

// MARK: - GGUF

enum GGUFModelLoader {
    /// `{arch}.` keys that only describe the file or are read below. Any other key of the
    /// architecture may change the computation, so it is refused rather than ignored.
    static let understoodKeys: Set<String> = [
        "context_length", "embedding_length", "block_count", "feed_forward_length", "vocab_size",
        "attention.head_count", "attention.head_count_kv", "attention.layer_norm_rms_epsilon",
        "attention.key_length", "attention.value_length", "attention.sliding_window",
        "rope.dimension_count", "rope.freq_base", "rope.freq_base_swa", "rope.scaling.type", "rope.scaling.factor",
        "rope.scaling.original_context_length", "rope.scaling.finetuned",
    ]

    static func load(path: String) throws -> Model {
        let g = try GGUFFile(path: path)
        let archName = try g.string("general.architecture")
        guard let arch = Architecture(rawValue: archName) else {
            throw QuantDriftError.unsupported("\(path): architecture '\(archName)' is not supported (supported: \(Architecture.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let p = archName + "."
        for key in g.metadataKeys where key.hasPrefix(p) && !understoodKeys.contains(String(key.dropFirst(p.count))) {
            throw QuantDriftError.unsupported("\(path): metadata key \(key) is not supported (the runtime does not implement what it asks for)")
        }
        let dim = try g.int(p + "embedding_length")
        let heads = try g.int(p + "attention.head_count")
        let kvHeads = g.metadata[p + "attention.head_count_kv"] != nil ? try g.int(p + "attention.head_count_kv") : heads
        guard heads > 0 else { throw QuantDriftError.invalidInput("\(path): head count must be positive") }
        let headDim: Int
        if g.metadata[p + "attention.key_length"] != nil {
            headDim = try g.int(p + "attention.key_length")
        } else {
            guard dim % heads == 0 else {
                throw QuantDriftError.invalidInput("\(path): \(p)embedding_length \(dim) is not a multiple of \(p)attention.head_count \(heads) (and no key_length)")
            }
            headDim = dim / heads
        }
        if let vl = g.metadata[p + "attention.value_length"]?.intValue, vl != headDim {
            throw QuantDriftError.unsupported("\(path): \(p)attention.value_length \(vl) differs from the key length \(headDim)")
        }
        if let rd = g.metadata[p + "rope.dimension_count"]?.intValue, rd != headDim {
            throw QuantDriftError.unsupported("\(path): \(p)rope.dimension_count \(rd) of \(headDim): partial RoPE is not supported")
        }
        guard let embd = g.tensor("token_embd.weight") else {
            throw QuantDriftError.invalidInput("\(path): missing tensor token_embd.weight")
        }
        guard embd.dims.count == 2 else {
            throw QuantDriftError.invalidInput("\(path): tensor token_embd.weight has \(embd.dims.count) dimensions, expected 2")
        }
        let vocab = g.metadata[p + "vocab_size"]?.intValue ?? embd.dims[1]
        let traits = arch.traits
        var config = ModelConfig(
            architecture: arch,
            layerCount: try g.int(p + "block_count"),
            dim: dim,
            hiddenDim: try g.int(p + "feed_forward_length"),
            headCount: heads,
            kvHeadCount: kvHeads,
            headDim: headDim,
            vocabSize: vocab,
            contextLength: try g.int(p + "context_length"),
            ropeBase: Float(g.metadata[p + "rope.freq_base"]?.doubleValue ?? 10000),
            normEps: Float(try g.double(p + "attention.layer_norm_rms_epsilon")),
            ropeStyle: traits.ggufRopeStyle,
            tiedOutput: g.tensor("output.weight") == nil)
        // RoPE scaling written as metadata (linear), or as llama.cpp's per-pair `rope_freqs` tensor below.
        switch g.metadata[p + "rope.scaling.type"]?.stringValue {
        case nil, "none": break
        case "linear":
            let f = try g.double(p + "rope.scaling.factor")
            config.ropeScaling = .linear(factor: Float(f))
        case let other?:
            throw QuantDriftError.unsupported("\(path): \(p)rope.scaling.type '\(other)' is not supported (none, linear and llama.cpp's rope_freqs tensor are)")
        }
        if g.metadata[p + "attention.sliding_window"] != nil {
            let window = try g.int(p + "attention.sliding_window")
            config.slidingWindow = window
            // Gemma 3: five local layers, then one global (llama.cpp's pattern 6), local RoPE base 10,000
            // unless the file says. Llama-architecture files that declare a window use it in every layer.
            if arch == .gemma3 {
                config.localLayers = ModelConfig.localLayers(count: config.layerCount, pattern: 6)
                config.localRopeBase = Float(g.metadata[p + "rope.freq_base_swa"]?.doubleValue ?? 10000)
            } else {
                config.localLayers = Array(repeating: true, count: config.layerCount)
                config.localRopeBase = g.metadata[p + "rope.freq_base_swa"]?.doubleValue.map(Float.init)
            }
        } else if g.metadata[p + "rope.freq_base_swa"] != nil {
            throw QuantDriftError.unsupported("\(path): \(p)rope.freq_base_swa without \(p)attention.sliding_window")
        }

        var types: [(name: String, type: String, shape: [Int])] = []
        var used: Set<String> = []
        func info(_ name: String, _ shape: [Int]) throws -> GGUFTensorInfo {
            guard let t = g.tensor(name) else {
                throw QuantDriftError.invalidInput("\(path): missing tensor \(name)")
            }
            // GGUF lists dims innermost first; `shape` is given outermost first.
            guard t.dims == Array(shape.reversed()) else {
                throw QuantDriftError.invalidInput("\(path): tensor \(name) has shape \(Array(t.dims.reversed())), expected \(shape)")
            }
            used.insert(name)
            types.append((name, t.type.name, shape))
            return t
        }
        func load(_ name: String, _ shape: [Int]) throws -> [Float] {
            let w = try g.floats(try info(name, shape))
            try Model.checkFinite(w, tensor: name, file: path)
            return w
        }
        // Matrices stay in the file's encoding (decoded where used): no FP32 copy of the model.
        // QUANTDRIFT_FP32_WEIGHTS=1 decodes them once at load instead (the same values; faster
        // one-sequence FP32 decode for four to eight times the memory).
        let decodeAll = ProcessInfo.processInfo.environment["QUANTDRIFT_FP32_WEIGHTS"] == "1"
        func matrix(_ name: String, _ shape: [Int]) throws -> WeightMatrix {
            let m = try g.matrix(try info(name, shape))
            return decodeAll && m.encoding != nil ? WeightMatrix(values: m.values) : m
        }
        func optional(_ name: String, _ shape: [Int]) throws -> [Float]? {
            g.tensor(name) == nil ? nil : try load(name, shape)
        }
        // Validate the scalar settings before reading any tensor whose shape depends on them.
        try config.validate(source: path)
        if let freqs = try optional("rope_freqs.weight", [config.headDim / 2]) {
            guard config.ropeScaling == .none else {
                throw QuantDriftError.unsupported("\(path): tensor rope_freqs.weight together with \(p)rope.scaling.type")
            }
            config.ropeScaling = .perPairDivisors(freqs)
            try config.validate(source: path)
        }
        let c = config
        let embedding = try matrix("token_embd.weight", [c.vocabSize, c.dim])
        var layers: [LayerWeights] = []
        for i in 0..<c.layerCount {
            let b = "blk.\(i)."
            if !traits.qkvBias {
                for bias in ["attn_q.bias", "attn_k.bias", "attn_v.bias"] where g.tensor(b + bias) != nil {
                    throw QuantDriftError.unsupported("\(path): tensor \(b + bias): \(archName) has no Q/K/V biases")
                }
            }
            let extra = ExtraNorms(
                q: traits.qkNorm ? try load(b + "attn_q_norm.weight", [c.headDim]) : nil,
                k: traits.qkNorm ? try load(b + "attn_k_norm.weight", [c.headDim]) : nil,
                postAttention: traits.postNorms ? try load(b + "post_attention_norm.weight", [c.dim]) : nil,
                postFeedForward: traits.postNorms ? try load(b + "post_ffw_norm.weight", [c.dim]) : nil)
            layers.append(LayerWeights(
                attnNorm: try load(b + "attn_norm.weight", [c.dim]),
                q: try matrix(b + "attn_q.weight", [c.qDim, c.dim]),
                k: try matrix(b + "attn_k.weight", [c.kvDim, c.dim]),
                v: try matrix(b + "attn_v.weight", [c.kvDim, c.dim]),
                o: try matrix(b + "attn_output.weight", [c.dim, c.qDim]),
                bq: try optional(b + "attn_q.bias", [c.qDim]),
                bk: try optional(b + "attn_k.bias", [c.kvDim]),
                bv: try optional(b + "attn_v.bias", [c.kvDim]),
                ffnNorm: try load(b + "ffn_norm.weight", [c.dim]),
                gate: try matrix(b + "ffn_gate.weight", [c.hiddenDim, c.dim]),
                up: try matrix(b + "ffn_up.weight", [c.hiddenDim, c.dim]),
                down: try matrix(b + "ffn_down.weight", [c.dim, c.hiddenDim]),
                extraNorms: extra))
        }
        let weights = ModelWeights(
            embedding: embedding,
            layers: layers,
            outputNorm: try load("output_norm.weight", [c.dim]),
            outputMatrix: g.tensor("output.weight") == nil ? nil : try matrix("output.weight", [c.vocabSize, c.dim]))
        // A tensor nothing read is a feature this runtime would silently skip.
        if let unused = g.tensors.first(where: { !used.contains($0.name) }) {
            throw QuantDriftError.unsupported("\(path): tensor \(unused.name) is not used by the \(archName) runtime (unsupported feature or wrong architecture)")
        }
        let tokenizer = try Tokenizer(spec: tokenizerSpec(g))
        guard tokenizer.vocabSize <= c.vocabSize else {
            throw QuantDriftError.invalidInput("\(path): tokenizer has \(tokenizer.vocabSize) tokens, model vocabulary \(c.vocabSize)")
        }
        let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        return Model(name: name, path: path, config: config, weights: weights, tokenizer: tokenizer, sourceTensorTypes: types)
    }

    static func tokenizerSpec(_ g: GGUFFile) throws -> TokenizerSpec {
        let path = g.path
        let modelName = try g.string("tokenizer.ggml.model")
        guard let kind = TokenizerSpec.Kind(rawValue: modelName) else {
            throw QuantDriftError.unsupported("\(path): tokenizer model '\(modelName)' is not supported (supported: gpt2, llama)")
        }
        let tokens = try g.strings("tokenizer.ggml.tokens")
        var types = [TokenizerSpec.TokenType](repeating: .normal, count: tokens.count)
        if let a = g.metadata["tokenizer.ggml.token_type"]?.arrayValue {
            guard a.count == tokens.count else {
                throw QuantDriftError.invalidInput("\(path): \(a.count) token types for \(tokens.count) tokens")
            }
            for (i, v) in a.enumerated() {
                guard let raw = v.intValue, let t = TokenizerSpec.TokenType(rawValue: raw) else {
                    throw QuantDriftError.invalidInput("\(path): token \(i) has an invalid token type")
                }
                types[i] = t
            }
        }
        var scores: [Float] = []
        if let a = g.metadata["tokenizer.ggml.scores"]?.arrayValue {
            guard a.count == tokens.count else {
                throw QuantDriftError.invalidInput("\(path): \(a.count) token scores for \(tokens.count) tokens")
            }
            scores = a.map { Float($0.doubleValue ?? 0) }
        }
        let merges = g.metadata["tokenizer.ggml.merges"] != nil ? try g.strings("tokenizer.ggml.merges") : []
        func id(_ key: String) throws -> Int? {
            guard let v = g.metadata[key] else { return nil }
            guard let i = v.intValue, i >= 0, i < tokens.count else {
                throw QuantDriftError.invalidInput("\(path): \(key) is not a valid token id")
            }
            return i
        }
        return TokenizerSpec(
            kind: kind,
            pre: g.metadata["tokenizer.ggml.pre"]?.stringValue ?? "default",
            tokens: tokens,
            tokenTypes: types,
            scores: scores,
            merges: merges,
            bosID: try id("tokenizer.ggml.bos_token_id"),
            eosID: try id("tokenizer.ggml.eos_token_id"),
            eotID: try id("tokenizer.ggml.eot_token_id"),
            unknownID: try id("tokenizer.ggml.unknown_token_id"),
            addBOS: g.metadata["tokenizer.ggml.add_bos_token"]?.boolValue ?? (kind == .sentencePiece),
            addSpacePrefix: g.metadata["tokenizer.ggml.add_space_prefix"]?.boolValue ?? (kind == .sentencePiece),
            chatTemplate: g.metadata["tokenizer.chat_template"]?.stringValue)
    }
}
