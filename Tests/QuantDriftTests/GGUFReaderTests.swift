import Foundation
import QuantDrift
import Testing

/// The GGUF reader on files built by `GGUFWriter`: every metadata type round-trips, tensor infos
/// and data land where the alignment puts them, and a whole tiny model loads through `Model.load`.
@Suite struct GGUFReaderTests {
    /// One value of every metadata type, arrays of each, nested and empty arrays.
    static let allValues: [(String, GGUFValue)] = [
        ("t.uint8", .uint8(250)), ("t.int8", .int8(-128)), ("t.uint16", .uint16(65535)), ("t.int16", .int16(-300)),
        ("t.uint32", .uint32(4_000_000_000)), ("t.int32", .int32(-2_000_000_000)),
        ("t.uint64", .uint64(.max)), ("t.int64", .int64(.min)),
        ("t.float32", .float32(-1.5e-7)), ("t.float32.max", .float32(.greatestFiniteMagnitude)),
        ("t.float64", .float64(.pi)), ("t.bool.true", .bool(true)), ("t.bool.false", .bool(false)),
        ("t.string", .string("héllo, 世界 🦙")), ("t.string.empty", .string("")),
        ("t.array.uint8", .array([.uint8(0), .uint8(255)])),
        ("t.array.int8", .array([.int8(-1), .int8(1)])),
        ("t.array.uint16", .array([.uint16(1), .uint16(2), .uint16(3)])),
        ("t.array.int16", .array([.int16(-7)])),
        ("t.array.uint32", .array([.uint32(7), .uint32(8)])),
        ("t.array.int32", .array([.int32(-1), .int32(0), .int32(1)])),
        ("t.array.uint64", .array([.uint64(1 << 40)])),
        ("t.array.int64", .array([.int64(-1 << 40), .int64(5)])),
        ("t.array.float32", .array([.float32(0.25), .float32(-3)])),
        ("t.array.float64", .array([.float64(1e300), .float64(-2)])),
        ("t.array.bool", .array([.bool(true), .bool(false), .bool(true)])),
        ("t.array.string", .array([.string("a"), .string(""), .string("Ġthe")])),
        ("t.array.empty", .array([])),
        ("t.array.nested", .array([.array([.int32(1), .int32(2)]), .array([.int32(3)])])),
        ("t.array.nested.strings", .array([.array([.array([.string("deep")])]), .array([.array([])])])),
        ("general.alignment", .uint32(64)),
    ]

    func write(_ g: GGUFWriter, in dir: URL, _ name: String = "t.gguf") throws -> GGUFFile {
        let path = dir.appendingPathComponent(name).path
        try g.write(to: path)
        return try GGUFFile(path: path)
    }

    @Test(arguments: [2, 3] as [UInt32])
    func metadataRoundTrip(version: UInt32) throws {
        var g = GGUFWriter(version: version)
        for (k, v) in Self.allValues { g.set(k, v) }
        try withTemporaryDirectory { dir in
            let f = try write(g, in: dir)
            #expect(f.version == Int(version))
            #expect(f.metadataKeys == Self.allValues.map(\.0))
            for (k, v) in Self.allValues {
                #expect(f.metadata[k] == v, "\(k)")
            }
            #expect(f.tensors.isEmpty)
            #expect(f.alignment == 64)
            // Typed accessors.
            #expect(try f.int("t.int32") == -2_000_000_000)
            #expect(try f.int("t.bool.true") == 1)
            #expect(try f.double("t.float64") == .pi)
            #expect(try f.string("t.string") == "héllo, 世界 🦙")
            #expect(try f.strings("t.array.string") == ["a", "", "Ġthe"])
            #expect(f.metadata["t.uint64"]?.intValue == nil)
            expectBadInput(f.path, "missing metadata key nope") { _ = try f.int("nope") }
            expectBadInput("t.string is not an integer") { _ = try f.int("t.string") }
            expectBadInput("t.array.int32 holds a non-string") { _ = try f.strings("t.array.int32") }
            expectBadInput("t.int8 is not a string") { _ = try f.string("t.int8") }
        }
    }

    @Test(arguments: [32, 64])
    func tensorsAreAlignedAndRoundTrip(alignment: Int) throws {
        var g = GGUFWriter()
        g.set("general.name", .string("tensors"))
        if alignment != 32 { g.set("general.alignment", .uint32(UInt32(alignment))) }
        let a: [Float] = (0..<6).map { Float($0) - 2.5 }         // 24 bytes: the next tensor needs padding
        let h: [Float] = [1, -0.5, 3.25, 65504, 0]
        // Multiples of 1/64 with ±127/64 in each block: d = 1/64 and Q8_0 holds them exactly.
        var q: [Float] = (0..<64).map { Float($0 * 37 % 255 - 127) / 64 }
        q[0] = 127 / 64; q[32] = -127 / 64
        g.addTensor("a", shape: [2, 3], floats: a)
        g.addTensor("h", shape: [5], floats: h, type: .f16)
        g.addTensor("q", shape: [2, 32], floats: q, type: .q8_0)
        let raw = [UInt8](0..<144)
        g.addTensor("k", dims: [256, 1, 1, 1], type: .q4_K, data: raw)
        g.addTensor("i", dims: [3], type: .i8, data: [1, 2, 255])
        let layout = g.layout()
        try withTemporaryDirectory { dir in
            let f = try write(g, in: dir)
            #expect(f.alignment == alignment)
            #expect(f.dataOffset == layout.dataOffset)
            #expect(f.dataOffset % alignment == 0 && f.dataOffset >= layout.headerEnd)
            #expect(f.tensors.map(\.name) == ["a", "h", "q", "k", "i"])
            #expect(f.tensors.map(\.offset) == layout.tensorOffsets)
            for t in f.tensors { #expect(t.offset % alignment == 0, "\(t.name)") }

            let ta = try #require(f.tensor("a"))
            #expect(ta.dims == [3, 2] && ta.type == .f32 && ta.elementCount == 6 && ta.byteCount == 24)
            #expect(try f.floats(ta) == a)
            let th = try #require(f.tensor("h"))
            #expect(th.type == .f16 && th.byteCount == 10)
            #expect(try f.floats(th) == h)
            let tq = try #require(f.tensor("q"))
            #expect(tq.dims == [32, 2] && tq.byteCount == 68)
            #expect(try f.floats(tq) == q)
            let tk = try #require(f.tensor("k"))
            #expect(tk.dims == [256, 1, 1, 1] && tk.elementCount == 256 && tk.byteCount == 144)
            #expect(Array(f.data(of: tk)) == raw)
            let ti = try #require(f.tensor("i"))
            #expect(Array(f.data(of: ti)) == [1, 2, 255])
            expectBadInput(f.path, "tensor 'i' has type I8", kind: .unsupported) { _ = try f.floats(ti) }
            #expect(f.tensor("missing") == nil)
        }
    }

    @Test(arguments: [2, 3] as [UInt32])
    func tinyModelLoads(version: UInt32) throws {
        let tiny = TinyModel(architecture: .llama, seed: 3)
        try withTemporaryDirectory { dir in
            let path = dir.appendingPathComponent("tiny.gguf").path
            try tiny.ggufWriter(version: version).write(to: path)
            let m = try Model.load(path: path)
            var expected = tiny.config
            expected.ropeStyle = .adjacentPairs
            #expect(m.config == expected)
            #expect(m.name == "tiny")
            let s = m.tokenizer.spec
            #expect(s.kind == .byteLevelBPE && s.pre == "smollm")
            #expect(s.tokens == tiny.tokens && s.tokenTypes == tiny.tokenTypes && s.merges == tiny.merges)
            #expect(s.bosID == tiny.bosID && s.eosID == tiny.eosID && !s.addBOS)
            #expect(s.chatTemplate == TinyModel.chatTemplate)
            #expect(s.tokens.count == 300 && s.tokens[0] == "!" && s.tokens[188] == "Ā" && s.tokens[256] == "Ġt")
            // Embedding, 9 tensors per layer, output norm and output.
            #expect(m.sourceTensorTypes.count == 1 + 9 * 2 + 1 + 1)
            #expect(m.sourceTensorTypes.allSatisfy { $0.type == "F32" })
            // Q/K are stored permuted; V and the rest as they are.
            let l0 = m.weights.layers[0], t0 = tiny.weights.layers[0]
            #expect(l0.wq == TinyModel.permuteForGGUF(t0.wq, heads: 4, cols: 32))
            #expect(l0.wk == TinyModel.permuteForGGUF(t0.wk, heads: 2, cols: 32))
            #expect(l0.wv == t0.wv && l0.wDown == t0.wDown && l0.bq == nil)
            #expect(m.weights.output == tiny.weights.output)
        }
    }

    @Test func permutationMatchesTheConverter() {
        // One head of size 8, two columns: HF rows r0…r7 become r0 r4 r1 r5 r2 r6 r3 r7.
        let w = (0..<16).map(Float.init)
        let p = TinyModel.permuteForGGUF(w, heads: 1, cols: 2)
        #expect(p == [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15])
        #expect(TinyModel.unpermuteFromGGUF(p, heads: 1, cols: 2) == w)
        let w2 = (0..<32).map(Float.init)
        #expect(TinyModel.unpermuteFromGGUF(TinyModel.permuteForGGUF(w2, heads: 4, cols: 1), heads: 4, cols: 1) == w2)
    }
}
