import Foundation
import QuantDrift
import Testing

/// Broken GGUF files and HF folders: each must throw a one-line `invalidInput` or `unsupported`
/// that names the file and the problem, never crash or allocate without bound.
@Suite struct CorruptFileTests {
    // MARK: - GGUF helpers

    /// A small valid file: a few metadata kinds and three tensors.
    func smallGGUF(version: UInt32 = 3) -> GGUFWriter {
        var g = GGUFWriter(version: version)
        g.set("general.architecture", .string("llama"))
        g.set("general.name", .string("corrupt"))
        g.set("t.list", .array([.uint32(1), .uint32(2), .uint32(3)]))
        g.set("t.nested", .array([.array([.string("a"), .string("bc")]), .array([])]))
        g.set("t.pi", .float64(3.14))
        g.addTensor("a", shape: [2, 32], floats: (0..<64).map(Float.init))
        g.addTensor("b", shape: [32], floats: (0..<32).map { Float(127 - 8 * $0) }, type: .q8_0)  // d = 1: exact
        g.addTensor("c", shape: [3], floats: [1, 2, 3], type: .f16)
        return g
    }

    /// Writes `bytes` to `name` in `dir` and returns its path.
    func file(_ bytes: [UInt8], in dir: URL, _ name: String = "bad.gguf") throws -> String {
        let path = dir.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Expects opening `g` as a GGUF file to fail with a message naming the file and `problem`.
    func expectGGUFError(_ g: GGUFWriter, _ problem: String..., kind: BadInputKind = .invalid,
                         sourceLocation: SourceLocation = #_sourceLocation) throws {
        try withTemporaryDirectory { dir in
            let path = try file(g.bytes(), in: dir)
            expectBadInput(parts: [path] + problem, kind: kind, sourceLocation: sourceLocation) { _ = try GGUFFile(path: path) }
        }
    }

    /// Expects `Model.load` of the tiny model, edited by `edit`, to fail naming the file and `problem`.
    func expectModelError(_ problem: String, kind: BadInputKind = .invalid, tiny: TinyModel = TinyModel(),
                          type: @escaping (String) -> GGMLType = { _ in .f32 },
                          sourceLocation: SourceLocation = #_sourceLocation, _ edit: (inout GGUFWriter) -> Void) throws {
        var g = tiny.ggufWriter(type: type)
        edit(&g)
        try withTemporaryDirectory { dir in
            let path = try file(g.bytes(), in: dir, "tiny.gguf")
            expectBadInput(path, problem, kind: kind, sourceLocation: sourceLocation) { _ = try Model.load(path: path) }
        }
    }

    @Test func smallGGUFIsValid() throws {
        try withTemporaryDirectory { dir in
            let f = try GGUFFile(path: file(smallGGUF().bytes(), in: dir))
            #expect(f.tensors.count == 3)
            #expect(try f.floats(#require(f.tensor("b"))) == (0..<32).map { Float(127 - 8 * $0) })
        }
    }

    // MARK: - GGUF header

    @Test func emptyFileAndWrongMagic() throws {
        try withTemporaryDirectory { dir in
            let empty = try file([], in: dir, "empty.gguf")
            expectBadInput(empty, "not a GGUF file", "0 bytes") { _ = try GGUFFile(path: empty) }
            expectBadInput(empty, "not a GGUF file") { _ = try Model.load(path: empty) }
            var bytes = smallGGUF().bytes()
            bytes[0...3] = [0x47, 0x47, 0x4D, 0x4C]            // "GGML"
            let wrong = try file(bytes, in: dir)
            expectBadInput(wrong, "not a GGUF file (bad magic)") { _ = try GGUFFile(path: wrong) }
            let missing = dir.appendingPathComponent("nope.gguf").path
            expectBadInput(missing, "no such file") { _ = try Model.load(path: missing) }
        }
    }

    @Test(arguments: [0, 1, 4, 99] as [UInt32])
    func unsupportedVersions(_ version: UInt32) throws {
        try expectGGUFError(smallGGUF(version: version), "GGUF version \(version) is not supported", kind: .unsupported)
    }

    /// Every prefix of a file that ends inside its header (or the data) must throw.
    @Test func everyTruncationThrows() throws {
        for (what, g) in [("small", smallGGUF()), ("tiny model", TinyModel().ggufWriter())] {
            let layout = g.layout()
            let bytes = layout.bytes
            try withTemporaryDirectory { dir in
                let path = dir.appendingPathComponent("cut.gguf").path
                var passed = 0
                let cuts = Array(0..<layout.dataOffset) + Array(stride(from: layout.dataOffset, to: bytes.count, by: 97))
                for n in cuts {
                    try Data(bytes[0..<n]).write(to: URL(fileURLWithPath: path))
                    do {
                        _ = try GGUFFile(path: path)
                        Issue.record("\(what): a file cut to \(n) of \(bytes.count) bytes opened")
                    } catch let e as QuantDriftError {
                        if e.isBadInput && e.description.hasPrefix(path + ": ") && !e.description.contains("\n") {
                            passed += 1
                        } else {
                            Issue.record("\(what), cut to \(n): bad error \(e)")
                        }
                    }
                }
                #expect(passed == cuts.count, "\(what)")
                #expect(layout.dataOffset > 1000 || what == "small")
            }
        }
        // The messages say what ran out.
        try withTemporaryDirectory { dir in
            let bytes = smallGGUF().bytes()
            let p1 = try file(Array(bytes[0..<10]), in: dir)
            expectBadInput(p1, "truncated at offset 8") { _ = try GGUFFile(path: p1) }
            let p2 = try file(Array(bytes[0..<(bytes.count - 1)]), in: dir)
            expectBadInput(p2, "tensor 'c' data", "lies past the end of the file") { _ = try GGUFFile(path: p2) }
        }
    }

    @Test func lyingLengthsAndCounts() throws {
        var g = smallGGUF()
        var s: [UInt8] = []
        s.appendLE(UInt64(1) << 40)
        g.setRaw("t.string", type: 8, payload: s + Array("abc".utf8))
        try expectGGUFError(g, "string length 1099511627776 at offset")

        g = smallGGUF()
        var a: [UInt8] = []
        a.appendLE(UInt32(4)); a.appendLE(UInt64.max / 2); a.appendLE(UInt32(1))
        g.setRaw("t.huge", type: 9, payload: a)
        try expectGGUFError(g, "array of 9223372036854775807 elements")

        // The same lie inside a nested array.
        g = smallGGUF()
        var n: [UInt8] = []
        n.appendLE(UInt32(9)); n.appendLE(UInt64(1))             // one array…
        n.appendLE(UInt32(8)); n.appendLE(UInt64(1) << 50)        // …of 2^50 strings
        g.setRaw("t.nested.huge", type: 9, payload: n)
        try expectGGUFError(g, "array of 1125899906842624 elements")

        g = smallGGUF()
        g.tensorCountOverride = 1 << 40
        try expectGGUFError(g, "tensor count 1099511627776 exceeds what the file can hold")
        g = smallGGUF()
        g.metadataCountOverride = .max
        try expectGGUFError(g, "metadata count 18446744073709551615 exceeds")
    }

    @Test func malformedMetadata() throws {
        var g = smallGGUF()
        g.setRaw("t.bool", type: 7, payload: [2])
        try expectGGUFError(g, "bool value 2")
        g = smallGGUF()
        g.setRaw("t.what", type: 13, payload: [0, 0, 0, 0])
        try expectGGUFError(g, "unknown metadata value type 13")
        g = smallGGUF()
        g.set("general.alignment", .uint32(48))
        try expectGGUFError(g, "general.alignment must be a power of two")
        // Arrays nest at most 8 deep.
        func nested(_ depth: Int) -> GGUFValue { depth == 0 ? .int8(1) : .array([nested(depth - 1)]) }
        g = smallGGUF()
        g.set("t.deep", nested(8))
        try withTemporaryDirectory { dir in
            let f = try GGUFFile(path: file(g.bytes(), in: dir))
            #expect(f.metadata["t.deep"] == nested(8))
        }
        g.set("t.deep", nested(9))
        try expectGGUFError(g, "nested deeper than 8")
    }

    // MARK: - GGUF tensor infos

    @Test func badTensorInfos() throws {
        var g = smallGGUF()
        g.tensors[1].dims = []
        try expectGGUFError(g, "tensor 'b' has 0 dimensions")
        g = smallGGUF()
        g.tensors[0].dims = [32, 2, 1, 1, 1]
        try expectGGUFError(g, "tensor 'a' has 5 dimensions")
        g = smallGGUF()
        g.tensors[2].dims = [0]
        try expectGGUFError(g, "tensor 'c' has dimension 0 out of range")
        g = smallGGUF()
        g.tensors[2].dims = [1 << 40]
        try expectGGUFError(g, "tensor 'c' has dimension 1099511627776 out of range")
        g = smallGGUF()
        g.tensors[0].dims = [UInt64(Int32.max), UInt64(Int32.max), UInt64(Int32.max)]
        try expectGGUFError(g, "tensor 'a' dimensions overflow")
        g = smallGGUF()
        g.tensors[0].dims = [32, 1000]
        try expectGGUFError(g, "tensor 'a' data (128000 bytes at offset 0) lies past the end of the file")
        g = smallGGUF()
        g.tensors[2].offsetOverride = 1 << 20
        try expectGGUFError(g, "tensor 'c' data", "lies past the end of the file")
        g = smallGGUF()
        g.tensors[2].offsetOverride = .max - 31
        try expectGGUFError(g, "tensor 'c' offset 18446744073709551584 out of range")
        g = smallGGUF()
        g.tensors[1].offsetOverride = 4
        try expectGGUFError(g, "tensor 'b' offset 4 is not aligned to 32")
        g = smallGGUF()
        g.tensors[1].rawType = 99
        try expectGGUFError(g, "tensor 'b' has unknown ggml type 99", kind: .unsupported)
        g = smallGGUF()
        g.tensors[1].dims = [16]
        try expectGGUFError(g, "tensor 'b' row length 16 is not a multiple of Q8_0's block size 32")
        g = smallGGUF()
        g.tensors[2].name = "a"
        try expectGGUFError(g, "tensor 'a' appears twice")
    }

    // MARK: - GGUF models

    @Test func modelLevelErrors() throws {
        let c = TinyModel().config
        try expectModelError("missing tensor blk.1.ffn_up.weight") { $0.removeTensor("blk.1.ffn_up.weight") }
        try expectModelError("missing tensor token_embd.weight") { $0.removeTensor("token_embd.weight") }
        try expectModelError("tensor blk.0.attn_v.weight has shape [32, 32], expected [\(c.kvDim), 32]") { g in
            let i = g.tensorIndex("blk.0.attn_v.weight")
            g.tensors[i].dims = [32, 32]
            g.tensors[i].data = encodeFloats([Float](repeating: 0, count: 32 * 32), as: .f32)
        }
        try expectModelError("tensor token_embd.weight has 3 dimensions") { g in
            g.tensors[g.tensorIndex("token_embd.weight")].dims = [32, 300, 1]
        }
        try expectModelError("architecture 'mamba' is not supported", kind: .unsupported) {
            $0.set("general.architecture", .string("mamba"))
        }
        try expectModelError("missing metadata key general.architecture") { $0.remove("general.architecture") }
        try expectModelError("missing metadata key llama.block_count") { $0.remove("llama.block_count") }
        try expectModelError("metadata llama.embedding_length is not an integer") {
            $0.set("llama.embedding_length", .string("32"))
        }
        try expectModelError("head count must be positive") { $0.set("llama.attention.head_count", .uint32(0)) }
        try expectModelError("KV head count 0 out of range") { $0.set("llama.attention.head_count_kv", .uint32(0)) }
        try expectModelError("head count 4 is not a multiple of KV head count 3") {
            $0.set("llama.attention.head_count_kv", .uint32(3))
        }
        try expectModelError("layer count 1000000 out of range") { $0.set("llama.block_count", .uint32(1_000_000)) }
        try expectModelError("partial RoPE", kind: .unsupported) { $0.set("llama.rope.dimension_count", .uint32(4)) }
        try expectModelError("tokenizer.ggml.bos_token_id is not a valid token id") {
            $0.set("tokenizer.ggml.bos_token_id", .uint32(100_000))
        }
        try expectModelError("tokenizer model 'bert' is not supported", kind: .unsupported) {
            $0.set("tokenizer.ggml.model", .string("bert"))
        }
        try expectModelError("3 token types for 300 tokens") {
            $0.set("tokenizer.ggml.token_type", .array([.int32(1), .int32(1), .int32(1)]))
        }
        // A known type the runtime cannot dequantize is refused at load, naming the tensor.
        try expectModelError("tensor 'blk.0.ffn_down.weight' has type Q8_K, which is not supported", kind: .unsupported,
                             tiny: TinyModel(hiddenDim: 256), type: { $0 == "blk.0.ffn_down.weight" ? .q8_K : .f32 }) { _ in }
    }

    // MARK: - Safetensors files

    /// Expects opening a .safetensors file holding `bytes` to fail naming the file and `problem`.
    func expectSafetensorsError(_ bytes: [UInt8], _ problem: String..., sourceLocation: SourceLocation = #_sourceLocation) throws {
        try withTemporaryDirectory { dir in
            let path = try file(bytes, in: dir, "bad.safetensors")
            expectBadInput(parts: [path] + problem, kind: .invalid, sourceLocation: sourceLocation) { _ = try SafetensorsFile(path: path) }
        }
    }

    func header(_ entries: String) -> String { "{\"__metadata__\":{\"format\":\"pt\"},\(entries)}" }

    @Test func safetensorsHeaderErrors() throws {
        let data = [UInt8](repeating: 0, count: 16)
        let ok = header(#""t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}"#)
        try expectSafetensorsError([], "not a safetensors file (0 bytes")
        try expectSafetensorsError([1, 2, 3], "too short for the header length")
        try expectSafetensorsError(SafetensorsWriter.file(header: ok, data: data, headerLength: 1 << 40),
                                   "header length 1099511627776 runs past the end of the file")
        try expectSafetensorsError(SafetensorsWriter.file(header: ok, data: data, headerLength: .max),
                                   "header length 18446744073709551615 runs past the end")
        try expectSafetensorsError(SafetensorsWriter.file(header: "[1, 2]", data: data), "header does not start with '{'")
        try expectSafetensorsError(SafetensorsWriter.file(header: #"{"t": {"dtype": "F32", "#, data: data), "header is not valid JSON")
        try expectSafetensorsError(SafetensorsWriter.file(header: #"{"t": 5}"#, data: data), "t is not an object")
        try expectSafetensorsError(SafetensorsWriter.file(header: header(#""t":{"shape":[4],"data_offsets":[0,16]}"#), data: data),
                                   "t.dtype is missing")
        try expectSafetensorsError(SafetensorsWriter.file(header: header(#""t":{"dtype":"F32","shape":["4"],"data_offsets":[0,16]}"#), data: data),
                                   "t.shape[0] is not an integer")
        try expectSafetensorsError(SafetensorsWriter.file(header: header(#""t":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}"#), data: data),
                                   "tensor t has negative dimension -4")
        try expectSafetensorsError(SafetensorsWriter.file(header: header(#""t":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}"#), data: data),
                                   "tensor t shape", "overflows")
        try expectSafetensorsError(SafetensorsWriter.file(header: header(#""t":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,4],"data_offsets":[0,16]}"#), data: data),
                                   "tensor t has 9 dimensions")
        try expectSafetensorsError(SafetensorsWriter.file(header: header(#""t":{"dtype":"F32","shape":[4],"data_offsets":[0,400]}"#), data: data),
                                   "tensor t data_offsets [0, 400] lie outside the 16-byte data section")
        try expectSafetensorsError(SafetensorsWriter.file(header: header(#""t":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}"#), data: data),
                                   "data_offsets [8, 4] lie outside")
        try expectSafetensorsError(SafetensorsWriter.file(header: header(#""t":{"dtype":"F32","shape":[4],"data_offsets":[0]}"#), data: data),
                                   "data_offsets must be [begin, end]")
        try expectSafetensorsError(SafetensorsWriter.file(header: header(#""t":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}"#), data: data),
                                   "tensor t holds 16 bytes, but F32 × [2] needs 8")
        try expectSafetensorsError(SafetensorsWriter.file(header: #"{"__metadata__":{"format":5}}"#, data: data),
                                   "__metadata__.format is not a string")
        let deep = "{\"t\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        try expectSafetensorsError(SafetensorsWriter.file(header: deep, data: data), "header is not valid JSON")
    }

    /// A header length over the 100 MB limit is refused before anything is read, even when the
    /// file is that large (a sparse file here).
    @Test func safetensorsHeaderOverLimit() throws {
        try withTemporaryDirectory { dir in
            let path = dir.appendingPathComponent("big.safetensors").path
            var b: [UInt8] = []
            b.appendLE(UInt64(100_000_001))
            try Data(b + Array("{".utf8)).write(to: URL(fileURLWithPath: path))
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try h.truncate(atOffset: 100_000_100)
            try h.close()
            expectBadInput(path, "header length 100000001 exceeds the 100000000-byte limit", kind: .invalid) {
                _ = try SafetensorsFile(path: path)
            }
        }
    }

    // MARK: - HF folders

    /// Writes the tiny model as an HF folder, lets `edit` break it, and expects `Model.load` to
    /// fail with a message containing `problem` and the path of `culprit` (a file in the folder).
    func expectFolderError(_ problem: String, culprit: String?, kind: BadInputKind = .invalid,
                           tiny: TinyModel = TinyModel(), sourceLocation: SourceLocation = #_sourceLocation,
                           tensors edit: (inout [SafetensorsWriter.Tensor]) -> Void = { _ in },
                           files: (URL) throws -> Void = { _ in }) throws {
        try withTemporaryDirectory { dir in
            var tensors = tiny.hfTensors()
            edit(&tensors)
            try tiny.writeSafetensors(to: dir, tensors: tensors)
            try files(dir)
            let where_ = culprit.map { dir.appendingPathComponent($0).path } ?? dir.path
            expectBadInput(where_, problem, kind: kind, sourceLocation: sourceLocation) { _ = try Model.load(path: dir.path) }
        }
    }

    func editConfig(_ dir: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = dir.appendingPathComponent("config.json")
        var j = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        edit(&j)
        try writeJSON(j, to: url)
    }

    @Test func folderTensorErrors() throws {
        try expectFolderError("tensor model.layers.0.mlp.up_proj.weight has dtype I8, which is not supported (F32, F16, BF16 are)",
                              culprit: "model.safetensors", kind: .unsupported) { t in
            let i = t.firstIndex { $0.name == "model.layers.0.mlp.up_proj.weight" }!
            t[i].dtype = "I8"
            t[i].data = [UInt8](repeating: 1, count: t[i].data.count / 4)
        }
        try expectFolderError("missing tensor model.layers.1.self_attn.k_proj.weight", culprit: nil) { t in
            t.removeAll { $0.name == "model.layers.1.self_attn.k_proj.weight" }
        }
        try expectFolderError("missing tensor lm_head.weight", culprit: nil) { t in t.removeAll { $0.name == "lm_head.weight" } }
        try expectFolderError("tensor model.norm.weight has shape [16], expected [32]", culprit: "model.safetensors") { t in
            let i = t.firstIndex { $0.name == "model.norm.weight" }!
            t[i].shape = [16]
            t[i].data = Array(t[i].data[0..<64])
        }
        try expectFolderError("tensor model.layers.0.self_attn.q_proj.weight has shape [32, 16], expected [32, 32]",
                              culprit: "model.safetensors") { t in
            let i = t.firstIndex { $0.name == "model.layers.0.self_attn.q_proj.weight" }!
            t[i].shape = [32, 16]
            t[i].data = Array(t[i].data[0..<(32 * 16 * 4)])
        }
        try expectFolderError("biases outside Q/K/V are not supported", culprit: nil, kind: .unsupported) { t in
            t.append(.init(name: "model.layers.0.self_attn.o_proj.bias", dtype: "F32", shape: [32], data: [UInt8](repeating: 0, count: 128)))
        }
        try expectFolderError("no model.safetensors or model.safetensors.index.json", culprit: nil, files: { dir in
            try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
        })
        try expectFolderError("header length", culprit: "model.safetensors", files: { dir in
            let url = dir.appendingPathComponent("model.safetensors")
            var b = [UInt8](try Data(contentsOf: url))
            b.patchLE(UInt64(b.count), at: 0)
            try Data(b).write(to: url)
        })
    }

    @Test func shardIndexErrors() throws {
        let tiny = TinyModel()
        func sharded(_ problem: String, culprit: String?, kind: BadInputKind = .invalid, _ edit: (URL) throws -> Void) throws {
            try withTemporaryDirectory { dir in
                try tiny.writeSafetensors(to: dir, shards: 2)
                try edit(dir)
                let where_ = culprit.map { dir.appendingPathComponent($0).path } ?? dir.path
                expectBadInput(where_, problem, kind: kind) { _ = try Model.load(path: dir.path) }
            }
        }
        func editIndex(_ dir: URL, _ edit: (inout [String: String]) -> Void) throws {
            let url = dir.appendingPathComponent("model.safetensors.index.json")
            let j = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            var map = j["weight_map"] as! [String: String]
            edit(&map)
            try writeJSON(["metadata": j["metadata"]!, "weight_map": map], to: url)
        }
        try sharded("cannot open", culprit: "model-00002-of-00002.safetensors") { dir in
            try FileManager.default.removeItem(at: dir.appendingPathComponent("model-00002-of-00002.safetensors"))
        }
        try sharded("weight_map.model.norm.weight names '../x.safetensors', not a file in the folder",
                    culprit: "model.safetensors.index.json") { dir in
            try editIndex(dir) { $0["model.norm.weight"] = "../x.safetensors" }
        }
        try sharded("missing tensor model.norm.weight (listed in", culprit: "model-00001-of-00002.safetensors") { dir in
            try editIndex(dir) { $0["model.norm.weight"] = "model-00001-of-00002.safetensors" }
        }
        try sharded("weight_map is missing", culprit: "model.safetensors.index.json") { dir in
            try writeJSON(["metadata": [:] as [String: Any]], to: dir.appendingPathComponent("model.safetensors.index.json"))
        }
        try sharded("is not valid JSON", culprit: "model.safetensors.index.json") { dir in
            try Data("{\"weight_map\": ".utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        }
    }

    @Test func configErrors() throws {
        for key in ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings"] {
            try expectFolderError("\(key) is missing", culprit: "config.json", files: { dir in
                try editConfig(dir) { $0[key] = nil }
            })
        }
        try expectFolderError("hidden_size is not an integer", culprit: "config.json", files: { dir in
            try editConfig(dir) { $0["hidden_size"] = "32" }
        })
        try expectFolderError("model_type 'gpt_neox' is not supported", culprit: "config.json", kind: .unsupported, files: { dir in
            try editConfig(dir) { $0["model_type"] = "gpt_neox" }
        })
        try expectFolderError("architectures [\"MambaForCausalLM\"] is not supported", culprit: "config.json", kind: .unsupported, files: { dir in
            try editConfig(dir) { $0["model_type"] = nil; $0["architectures"] = ["MambaForCausalLM"] }
        })
        try expectFolderError("rope_scaling.rope_type 'yarn' is not supported", culprit: "config.json", kind: .unsupported, files: { dir in
            try editConfig(dir) { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 8.0] }
        })
        try expectFolderError("rope_scaling.low_freq_factor is missing", culprit: "config.json", files: { dir in
            try editConfig(dir) { $0["rope_scaling"] = ["rope_type": "llama3", "factor": 8.0] }
        })
        try expectFolderError("hidden_act: 'gelu' is not supported", culprit: "config.json", kind: .unsupported, files: { dir in
            try editConfig(dir) { $0["hidden_act"] = "gelu" }
        })
        try expectFolderError("head count 0 out of range", culprit: "config.json", files: { dir in
            try editConfig(dir) { $0["num_attention_heads"] = 0; $0["head_dim"] = 8 }
        })
        try expectFolderError("hidden_size 32 is not a multiple of num_attention_heads 5", culprit: "config.json", files: { dir in
            try editConfig(dir) { $0["num_attention_heads"] = 5 }
        })
        try expectFolderError("is not valid JSON (Unexpected end of file", culprit: "config.json", files: { dir in
            try Data("{\"hidden_size\": 32,".utf8).write(to: dir.appendingPathComponent("config.json"))
        })
        try expectFolderError("no config.json", culprit: nil, files: { dir in
            try FileManager.default.removeItem(at: dir.appendingPathComponent("config.json"))
        })
        try expectFolderError("is token id 299, out of range 0..<299 (the model's vocab_size)", culprit: "tokenizer.json", tensors: { t in
            for i in t.indices where t[i].name == "model.embed_tokens.weight" || t[i].name == "lm_head.weight" {
                t[i].shape = [299, 32]
                t[i].data = Array(t[i].data[0..<(299 * 32 * 4)])
            }
        }, files: { dir in
            try editConfig(dir) { $0["vocab_size"] = 299 }
        })
    }

    @Test func tokenizerErrors() throws {
        func editTokenizer(_ dir: URL, _ edit: (inout [String: Any]) -> Void) throws {
            let url = dir.appendingPathComponent("tokenizer.json")
            var j = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&j)
            try writeJSON(j, to: url)
        }
        /// Sets one entry of model.vocab.
        func setVocab(_ dir: URL, _ token: String, _ value: Any) throws {
            try editTokenizer(dir) { j in
                var m = j["model"] as! [String: Any]
                var v = m["vocab"] as! [String: Any]
                v[token] = value
                m["vocab"] = v
                j["model"] = m
            }
        }
        try expectFolderError("no tokenizer.json", culprit: nil, files: { dir in
            try FileManager.default.removeItem(at: dir.appendingPathComponent("tokenizer.json"))
        })
        try expectFolderError("is not valid JSON", culprit: "tokenizer.json", files: { dir in
            try Data("not json".utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        })
        try expectFolderError("tokenizer model type 'Unigram' is not supported", culprit: "tokenizer.json", kind: .unsupported, files: { dir in
            try editTokenizer(dir) { $0["model"] = ["type": "Unigram", "vocab": [["a", 0.0]]] }
        })
        try expectFolderError("only byte-level BPE tokenizers are supported", culprit: "tokenizer.json", kind: .unsupported, files: { dir in
            try editTokenizer(dir) {
                $0["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁"]
                $0["decoder"] = ["type": "Sequence", "decoders": [["type": "Replace"]]]
            }
        })
        try expectFolderError("normalizer step NFKC is not supported for SentencePiece-style BPE", culprit: "tokenizer.json", kind: .unsupported, files: { dir in
            try editTokenizer(dir) { j in
                var m = j["model"] as! [String: Any]
                m["byte_fallback"] = true
                j["model"] = m
                j["pre_tokenizer"] = NSNull()
                j["decoder"] = NSNull()
                j["normalizer"] = ["type": "NFKC"]
            }
        })
        try expectFolderError("model.vocab: expected an integer", culprit: "tokenizer.json", files: { dir in try setVocab(dir, "Ġt", 1.5) })
        try expectFolderError("model.vocab.Ġt is token id 9999999, out of range", culprit: "tokenizer.json", files: { dir in try setVocab(dir, "Ġt", 9_999_999) })
        try expectFolderError("token id 5 is both", culprit: "tokenizer.json", files: { dir in try setVocab(dir, "Ġt", 5) })
        try expectFolderError("model.merges[1] is not a merge", culprit: "tokenizer.json", files: { dir in
            try editTokenizer(dir) { j in
                var m = j["model"] as! [String: Any]
                m["merges"] = ["a b", ["a", "b", "c"]]
                j["model"] = m
            }
        })
    }
}
