import Foundation
@testable import QuantDrift
import Testing

/// The HF folder loader: safetensors files (single and sharded; F32, F16, BF16), config.json and
/// tokenizer.json, checked against the same tiny model written as GGUF.
@Suite struct SafetensorsTests {
    struct Variant: Sendable, CustomTestStringConvertible {
        var architecture: Architecture
        var tied: Bool
        var testDescription: String { "\(architecture.rawValue)\(tied ? " tied" : "")" }
    }

    static let variants = [Variant(architecture: .llama, tied: false), Variant(architecture: .llama, tied: true),
                           Variant(architecture: .qwen2, tied: true), Variant(architecture: .qwen2, tied: false)]

    /// GGUF weights brought back to the HF layout: llama Q/K rows (and biases) un-permuted.
    func hfLayout(_ w: ModelWeights, _ c: ModelConfig) -> ModelWeights {
        guard c.ropeStyle == .adjacentPairs else { return w }
        var w = w
        for i in w.layers.indices {
            w.layers[i].wq = TinyModel.unpermuteFromGGUF(w.layers[i].wq, heads: c.headCount, cols: c.dim)
            w.layers[i].wk = TinyModel.unpermuteFromGGUF(w.layers[i].wk, heads: c.kvHeadCount, cols: c.dim)
            w.layers[i].bq = w.layers[i].bq.map { TinyModel.unpermuteFromGGUF($0, heads: c.headCount, cols: 1) }
            w.layers[i].bk = w.layers[i].bk.map { TinyModel.unpermuteFromGGUF($0, heads: c.kvHeadCount, cols: 1) }
        }
        return w
    }

    // MARK: - GGUF and HF agree

    @Test(arguments: variants, ["F32", "BF16", "F16"])
    func ggufAndSafetensorsAgree(_ v: Variant, dtype: String) throws {
        let tiny = TinyModel(architecture: v.architecture, seed: 11, tiedOutput: v.tied)
        try withTemporaryDirectory { dir in
            let gguf = dir.appendingPathComponent("tiny.gguf")
            try tiny.writeGGUF(to: gguf)
            let hfDir = dir.appendingPathComponent("tiny-hf")
            try tiny.writeSafetensors(to: hfDir, dtype: dtype)

            let g = try Model.load(path: gguf.path)
            let h = try Model.load(path: hfDir.path)
            #expect(h.config == tiny.config)
            #expect(h.config.ropeStyle == .rotateHalf)
            #expect(g.config.ropeStyle == (v.architecture == .llama ? .adjacentPairs : .rotateHalf))
            var gc = g.config
            gc.ropeStyle = .rotateHalf
            #expect(gc == h.config)
            #expect(h.config.tiedOutput == v.tied && (h.weights.output == nil) == v.tied)
            #expect((h.weights.layers[0].bq != nil) == (v.architecture == .qwen2))

            expectEqualWeights(h.weights, tiny.weights)
            expectEqualWeights(hfLayout(g.weights, g.config), h.weights)
            if v.architecture == .llama {
                #expect(g.weights.layers[1].wq != h.weights.layers[1].wq, "GGUF llama Q must be stored permuted")
            }

            #expect(h.name == "tiny-hf" && h.path == hfDir.path)
            #expect(h.sourceTensorTypes.allSatisfy { $0.type == dtype })
            #expect(h.sourceTensorTypes.count == g.sourceTensorTypes.count)

            let gs = g.tokenizer.spec, hs = h.tokenizer.spec
            #expect(hs.kind == gs.kind && hs.pre == gs.pre)
            #expect(hs.tokens == gs.tokens && hs.tokenTypes == gs.tokenTypes && hs.merges == gs.merges)
            #expect(hs.bosID == gs.bosID && hs.eosID == gs.eosID && hs.addBOS == gs.addBOS)
            #expect(hs.addSpacePrefix == gs.addSpacePrefix && hs.chatTemplate == gs.chatTemplate)
            #expect(hs.scores.isEmpty)
        }
    }

    @Test(arguments: [GGMLType.f16, .q8_0])
    func ggufMatrixTypesLoad(_ type: GGMLType) throws {
        let tiny = TinyModel(architecture: .qwen2, seed: 12)
        try withTemporaryDirectory { dir in
            let gguf = dir.appendingPathComponent("tiny.gguf")
            try tiny.writeGGUF(to: gguf, type: type)
            let g = try Model.load(path: gguf.path)
            #expect(g.sourceTensorTypes.first { $0.name == "blk.0.attn_q.weight" }?.type == type.name)
            #expect(g.sourceTensorTypes.first { $0.name == "blk.0.attn_norm.weight" }?.type == "F32")
            // F16 holds the weights exactly. Q8_0: |w| ≤ 0.25, so d ≤ 0.25 / 127 and the error is at most
            // d / 2 from rounding plus 127 × d × 2^-11 from storing d as F16.
            expectEqualWeights(g.weights, tiny.weights, tolerance: type == .f16 ? 0 : 0.25 / 127 * 0.57)
        }
    }

    @Test(arguments: [2, 3, 5])
    func shardedFolderLoads(shards: Int) throws {
        let tiny = TinyModel(architecture: .llama, seed: 13)
        try withTemporaryDirectory { dir in
            try tiny.writeSafetensors(to: dir, dtype: "BF16", shards: shards)
            let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".safetensors") }
            #expect(files.count == shards)
            let h = try Model.load(path: dir.path)
            #expect(h.config == tiny.config)
            expectEqualWeights(h.weights, tiny.weights)
        }
    }

    /// RoPE's inverse-frequency buffer (a derived value old checkpoints carry) is skipped; any other
    /// tensor nothing reads is refused, naming it: it may be a feature the runtime would ignore.
    @Test func inverseFrequencyBufferIsSkippedOtherUnreadTensorsAreRefused() throws {
        let tiny = TinyModel(seed: 14)
        var tensors = tiny.hfTensors()
        tensors.append(.init(name: "model.layers.0.self_attn.rotary_emb.inv_freq", dtype: "F32", shape: [4], data: [UInt8](repeating: 0, count: 16)))
        try withTemporaryDirectory { dir in
            try tiny.writeSafetensors(to: dir, tensors: tensors)
            let h = try Model.load(path: dir.path)
            expectEqualWeights(h.weights, tiny.weights)
        }
        for (name, dtype, count) in [("extra.int", "I64", 16), ("extra.fp4", "F4", 4)] {
            let extra = tensors + [.init(name: name, dtype: dtype, shape: [count == 16 ? 2 : 8], data: [UInt8](repeating: 1, count: count))]
            try withTemporaryDirectory { dir in
                try tiny.writeSafetensors(to: dir, tensors: extra)
                #expect { try Model.load(path: dir.path) } throws: { "\($0)".contains("tensor \(name) is not used") }
            }
        }
    }

    // MARK: - SafetensorsFile

    @Test func fileRoundTrip() throws {
        var w = SafetensorsWriter()
        w.metadata = ["format": "pt", "note": "x"]
        w.tensors = [
            .init(name: "a", dtype: "F32", shape: [2, 2], data: encodeFloats([1, 2, 3, 4], as: .f32)),
            .init(name: "b", dtype: "BF16", shape: [3], data: encodeFloats([1, -2, 0.5], as: .bf16)),
            .init(name: "c", dtype: "F16", shape: [1, 1, 2], data: encodeFloats([65504, -0.25], as: .f16)),
            .init(name: "scalar", dtype: "F32", shape: [], data: encodeFloats([7], as: .f32)),
            .init(name: "empty", dtype: "F32", shape: [0, 4], data: []),
        ]
        try withTemporaryDirectory { dir in
            let path = dir.appendingPathComponent("x.safetensors").path
            try w.write(to: path)
            let f = try SafetensorsFile(path: path)
            #expect(f.metadata == ["format": "pt", "note": "x"])
            #expect(f.dataOffset % 8 == 0)
            #expect(Set(f.tensors.keys) == ["a", "b", "c", "scalar", "empty"])
            let a = try #require(f.tensors["a"])
            #expect(a.shape == [2, 2] && a.begin == 0 && a.end == 16 && a.elementCount == 4)
            #expect(try f.floats(a) == [1, 2, 3, 4])
            #expect(try f.floats(#require(f.tensors["b"])) == [1, -2, 0.5])
            #expect(try f.floats(#require(f.tensors["c"])) == [65504, -0.25])
            #expect(try f.floats(#require(f.tensors["scalar"])) == [7])
            #expect(try f.floats(#require(f.tensors["empty"])) == [])
        }
    }

    // MARK: - config.json

    @Test func configVariants() throws {
        let tiny = TinyModel(seed: 15)
        func config(_ edit: (inout [String: Any]) -> Void) throws -> ModelConfig {
            var j = tiny.hfConfig()
            edit(&j)
            let data = try JSONSerialization.data(withJSONObject: j)
            let node = try data.withUnsafeBytes { try JSONNode.parse($0, file: "config.json") }
            return try SafetensorsModelLoader.modelConfig(node, path: "config.json", hasHead: true)
        }
        #expect(try config { _ in } == tiny.config)
        // Architecture from `architectures` alone; defaults for optional keys.
        let c = try config {
            $0["model_type"] = nil
            for k in ["num_key_value_heads", "rope_theta", "rms_norm_eps", "tie_word_embeddings", "rope_scaling", "hidden_act"] { $0[k] = nil }
        }
        #expect(c.architecture == .llama && c.kvHeadCount == c.headCount && c.ropeBase == 10000 && c.normEps == 1e-6 && !c.tiedOutput)
        #expect(try config { $0["architectures"] = ["Qwen2ForCausalLM"]; $0["model_type"] = nil }.architecture == .qwen2)
        // Explicit head_dim wins over hidden_size / heads.
        let hd = try config { $0["head_dim"] = 16 }
        #expect(hd.headDim == 16 && hd.qDim == 64)
        #expect(try config { $0["rope_scaling"] = ["rope_type": "default"] }.ropeBase == 10000)
    }

    // MARK: - tokenizer.json

    func spec(_ tokenizer: [String: Any], tokenizerConfig: [String: Any]? = nil, config: [String: Any] = [:]) throws -> TokenizerSpec {
        try withTemporaryDirectory { dir in
            try writeJSON(tokenizer, to: dir.appendingPathComponent("tokenizer.json"))
            if let tc = tokenizerConfig { try writeJSON(tc, to: dir.appendingPathComponent("tokenizer_config.json")) }
            let data = try JSONSerialization.data(withJSONObject: config)
            let node = try data.withUnsafeBytes { try JSONNode.parse($0, file: "config.json") }
            return try HFTokenizerLoader.spec(directory: dir.path, config: node)
        }
    }

    func tokenizerJSON(pre: Any, vocab: [String: Int] = ["a": 0, "b": 1, "ab": 2], added: [[String: Any]] = [],
                       merges: [Any] = ["a b"], postProcessor: Any = NSNull()) -> [String: Any] {
        ["added_tokens": added, "pre_tokenizer": pre, "post_processor": postProcessor,
         "decoder": ["type": "ByteLevel"], "model": ["type": "BPE", "vocab": vocab, "merges": merges]]
    }

    @Test func preTokenizerNames() throws {
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true]
        let noRegex: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false]
        func split(_ r: String) -> [String: Any] { ["type": "Split", "pattern": ["Regex": r], "behavior": "Isolated"] }
        func seq(_ p: [Any]) -> [String: Any] { ["type": "Sequence", "pretokenizers": p] }
        let cases: [(Any, String)] = [
            (byteLevel, "gpt2"),
            (seq([["type": "Digits", "individual_digits": true], byteLevel]), "smollm"),
            (seq([split(HFTokenizerLoader.llama3Regex), noRegex]), "llama-bpe"),
            (seq([split(HFTokenizerLoader.qwen2Regex), noRegex]), "qwen2"),
            (seq([split(#"\s+|\w+"#), noRegex]), "gpt2"),
        ]
        for (pre, name) in cases {
            #expect(try spec(tokenizerJSON(pre: pre)).pre == name)
        }
        #expect(try spec(tokenizerJSON(pre: ["type": "ByteLevel", "add_prefix_space": true])).addSpacePrefix)
    }

    @Test func vocabularyMergesAndSpecialTokens() throws {
        let added: [[String: Any]] = [
            ["id": 5, "content": "<s>", "special": true],
            ["id": 6, "content": "</s>", "special": true],
            ["id": 7, "content": "<tool>", "special": false],
        ]
        let post: [String: Any] = ["type": "TemplateProcessing",
                                   "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]]]
        let j = tokenizerJSON(pre: ["type": "ByteLevel"], added: added, merges: [["a", "b"]], postProcessor: post)
        // No tokenizer_config.json: ids from config.json, BOS-first template → add BOS.
        let s = try spec(j, config: ["bos_token_id": 5, "eos_token_id": [6, 5]])
        #expect(s.tokens == ["a", "b", "ab", "[PAD3]", "[PAD4]", "<s>", "</s>", "<tool>"])
        #expect(s.tokenTypes == [.normal, .normal, .normal, .unused, .unused, .control, .control, .userDefined])
        #expect(s.merges == ["a b"])
        #expect(s.bosID == 5 && s.eosID == 6 && s.addBOS)

        // tokenizer_config.json names win; AddedToken dicts; add_bos_token false; templates by name.
        let tc: [String: Any] = [
            "bos_token": ["__type": "AddedToken", "content": "</s>"], "eos_token": "<s>", "add_bos_token": false,
            "chat_template": [["name": "tool_use", "template": "T"], ["name": "default", "template": "D"]],
        ]
        let s2 = try spec(j, tokenizerConfig: tc, config: ["bos_token_id": 5])
        #expect(s2.bosID == 6 && s2.eosID == 5 && !s2.addBOS && s2.chatTemplate == "D")

        // A name not in the vocabulary falls back to config.json.
        let s3 = try spec(j, tokenizerConfig: ["bos_token": "<nope>"], config: ["bos_token_id": 6])
        #expect(s3.bosID == 6 && s3.eosID == nil)
    }

    @Test func tinyModelTokenizerJSON() throws {
        for arch in [Architecture.llama, .qwen2] {
            let tiny = TinyModel(architecture: arch)
            let s = try spec(tiny.tokenizerJSON(), tokenizerConfig: tiny.tokenizerConfigJSON())
            #expect(s.pre == (arch == .qwen2 ? "qwen2" : "smollm"))
            #expect(s.tokens == tiny.tokens && s.tokenTypes == tiny.tokenTypes && s.merges == tiny.merges)
            #expect(s.bosID == tiny.bosID && s.eosID == tiny.eosID && s.chatTemplate == TinyModel.chatTemplate)
        }
    }
}
