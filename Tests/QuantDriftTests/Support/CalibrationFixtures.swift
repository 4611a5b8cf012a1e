import Foundation
@testable import QuantDrift

/// Calibration data for tests: a small slice of Prompts/calibration (4 sequences of 256 tokens)
/// so that a calibration pass takes seconds; QUANTDRIFT_FULL_CALIBRATION=1 uses all of it.
enum CalibrationFixtures {
    static let folder = Golden.packageRoot.appendingPathComponent("Prompts/calibration")

    static var useFullSet: Bool { ProcessInfo.processInfo.environment["QUANTDRIFT_FULL_CALIBRATION"] == "1" }

    static func small() throws -> CalibrationSet { try shared.get() }

    private static let shared: Result<CalibrationSet, Error> = Result {
        let model = try Golden.defaultModel()
        if useFullSet { return try CalibrationSet.load(path: folder.path, tokenizer: model.tokenizer) }
        var set = try CalibrationSet.load(path: folder.path, tokenizer: model.tokenizer, sequenceLength: 256)
        // One sequence from each kind of text: prose, code, tables, chat.
        let picks = [0, set.sequences.count / 3, 2 * set.sequences.count / 3, set.sequences.count - 2]
        set.sequences = picks.map { set.sequences[$0] }
        return set
    }

    /// A held-out text like the calibration texts: the first 320 tokens of the eval fixture.
    static let evalTokens: [Int] = {
        let model = try! Golden.defaultModel()
        let text = try! String(contentsOf: fixtureURL("eval.txt"), encoding: .utf8)
        return Array(model.tokenizer.encode(text).prefix(320))
    }()

    static func logits(_ weights: RuntimeWeights, tokens: [Int] = evalTokens) throws -> [Float] {
        let model = try Golden.defaultModel()
        let t = try Transformer(model: model, contextLength: tokens.count, maxBatch: tokens.count, allLogits: true, weights: weights)
        return Array(try t.forward(tokens, logits: .all))
    }

    static func logits(scheme: String, calibration: CalibrationSet? = nil, tokens: [Int] = evalTokens) throws -> [Float] {
        let model = try Golden.defaultModel()
        let w = try SchemeBuilder.weights(for: model, scheme: try Scheme(parsing: scheme), calibration: calibration)
        return try logits(w, tokens: tokens)
    }

    static let fp32Logits: Result<[Float], Error> = Result {
        try logits(RuntimeWeights(fp32: try Golden.defaultModel().weights, config: try Golden.defaultModel().config))
    }

    /// Largest |a − b| relative to the largest |b|.
    static func relativeDifference(_ a: [Float], _ b: [Float]) -> Double {
        var worst = 0.0, scale = 0.0
        for i in a.indices {
            worst = max(worst, Double(abs(a[i] - b[i])))
            scale = max(scale, Double(abs(b[i])))
        }
        return worst / max(scale, 1e-30)
    }
}

/// Gaussian samples (Box–Muller on the project's RandomStream).
func gaussianSamples(_ n: Int, sigma: Double = 1, seed: UInt64) -> [Float] {
    var r = RandomStream(seed: seed)
    var out: [Float] = []
    out.reserveCapacity(n)
    while out.count < n {
        let u1 = max(r.nextDouble(), 1e-300), u2 = r.nextDouble()
        let rad = (-2 * log(u1)).squareRoot()
        out.append(Float(sigma * rad * cos(2 * .pi * u2)))
        if out.count < n { out.append(Float(sigma * rad * sin(2 * .pi * u2))) }
    }
    return out
}
