import CKernels
import Foundation
import Testing
@testable import QuantDrift

/// The FP32 reference run from the model file's own encoding (`WeightMatrix`, `EncodedLinear`):
/// the C decoders give exactly the Swift dequantizer's values, and products over decoded tiles
/// give what `DenseLinear` gives on the decoded matrix.
@Suite("Encoded FP32 weights")
struct EncodedWeightsTests {
    /// Random valid bytes of `blocks` blocks of `type`: scales and mins normal halves (one in
    /// eight blocks a subnormal or zero scale), codes anything; F16 data any finite half.
    static func randomBlocks(_ type: GGMLType, blocks: Int, seed: UInt64) -> [UInt8] {
        var r = RandomStream(seed: seed)
        var bytes = (0..<(blocks * type.typeSize)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
        func half(_ v: Float) -> [UInt8] { let b = Float16(v).bitPattern; return [UInt8(b & 0xFF), UInt8(b >> 8)] }
        for b in 0..<blocks {
            let o = b * type.typeSize
            switch type {
            case .f16:
                if bytes[o + 1] & 0x7C == 0x7C { bytes[o + 1] &= 0xBF }  // no Inf/NaN
            case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
                let special: [Float] = [0, 1e-6, -3e-7]
                let d = b % 8 == 5 ? special[b % 3] : Float(r.nextDouble() * 0.02 + 1e-4) * (b % 2 == 0 ? 1 : -1)
                let at = o + ([.q6_K: 208, .q2_K: 80, .q3_K: 108] as [GGMLType: Int])[type, default: 0]
                bytes.replaceSubrange(at..<(at + 2), with: half(d))
                if [.q4_1, .q5_1, .q4_K, .q5_K, .q2_K].contains(type) {
                    bytes.replaceSubrange((at + 2)..<(at + 4), with: half(Float(r.nextDouble() - 0.5) * 0.1))
                }
            default: break
            }
        }
        return bytes
    }

    /// Both C paths against the Swift dequantizer, bit for bit, on awkward sizes.
    @Test(arguments: [GGMLType.f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K], [1, 7, 31, 33, 577])
    func decodersMatchTheSwiftDequantizer(type: GGMLType, blocks: Int) throws {
        let count = blocks * type.blockSize
        let bytes = Self.randomBlocks(type, blocks: blocks, seed: UInt64(blocks * 31 + Int(type.rawValue)))
        var expected = [Float](repeating: 0, count: count)
        try bytes.withUnsafeBytes { src in
            try expected.withUnsafeMutableBufferPointer { try dequantize(type, src, count: count, into: $0.baseAddress!) }
        }
        for path in KernelPath.allCases {
            var got = [Float](repeating: .nan, count: count)
            let handled = path.run { qd_decode_ggml(Int32(type.rawValue), bytes, count, &got) }
            #expect(handled == 1)
            #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(type.name) × \(blocks) on \(path)")
        }
    }

    @Test func otherTypesAreLeftToTheSwiftDequantizer() {
        var out: [Float] = [42]
        let bytes = [UInt8](repeating: 0, count: 256)
        #expect(qd_decode_ggml(Int32(GGMLType.q8_K.rawValue), bytes, 256, &out) == 0)
        #expect(qd_decode_ggml(Int32(GGMLType.q6_K.rawValue), bytes, 32, &out) == 0)  // not whole blocks
        #expect(qd_decode_ggml(Int32(GGMLType.q4_0.rawValue), bytes, 31, &out) == 0)  // not whole blocks
        #expect(out == [42])
    }

    /// A matrix of `rows` × `cols` encoded as `type`, and its decoded values.
    static func matrix(_ type: GGMLType, rows: Int, cols: Int, seed: UInt64) throws -> (WeightMatrix, [Float], owner: NSData) {
        let blocks = rows * cols / type.blockSize
        let owner = NSData(data: Data(Self.randomBlocks(type, blocks: blocks, seed: seed)))
        let bytes = UnsafeRawBufferPointer(start: owner.bytes, count: owner.length)
        let m = WeightMatrix(encoded: type, bytes: bytes, count: rows * cols, cols: cols, owner: owner)
        var values = [Float](repeating: 0, count: rows * cols)
        try values.withUnsafeMutableBufferPointer { try dequantize(type, bytes, count: rows * cols, into: $0.baseAddress!) }
        #expect(m.values.map(\.bitPattern) == values.map(\.bitPattern))
        return (m, values, owner)
    }

    /// EncodedLinear against DenseLinear on the decoded matrix: the same bits for one row (the rows
    /// kernel on tiles), in a batched step on one or two cores, and for several rows when the
    /// matrix fits one sgemm tile; within rounding when it takes several.
    @Test(arguments: [(GGMLType.q4_1, 1, 64), (.q8_0, 33, 96), (.f16, 200, 33), (.q4_0, 577, 160), (.f16, 1100, 1024),
                      (.q6_K, 7, 512)])
    func encodedProductsMatchDenseOnes(type: GGMLType, out: Int, cols: Int) throws {
        let (m, values, owner) = try Self.matrix(type, rows: out, cols: cols, seed: UInt64(out + cols))
        let encoded = EncodedLinear(m, outDim: out, inDim: cols)
        let dense = DenseLinear(weight: values, outDim: out, inDim: cols)
        let rows = 7
        let x = KernelTests.random(rows * cols, seed: 3)
        let scratch = LinearScratch(maxRows: rows, maxInDim: cols)
        func product(_ l: any LinearLayer, rows: Int) -> [Float] {
            var y = [Float](repeating: 0, count: rows * out)
            l.forward(x, rows: rows, into: &y, scratch: scratch)
            return y
        }
        BLAS.setThreads(1)
        #expect(product(encoded, rows: 1).map(\.bitPattern) == product(dense, rows: 1).map(\.bitPattern), "one row")
        let several = product(encoded, rows: rows), severalDense = product(dense, rows: rows)
        if out <= EncodedLinear.sgemmTileRows(inDim: cols, tileFloats: scratch.tile.count) {
            #expect(several.map(\.bitPattern) == severalDense.map(\.bitPattern), "\(rows) rows in one tile")
        }
        let scale = severalDense.map { abs($0) }.max() ?? 1
        #expect(zip(several, severalDense).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "\(rows) rows")
        scratch.rowStable = true
        for cores in [1, 2] {
            scratch.cores = cores
            #expect(product(encoded, rows: rows).map(\.bitPattern) == product(dense, rows: rows).map(\.bitPattern),
                    "batched step on \(cores) core(s)")
        }
        // Embedding rows are the decoded rows.
        var row = [Float](repeating: 0, count: cols)
        m.copyRow(out - 1, dim: cols, into: &row)
        #expect(row == Array(values[((out - 1) * cols)...]))
        withExtendedLifetime(owner) {}
    }

    /// The default model keeps its matrices in the file's Q4_1 (one FP32 copy fewer), and its
    /// FP32 reference gives the same logits as on a decoded copy: bit for bit in a batched step,
    /// within rounding in a prefill (the head's product is split into sgemm tiles).
    @Test func defaultModelRunsFromItsFileEncoding() throws {
        let model = try Golden.defaultModel()
        let w = model.weights
        #expect(w.layers[0].q.encoding == .q4_1)
        #expect(w.embedding.encoding != nil)
        let c = model.config
        let encoded = RuntimeWeights(fp32: w, config: c)
        #expect(encoded.bytesPerToken(dim: c.dim) < 120_000_000, "a decode step reads the file's blocks, not 540 MB of FP32")
        var decodedWeights = w
        decodedWeights.embedding = WeightMatrix(values: w.embedding.values)
        for i in decodedWeights.layers.indices {
            let l = w.layers[i]
            decodedWeights.layers[i].q = WeightMatrix(values: l.wq)
            decodedWeights.layers[i].k = WeightMatrix(values: l.wk)
            decodedWeights.layers[i].v = WeightMatrix(values: l.wv)
            decodedWeights.layers[i].o = WeightMatrix(values: l.wo)
            decodedWeights.layers[i].gate = WeightMatrix(values: l.wGate)
            decodedWeights.layers[i].up = WeightMatrix(values: l.wUp)
            decodedWeights.layers[i].down = WeightMatrix(values: l.wDown)
        }
        let decoded = RuntimeWeights(fp32: decodedWeights, config: c)
        let tokens = try LockstepEngine.promptTokens(WorkloadPrompt(id: "p", prompt: "The quick brown fox jumps over"),
                                                     tokenizer: model.tokenizer)
        BLAS.setThreads(1)
        func run(_ weights: RuntimeWeights) throws -> (prefill: [Float], step: [Float]) {
            let t = try Transformer(model: model, contextLength: 64, maxBatch: 16, allLogits: true, weights: weights, sequences: 2)
            let prefill = Array(try t.forward(tokens, logits: .all, slot: 0))
            _ = try t.forward(tokens.prefix(3), logits: .last, slot: 1)
            let step = Array(try t.step([tokens[1], tokens[4]], slots: [0, 1]))
            return (prefill, step)
        }
        let a = try run(encoded), b = try run(decoded)
        #expect(a.step.map(\.bitPattern) == b.step.map(\.bitPattern), "batched step")
        let worst = zip(a.prefill, b.prefill).map { abs($0 - $1) / max(abs($1), 1) }.max() ?? 0
        #expect(worst <= 1e-5, "prefill logits: worst relative difference \(worst)")
    }
}

/// Reference logits kept in an unlinked temporary file come back exactly.
@Suite("Reference logit rows")
struct LogitRowsTests {
    @Test(arguments: [1, 7, 577])
    func spilledRowsComeBackExactly(vocab: Int) throws {
        let rows = try LogitRows(spillingRowsOf: vocab)
        #expect(rows.isFileBacked)
        let values = KernelTests.random(5 * vocab, seed: UInt64(vocab))
        for t in 0..<5 {
            try values.withUnsafeBufferPointer { try rows.append(UnsafeBufferPointer(rebasing: $0[(t * vocab)..<((t + 1) * vocab)])) }
        }
        #expect(rows.count == 5)
        #expect(rows.values().map(\.bitPattern) == values.map(\.bitPattern))
        var row = [Float](repeating: 0, count: vocab)
        row.withUnsafeMutableBufferPointer { rows.copyRow(3, into: $0) }
        #expect(row == Array(values[(3 * vocab)..<(4 * vocab)]))
        var seen = 0
        rows.forEachRow { t, r in
            #expect(Array(r) == Array(values[(t * vocab)..<((t + 1) * vocab)]))
            seen += 1
        }
        #expect(seen == 5)
        let memory = LogitRows(values: values, vocab: vocab)
        #expect(!memory.isFileBacked && memory.count == 5 && memory.values() == values)
    }

    /// Live reference runs keep their rows in files, and the file holds nothing in the folder.
    @Test func liveReferenceRowsAreSpilled() throws {
        let model = try Golden.defaultModel()
        var options = TrackerOptions(threads: 1)
        options.forcedMaxTokens = 4
        let engine = try LockstepEngine(model: model, options: options)
        let workload = Workload(file: "t", sha256: "", prompts: [WorkloadPrompt(id: "a", prompt: "Hello there")])
        let before = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).filter { $0.hasPrefix("quantdrift-logits-") }
        let refs = try engine.referenceRuns(workload, contextLength: try engine.contextLength(for: workload))
        #expect(refs[0].teacherRows.isFileBacked && refs[0].teacherRows.count == 4)
        let after = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).filter { $0.hasPrefix("quantdrift-logits-") }
        #expect(after.count <= before.count, "temporary logit files are unlinked at once")
    }
}

extension EncodedWeightsTests {
    /// The fused product (`qd_gemm_ggml_rows`: a few rows decoded at a time into a small tile)
    /// gives the bits of decoding the whole matrix and then `qd_gemm_f32_rows`, on both paths,
    /// awkward row counts, one to 16 activation rows and tiles from one row up; a type the C
    /// decoder does not take is refused with nothing written.
    @Test(arguments: [GGMLType.q4_1, .q8_0, .q4_K], [1, 7, 31, 33, 577])
    func fusedDecodeProductMatchesDecodeThenProduct(type: GGMLType, out: Int) throws {
        let cols = type.blockSize * (type.blockSize == 32 ? 18 : 2)
        let bytes = Self.randomBlocks(type, blocks: out * cols / type.blockSize, seed: UInt64(out * 3 + cols))
        let rowBytes = cols / type.blockSize * type.typeSize
        for rows in [1, 2, 3, 5, 16] {
            let x = KernelTests.random(rows * cols, seed: UInt64(rows + out), scale: 2)
            for path in KernelPath.allCases {
                for tileFloats in [cols, 5 * cols, 1 << 16] {
                    var fused = [Float](repeating: .nan, count: rows * out), expected = fused
                    var tile = [Float](repeating: 0, count: tileFloats), all = [Float](repeating: 0, count: out * cols)
                    let taken = path.run {
                        qd_gemm_ggml_rows(Int32(type.rawValue), bytes, rowBytes, Int32(out), Int32(cols), x, Int32(rows), Int32(cols),
                                          &fused, Int32(out), &tile, tileFloats)
                    }
                    path.run {
                        _ = qd_decode_ggml(Int32(type.rawValue), bytes, out * cols, &all)
                        qd_gemm_f32_rows(all, Int32(out), Int32(cols), x, Int32(rows), Int32(cols), &expected, Int32(out), 0)
                    }
                    #expect(taken == 1)
                    #expect(fused.map(\.bitPattern) == expected.map(\.bitPattern),
                            "\(type.name) \(out)×\(cols), \(rows) rows, tile \(tileFloats) on \(path)")
                }
            }
        }
        var y: [Float] = [42], tile = [Float](repeating: 0, count: 256)
        let x = [Float](repeating: 1, count: 256)
        #expect(qd_gemm_ggml_rows(Int32(GGMLType.q8_K.rawValue), bytes, 292, 1, 256, x, 1, 256, &y, 1, &tile, 256) == 0)
        #expect(y == [42])
    }

    /// The F16 rows kernel gives the FP32 rows kernel's bits on the converted weights, on both
    /// paths and awkward sizes.
    @Test(arguments: [1, 7, 33, 577], [1, 7, 31, 33, 100])
    func f16RowsKernelMatchesTheF32One(out: Int, inDim: Int) throws {
        let rows = 5
        let bytes = Self.randomBlocks(.f16, blocks: out * inDim, seed: UInt64(out * 7 + inDim))
        let halves = bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        let w = halves.map { Float(Float16(bitPattern: $0)) }
        let x = KernelTests.random(rows * inDim, seed: 11, scale: 2)
        for path in KernelPath.allCases {
            var a = [Float](repeating: 0, count: rows * out), b = a
            path.run {
                qd_gemm_f16_rows(halves, Int32(out), Int32(inDim), x, Int32(rows), Int32(inDim), &a, Int32(out), 0)
                qd_gemm_f32_rows(w, Int32(out), Int32(inDim), x, Int32(rows), Int32(inDim), &b, Int32(out), 0)
            }
            #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "\(out)×\(inDim) on \(path)")
        }
    }
}
