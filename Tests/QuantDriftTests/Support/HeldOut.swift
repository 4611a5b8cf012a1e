import Foundation
@testable import QuantDrift

/// Calibration and held-out evaluation from Fixtures/eval.txt (4742 tokens): the first 2048
/// tokens (8 sequences of 256) calibrate, the remaining ~2700 are scored in chunks of 512.
enum HeldOut {
    static let calibrationSequences = 8
    static let sequenceLength = 256
    static let chunk = 512

    static func split(_ model: Model) throws -> (calibration: CalibrationSet, evaluation: [[Int]]) {
        let all = try CalibrationSet.load(path: fixtureURL("eval.txt").path, tokenizer: model.tokenizer,
                                          sequenceLength: sequenceLength)
        var calib = all
        calib.sequences = Array(all.sequences.prefix(calibrationSequences))
        let rest = all.sequences.dropFirst(calibrationSequences).flatMap { $0 }
        var chunks: [[Int]] = []
        var i = rest.startIndex
        while i < rest.endIndex {
            chunks.append(Array(rest[i..<min(rest.endIndex, i + chunk)]))
            i += chunk
        }
        return (calib, chunks)
    }

    /// Mean KL(P_fp32 ‖ Q_scheme) in nats over every position of the chunks, for each runtime.
    static func meanKLD(model: Model, runtimes: [SchemeRuntime], chunks: [[Int]]) throws -> [Double] {
        let longest = chunks.map(\.count).max()!
        let ref = try Transformer(model: model, contextLength: longest, maxBatch: longest, allLogits: true)
        let cands = try runtimes.map { try $0.transformer(model: model, contextLength: longest, maxBatch: longest, allLogits: true) }
        let vocab = model.config.vocabSize
        var sums = [Double](repeating: 0, count: runtimes.count)
        var count = 0
        // The tracker's float64 divergence (vectorised exp): a scalar exp per entry cost ~2 min here.
        var scratch = [Double](repeating: 0, count: 2 * vocab)
        for c in chunks {
            ref.reset()
            let pAll = Array(try ref.forward(c, logits: .all))
            for (k, t) in cands.enumerated() {
                t.reset()
                let q = try t.forward(c, logits: .all)
                pAll.withUnsafeBufferPointer { p in
                    scratch.withUnsafeMutableBufferPointer { s in
                        for r in 0..<c.count {
                            let pr = UnsafeBufferPointer(rebasing: p[(r * vocab)..<((r + 1) * vocab)])
                            let qr = UnsafeBufferPointer(rebasing: q[(r * vocab)..<((r + 1) * vocab)])
                            sums[k] += TokenDivergence.compare(reference: pr, candidate: qr, target: 0, scratch: s).kld
                        }
                    }
                }
            }
            count += c.count
        }
        return sums.map { $0 / Double(count) }
    }
}

/// RTN, GPTQ and AWQ (int4, g128, symmetric) against FP32 on the held-out text, computed once
/// per test process (the GPTQ and AWQ suites both read it).
enum WeightMethodComparison {
    struct Numbers: Sendable {
        var rtn: Double, gptq: Double, awq: Double
        var gptqSeconds: Double, awqSeconds: Double
        var runtimes: [String: SchemeRuntime]
    }

    static let shared: Result<Numbers, Error> = Result { try compute() }

    static func compute() throws -> Numbers {
        let model = try Golden.defaultModel()
        let (calib, chunks) = try HeldOut.split(model)
        let rtn = try SchemeRuntime(model: model, scheme: try Scheme(parsing: "w4g128"))
        var t0 = monotonicSeconds()
        let gptq = try SchemeRuntime(model: model, scheme: try Scheme(parsing: "w=int4,g128,gptq"), calibration: calib)
        let gptqSeconds = monotonicSeconds() - t0
        t0 = monotonicSeconds()
        let awq = try SchemeRuntime(model: model, scheme: try Scheme(parsing: "w=int4,g128,awq"), calibration: calib)
        let awqSeconds = monotonicSeconds() - t0
        let k = try HeldOut.meanKLD(model: model, runtimes: [rtn, gptq, awq], chunks: chunks)
        let n = Numbers(rtn: k[0], gptq: k[1], awq: k[2], gptqSeconds: gptqSeconds, awqSeconds: awqSeconds,
                        runtimes: ["rtn": rtn, "gptq": gptq, "awq": awq])
        print("held-out mean KLD vs FP32 over \(chunks.reduce(0) { $0 + $1.count }) positions: "
              + "w4g128 RTN \(k[0]), GPTQ \(k[1]), AWQ \(k[2]); build GPTQ \(String(format: "%.1f", gptqSeconds)) s, "
              + "AWQ \(String(format: "%.1f", awqSeconds)) s (calibration \(calib.sequences.count)×\(HeldOut.sequenceLength) tokens)")
        return n
    }
}
