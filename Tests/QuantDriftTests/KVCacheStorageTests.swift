import CKernels
import Foundation
import Testing
@testable import QuantDrift

/// What the quantized KV cache holds: FP32 only for what is not quantized (sinks, the residual
/// window, an unfinished key group), `byteCount` equal to that, errors measured when an entry is
/// quantized, and a cache that would quantize nothing refused.
@Suite("Quantized KV cache storage")
struct KVCacheStorageTests {
    static let layers = 3, ctx = 160, kvDim = 128, headDim = 64

    /// The relative errors by position as they were computed from a full FP32 copy of every
    /// written entry (the cache's former `fp`): read back each layer, Σ(x̂ − x)² / Σx², K then V.
    static func errorsFromACopy(_ cache: QuantizedKVCache, written: [[[Float]]], count: Int) -> [Double] {
        var err = [Double](repeating: 0, count: count), norm = [Double](repeating: 0, count: count)
        for part in 0..<2 {
            for layer in 0..<cache.layerCount {
                let read = part == 0 ? cache.keys(layer: layer, count: count) : cache.values(layer: layer, count: count)
                for pos in 0..<count {
                    var e = 0.0, n = 0.0
                    for c in 0..<cache.kvDim {
                        let x = Double(written[part][layer][pos * cache.kvDim + c]), d = Double(read[pos * cache.kvDim + c]) - x
                        e += d * d
                        n += x * x
                    }
                    err[pos] += e
                    norm[pos] += n
                }
            }
        }
        return zip(err, norm).map { $1 > 0 ? $0 / $1 : 0 }
    }

    /// Per-position errors taken when entries are quantized equal, bit for bit, those from a full
    /// FP32 copy: over a prefill chunk, decode steps, a rewrite inside the window and a reset.
    @Test(arguments: ["kv4", "kivi2", "kv8", "kv=int4,k=channel,v=token,g32,asym,res=16,sink=4", "kv=fp8e4m3,res=8,sink=3"])
    func relativeErrorsEqualThoseFromAFullCopy(spec: String) throws {
        let cache = try QuantizedKVCache(spec: try Scheme(parsing: spec).kv!, layerCount: Self.layers, contextLength: Self.ctx,
                                         kvDim: Self.kvDim, headDim: Self.headDim, fp32Layers: [1])
        var written = [[[Float]]](repeating: [[Float]](repeating: Array(repeating: 0, count: Self.ctx * Self.kvDim),
                                                       count: Self.layers), count: 2)
        var seed: UInt64 = 1
        func store(_ position: Int, _ rows: Int) {
            for layer in 0..<Self.layers {
                let k = gaussianSamples(rows * Self.kvDim, sigma: 2, seed: seed), v = gaussianSamples(rows * Self.kvDim, seed: seed + 1)
                seed += 2
                cache.store(layer: layer, position: position, rows: rows, keys: k, values: v)
                written[0][layer].replaceSubrange((position * Self.kvDim)..<((position + rows) * Self.kvDim), with: k)
                written[1][layer].replaceSubrange((position * Self.kvDim)..<((position + rows) * Self.kvDim), with: v)
            }
        }
        func check(_ count: Int, _ when: String) {
            let got = cache.relativeErrors(count: count), want = Self.errorsFromACopy(cache, written: written, count: count)
            // Equal values (the integer twins decode a zero as +0 where ggml keeps its sign).
            let first = got.indices.first { got[$0] != want[$0] }
            #expect(got.count == count && first == nil, "\(spec) \(when): position \(first ?? -1): \(first.map { got[$0] } ?? 0) vs \(first.map { want[$0] } ?? 0)")
            #expect(got.contains { $0 > 0 }, "\(spec) \(when): nothing was quantized")
        }
        store(0, 70)
        for p in 70..<110 { store(p, 1) }
        check(110, "after decode")
        store(105, 5)      // rewrite of the last positions (after a truncate)
        store(110, 20)
        check(130, "after a rewrite")
        store(0, 90)       // after a reset
        for p in 90..<100 { store(p, 1) }
        check(100, "after a reset")
        #expect(cache.quantizedPositions(layer: 1) == (keys: 0, values: 0))
    }

    /// The entry decoder (`qd_kv_decode`): both paths give, bit for bit, scale·level (then + min)
    /// for 8-, 4- and 2-bit codes, converted or looked-up levels, token groups (a group of 12 is
    /// no multiple of 8: the scalar tail takes it) and per-channel scales, on awkward lengths.
    @Test(arguments: [8, 4, 2])
    func entryDecoderMatchesTheFormula(bits: Int) {
        var rng = SplitMix64(seed: UInt64(bits))
        let levelsTable = (0..<256).map { _ in Float(Double(rng.next() % 2001) / 100 - 10) }
        let identity = (0..<256).map(Float.init)
        for n in [1, 7, 31, 33, 192, 577] {
            let codes = (0..<((n * bits + 7) / 8 + 8)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            for group in [0, 32, 12, 8] {
                let scaleCount = group == 0 ? n : (n + group - 1) / group
                let scales = (0..<scaleCount).map { _ in Float(Double(rng.next() % 1000) / 997 + 0.001) }
                let mins = (0..<scaleCount).map { _ in Float(Double(rng.next() % 1000) / 313 - 1.6) }
                for useTable in [false, true] {
                    let levels = useTable ? levelsTable : identity
                    for withMins in [false, true] {
                        var want = [Float](repeating: 0, count: n)
                        for c in 0..<n {
                            let bit = c * bits, u = (Int(codes[bit / 8]) >> (bit % 8)) & ((1 << bits) - 1)
                            let g = group == 0 ? c : c / group
                            let v = scales[g] * levels[u]
                            want[c] = withMins ? v + mins[g] : v
                        }
                        for path in KernelPath.allCases {
                            var got = [Float](repeating: .nan, count: n)
                            path.run {
                                withOptionalPointer(withMins ? mins : nil) { mn in
                                    qd_kv_decode(codes, Int32(bits), levels, useTable ? 0 : 1, scales, mn, Int32(group), Int32(n), &got)
                                }
                            }
                            #expect(got.map(\.bitPattern) == want.map(\.bitPattern),
                                    "\(path) bits \(bits) n \(n) group \(group) table \(useTable) mins \(withMins)")
                        }
                    }
                }
            }
        }
    }

    /// llama.cpp's cache types (`-ctk/-ctv`) read back exactly the values ggml's blocks of the
    /// same 32 numbers decode to, from the weight quantizers (Q5_0/Q5_1: byte for byte
    /// llama-quantize's; Q8_0/Q4_0/Q4_1: the presets checked against llama.cpp's KLD). IQ4_NL
    /// caches use ggml's row quantizer, which skips llama-quantize's scale search: its blocks
    /// come from `qd_quantize_iq4_nl_row_ref`, and differ from the searched ones.
    @Test(arguments: [NumberFormat.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl])
    func ggmlCacheTypesReadBackGGMLBlockValues(format: NumberFormat) throws {
        let cache = try QuantizedKVCache(spec: try Scheme(parsing: "kv=\(format.rawValue)").kv!, layerCount: 1, contextLength: 16,
                                         kvDim: Self.kvDim, headDim: Self.headDim)
        let rows = 9
        let k = gaussianSamples(rows * Self.kvDim, sigma: 2, seed: 7), v = gaussianSamples(rows * Self.kvDim, seed: 8)
        cache.store(layer: 0, position: 0, rows: rows, keys: k, values: v)
        for (name, x, read) in [("K", k, cache.keys(layer: 0, count: rows)), ("V", v, cache.values(layer: 0, count: rows))] {
            var want = [Float](repeating: 0, count: x.count)
            if format == .iq4_nl {
                var bytes = [UInt8](repeating: 0, count: x.count / 32 * 18)
                #expect(qd_quantize_iq4_nl_row_ref(x, x.count, &bytes) == 1)
                try bytes.withUnsafeBytes { try dequantize(.iq4_nl, $0, count: x.count, into: &want) }
                let searched = try GGMLQuantizer.quantize(x, cols: Self.kvDim, type: .iq4_nl)
                #expect(searched != bytes, "the row quantizer and llama-quantize's searched one should differ on Gaussian data")
            } else if let type = format.ggmlType {
                let bytes = try GGMLQuantizer.quantize(x, cols: Self.kvDim, type: type)
                try bytes.withUnsafeBytes { try dequantize(type, $0, count: x.count, into: &want) }
            } else if case .integer(let m) = try format.traits.weights.quantize(x, rows, Self.kvDim,
                                                                                 WeightQuant(format: format, granularity: .group(32), symmetric: true, method: .rtn)) {
                want = m.dequantized()
            }
            let got = Array(UnsafeBufferPointer(start: read, count: x.count))
            // Equal values (the integer twins decode a zero as +0 where ggml keeps its sign).
            let first = got.indices.first { got[$0] != want[$0] }
            #expect(first == nil, "kv=\(format.rawValue) \(name): element \(first ?? -1): \(first.map { got[$0] } ?? 0) vs ggml \(first.map { want[$0] } ?? 0)")
        }
        #expect(cache.quantizedPositions(layer: 0) == (keys: rows, values: rows))
    }

    /// An FP32 cache that asks for llama.cpp's rotations (keys and queries after RoPE, values and
    /// the attention output back) without quantizing: the rotations cancel, so the logits are the
    /// reference's to float rounding.
    final class RotatingFP32Cache: KVCache, @unchecked Sendable {
        let base: FP32KVCache
        init(_ base: FP32KVCache) { self.base = base }
        var layerCount: Int { base.layerCount }
        var contextLength: Int { base.contextLength }
        var kvDim: Int { base.kvDim }
        var byteCount: Int { base.byteCount }
        var keyRotation: Int { 64 }
        var valueRotation: Int { 64 }
        func store(layer: Int, position: Int, rows: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
            base.store(layer: layer, position: position, rows: rows, keys: keys, values: values)
        }
        func keys(layer: Int, count: Int) -> UnsafePointer<Float> { base.keys(layer: layer, count: count) }
        func keys(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> { base.keys(layer: layer, from: from, count: count) }
        func values(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> { base.values(layer: layer, from: from, count: count) }
        func values(layer: Int, count: Int) -> UnsafePointer<Float> { base.values(layer: layer, count: count) }
        var storesPreRoPEKeys: Bool { false }
        func attach(rope: RotaryEmbedding) { base.attach(rope: rope) }
    }

    @Test func rotationsWithoutQuantizationKeepTheLogits() throws {
        let model = try Golden.defaultModel()
        let tokens = Array(try Golden.evalTokens(model).prefix(48))
        let ref = try Transformer(model: model, contextLength: 64, allLogits: true)
        let plain = Array(try ref.forward(tokens, logits: .all))
        let t = try Transformer(model: model, contextLength: 64, allLogits: true) { RotatingFP32Cache(FP32KVCache(shape: $0)) }
        let rotated = Array(try t.forward(tokens, logits: .all))
        let scale = plain.map(abs).max()!
        let worst = zip(plain, rotated).map { abs($0 - $1) }.max()!
        print("Hadamard-rotated FP32 cache: worst |Δlogit| / max|logit| = \(worst / scale)")
        #expect(worst / scale <= 1e-5 && worst > 0, "rotated \(worst / scale)")
        // One decode step after the prefill agrees too.
        let next = Array(try t.forward([tokens[0]], logits: .last))
        let want = Array(try ref.forward([tokens[0]], logits: .last))
        #expect(zip(next, want).map { abs($0 - $1) }.max()! <= 1e-5 * scale)
    }

    /// `byteCount` on the default model after a real prefill: codes, scales and mins of every
    /// position, plus the FP32 window (kivi2: 32 residual positions, and 31 of a key group not
    /// yet full), nothing else.
    @Test(arguments: ["kv4", "kivi2"])
    func byteCountIsWhatTheCacheHolds(scheme: String) throws {
        let model = try Golden.defaultModel()
        let tokens = SchemeEffectTests.tokens
        let (L, d, n) = (model.config.layerCount, model.config.kvDim, tokens.count)
        let rt = try SchemeRuntime(model: model, scheme: try Scheme(parsing: scheme))
        let t = try rt.transformer(model: model, contextLength: n)
        try t.forward(tokens, logits: .last)
        let cache = try #require(t.cache as? QuantizedKVCache)
        let want: Int
        if scheme == "kv4" {
            // K and V: 4-bit codes; an FP32 scale and min per 32 values of a position.
            want = 2 * (L * n * d / 2 + L * n * (d / 32) * 8)
        } else {
            // 2-bit codes; keys: a scale and min per channel and 32 tokens, 63 FP32 positions;
            // values: a scale and min per 32 values of a position, 32 FP32 positions.
            let keys = L * n * d / 4 + L * ((n + 31) / 32) * d * 8 + L * (32 + 31) * d * 4
            let values = L * n * d / 4 + L * n * (d / 32) * 8 + L * 32 * d * 4
            want = keys + values
        }
        #expect(cache.byteCount == want, "\(scheme): \(cache.byteCount) bytes, formula \(want)")
        let fp32 = FP32KVCache(layerCount: L, contextLength: n, kvDim: d).byteCount
        print("\(scheme) KV cache over \(n) positions: \(cache.byteCount) bytes, \(Double(cache.byteCount) / Double(fp32)) of FP32")
        let q = cache.quantizedPositions(layer: 0)
        #expect(scheme == "kv4" ? q == (keys: n, values: n) : q == (keys: (n - 32) / 32 * 32, values: n - 32))
    }

    /// A KV scheme whose sinks and residual window cover the whole context, or which skips every
    /// layer, is refused with one clear line; one position more and it quantizes.
    @Test(arguments: [("kv=int4,sink=100000", 512, "100000 sink"), ("kv=int4,res=64", 64, "residual window of 64"),
                      ("kv=int4,sink=4,res=8", 12, "at least 13 positions"),
                      ("kivi2", 32, "at least 33 positions (per-channel keys also a whole token group)")])
    func aCacheThatWouldQuantizeNothingIsRefused(spec: String, ctx: Int, message: String) throws {
        let model = try Golden.defaultModel()
        let rt = try SchemeRuntime(model: model, scheme: try Scheme(parsing: spec))
        expectBadInput("would quantize nothing", message, kind: .invalid) {
            _ = try rt.transformer(model: model, contextLength: ctx)
        }
        if !spec.contains("sink=100000") {
            let t = try rt.transformer(model: model, contextLength: ctx + 1)
            try t.forward(Array(SchemeEffectTests.tokens.prefix(ctx + 1)), logits: .last)
            let cache = try #require(t.cache as? QuantizedKVCache)
            let q = cache.quantizedPositions(layer: 0)
            #expect(q.keys + q.values > 0, "\(spec) at \(ctx + 1) positions quantized nothing")
        }
        let kv = try Scheme(parsing: "kv4").kv!
        expectBadInput("would quantize nothing", "every one of the 3 layers", kind: .invalid) {
            _ = try QuantizedKVCache(spec: kv, layerCount: 3, contextLength: 64, kvDim: 128, headDim: 64, fp32Layers: [0, 1, 2])
        }
    }

    /// On the command line the refusal is one line and exit status 2.
    @Test func cliRefusesACacheThatWouldQuantizeNothing() throws {
        let r = try CLIRunner.run(["generate", "-p", "Once upon a time", "-n", "4", "--scheme", "kv=int4,sink=100000"])
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderr.contains("would quantize nothing") && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }
}
