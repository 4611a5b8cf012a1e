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
        // The tokenizer first, so that a broken tokenizer.json fails before gigabytes are converted.
        // Token ids are checked against vocab_size while reading, so the table fits the embedding.
        let tokenizer = try Tokenizer(spec: HFTokenizerLoader.spec(directory: directory, config: json, vocabSize: config.vocabSize))

        var types: [(name: String, type: String, shape: [Int])] = []
        func load(_ name: String, _ shape: [Int]) throws -> [Float] {
            let (f, t) = try store.tensor(name)
            guard t.shape == shape else {
                throw QuantDriftError.invalidInput("\(f.path): tensor \(name) has shape \(t.shape), expected \(shape)")
            }
            types.append((name, t.dtype, shape))
            let w = try f.floats(t)
            try Model.checkFinite(w, tensor: name, file: f.path)
            return w
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
            layers.append(LayerWeights(
                attnNorm: try load(b + "input_layernorm.weight", [c.dim]),
                wq: try load(b + "self_attn.q_proj.weight", [c.qDim, c.dim]),
                wk: try load(b + "self_attn.k_proj.weight", [c.kvDim, c.dim]),
                wv: try load(b + "self_attn.v_proj.weight", [c.kvDim, c.dim]),
                wo: try load(b + "self_attn.o_proj.weight", [c.dim, c.qDim]),
                bq: try optional(b + "self_attn.q_proj.bias", [c.qDim]),
                bk: try optional(b + "self_attn.k_proj.bias", [c.kvDim]),
                bv: try optional(b + "self_attn.v_proj.bias", [c.kvDim]),
                ffnNorm: try load(b + "post_attention_layernorm.weight", [c.dim]),
                wGate: try load(b + "mlp.gate_proj.weight", [c.hiddenDim, c.dim]),
                wUp: try load(b + "mlp.up_proj.weight", [c.hiddenDim, c.dim]),
                wDown: try load(b + "mlp.down_proj.weight", [c.dim, c.hiddenDim])))
        }
        let weights = ModelWeights(
            tokenEmbedding: tokenEmbedding,
            layers: layers,
            outputNorm: try load("model.norm.weight", [c.dim]),
            output: c.tiedOutput ? nil : try load("lm_head.weight", [c.vocabSize, c.dim]))

        let name = dir.standardizedFileURL.lastPathComponent
        return Model(name: name, path: directory, config: config, weights: weights, tokenizer: tokenizer, sourceTensorTypes: types)
    }

    /// The `ModelConfig` of an HF `config.json`. `hasHead` tells whether `lm_head.weight` exists,
    /// for configs that do not say whether the head is tied.
    static func modelConfig(_ j: JSONNode, path: String, hasHead: Bool) throws -> ModelConfig {
        let architecture: Architecture
        let modelType = try j["model_type"].optional?.string()
        let archNames = try j["architectures"].optional?.array().map { try $0.string() } ?? []
        switch modelType {
        case "llama": architecture = .llama
        case "qwen2": architecture = .qwen2
        case nil where archNames.contains("LlamaForCausalLM"): architecture = .llama
        case nil where archNames.contains("Qwen2ForCausalLM"): architecture = .qwen2
        default:
            let named = modelType.map { "model_type '\($0)'" } ?? (archNames.isEmpty ? "no model_type or architectures" : "architectures \(archNames)")
            throw QuantDriftError.unsupported("\(path): \(named) is not supported (supported: llama, qwen2)")
        }
        if let act = try j["hidden_act"].optional?.string(), act != "silu" {
            throw QuantDriftError.unsupported("\(path): hidden_act '\(act)' is not supported (silu is)")
        }
        if let scaling = try j["rope_scaling"].optional {
            let type = try scaling["rope_type"].optional?.string() ?? (try scaling["type"].optional?.string())
            if type != "default" {
                throw QuantDriftError.unsupported("\(path): rope_scaling \(type.map { "'\($0)'" } ?? "") is not supported")
            }
        }
        if architecture == .qwen2, try j["use_sliding_window"].optional?.bool() == true {
            throw QuantDriftError.unsupported("\(path): use_sliding_window is not supported")
        }
        let dim = try j["hidden_size"].int()
        let heads = try j["num_attention_heads"].int()
        let kvHeads = try j["num_key_value_heads"].optional?.int() ?? heads
        let headDim: Int
        if let hd = try j["head_dim"].optional?.int() {
            headDim = hd
        } else {
            guard heads > 0, dim % heads == 0 else {
                throw QuantDriftError.invalidInput("\(path): hidden_size \(dim) is not a multiple of num_attention_heads \(heads)")
            }
            headDim = dim / heads
        }
        let config = ModelConfig(
            architecture: architecture,
            layerCount: try j["num_hidden_layers"].int(),
            dim: dim,
            hiddenDim: try j["intermediate_size"].int(),
            headCount: heads,
            kvHeadCount: kvHeads,
            headDim: headDim,
            vocabSize: try j["vocab_size"].int(),
            contextLength: try j["max_position_embeddings"].int(),
            ropeBase: Float(try j["rope_theta"].optional?.double() ?? 10000),
            normEps: Float(try j["rms_norm_eps"].optional?.double() ?? 1e-6),
            ropeStyle: .rotateHalf,
            tiedOutput: try j["tie_word_embeddings"].optional?.bool() ?? !hasHead)
        try config.validate(source: path)
        return config
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
