import Foundation
import Testing
@testable import QuantDrift

/// The integer kernels on the default model's real matrices (shapes and value ranges of a real
/// model, which synthetic tests may miss), against the scalar twin, on both kernel paths (in a
/// loop, so the quantized model is built once for both).
@Suite("Kernels on real weights")
struct KernelRealWeightsTests {
    @Test(arguments: ["q8_0", "w8a8", "w4a8", "q4_0", "q4_1"])
    func realLayerMatchesScalarTwin(scheme: String) throws {
        let model = try Golden.defaultModel()
        let rt = try SchemeRuntime(model: model, scheme: try Scheme(parsing: scheme))
        let c = model.config
        for (name, layer, inDim) in [("wq", rt.weights.layers[0].wq, c.dim), ("wDown", rt.weights.layers[5].wDown, c.hiddenDim)] {
            let q = try #require(layer as? QuantizedLinear)
            let act = try #require(q.activations)
            var r = RandomStream(seed: 3)
            let rows = 3
            let x = (0..<(rows * inDim)).map { i in Float(r.nextDouble() * 2 - 1) * (i % 97 == 0 ? 20 : 1) }
            let scratch = LinearScratch(maxRows: rows, maxInDim: inDim)
            let want = (0..<rows).map { row in
                ReferenceKernels.gemvInt(q.matrix, activations: act, Array(x[(row * inDim)..<((row + 1) * inDim)]))
            }
            for path in KernelPath.allCases {
                var y = [Float](repeating: 0, count: rows * q.outDim)
                path.run { q.forward(x, rows: rows, into: &y, scratch: scratch) }
                var worst: Float = 0
                for row in 0..<rows {
                    for i in 0..<q.outDim { worst = max(worst, abs(y[row * q.outDim + i] - want[row][i]) / max(1, abs(want[row][i]))) }
                }
                // The AVX2 paths sum in another order than the twin, and with asymmetric (min) formats
                // the min term cancels most of the scaled dot product: a few 1e-5 relative, not more.
                #expect(worst <= 1e-4, "\(scheme) \(name) \(path): worst relative difference \(worst)")
            }
        }
    }
}
