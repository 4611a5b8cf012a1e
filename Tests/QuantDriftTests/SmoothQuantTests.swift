import Foundation
import Testing
@testable import QuantDrift

@Suite("SmoothQuant", .serialized)
struct SmoothQuantTests {
    /// Folding s into the norms, V rows, up rows and consuming columns without quantizing
    /// anything leaves the FP32 logits unchanged: the folding is exact.
    @Test(arguments: [0.5, 0.85])
    func smoothingWithoutQuantizationKeepsTheLogits(alpha: Double) throws {
        let model = try Golden.defaultModel()
        let c = model.config
        let stats = try ActivationStatistics.collect(model: model, data: try CalibrationFixtures.small())
        let s = try SmoothQuant.factors(alpha: alpha, channelMax: stats.channelMaxAbs, weights: model.weights, config: c)
        #expect(s.count == 4 * c.layerCount)
        // The factors really move things (far from 1 on the outlier channels).
        let spread = s.values.flatMap { $0 }
        #expect(spread.max()! / spread.min()! > 10)
        let smoothed = try SmoothQuant.apply(s, to: model.weights, config: c)
        #expect(smoothed.layers[3].attnNorm != model.weights.layers[3].attnNorm)
        let ref = try CalibrationFixtures.fp32Logits.get()
        let got = try CalibrationFixtures.logits(RuntimeWeights(fp32: smoothed, config: c))
        let rel = CalibrationFixtures.relativeDifference(got, ref)
        #expect(rel <= 1e-4, "α \(alpha): logits moved by \(rel) relative")
        print("SmoothQuant α \(alpha) without quantization: max |Δlogit| / max |logit| = \(rel)")
    }

    /// GQA: the attn_out factor of channel h·hd + d is the one of KV channel d of h's group.
    @Test func attentionOutputFactorsAreSharedWithinAKVGroup() throws {
        let model = try Golden.defaultModel()
        let c = model.config
        let stats = try ActivationStatistics.collect(model: model, data: try CalibrationFixtures.small())
        let s = try SmoothQuant.factors(alpha: 0.5, channelMax: stats.channelMaxAbs, weights: model.weights, config: c)
        let group = c.headCount / c.kvHeadCount
        #expect(group > 1)
        for l in [0, 17] {
            let f = s[SiteID(l, .attentionOutput)]!
            for h in 0..<c.headCount {
                for d in 0..<c.headDim { #expect(f[h * c.headDim + d] == f[(h / group) * group * c.headDim + d]) }
            }
        }
        // Inconsistent factors are refused rather than folded wrongly.
        var bad = s
        bad[SiteID(0, .attentionOutput)]![c.headDim * 1] *= 2
        #expect(throws: QuantDriftError.self) { try SmoothQuant.apply(bad, to: model.weights, config: c) }
    }

    /// On a tiny qwen2 model (V bias, GQA) the folding is exact too, bias included.
    @Test func foldingIsExactWithAVBias() throws {
        let tiny = TinyModel(architecture: .qwen2, seed: 3)
        try withTemporaryDirectory { dir in
            let url = dir.appendingPathComponent("tiny.gguf")
            try tiny.writeGGUF(to: url)
            let model = try Model.load(path: url.path)
            let tokens = [5, 77, 130, 9, 256, 42, 3, 200, 17, 99, 1, 64]
            let data = CalibrationSet(source: "tiny", sha256: "", sequences: [tokens])
            let stats = try ActivationStatistics.collect(model: model, data: data)
            let s = try SmoothQuant.factors(alpha: 0.7, channelMax: stats.channelMaxAbs, weights: model.weights, config: model.config)
            let smoothed = try SmoothQuant.apply(s, to: model.weights, config: model.config)
            #expect(smoothed.layers[0].bv! != model.weights.layers[0].bv!)
            func run(_ w: ModelWeights) throws -> [Float] {
                let t = try Transformer(model: model, contextLength: tokens.count, allLogits: true,
                                        weights: RuntimeWeights(fp32: w, config: model.config))
                return Array(try t.forward(tokens, logits: .all))
            }
            let rel = CalibrationFixtures.relativeDifference(try run(smoothed), try run(model.weights))
            #expect(rel <= 1e-5, "tiny qwen2: \(rel)")
        }
    }

    /// Mean KLD vs FP32 on the held-out eval text: w8a8 (dynamic per token) against w8a8-smooth.
    @Test func smoothingLowersTheW8A8Divergence() throws {
        let model = try Golden.defaultModel()
        let data = try CalibrationFixtures.small()
        let ref = try CalibrationFixtures.fp32Logits.get()
        let plain = SchemeEffectTests.meanKLD(ref, try CalibrationFixtures.logits(scheme: "w8a8"), vocab: model.config.vocabSize)
        let smooth = SchemeEffectTests.meanKLD(ref, try CalibrationFixtures.logits(scheme: "w8a8-smooth", calibration: data),
                                               vocab: model.config.vocabSize)
        print("eval.txt \(CalibrationFixtures.evalTokens.count) tokens, calibration \(data.tokenCount) tokens: w8a8 mean KLD \(plain), w8a8-smooth \(smooth)")
        #expect(smooth < plain, "w8a8-smooth \(smooth) is not below w8a8 \(plain)")
    }
}
