import Foundation
import Testing
@testable import QuantDrift

/// GPTQ against RTN on the same grid: a synthetic layer with correlated inputs, and the default
/// model on held-out text.
@Suite("GPTQ", .serialized)
struct GPTQTests {
    /// Correlated inputs: 12 latent factors mixed into `cols` channels, channel scales spread over
    /// 30×, a little noise; optionally one dead (always zero) channel.
    static func inputs(n: Int, cols: Int, seed: UInt64, deadChannel: Int? = nil) -> [Float] {
        var r = RandomStream(seed: seed)
        func g() -> Float { Float((0..<4).map { _ in r.nextDouble() - 0.5 }.reduce(0, +)) * 1.7 }
        let k = 12
        let mix = (0..<(k * cols)).map { _ in g() }
        let scale = (0..<cols).map { c in Float(0.2 + 6 * Double((c * 37) % cols) / Double(cols)) }
        var x = [Float](repeating: 0, count: n * cols)
        for i in 0..<n {
            let z = (0..<k).map { _ in g() }
            for c in 0..<cols {
                var v: Float = 0
                for j in 0..<k { v += z[j] * mix[j * cols + c] }
                x[i * cols + c] = (v + 0.1 * g()) * scale[c]
            }
            if let d = deadChannel { x[i * cols + d] = 0 }
        }
        return x
    }

    /// XᵀX (full, FP32) and ‖X(W − Ŵ)ᵀ‖².
    static func gram(_ x: [Float], n: Int, cols: Int) -> [Float] {
        var g = [Float](repeating: 0, count: cols * cols)
        for i in 0..<n { for a in 0..<cols { let xa = x[i * cols + a]; for b in a..<cols { g[a * cols + b] += xa * x[i * cols + b] } } }
        return g
    }

    static func outputError(_ x: [Float], n: Int, _ w: [Float], _ q: [Float], rows: Int, cols: Int) -> Double {
        var e = 0.0
        for i in 0..<n {
            for r in 0..<rows {
                var d = 0.0
                for c in 0..<cols { d += Double(x[i * cols + c]) * Double(w[r * cols + c] - q[r * cols + c]) }
                e += d * d
            }
        }
        return e
    }

    struct Case: Sendable, CustomStringConvertible {
        let bits: Int, group: Int?, symmetric: Bool, dead: Bool
        var description: String { "int\(bits) \(group.map { "g\($0)" } ?? "channel") \(symmetric ? "sym" : "asym")\(dead ? " dead input" : "")" }
    }

    @Test(arguments: [
        Case(bits: 4, group: 32, symmetric: true, dead: false), Case(bits: 4, group: 128, symmetric: true, dead: false),
        Case(bits: 4, group: nil, symmetric: true, dead: false), Case(bits: 3, group: 32, symmetric: false, dead: false),
        Case(bits: 2, group: 64, symmetric: false, dead: false), Case(bits: 4, group: 32, symmetric: true, dead: true),
    ])
    func lowerOutputErrorThanRTNOnTheSameGrid(c: Case) throws {
        let rows = 48, cols = 256, n = 768
        let x = Self.inputs(n: n, cols: cols, seed: 11, deadChannel: c.dead ? 5 : nil)
        var rng = RandomStream(seed: 12)
        let w = (0..<(rows * cols)).map { _ in Float(rng.nextDouble() - 0.5) * 0.1 }
        let group = c.group ?? cols
        let u = try GPTQ.inverseHessianFactor(gram: Self.gram(x, n: n, cols: cols), n: cols, count: n)
        let g = GPTQ.quantize(w, rows: rows, cols: cols, bits: c.bits, group: group, sharedAcrossRows: false,
                              symmetric: c.symmetric, hinvU: u)
        let r = WeightQuantizer.uniform(w, rows: rows, cols: cols, bits: c.bits, group: group, sharedAcrossRows: false,
                                        symmetric: c.symmetric)
        let eg = Self.outputError(x, n: n, w, g.dequantized(), rows: rows, cols: cols)
        let er = Self.outputError(x, n: n, w, r.dequantized(), rows: rows, cols: cols)
        print("GPTQ synthetic \(c): ‖XWᵀ − XŴᵀ‖² GPTQ \(eg), RTN \(er) (ratio \(eg / er))")
        #expect(eg < 0.8 * er, "\(c): GPTQ \(eg) vs RTN \(er)")

        // The same grid and container as RTN, decoded by the integer kernels.
        #expect(g.bits == r.bits && g.groupSize == r.groupSize && g.scales.count == r.scales.count)
        #expect((g.mins == nil) == (r.mins == nil))
        switch (g.codes, r.codes) {
        case (.nibbles(let a), .nibbles(let b)): #expect(a.count == b.count)
        case (.int8(let a), .int8(let b)): #expect(a.count == b.count)
        default: Issue.record("\(c): different code containers")
        }
        let levels = 1 << c.bits
        for i in 0..<rows { for j in 0..<cols { #expect((0..<levels).contains(g.code(i, j)), "\(c): code out of range") } }
        if c.symmetric, let mins = g.mins {
            for k in mins.indices { #expect(mins[k] == -Float(levels / 2) * g.scales[k]) }  // symmetric grid
        }
        let layer = try QuantizedLinear(g)
        let xin = Array(x[0..<cols])
        var y = [Float](repeating: 0, count: rows)
        layer.forward(xin, rows: 1, into: &y, scratch: LinearScratch(maxRows: 1, maxInDim: cols))
        let want = ReferenceKernels.gemv(g, xin)
        for i in 0..<rows { #expect(abs(y[i] - want[i]) <= 1e-4 * max(1, abs(want[i]))) }
        #expect(g.scales.allSatisfy(\.isFinite) && g.dequantized().allSatisfy(\.isFinite))
    }

    @Test func inverseHessianFactorIsTheCholeskyFactorOfTheInverse() throws {
        let n = 40, cols = 24
        let x = Self.inputs(n: n, cols: cols, seed: 3)
        let gram = Self.gram(x, n: n, cols: cols)
        let u = try GPTQ.inverseHessianFactor(gram: gram, n: cols, count: n)
        // H = 2XᵀX/n + λI with λ = 1% of its mean diagonal; check (UᵀU)·H = I.
        var h = [Double](repeating: 0, count: cols * cols)
        for a in 0..<cols { for b in a..<cols { h[a * cols + b] = 2 * Double(gram[a * cols + b]) / Double(n); h[b * cols + a] = h[a * cols + b] } }
        let damp = 0.01 * (0..<cols).map { h[$0 * cols + $0] }.reduce(0, +) / Double(cols)
        for i in 0..<cols { h[i * cols + i] += damp }
        var worst = 0.0
        for i in 0..<cols {
            for j in 0..<cols {
                var s = 0.0
                for k in 0..<cols {
                    var inv = 0.0  // (UᵀU)[i][k]
                    for m in 0...min(i, k) { inv += u[m * cols + i] * u[m * cols + k] }
                    s += inv * h[k * cols + j]
                }
                worst = max(worst, abs(s - (i == j ? 1 : 0)))
            }
            for j in 0..<i { #expect(u[i * cols + j] == 0) }  // upper triangular
        }
        #expect(worst < 1e-8, "‖(UᵀU)H − I‖∞ = \(worst)")
    }

    @Test func needsCalibrationData() throws {
        let model = try Golden.defaultModel()
        for spec in ["w=int4,g128,gptq", "w=int3,g32,awq"] {
            expectBadInput("calibration", kind: .invalid) {
                _ = try SchemeBuilder.weights(for: model, scheme: try Scheme(parsing: spec), calibration: nil)
            }
        }
    }

    /// On held-out text: GPTQ's mean KLD vs FP32 is below RTN's on the same grid (w4g128).
    @Test func beatsRTNOnHeldOutText() throws {
        let n = try WeightMethodComparison.shared.get()
        #expect(n.gptq < n.rtn, "GPTQ \(n.gptq) vs RTN \(n.rtn)")
        #expect(n.gptq > 0)
        // The quantized copy is an ordinary int4 g128 model: same bytes as RTN.
        let model = try Golden.defaultModel()
        #expect(n.runtimes["gptq"]!.weights.bytesPerToken(dim: model.config.dim)
                == n.runtimes["rtn"]!.weights.bytesPerToken(dim: model.config.dim))
    }
}
