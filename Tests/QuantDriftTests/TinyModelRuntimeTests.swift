import Foundation
import Testing
@testable import QuantDrift

/// The forward pass on tiny synthetic models: GGUF (permuted Q/K, adjacent-pair RoPE) and the HF
/// folder (rotate-half RoPE) of the same weights must give the same logits.
@Suite("Tiny model runtime")
struct TinyModelRuntimeTests {
    @Test(arguments: [Architecture.llama, .qwen2])
    func ggufAndSafetensorsGiveIdenticalLogits(architecture: Architecture) throws {
        let tiny = TinyModel(architecture: architecture, seed: 7)
        try withTemporaryDirectory { dir in
            let gguf = dir.appendingPathComponent("tiny.gguf")
            let hf = dir.appendingPathComponent("hf")
            try tiny.writeGGUF(to: gguf)
            try tiny.writeSafetensors(to: hf)
            let a = try Model.load(path: gguf.path), b = try Model.load(path: hf.path)
            #expect(a.config.ropeStyle != b.config.ropeStyle || architecture == .qwen2)
            let tokens = [5, 77, 130, 9, 256, 42, 3, 200, 17, 99, 1, 64]
            let ta = try Transformer(model: a, contextLength: tokens.count, allLogits: true)
            let tb = try Transformer(model: b, contextLength: tokens.count, allLogits: true)
            let la = Array(try ta.forward(tokens, logits: .all)), lb = Array(try tb.forward(tokens, logits: .all))
            #expect(la.count == lb.count)
            var worst: Float = 0
            for i in la.indices { worst = max(worst, abs(la[i] - lb[i]) / max(abs(la[i]), 1)) }
            #expect(worst <= 1e-5, "\(architecture): GGUF and HF logits differ by \(worst) relative")
            // And the logits are not trivially equal (the model does something position-dependent).
            #expect(la[0..<a.config.vocabSize] != la[(a.config.vocabSize)..<(2 * a.config.vocabSize)])
        }
    }
}
