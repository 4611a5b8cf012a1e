import Foundation
import Testing
@testable import QuantDrift

/// QuaRot-style rotations (`rot=`) and 4-bit activations (`a=int4`): the rotation matrices are
/// orthogonal, folding them into the FP32 weights leaves the logits unchanged, and they are what
/// makes W4A4 usable.
@Suite("Rotations and 4-bit activations")
struct RotationTests {
    /// R·Rᵀ = I for Hadamard orders (Sylvester alone, Paley ⊗ Sylvester) and for the random
    /// fallback; the Hadamard ones have entries ±1/√n.
    @Test(arguments: [(1, 1), (64, 1), (12, 12), (576, 72), (1536, 12), (640, 20), (7, 0), (33, 0), (100, 0)])
    func rotationsAreOrthogonal(order: Int, paley: Int) throws {
        let r = Rotation(order: order)
        if paley > 0 {
            #expect(r.kind == .hadamard(paley: paley, sylvester: order / paley), "\(order): \(r.summary)")
        } else {
            guard case .random = r.kind else { Issue.record("\(order) should fall back to a random rotation, got \(r.summary)"); return }
        }
        let m = r.dense()
        var worst = 0.0
        for i in 0..<order {
            for j in 0..<order {
                var dot = 0.0
                for k in 0..<order { dot += Double(m[i * order + k]) * Double(m[j * order + k]) }
                worst = max(worst, abs(dot - (i == j ? 1 : 0)))
            }
        }
        #expect(worst <= 1e-5, "\(r.summary): |R·Rᵀ − I| up to \(worst)")
        if case .hadamard = r.kind {
            let h = 1 / Float(order).squareRoot()
            #expect(m.allSatisfy { abs(abs($0) - h) <= 1e-6 * max(1, h) }, "\(r.summary): entries are not ±1/√n")
        }
    }

    /// The fast transform (Walsh–Hadamard per chunk, then the Paley mix across chunks) against
    /// its definition, H_paley ⊗ H_sylvester / √n built entry by entry: the scalar twin.
    @Test(arguments: [12, 40, 576, 1536])
    func fastTransformIsTheKroneckerProduct(order: Int) throws {
        let r = Rotation(order: order)
        guard case .hadamard(let m, let len) = r.kind else { Issue.record("\(order): \(r.summary)"); return }
        let p = m == 1 ? [Float(1)] : Rotation.paley(m)
        let scale = 1 / Double(order).squareRoot()
        let dense = r.dense()
        var worst = 0.0
        for i in 0..<order {
            for j in 0..<order {
                let (a, b) = (i / len, i % len), (c, d) = (j / len, j % len)
                let sylvester: Double = (b & d).nonzeroBitCount % 2 == 0 ? 1 : -1
                worst = max(worst, abs(Double(dense[i * order + j]) - Double(p[a * m + c]) * sylvester * scale))
            }
        }
        #expect(worst <= 1e-6, "\(r.summary): largest entry difference \(worst)")
    }

    /// The FP32 default model with rotations folded in (nothing quantized) gives the reference's
    /// logits to float rounding: the norms' gains and the rotations cancel exactly in real numbers.
    @Test(arguments: ["rot=quarot", "rot=residual", "rot=down"])
    func foldedRotationsKeepTheLogits(spec: String) throws {
        let tokens = Array(CalibrationFixtures.evalTokens.prefix(64))
        let ref = try CalibrationFixtures.logits(RuntimeWeights(fp32: try Golden.defaultModel().weights, config: try Golden.defaultModel().config),
                                                 tokens: tokens)
        let got = try CalibrationFixtures.logits(scheme: spec, tokens: tokens)
        let rel = CalibrationFixtures.relativeDifference(got, ref)
        print("\(spec) without quantization: max |Δlogit| / max |logit| = \(rel)")
        #expect(rel <= 2e-5, "\(spec): logits moved by \(rel) relative")
        #expect(rel > 0 || spec == "rot=down", "\(spec): bit-identical logits suggest nothing was rotated")
    }

    /// The same on the tiny Qwen3 (per-head Q/K norms after the rotated projections).
    @Test func foldedRotationsKeepQwen3Logits() throws {
        let model = try ModelFamilyTests.familyModel("qwen3-tiny.gguf")
        let tokens = Array(model.tokenizer.encode("The rotation cancels in every product.").prefix(24))
        func logits(_ w: RuntimeWeights) throws -> [Float] {
            let t = try Transformer(model: model, contextLength: tokens.count, maxBatch: tokens.count, allLogits: true, weights: w)
            return Array(try t.forward(tokens, logits: .all))
        }
        let ref = try logits(RuntimeWeights(fp32: model.weights, config: model.config))
        let got = try logits(try SchemeBuilder.weights(for: model, scheme: try Scheme(parsing: "rot=quarot")))
        let rel = CalibrationFixtures.relativeDifference(got, ref)
        #expect(rel <= 2e-5 && rel > 0, "qwen3-tiny rot=quarot: logits moved by \(rel) relative")
    }

    /// Post-norms (Gemma 3) sit between a projection and the residual add: refused, with a reason.
    @Test func postNormFamiliesAreRefused() throws {
        let gemma = try ModelFamilyTests.syntheticGemma()
        #expect(throws: QuantDriftError.self) { try SchemeBuilder.weights(for: gemma, scheme: try Scheme(parsing: "rot=residual")) }
        do {
            _ = try SchemeBuilder.weights(for: gemma, scheme: try Scheme(parsing: "w4a4-rot"))
        } catch {
            #expect("\(error)".contains("post-norms"), "\(error)")
        }
        // The online down rotation alone does not touch the residual: allowed.
        _ = try SchemeBuilder.weights(for: gemma, scheme: try Scheme(parsing: "rot=down"))
    }

    /// Dynamic int4 activations: codes in −7…7, one scale max|x|/7 per token or group, values
    /// within half a step.
    @Test(arguments: [ActivationQuantizer.Mode.dynamicPerRow, .dynamicPerGroup(32)], [1, 7, 33, 577])
    func int4ActivationCodes(mode: ActivationQuantizer.Mode, width: Int) throws {
        let q = ActivationQuantizer(mode, maxCode: 7)
        let rows = 3
        let x = gaussianSamples(rows * width, sigma: 2, seed: UInt64(width))
        let g = q.groupSize(inDim: width), ng = (width + g - 1) / g
        var codes = [Int8](repeating: 0, count: rows * width), scales = [Float](repeating: 0, count: rows * ng)
        x.withUnsafeBufferPointer { xp in q.quantize(xp.baseAddress!, rows: rows, inDim: width, codes: &codes, scales: &scales, blockSums: nil) }
        #expect(codes.allSatisfy { abs(Int($0)) <= 7 })
        #expect(codes.contains { abs(Int($0)) == 7 })
        for r in 0..<rows {
            for i in 0..<width {
                let s = scales[r * ng + i / g]
                let amax = x[(r * width + i / g * g)..<(r * width + min(width, i / g * g + g))].map(abs).max()!
                #expect(abs(s - amax / 7) <= 1e-6 * amax)
                #expect(abs(Float(codes[r * width + i]) * s - x[r * width + i]) <= s / 2 * 1.0001)
            }
        }
    }

    /// 4-bit activations are what rotations are for: per token, the outlier channels of the
    /// residual stream wreck the unrotated model; rotated, it keeps far closer to FP32 (FP32
    /// weights, so only the activations differ). On all of eval.txt at ctx 512: mean KLD 6.59
    /// unrotated, 2.13 with the residual rotation alone, 0.726 with QuaRot's both.
    @Test func rotationRescuesInt4Activations() throws {
        let model = try Golden.defaultModel()
        let runtimes = try ["a=int4,token", "a=int4,token;rot=quarot"].map { try SchemeRuntime(model: model, scheme: try Scheme(parsing: $0)) }
        let k = try HeldOut.meanKLD(model: model, runtimes: runtimes, chunks: [Array(CalibrationFixtures.evalTokens.prefix(96))])
        let plain = k[0], rotated = k[1]
        print("int4 activations per token, mean KLD over 96 positions: \(plain) unrotated, \(rotated) with rot=quarot")
        #expect(rotated < plain / 4, "rotation should cut int4 activations' KLD at least 4×: \(rotated) vs \(plain)")
    }

    @Test func schemeOptionsRefuseNonsense() {
        for (spec, message) in [("rot=", "unknown rotation"), ("rot=quarot,spin", "unknown rotation 'spin'"),
                                ("w8a8-static;rot=quarot", "calibration runs on the unrotated model"),
                                ("w=int4,g32,gptq;rot=residual", "gptq"),
                                ("a=int4,tensor,static", "int4 activations are dynamic"),
                                ("a=int4,token,smooth=0.5", "int4 activations are dynamic"),
                                ("rot=quarot;rot=down", "rot")] {
            do {
                _ = try Scheme(parsing: spec)
                Issue.record("\(spec) parsed")
            } catch {
                #expect("\(error)".contains(message), "\(spec): \(error)")
            }
        }
        #expect((try? Scheme(parsing: "w4a4-rot"))?.spec == "w=int4,g128,sym;a=int4,token,dynamic;rot=residual,down")
    }
}
