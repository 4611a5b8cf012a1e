import Foundation

// MARK: - One .safetensors file

/// A memory-mapped `.safetensors` file: a little-endian u64 header length, a JSON header naming
/// each tensor's dtype, shape and byte range, then the raw data. Every length, shape and range is
/// checked against the file before it is used, so a truncated or lying file throws
/// `QuantDriftError.invalidInput` instead of crashing or allocating without bound.
public final class SafetensorsFile: @unchecked Sendable {
    public struct TensorInfo: Sendable, Equatable {
        public let name: String
        /// Safetensors dtype name (`F32`, `BF16`, `I8`, …).
        public let dtype: String
        /// Outermost dimension first (row-major), as in PyTorch.
        public let shape: [Int]
        /// Byte range relative to the start of the data section.
        public let begin: Int
        public let end: Int
        public let elementCount: Int
    }

    public let path: String
    public let file: MappedFile
    public let tensors: [String: TensorInfo]
    /// The `__metadata__` string map of the header.
    public let metadata: [String: String]
    /// Offset of the data section from the start of the file.
    public let dataOffset: Int

    static let maxHeaderLength = 100_000_000
    static let maxRank = 8
    /// Bytes per element of the dtypes safetensors defines, to check byte ranges.
    static let dtypeSizes: [String: Int] = [
        "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
        "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
    ]
    /// The dtypes that load to FP32.
    static let floatTypes: [String: GGMLType] = ["F32": .f32, "F16": .f16, "BF16": .bf16]

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        self.path = path
        func bad(_ m: String) -> QuantDriftError { .invalidInput("\(path): \(m)") }
        let size = file.bytes.count
        guard size >= 8 else {
            throw bad("not a safetensors file (\(size) bytes, too short for the header length)")
        }
        let headerLength = UInt64(littleEndian: file.bytes.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(size - 8) else {
            throw bad("header length \(headerLength) runs past the end of the file (\(size) bytes)")
        }
        guard headerLength <= UInt64(Self.maxHeaderLength) else {
            throw bad("header length \(headerLength) exceeds the \(Self.maxHeaderLength)-byte limit")
        }
        let n = Int(headerLength)
        let header = UnsafeRawBufferPointer(rebasing: file.bytes[8..<(8 + n)])
        guard header.first == UInt8(ascii: "{") else {
            throw bad("header does not start with '{' (not a safetensors file?)")
        }
        let json = try JSONNode.parse(header, file: path, what: "header")
        let entries = try json.object()
        let dataOffset = 8 + n
        let dataSize = size - dataOffset
        self.dataOffset = dataOffset

        var tensors: [String: TensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, entry) in entries {
            if name == "__metadata__" {
                for (k, v) in try entry.object() { metadata[k] = try v.string() }
                continue
            }
            let dtype = try entry["dtype"].string()
            let dims = try entry["shape"].array()
            guard dims.count <= Self.maxRank else {
                throw bad("tensor \(name) has \(dims.count) dimensions (at most \(Self.maxRank) allowed)")
            }
            var shape: [Int] = []
            var count = 1
            for d in dims {
                let v = try d.int()
                guard v >= 0 else { throw bad("tensor \(name) has negative dimension \(v)") }
                let (p, overflow) = count.multipliedReportingOverflow(by: v)
                // No dtype packs more than 8 elements into a byte.
                guard !overflow, p / 8 <= dataSize else {
                    throw bad("tensor \(name) shape \(dims.compactMap { $0.value as? Int }) overflows (more elements than the file can hold)")
                }
                count = p
                shape.append(v)
            }
            let offsets = try entry["data_offsets"].array()
            guard offsets.count == 2 else {
                throw bad("tensor \(name) data_offsets must be [begin, end], got \(offsets.count) numbers")
            }
            let begin = try offsets[0].int(), end = try offsets[1].int()
            guard begin >= 0, begin <= end, end <= dataSize else {
                throw bad("tensor \(name) data_offsets [\(begin), \(end)] lie outside the \(dataSize)-byte data section")
            }
            if let es = Self.dtypeSizes[dtype] {
                // count <= 8 * dataSize and es <= 8, so this cannot overflow.
                guard end - begin == count * es else {
                    throw bad("tensor \(name) holds \(end - begin) bytes, but \(dtype) × \(shape) needs \(count * es)")
                }
            }
            tensors[name] = TensorInfo(name: name, dtype: dtype, shape: shape, begin: begin, end: end, elementCount: count)
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    public func data(of t: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[(dataOffset + t.begin)..<(dataOffset + t.end)])
    }

    /// The tensor converted to FP32, row-major. Throws `.unsupported` for dtypes other than F32, F16, BF16.
    public func floats(_ t: TensorInfo) throws -> [Float] {
        guard let type = Self.floatTypes[t.dtype] else {
            throw QuantDriftError.unsupported("\(path): tensor \(t.name) has dtype \(t.dtype), which is not supported (F32, F16, BF16 are)")
        }
        let raw = data(of: t)
        return try [Float](unsafeUninitializedCapacity: t.elementCount) { buf, n in
            if t.elementCount > 0 { try dequantize(type, raw, count: t.elementCount, into: buf.baseAddress!) }
            n = t.elementCount
        }
    }
}

// MARK: - HF model folder

/// Loads an HF model folder: `config.json`, `model.safetensors` (or `model.safetensors.index.json`
/// and its shards) and `tokenizer.json`. Weights keep the HF layout, so RoPE is rotate-half.
enum SafetensorsModelLoader {
    static func load(directory: String) throws -> Model {
        let dir = URL(fileURLWithPath: directory)
        func file(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let configPath = file("config.json")
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw QuantDriftError.invalidInput("\(directory): no config.json (an HF model folder holds config.json, *.safetensors and tokenizer.json)")
        }
        let json = try JSONNode.read(path: configPath)
        let store = try TensorStore(directory: directory)
        let config = try modelConfig(json, path: configPath, hasHead: store.contains("lm_head.weight"))
        // head_dim × heads must be the projections' width: say so in the config's terms.
        if config.layerCount > 0, store.contains("model.layers.0.self_attn.q_proj.weight") {
            let (_, q) = try store.tensor("model.layers.0.self_attn.q_proj.weight")
            if q.shape.count == 2, q.shape[0] != config.qDim {
                throw QuantDriftError.invalidInput("\(configPath): head_dim \(config.headDim) × num_attention_heads \(config.headCount) = \(config.qDim) does not match the \(q.shape[0]) rows of model.layers.0.self_attn.q_proj.weight")
            }
        }
        // The tokenizer first, so that a broken tokenizer.json fails before gigabytes are converted.
        // Token ids are checked against vocab_size while reading, so the table fits the embedding.
        let tokenizer = try Tokenizer(spec: HFTokenizerLoader.spec(directory: directory, config: json, vocabSize: config.vocabSize))

        var types: [(name: String, type: String, shape: [Int])] = []
        var used: Set<String> = []
        let traits = config.traits
        // Gemma's HF norms compute x · (1 + w); the runtime multiplies by the weight itself.
        let normOffset: Float = config.architecture == .gemma3 ? 1 : 0
        func load(_ name: String, _ shape: [Int]) throws -> [Float] {
            let (f, t) = try store.tensor(name)
            guard t.shape == shape else {
                throw QuantDriftError.invalidInput("\(f.path): tensor \(name) has shape \(t.shape), expected \(shape)")
            }
            used.insert(name)
            types.append((name, t.dtype, shape))
            let w = try f.floats(t)
            try Model.checkFinite(w, tensor: name, file: f.path)
            return w
        }
        func norm(_ name: String, _ width: Int) throws -> [Float] {
            let w = try load(name, [width])
            return normOffset == 0 ? w : w.map { 1 + $0 }
        }
        func optional(_ name: String, _ shape: [Int]) throws -> [Float]? {
            store.contains(name) ? try load(name, shape) : nil
        }
        let c = config
        let tokenEmbedding = try load("model.embed_tokens.weight", [c.vocabSize, c.dim])
        var layers: [LayerWeights] = []
        for i in 0..<c.layerCount {
            let b = "model.layers.\(i)."
            for unsupported in ["self_attn.o_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias"]
            where store.contains(b + unsupported) {
                throw QuantDriftError.unsupported("\(directory): tensor \(b + unsupported): biases outside Q/K/V are not supported")
            }
            if !traits.qkvBias {
                for bias in ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"] where store.contains(b + bias) {
                    throw QuantDriftError.unsupported("\(directory): tensor \(b + bias): \(c.architecture.rawValue) has no Q/K/V biases")
                }
            }
            // Gemma 3 names its FFN pre-norm pre_feedforward_layernorm and uses post_attention_layernorm
            // after attention; llama-style models use post_attention_layernorm as the FFN pre-norm.
            let ffnNormName = traits.postNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"
            let extra = ExtraNorms(
                q: traits.qkNorm ? try norm(b + "self_attn.q_norm.weight", c.headDim) : nil,
                k: traits.qkNorm ? try norm(b + "self_attn.k_norm.weight", c.headDim) : nil,
                postAttention: traits.postNorms ? try norm(b + "post_attention_layernorm.weight", c.dim) : nil,
                postFeedForward: traits.postNorms ? try norm(b + "post_feedforward_layernorm.weight", c.dim) : nil)
            layers.append(LayerWeights(
                attnNorm: try norm(b + "input_layernorm.weight", c.dim),
                wq: try load(b + "self_attn.q_proj.weight", [c.qDim, c.dim]),
                wk: try load(b + "self_attn.k_proj.weight", [c.kvDim, c.dim]),
                wv: try load(b + "self_attn.v_proj.weight", [c.kvDim, c.dim]),
                wo: try load(b + "self_attn.o_proj.weight", [c.dim, c.qDim]),
                bq: try optional(b + "self_attn.q_proj.bias", [c.qDim]),
                bk: try optional(b + "self_attn.k_proj.bias", [c.kvDim]),
                bv: try optional(b + "self_attn.v_proj.bias", [c.kvDim]),
                ffnNorm: try norm(b + ffnNormName, c.dim),
                wGate: try load(b + "mlp.gate_proj.weight", [c.hiddenDim, c.dim]),
                wUp: try load(b + "mlp.up_proj.weight", [c.hiddenDim, c.dim]),
                wDown: try load(b + "mlp.down_proj.weight", [c.dim, c.hiddenDim]),
                extraNorms: extra))
        }
        let weights = ModelWeights(
            tokenEmbedding: tokenEmbedding,
            layers: layers,
            outputNorm: try norm("model.norm.weight", c.dim),
            output: c.tiedOutput ? nil : try load("lm_head.weight", [c.vocabSize, c.dim]))
        // Old checkpoints carry RoPE's inverse frequencies as a buffer; anything else unread is a
        // feature this runtime would silently skip.
        if let unused = store.names.sorted().first(where: { !used.contains($0) && !$0.hasSuffix("rotary_emb.inv_freq") }) {
            throw QuantDriftError.unsupported("\(directory): tensor \(unused) is not used by the \(c.architecture.rawValue) runtime (unsupported feature or wrong architecture)")
        }

        let name = dir.standardizedFileURL.lastPathComponent
        return Model(name: name, path: directory, config: config, weights: weights, tokenizer: tokenizer, sourceTensorTypes: types)
    }

    /// The `ModelConfig` of an HF `config.json`. `hasHead` tells whether `lm_head.weight` exists,
    /// for configs that do not say whether the head is tied. Every setting that would change the
    /// computation and is not built is refused, naming its key.
    static func modelConfig(_ j: JSONNode, path: String, hasHead: Bool) throws -> ModelConfig {
        func refuse(_ key: String, _ why: String) -> QuantDriftError { .unsupported("\(path): \(key): \(why)") }
        let architecture: Architecture
        let modelType = try j["model_type"].optional?.string()
        let archNames = try j["architectures"].optional?.array().map { try $0.string() } ?? []
        switch modelType {
        case "llama": architecture = .llama
        case "qwen2": architecture = .qwen2
        case "qwen3": architecture = .qwen3
        case "gemma3_text": architecture = .gemma3
        case nil where archNames.contains("LlamaForCausalLM"): architecture = .llama
        case nil where archNames.contains("Qwen2ForCausalLM"): architecture = .qwen2
        case nil where archNames.contains("Qwen3ForCausalLM"): architecture = .qwen3
        case nil where archNames.contains("Gemma3ForCausalLM"): architecture = .gemma3
        default:
            let named = modelType.map { "model_type '\($0)'" } ?? (archNames.isEmpty ? "no model_type or architectures" : "architectures \(archNames)")
            throw QuantDriftError.unsupported("\(path): \(named) is not supported (supported: llama, qwen2, qwen3, gemma3_text)")
        }
        let gemma = architecture == .gemma3
        let actKey = gemma ? "hidden_activation" : "hidden_act"
        let expectedAct = gemma ? "gelu_pytorch_tanh" : "silu"
        if let act = try j[actKey].optional?.string(), act != expectedAct {
            throw refuse(actKey, "'\(act)' is not supported (\(expectedAct) is)")
        }
        for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if try j[key].optional != nil { throw refuse(key, "logit soft-capping is not supported") }
        }
        if try j["attention_bias"].optional?.bool() == true, architecture != .qwen2 {
            throw refuse("attention_bias", "biases on the attention projections are not supported for \(architecture.rawValue)")
        }
        if try j["mlp_bias"].optional?.bool() == true { throw refuse("mlp_bias", "FFN biases are not supported") }
        if let n = try j["num_experts"].optional?.int(), n > 0 { throw refuse("num_experts", "mixture-of-experts is not supported") }
        let dim = try j["hidden_size"].int()
        let heads = try j["num_attention_heads"].int()
        let kvHeads = try j["num_key_value_heads"].optional?.int() ?? heads
        let headDim: Int
        if let hd = try j["head_dim"].optional?.int() {
            headDim = hd
        } else {
            guard heads > 0, dim % heads == 0 else {
                throw QuantDriftError.invalidInput("\(path): hidden_size \(dim) is not a multiple of num_attention_heads \(heads) (and no head_dim)")
            }
            headDim = dim / heads
        }
        let ropeBase = try j["rope_theta"].optional?.double() ?? 10000
        var attentionScale: Float? = nil
        if gemma, let s = try j["query_pre_attn_scalar"].optional?.double() {
            guard s > 0 else { throw QuantDriftError.invalidInput("\(path): query_pre_attn_scalar \(s) must be positive") }
            attentionScale = Float(1 / s.squareRoot())
        }
        var config = ModelConfig(
            architecture: architecture,
            layerCount: try j["num_hidden_layers"].int(),
            dim: dim,
            hiddenDim: try j["intermediate_size"].int(),
            headCount: heads,
            kvHeadCount: kvHeads,
            headDim: headDim,
            vocabSize: try j["vocab_size"].int(),
            contextLength: try j["max_position_embeddings"].int(),
            ropeBase: Float(ropeBase),
            normEps: Float(try j["rms_norm_eps"].optional?.double() ?? 1e-6),
            ropeStyle: .rotateHalf,
            tiedOutput: try j["tie_word_embeddings"].optional?.bool() ?? (gemma || !hasHead),
            attentionScale: attentionScale)
        config.ropeScaling = try ropeScaling(j, path: path, base: ropeBase, headDim: headDim)

        // Sliding windows: Gemma 3's local layers (layer_types, or the every-sixth-global pattern),
        // a llama config's window on every layer. Qwen's optional window is not built.
        if architecture == .qwen2 || architecture == .qwen3 {
            if try j["use_sliding_window"].optional?.bool() == true {
                throw refuse("use_sliding_window", "Qwen's sliding window is not supported")
            }
        } else if let window = try j["sliding_window"].optional?.int() {
            config.slidingWindow = window
            if gemma {
                if let types = try j["layer_types"].optional?.array() {
                    config.localLayers = try types.enumerated().map { i, t in
                        switch try t.string() {
                        case "sliding_attention": return true
                        case "full_attention": return false
                        case let other: throw refuse("layer_types[\(i)]", "'\(other)' is not a known layer type")
                        }
                    }
                } else {
                    let pattern = try j["sliding_window_pattern"].optional?.int() ?? 6
                    config.localLayers = ModelConfig.localLayers(count: config.layerCount, pattern: pattern)
                }
                config.localRopeBase = Float(try j["rope_local_base_freq"].optional?.double() ?? 10000)
            } else {
                config.localLayers = Array(repeating: true, count: config.layerCount)
            }
        }
        try config.validate(source: path)
        return config
    }

    /// `rope_scaling`: null, `default`, `linear` (factor) or `llama3`; anything else is refused.
    static func ropeScaling(_ j: JSONNode, path: String, base: Double, headDim: Int) throws -> RopeScaling {
        guard let scaling = try j["rope_scaling"].optional else { return .none }
        let type = try scaling["rope_type"].optional?.string() ?? (try scaling["type"].optional?.string())
        func number(_ key: String) throws -> Double {
            guard let v = try scaling[key].optional?.double() else {
                throw QuantDriftError.invalidInput("\(path): rope_scaling.\(key) is missing")
            }
            guard v.isFinite, v > 0 else { throw QuantDriftError.invalidInput("\(path): rope_scaling.\(key) \(v) must be positive") }
            return v
        }
        switch type {
        case "default": return .none
        case "linear": return .linear(factor: Float(try number("factor")))
        case "llama3":
            let low = try number("low_freq_factor"), high = try number("high_freq_factor")
            guard high > low else {
                throw QuantDriftError.invalidInput("\(path): rope_scaling.high_freq_factor \(high) must exceed low_freq_factor \(low)")
            }
            return .llama3(factor: try number("factor"), lowFreqFactor: low, highFreqFactor: high,
                           originalContext: try number("original_max_position_embeddings"), base: base, headDim: headDim)
        case let other:
            throw QuantDriftError.unsupported("\(path): rope_scaling.rope_type \(other.map { "'\($0)'" } ?? "(none given)") is not supported (default, linear, llama3 are)")
        }
    }
}

// MARK: - Tensors of a folder

/// The tensors of an HF folder, from `model.safetensors` or from the shards that
/// `model.safetensors.index.json` names.
struct TensorStore {
    private var files: [String: SafetensorsFile] = [:]
    /// Tensor name → shard file name.
    private var location: [String: String] = [:]
    let directory: String
    private let indexPath: String?

    init(directory: String) throws {
        self.directory = directory
        let dir = URL(fileURLWithPath: directory)
        let indexPath = dir.appendingPathComponent("model.safetensors.index.json").path
        let singlePath = dir.appendingPathComponent("model.safetensors").path
        let fm = FileManager.default
        if fm.fileExists(atPath: indexPath) {
            self.indexPath = indexPath
            let index = try JSONNode.read(path: indexPath)
            for (name, node) in try index["weight_map"].object() {
                let shard = try node.string()
                guard !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                    throw QuantDriftError.invalidInput("\(indexPath): weight_map.\(name) names '\(shard)', not a file in the folder")
                }
                location[name] = shard
            }
            for shard in Set(location.values) {
                files[shard] = try SafetensorsFile(path: dir.appendingPathComponent(shard).path)
            }
        } else if fm.fileExists(atPath: singlePath) {
            self.indexPath = nil
            let f = try SafetensorsFile(path: singlePath)
            files["model.safetensors"] = f
            for name in f.tensors.keys { location[name] = "model.safetensors" }
        } else {
            throw QuantDriftError.invalidInput("\(directory): no model.safetensors or model.safetensors.index.json")
        }
    }

    func contains(_ name: String) -> Bool { location[name] != nil }

    /// Every tensor name of the folder.
    var names: [String] { Array(location.keys) }

    func tensor(_ name: String) throws -> (SafetensorsFile, SafetensorsFile.TensorInfo) {
        guard let shard = location[name], let f = files[shard] else {
            throw QuantDriftError.invalidInput("\(directory): missing tensor \(name)")
        }
        guard let t = f.tensors[name] else {
            throw QuantDriftError.invalidInput("\(f.path): missing tensor \(name) (listed in \(indexPath ?? "the index"))")
        }
        return (f, t)
    }
}
