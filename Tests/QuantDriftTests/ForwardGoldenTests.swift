import Foundation
import Testing
@testable import QuantDrift

/// The FP32 forward pass against the independent float64 reference in shared/reference.
@Suite("Forward pass against golden logits")
struct ForwardGoldenTests {
    struct Case: Sendable, CustomStringConvertible {
        let file: String
        var description: String { file }
    }

    @Test(arguments: ["logits-france.json", "logits-code.json", "logits-chat-poem.json"])
    func topLogitsMatchReference(file: String) throws {
        let model = try Golden.defaultModel()
        let ref = try Golden.json(file) as! [String: Any]
        let tokens = (ref["tokens"] as! [NSNumber]).map(\.intValue)
        let positions = ref["positions"] as! [[String: Any]]
        let t = try Transformer(model: model, contextLength: tokens.count, allLogits: true)
        let logits = try t.forward(tokens, logits: .all)
        let vocab = model.config.vocabSize
        var worst = 0.0
        for (p, pos) in positions.enumerated() {
            let top = pos["top"] as! [[NSNumber]]
            for pair in top {
                let id = pair[0].intValue, want = pair[1].doubleValue
                let got = Double(logits[p * vocab + id])
                let rel = abs(got - want) / max(abs(want), 1)
                worst = max(worst, rel)
                #expect(rel <= 1e-3, "\(file) position \(p) token \(id): \(got) vs \(want)")
            }
            // The reference's top-1 is ours too, unless its margin is within float noise.
            let row = UnsafeBufferPointer(rebasing: logits[(p * vocab)..<((p + 1) * vocab)])
            let argmax = row.indices.max { row[$0] < row[$1] }!
            let margin = top[0][1].doubleValue - top[1][1].doubleValue
            if margin > 1e-3 { #expect(argmax == top[0][0].intValue, "\(file) position \(p) argmax") }
        }
        print("\(file): worst relative logit error \(worst)")
    }
}
