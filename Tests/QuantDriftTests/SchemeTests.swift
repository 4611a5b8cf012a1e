import Foundation
import Testing
@testable import QuantDrift

@Suite("Scheme language")
struct SchemeTests {
    @Test func everyPresetParsesAndPrintsBackCanonically() throws {
        for p in Scheme.presets {
            let s = try Scheme(parsing: p.name)
            #expect(s.preset == p.name)
            // The canonical spec parses to the same scheme (apart from the preset name).
            var again = try Scheme(parsing: s.spec)
            again.preset = p.name
            #expect(again == s, "\(p.name): \(s.spec)")
        }
    }

    @Test func specsParseToTheirParts() throws {
        let s = try Scheme(parsing: "w=int4,g32,asym;a=int8,g64;kv=int4,k=channel,v=token,g32,res=128,sink=4;skip=lm_head,0,29")
        #expect(s.weights == WeightQuant(format: .int4, granularity: .group(32), symmetric: false, method: .rtn))
        #expect(s.activations?.granularity == .group(64))
        #expect(s.kv?.key?.axis == .channel && s.kv?.value?.axis == .token && s.kv?.residual == 128 && s.kv?.sinks == 4)
        #expect(s.skip == [.tensor("lm_head"), .layer(0), .layer(29)])
        #expect(try Scheme(parsing: "w8;kv4").kv?.key?.format == .int4)
        #expect(try Scheme(parsing: "w8;kv4").weights?.format == .int8)
        // FP8 KV parts default to one scale per head, symmetric; per-part formats mix.
        #expect(try Scheme(parsing: "kv=fp8e5m2").kv?.value == KVPartQuant(format: .fp8e5m2, axis: .token, groupSize: 0, symmetric: true))
        #expect(try Scheme(parsing: "kv=k=fp8e4m3,v=int4").kv?.key?.format == .fp8e4m3)
    }

    @Test(arguments: [
        ("w=int5", "unknown format int5; known: int8"),
        ("bogus", "unknown scheme or component 'bogus'"),
        ("w=int4,g33x", "unknown weight option 'g33x'"),
        ("w=int8,gptq", "gptq applies to int4"),
        ("a=int8,channel", "not channel"),
        ("kv=int4,v=channel", "v=channel is not supported"),
        ("kv=fp8e4m3,asym", "asym does not apply"),
        ("calib=median", "unknown calibration 'median'"),
        ("skip=attn_x", "unknown skip item 'attn_x'"),
        ("w8;w4g32", "component w (from w4g32) given twice"),
        ("", "empty scheme"),
        ("w=q4_0,g64", "fixed blocks of 32"),
    ])
    func badSpecsGiveClearErrors(spec: String, message: String) {
        do {
            _ = try Scheme(parsing: spec)
            Issue.record("\(spec) parsed")
        } catch let e as QuantDriftError {
            #expect(e.isBadInput)
            #expect(e.description.contains(message), "\(spec): \(e.description)")
            #expect(!e.description.contains("\n"))
        } catch {
            Issue.record("\(error)")
        }
    }
}

@Suite("Weight quantizers")
struct WeightQuantizerTests {
    static func sqnr(_ x: [Float], _ y: [Float]) -> Double {
        var s = 0.0, n = 0.0
        for i in x.indices {
            s += Double(x[i]) * Double(x[i])
            n += Double(x[i] - y[i]) * Double(x[i] - y[i])
        }
        return 10 * log10(s / max(n, 1e-300))
    }

    /// Gaussian-like weights (sum of uniforms), as a linear layer's.
    static let weights: [Float] = {
        var r = RandomStream(seed: 99)
        return (0..<(64 * 576)).map { _ in Float((0..<4).map { _ in r.nextDouble() - 0.5 }.reduce(0, +)) * 0.05 }
    }()

    /// Named SQNR bounds: uniform b-bit RTN gains ~6 dB per bit; finer groups gain a little more.
    @Test(arguments: [
        ("w=int8,channel,sym", 38.0), ("w=int8,channel,asym", 38.0), ("w=int8,tensor,sym", 35.0),
        ("w=int4,g32,sym", 15.0), ("w=int4,g128,sym", 13.0), ("w=int4,g32,asym", 16.0),
        ("w=int3,g32,asym", 10.0), ("w=int2,g32,asym", 4.0), ("w=q8_0", 38.0), ("w=q4_0", 15.0), ("w=q4_1", 16.0),
    ])
    func roundTripErrorIsWithinItsBound(spec: String, minDB: Double) throws {
        let w = Self.weights
        let q = try WeightQuantizer.quantize(w, rows: 64, cols: 576, spec: try Scheme(parsing: spec).weights!)
        let db = Self.sqnr(w, q.dequantized())
        #expect(db >= minDB, "\(spec): SQNR \(db) dB")
        #expect(db < 80, "\(spec): no quantization happened")
    }

    @Test func q4_1OfTheModelsOwnGridIsExact() throws {
        // The default model's weights are Q4_1: requantizing them to Q4_1 must give the same values.
        let model = try Golden.defaultModel()
        let w = model.weights.layers[3].wGate
        let q = WeightQuantizer.blockQ4_1(w, rows: model.config.hiddenDim, cols: model.config.dim)
        let back = q.dequantized()
        var worst: Float = 0
        for i in w.indices { worst = max(worst, abs(back[i] - w[i])) }
        #expect(worst <= 1e-6, "Q4_1 requantization moved a weight by \(worst)")
    }

    @Test func packedInt4TakesHalfAByteAndScalesAreCounted() throws {
        let q = try WeightQuantizer.quantize(Self.weights, rows: 64, cols: 576, spec: WeightQuant(format: .int4, granularity: .group(32), symmetric: true, method: .rtn))
        #expect(q.storageBytes == 64 * 576 / 2 + 64 * 18 * 4 * 2)
    }
}

@Suite("Schemes on the default model")
struct SchemeEffectTests {
    /// A story prompt and its greedy continuation: long enough (> 64 tokens) for KIVI's residual
    /// window of 32 to leave whole token groups to quantize.
    static let tokens: [Int] = {
        let ref = try! Golden.json("greedy-story.json") as! [String: Any]
        return (ref["prompt_tokens"] as! [NSNumber]).map(\.intValue) + (ref["generated"] as! [NSNumber]).map(\.intValue)
    }()

    static func logits(_ scheme: String) throws -> [Float] {
        if scheme == "fp32" { return try fp32.get() }  // compared against by many tests: computed once
        return try computeLogits(scheme)
    }

    private static let fp32 = Result<[Float], any Error> { try computeLogits("fp32") }

    private static func computeLogits(_ scheme: String) throws -> [Float] {
        let model = try Golden.defaultModel()
        let rt = try SchemeRuntime(model: model, scheme: try Scheme(parsing: scheme))
        let t = try rt.transformer(model: model, contextLength: tokens.count, allLogits: true)
        return Array(try t.forward(tokens, logits: .all))
    }

    static func meanKLD(_ p: [Float], _ q: [Float], vocab: Int) -> Double {
        var total = 0.0
        let rows = p.count / vocab
        for r in 0..<rows {
            let a = p[(r * vocab)..<((r + 1) * vocab)].map(Double.init), b = q[(r * vocab)..<((r + 1) * vocab)].map(Double.init)
            let ma = a.max()!, mb = b.max()!
            let la = log(a.map { exp($0 - ma) }.reduce(0, +)) + ma, lb = log(b.map { exp($0 - mb) }.reduce(0, +)) + mb
            for i in 0..<vocab { total += exp(a[i] - la) * ((a[i] - la) - (b[i] - lb)) }
        }
        return total / Double(rows)
    }

    /// Mean KLD vs FP32 over the story (141 positions) measured for each scheme (release build,
    /// BLAS on one thread); a scheme's bound is twice its measured value, so a regression of
    /// more than 2× fails (the former bound was 1 nat for all but kv2, int3 and FP8 caches).
    static let measuredMeanKLD: [String: Double] = [
        "w8": 0.00419, "w4g128": 0.781, "w4g32": 0.521, "w8a8": 0.0438, "kv8": 0.000742, "w4a8": 0.854,
        "kv4": 0.0703, "kv2": 3.62, "kivi2": 0.738, "q8_0": 0.00428, "q4_0": 0.347, "q4_1": 0.00314,
        "w=int8,channel,asym": 0.00354, "w=int3,g32,asym": 1.42, "a=int8,token": 0.0342, "w8;skip=0,1,2": 0.00393,
        "kv=int4,prerope": 0.0830, "kv=k=int4:channel:g32,v=int8,res=16,sink=4": 0.00479,
        "kv-fp8e4m3": 0.00394, "kv-fp8e5m2": 0.0129,
    ]

    /// Every preset changes the computation (no silent no-op) and stays within twice its
    /// measured mean KLD.
    @Test(arguments: ["w8", "w4g128", "w4g32", "w8a8", "w4a8", "kv8", "kv4", "kv2", "kivi2", "q8_0", "q4_0", "q4_1",
                      "w=int8,channel,asym", "w=int3,g32,asym", "a=int8,token", "w8;skip=0,1,2",
                      "kv=int4,prerope", "kv=k=int4:channel:g32,v=int8,res=16,sink=4", "kv-fp8e4m3", "kv-fp8e5m2"])
    func schemeChangesLogitsByAPlausibleAmount(scheme: String) throws {
        #expect(Self.tokens.count > 96)
        let ref = try Self.logits("fp32"), got = try Self.logits(scheme)
        let kld = Self.meanKLD(ref, got, vocab: 49152)
        let changed = ref != got
        #expect(changed, "\(scheme) left the logits unchanged")
        let measured = try #require(Self.measuredMeanKLD[scheme], "\(scheme) has no measured value")
        #expect(kld > 0 && kld <= 2 * measured, "\(scheme): mean KLD \(kld), measured \(measured)")
        print("scheme \(scheme): mean KLD \(kld) over \(Self.tokens.count) positions (measured \(measured))")
    }

    /// A pre-RoPE cache whose residual window holds every position of the run stores nothing
    /// quantized: RoPE on read must then give exactly the reference's logits. (A window or sinks
    /// covering the whole context are refused: KVCacheStorageTests.)
    @Test func preRoPECacheWithEverythingInTheWindowIsExact() throws {
        let model = try Golden.defaultModel()
        let n = Self.tokens.count
        func logits(_ t: Transformer) throws -> [UInt32] { Array(try t.forward(Self.tokens, logits: .all)).map(\.bitPattern) }
        let rt = try SchemeRuntime(model: model, scheme: try Scheme(parsing: "kv=int4,prerope,res=\(n)"))
        let t = try rt.transformer(model: model, contextLength: n + 1, allLogits: true)
        let got = try logits(t)
        let cache = try #require(t.cache as? QuantizedKVCache)
        #expect(cache.storesPreRoPEKeys)
        #expect(cache.quantizedPositions(layer: 0) == (keys: 0, values: 0))
        let want = try logits(Transformer(model: model, contextLength: n + 1, allLogits: true))
        #expect(got == want)
    }

    /// The `fp32` scheme is the plain `Transformer(model:)`: the same logits bit for bit.
    @Test func fp32SchemeIsBitwiseThePlainTransformer() throws {
        let model = try Golden.defaultModel()
        let plain = try Transformer(model: model, contextLength: Self.tokens.count, allLogits: true)
        let want = Array(try plain.forward(Self.tokens, logits: .all)).map(\.bitPattern)
        let got = try Self.logits("fp32").map(\.bitPattern)
        #expect(got.count == Self.tokens.count * model.config.vocabSize && got == want)
    }

    /// A quantized cache reused after reset (kld chunks, tracker prompts) must not read codes
    /// left over from the previous sequence: the second run equals a fresh cache's.
    @Test(arguments: ["kv4", "kivi2", "kv=int4,prerope,sink=4"])
    func quantizedCacheReusedAfterResetMatchesAFreshOne(scheme: String) throws {
        let model = try Golden.defaultModel()
        let rt = try SchemeRuntime(model: model, scheme: try Scheme(parsing: scheme))
        let first = Array(Self.tokens.prefix(100)), second = Array(Self.tokens.suffix(80))
        let reused = try rt.transformer(model: model, contextLength: 128, allLogits: true)
        try reused.forward(first, logits: .none)
        reused.reset()
        let got = Array(try reused.forward(second, logits: .all))
        let fresh = try rt.transformer(model: model, contextLength: 128, allLogits: true)
        let want = Array(try fresh.forward(second, logits: .all))
        let mismatch = got.count == want.count ? got.indices.first { got[$0].bitPattern != want[$0].bitPattern } : -2
        #expect(mismatch == nil, "\(scheme): first differing logit at \(mismatch ?? -1)")
    }

    @Test func kvCacheQuantizesAndReportsItsRealSize() throws {
        let model = try Golden.defaultModel()
        let c = model.config
        for (spec, maxRatio) in [("kv8", 0.30), ("kv4", 0.20), ("kv2", 0.14), ("kv-fp8e4m3", 0.27), ("kv-fp8e5m2", 0.27)] {
            let kv = try Scheme(parsing: spec).kv!
            let cache = try QuantizedKVCache(spec: kv, layerCount: c.layerCount, contextLength: 512, kvDim: c.kvDim, headDim: c.headDim)
            let fp = FP32KVCache(layerCount: c.layerCount, contextLength: 512, kvDim: c.kvDim)
            #expect(Double(cache.byteCount) / Double(fp.byteCount) <= maxRatio, "\(spec)")
        }
        // The kivi2 cache keeps its residual window in FP32 and quantizes whole token groups before it.
        let w = 64
        let kivi = try QuantizedKVCache(spec: try Scheme(parsing: "kivi2").kv!, layerCount: 1, contextLength: 200, kvDim: w, headDim: w)
        var r = RandomStream(seed: 1)
        let rows = (0..<(100 * w)).map { _ in Float(r.nextDouble()) }
        kivi.store(layer: 0, position: 0, rows: 100, keys: rows, values: rows)
        // Keys: 100 − 32 residual → two whole token groups of 32; values (per token): all 68 older ones.
        #expect(kivi.quantizedPositions(layer: 0) == (keys: 64, values: 68))
        let keys = Array(UnsafeBufferPointer(start: kivi.keys(layer: 0, count: 100), count: 100 * w))
        let windowExact = keys[(64 * w)...] == rows[(64 * w)...]
        let restChanged = keys[..<(64 * w)] != rows[..<(64 * w)]
        #expect(windowExact)      // the window is exact
        #expect(restChanged)      // the rest went through 2-bit codes
        var worst: Float = 0
        for i in 0..<(64 * w) { worst = max(worst, abs(keys[i] - rows[i])) }
        #expect(worst <= 1.0 / 3 / 2 + 1e-6)                   // half a step of a 2-bit code over [0, 1)
    }
}

@Suite("FP8 KV cache")
struct FP8KVCacheTests {
    /// Named SQNR bounds (dB) for the per-token, per-head FP8 caches on Gaussian rows (measured
    /// in the comments).
    static let minSQNRE4M3 = 30.0   // measured 32.0
    static let minSQNRE5M2 = 24.0   // measured 25.9
    // Mean KLD bounds of the FP8 caches on the story: SchemeEffectTests.measuredMeanKLD.

    static let kvDim = 192, headDim = 64, positions = 100

    static func roundTrip(_ spec: String, _ rows: [Float]) throws -> (cache: QuantizedKVCache, keys: [Float], values: [Float]) {
        let cache = try QuantizedKVCache(spec: try Scheme(parsing: spec).kv!, layerCount: 2, contextLength: positions,
                                         kvDim: kvDim, headDim: headDim)
        let n = rows.count / kvDim
        let reversed = Array(rows.reversed())
        cache.store(layer: 1, position: 0, rows: n, keys: rows, values: reversed)
        let k = Array(UnsafeBufferPointer(start: cache.keys(layer: 1, count: n), count: n * kvDim))
        let v = Array(UnsafeBufferPointer(start: cache.values(layer: 1, count: n), count: n * kvDim))
        return (cache, k, v)
    }

    /// Layers in `fp32Layers` (a scheme's skip=layerN, `--per-layer`) read back exactly; the
    /// others are quantized; the reported size counts the FP32 layers at 4 bytes.
    @Test func skippedLayersKeepAnExactCache() throws {
        let rows = gaussianSamples(Self.positions * Self.kvDim, sigma: 2, seed: 12)
        let kv = try Scheme(parsing: "kv=int4,token,g32").kv!
        let cache = try QuantizedKVCache(spec: kv, layerCount: 2, contextLength: Self.positions, kvDim: Self.kvDim,
                                         headDim: Self.headDim, fp32Layers: [0])
        for layer in 0..<2 { cache.store(layer: layer, position: 0, rows: Self.positions, keys: rows, values: rows) }
        let k0 = Array(UnsafeBufferPointer(start: cache.keys(layer: 0, count: Self.positions), count: rows.count))
        let k1 = Array(UnsafeBufferPointer(start: cache.keys(layer: 1, count: Self.positions), count: rows.count))
        #expect(k0 == rows)
        #expect(k1 != rows)
        let all = try QuantizedKVCache(spec: kv, layerCount: 2, contextLength: Self.positions, kvDim: Self.kvDim, headDim: Self.headDim)
        let fp32 = 2 * Self.positions * Self.kvDim * 4   // one layer, K and V
        #expect(cache.byteCount == all.byteCount / 2 + fp32)
        // Through a scheme: skipping every layer but one keeps the others exact.
        #expect(try Scheme(parsing: "kv=int4;skip=1").skip == [.layer(1)])
    }

    @Test(arguments: [("kv-fp8e4m3", minSQNRE4M3), ("kv-fp8e5m2", minSQNRE5M2)])
    func roundTripMeetsItsNamedSQNRBound(spec: String, minDB: Double) throws {
        let rows = gaussianSamples(Self.positions * Self.kvDim, sigma: 2, seed: 11)
        let (cache, k, v) = try Self.roundTrip(spec, rows)
        #expect(cache.quantizedPositions(layer: 1) == (keys: Self.positions, values: Self.positions))
        let dbK = WeightQuantizerTests.sqnr(rows, k), dbV = WeightQuantizerTests.sqnr(Array(rows.reversed()), v)
        print("SQNR \(spec): keys \(String(format: "%.2f", dbK)) dB, values \(String(format: "%.2f", dbV)) dB")
        #expect(dbK >= minDB && dbV >= minDB, "\(spec): \(dbK) / \(dbV) dB")
        // 8 bits cannot beat int8's ~40 dB on Gaussians: a result above 45 dB would mean nothing was coded.
        #expect(dbK < 45 && dbV < 45)
    }

    /// Values already on the scaled grid (each head's max at the format's max, the rest table
    /// values) come back exactly; the max of each head maps to the format's largest value.
    @Test(arguments: [("kv-fp8e4m3", NumberFormat.fp8e4m3), ("kv-fp8e5m2", NumberFormat.fp8e5m2)])
    func gridValuesRoundTripExactly(spec: String, format: NumberFormat) throws {
        let table = try #require(ValueTable.of(format))
        let finite = table.values.filter(\.isFinite)
        var r = RandomStream(seed: 3)
        var rows = (0..<(4 * Self.kvDim)).map { _ in finite[Int(r.next() % UInt64(finite.count))] / 4 }
        for h in 0..<(rows.count / Self.headDim) { rows[h * Self.headDim + 5] = -table.maxFinite / 4 }
        let (_, k, _) = try Self.roundTrip(spec, rows)
        let mismatch = rows.indices.first { rows[$0] != k[$0] }
        #expect(mismatch == nil, "\(spec): first mismatch at \(mismatch ?? -1)")
    }

    /// One byte per value plus one FP32 scale per (position, head), nothing else.
    @Test func byteSizeIsCodesAndScales() throws {
        let cache = try QuantizedKVCache(spec: try Scheme(parsing: "kv-fp8e4m3").kv!, layerCount: 3, contextLength: 50,
                                         kvDim: Self.kvDim, headDim: Self.headDim)
        let perPart = 3 * 50 * Self.kvDim + 3 * 50 * (Self.kvDim / Self.headDim) * 4
        #expect(cache.byteCount == 2 * perPart)
    }

    /// Zero and non-finite rows do not poison the scale: zeros decode to zeros.
    @Test func zeroRowsStayZero() throws {
        let (_, k, v) = try Self.roundTrip("kv-fp8e5m2", [Float](repeating: 0, count: 2 * Self.kvDim))
        #expect(k.allSatisfy { $0 == 0 } && v.allSatisfy { $0 == 0 })
    }
}

@Suite("Generation under every preset")
struct PresetGenerationTests {
    /// Every preset generates end to end, and the same run twice gives the same tokens.
    @Test(arguments: Scheme.presets.map(\.name))
    func presetGeneratesDeterministically(preset: String) throws {
        let model = try Golden.defaultModel()
        // Four 256-token sequences: this checks that every preset runs and repeats, not calibration
        // quality (the whole folder made w8a8-static alone take minutes here).
        let rt = try SchemeRuntime(model: model, scheme: try Scheme(parsing: preset), calibration: try CalibrationFixtures.small())
        let prompt = model.tokenizer.encode(model.tokenizer.chatPrompt(user: "Name three colors."), parseSpecial: true)
        func run() throws -> [Int] {
            let t = try rt.transformer(model: model, contextLength: prompt.count + 12)
            let sampler = try Sampler(SamplingParameters(temperature: 0.7, topP: 0.9, seed: 5), vocabSize: model.config.vocabSize)
            return try Generator.generate(transformer: t, tokenizer: model.tokenizer, prompt: prompt, maxTokens: 12,
                                          sampler: sampler).generated
        }
        let a = try run(), b = try run()
        #expect(!a.isEmpty)
        #expect(a == b, "\(preset): \(a) vs \(b)")
    }
}
