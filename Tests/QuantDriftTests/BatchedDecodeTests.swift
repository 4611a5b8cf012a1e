import CKernels
import Foundation
import Testing
@testable import QuantDrift

/// Batched decoding: several sequences advanced by one `Transformer.step`, each row's result
/// independent of the rows it shares the step with (so free-running results do not depend on the
/// batch size or on which sequences have already stopped).
@Suite("Batched decoding")
struct BatchedDecodeTests {
    /// The FP32 rows kernel: AVX2 and portable paths give the same bits; each row's outputs are
    /// the same bits alone, in another place of the batch and with the outputs split over two
    /// cores; and they are the dot products (against Double) on awkward sizes.
    @Test(arguments: [1, 7, 31, 33, 577], [1, 7, 33, 577])
    func f32RowsKernelIsRowIndependentAndExact(out: Int, inDim: Int) {
        let rows = 7
        let w = KernelTests.random(out * inDim, seed: UInt64(out * 1000 + inDim))
        let x = KernelTests.random(rows * inDim, seed: UInt64(inDim) + 5, scale: 3)
        func run(_ x: [Float], rows: Int, accumulate: Bool = false, start: [Float]? = nil) -> [Float] {
            var y = start ?? [Float](repeating: 0, count: rows * out)
            qd_gemm_f32_rows(w, Int32(out), Int32(inDim), x, Int32(rows), Int32(inDim), &y, Int32(out), accumulate ? 1 : 0)
            return y
        }
        var byPath: [KernelPath: [Float]] = [:]
        for path in KernelPath.allCases {
            path.run {
                let all = run(x, rows: rows)
                byPath[path] = all
                for r in 0..<rows {
                    let row = Array(all[(r * out)..<((r + 1) * out)])
                    let alone = run(Array(x[(r * inDim)..<((r + 1) * inDim)]), rows: 1)
                    #expect(row.map(\.bitPattern) == alone.map(\.bitPattern), "\(path) \(out)×\(inDim) row \(r): alone differs")
                    for o in 0..<out {
                        var d = 0.0
                        for k in 0..<inDim { d += Double(w[o * inDim + k]) * Double(x[r * inDim + k]) }
                        #expect(abs(Double(row[o]) - d) <= 1e-5 * Double(inDim).squareRoot() * 3, "\(path) row \(r).\(o): \(row[o]) vs \(d)")
                    }
                }
                // Rows in reverse order: each keeps its bits.
                let reversed = (0..<rows).reversed().flatMap { x[($0 * inDim)..<(($0 + 1) * inDim)] }
                let back = run(Array(reversed), rows: rows)
                for r in 0..<rows {
                    #expect(Array(back[((rows - 1 - r) * out)..<((rows - r) * out)]).map(\.bitPattern)
                            == Array(all[(r * out)..<((r + 1) * out)]).map(\.bitPattern), "\(path) reversed row \(r)")
                }
                // Accumulate adds to what y holds.
                let base = KernelTests.random(rows * out, seed: 99)
                let acc = run(x, rows: rows, accumulate: true, start: base)
                #expect(acc.indices.allSatisfy { acc[$0] == base[$0] + all[$0] }, "\(path) accumulate")
            }
        }
        #expect(byPath[.avx2]?.map(\.bitPattern) == byPath[.portable]?.map(\.bitPattern), "\(out)×\(inDim): the paths differ")
    }

    /// Every kind of linear layer, in a batched step (`rowStable`): a row's outputs are the same
    /// bits alone (the one-row decode kernels), among 5 rows and with two cores, on awkward sizes
    /// (tails after the SIMD steps, partial groups, a remainder after blocks of 4 rows).
    @Test(arguments: [1, 33], [33, 96, 577])
    func everyLayerKindIsRowIndependentInAStep(out: Int, cols: Int) throws {
        let rows = 5
        let wf = KernelTests.random(out * cols, seed: 3)
        let x = KernelTests.random(rows * cols, seed: 4, scale: 2)
        let w8 = WeightQuantizer.uniform(wf, rows: out, cols: cols, bits: 8, group: cols, sharedAcrossRows: false, symmetric: true)
        let w8g = WeightQuantizer.uniform(wf, rows: out, cols: cols, bits: 8, group: 32, sharedAcrossRows: false, symmetric: false)
        let w4 = WeightQuantizer.uniform(wf, rows: out, cols: cols, bits: 4, group: 32, sharedAcrossRows: false, symmetric: true)
        let w4a = WeightQuantizer.uniform(wf, rows: out, cols: cols, bits: 4, group: 32, sharedAcrossRows: false, symmetric: false)
        let layers: [(String, any LinearLayer)] = [
            ("fp32", DenseLinear(weight: wf, outDim: out, inDim: cols)),
            ("w8", try QuantizedLinear(w8)), ("w8g32 asym", try QuantizedLinear(w8g)), ("w4g32", try QuantizedLinear(w4)), ("w4g32 asym", try QuantizedLinear(w4a)),
            ("w8a8", try QuantizedLinear(w8, activations: ActivationQuantizer(.dynamicPerRow))),
        ] + (cols % 32 == 0 ? [("w4a8", try QuantizedLinear(w4a, activations: ActivationQuantizer(.dynamicPerGroup(32))))] : [])
        for (name, layer) in layers {
            for path in KernelPath.allCases {
                path.run {
                    let scratch = LinearScratch(maxRows: rows, maxInDim: cols)
                    scratch.rowStable = true
                    var all = [Float](repeating: 0, count: rows * out)
                    layer.forward(x, rows: rows, into: &all, scratch: scratch)
                    scratch.cores = 2
                    var two = all
                    layer.forward(x, rows: rows, into: &two, scratch: scratch)
                    #expect(two.map(\.bitPattern) == all.map(\.bitPattern), "\(name) \(path): two cores differ")
                    scratch.cores = 1
                    for r in 0..<rows {
                        var alone = [Float](repeating: 0, count: out)
                        layer.forward(Array(x[(r * cols)..<((r + 1) * cols)]), rows: 1, into: &alone, scratch: scratch)
                        #expect(alone.map(\.bitPattern) == Array(all[(r * out)..<((r + 1) * out)]).map(\.bitPattern),
                                "\(name) \(path) row \(r): alone differs from in the batch")
                        #expect(all[r * out].isFinite && all[r * out] != 0, "\(name) row \(r)")
                    }
                }
            }
        }
    }

    /// The batched int8 kernel (`qd_gemm_i8_f32_rows`: weight rows converted to an FP32 tile per
    /// chunk; one group a row, blocks of 3 weight rows × 4 activation rows laid out halves apart)
    /// against the one-row kernel row by row, bit for bit: awkward widths (a tail after the SIMD
    /// steps; 8,208 needs more tile than the stack part and takes the heap), weight-row counts
    /// that leave 1 or 2 rows after the blocks of 3, activation-row counts that leave 1 to 3 after
    /// blocks of 4, with and without mins and groups.
    @Test(arguments: [16, 33, 577, 8208], [1, 7, 8, 33])
    func batchedInt8KernelMatchesTheOneRowKernel(inDim: Int, out: Int) {
        for (group, withMins) in [(inDim, false), (32, true), (16, false)] {
            let ng = (inDim + group - 1) / group
            var r = RandomStream(seed: UInt64(inDim * 7 + out + group))
            let codes = (0..<(out * inDim)).map { _ in Int8(truncatingIfNeeded: r.next()) }
            let scales = (0..<(out * ng)).map { _ in Float(r.nextDouble() * 0.02 + 1e-3) }
            let mins: [Float]? = withMins ? (0..<(out * ng)).map { _ in Float(r.nextDouble() - 0.5) * 0.1 } : nil
            for rows in [1, 2, 3, 5, 8, 17] {
                let x = KernelTests.random(rows * inDim, seed: UInt64(rows + inDim), scale: 2)
                var batched = [Float](repeating: .nan, count: rows * out), single = batched
                withOptionalPointer(mins) { mp in
                    qd_gemm_i8_f32_rows(codes, scales, mp, Int32(group), Int32(out), Int32(inDim), x, Int32(rows), &batched, Int32(out))
                    for j in 0..<rows {
                        x.withUnsafeBufferPointer { xp in
                            single.withUnsafeMutableBufferPointer { yp in
                                qd_gemv_i8_f32(codes, scales, mp, Int32(group), Int32(out), Int32(inDim), xp.baseAddress! + j * inDim,
                                               yp.baseAddress! + j * out)
                            }
                        }
                    }
                }
                #expect(batched.map(\.bitPattern) == single.map(\.bitPattern),
                        "\(out)×\(inDim), group \(group), mins \(withMins), \(rows) rows")
            }
        }
    }

    /// The batched 4-bit kernel (`qd_gemm_u4_f32_rows`; groups of 32 decode blocks of 2 weight
    /// rows into an FP32 tile, × 3 activation rows) against the one-row kernels row by row, bit
    /// for bit: widths with a tail after the whole groups, weight-row counts that leave 1 after
    /// the blocks of 2, activation-row counts that leave 1 or 2 after blocks of 3; mins, the
    /// symmetric offset or neither; groups of 32 and (the other path) 64.
    @Test(arguments: [33, 96, 577, 1551], [1, 7, 8])
    func batchedNibbleKernelMatchesTheOneRowKernel(inDim: Int, out: Int) {
        for group in [32, 64] {
            let ng = (inDim + group - 1) / group, rowBytes = (inDim + 31) / 32 * 16
            var r = RandomStream(seed: UInt64(inDim * 5 + out + group))
            let packed = (0..<(out * rowBytes)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
            let scales = (0..<(out * ng)).map { _ in Float(r.nextDouble() * 0.02 + 1e-3) }
            let mins = (0..<(out * ng)).map { _ in Float(r.nextDouble() - 0.5) * 0.1 }
            for (useMins, offset) in [(true, Float(0)), (false, Float(-8)), (false, Float(0))] {
                for rows in [2, 3, 4, 5, 16] {
                    let x = KernelTests.random(rows * inDim, seed: UInt64(rows * 3 + inDim), scale: 2)
                    var batched = [Float](repeating: .nan, count: rows * out), single = batched
                    withOptionalPointer(useMins ? mins : nil) { mp in
                        qd_gemm_u4_f32_rows(packed, scales, mp, offset, Int32(group), Int32(out), Int32(inDim), x, Int32(rows),
                                            &batched, Int32(out))
                        x.withUnsafeBufferPointer { xp in
                            single.withUnsafeMutableBufferPointer { yp in
                                for j in 0..<rows {
                                    let xj = xp.baseAddress! + j * inDim, yj = yp.baseAddress! + j * out
                                    if offset != 0 {
                                        qd_gemv_u4_f32_offset(packed, scales, offset, Int32(group), Int32(out), Int32(inDim), xj, yj)
                                    } else {
                                        qd_gemv_u4_f32(packed, scales, mp, Int32(group), Int32(out), Int32(inDim), xj, yj)
                                    }
                                }
                            }
                        }
                    }
                    #expect(batched.map(\.bitPattern) == single.map(\.bitPattern),
                            "\(out)×\(inDim), group \(group), mins \(useMins), offset \(offset), \(rows) rows")
                }
            }
        }
    }

    /// Sequences decoded together give, step for step, the same logits bit for bit as each decoded
    /// alone through `step`; the batch shrinks as sequences stop (different lengths), on a model
    /// with sliding-window layers, for FP32 and for schemes with integer weights and a quantized cache.
    @Test(arguments: ["fp32", "w8", "w4g32", "w8a8", "kv4"])
    func sequencesDecodeTheSameTogetherAsAlone(spec: String) throws {
        let model = try ModelFamilyTests.syntheticGemma()
        let vocab = model.config.vocabSize
        let prompts: [[Int]] = [[5, 77, 130, 9], [256, 42], [3, 200, 17, 99, 1, 64, 11], [8], [400, 12, 13]]
        let lengths = [30, 12, 24, 30, 5]  // tokens each sequence generates: the batch shrinks
        let runtime = spec == "fp32" ? nil : try SchemeRuntime(model: model, scheme: Scheme(parsing: spec))
        func make(_ sequences: Int) throws -> Transformer {
            try runtime?.transformer(model: model, contextLength: 40, maxBatch: 4, sequences: sequences)
                ?? Transformer(model: model, contextLength: 40, maxBatch: 4, sequences: sequences)
        }
        func argmax(_ l: UnsafeBufferPointer<Float>, _ r: Int) -> Int {
            Sampler.argmax(UnsafeBufferPointer(rebasing: l[(r * vocab)..<((r + 1) * vocab)]))
        }
        // Alone: each sequence in its own one-slot transformer.
        var alone: [[[Float]]] = []
        for (i, p) in prompts.enumerated() {
            let t = try make(1)
            var next = Sampler.argmax(try t.forward(p, logits: .last))
            var rows: [[Float]] = []
            for _ in 0..<lengths[i] {
                let l = try t.step([next], slots: [0])
                rows.append(Array(l))
                next = argmax(l, 0)
            }
            alone.append(rows)
        }
        // Together, on two cores, in a transformer with a spare slot.
        let t = try make(prompts.count + 1)
        t.cores = 2
        var next = try prompts.enumerated().map { s, p in Sampler.argmax(try t.forward(p, logits: .last, slot: s + 1)) }
        var steps = [Int](repeating: 0, count: prompts.count)
        while true {
            let active = prompts.indices.filter { steps[$0] < lengths[$0] }
            guard !active.isEmpty else { break }
            let l = try t.step(active.map { next[$0] }, slots: active.map { $0 + 1 })
            for (r, i) in active.enumerated() {
                let row = Array(l[(r * vocab)..<((r + 1) * vocab)])
                #expect(row.map(\.bitPattern) == alone[i][steps[i]].map(\.bitPattern), "\(spec): sequence \(i) step \(steps[i])")
                next[i] = argmax(l, r)
                steps[i] += 1
            }
        }
        #expect(t.positions == [0] + prompts.indices.map { prompts[$0].count + lengths[$0] })
        // The sequences really differ (a batch of copies would pass trivially).
        #expect(alone[0][0] != alone[1][0])
    }

    /// Bad steps are clear errors: a slot twice, a slot out of range, mismatched counts, a full context.
    @Test func badStepsAreErrors() throws {
        let model = try ModelFamilyTests.syntheticGemma()
        let t = try Transformer(model: model, contextLength: 4, maxBatch: 4, sequences: 2)
        #expect(throws: QuantDriftError.self) { try t.step([1, 2], slots: [0, 0]) }
        #expect(throws: QuantDriftError.self) { try t.step([1], slots: [2]) }
        #expect(throws: QuantDriftError.self) { try t.step([1, 2], slots: [0]) }
        #expect(throws: QuantDriftError.self) { try t.step([-1], slots: [0]) }
        try t.forward([1, 2, 3, 4], logits: .last, slot: 1)
        #expect(throws: QuantDriftError.self) { try t.step([5], slots: [1]) }
        #expect(throws: QuantDriftError.self) { try Transformer(model: model, contextLength: 4, sequences: 0) }
    }
}
