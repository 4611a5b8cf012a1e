import Dispatch
import Foundation

/// The statistics block of llama.cpp's `llama-perplexity --kl-divergence`, computed the same way
/// (mean ± uncertainty from running sums, interpolated percentiles) from exact float64
/// divergences: llama.cpp stores the base log-probabilities in 16 bits over a 16-nat window and
/// skips tokens with P < e⁻¹⁶, which is why its near-zero KLDs can be slightly negative.
public struct KLDResult: Sendable {
    public var nCtx: Int
    public var chunks: Int
    public var tokensScored: Int
    public var pplBase: Double
    public var pplBaseSE: Double
    public var ppl: Double
    public var pplSE: Double
    public var meanKLD: Double
    public var meanKLDSE: Double
    public var maxKLD: Double
    public var minKLD: Double
    /// Keys "99.9", "99", "95", "90", "50", "10", "5", "1", "0.1".
    public var kldPercentiles: [(String, Double)]
    public var sameTopP: Double
    public var sameTopPSE: Double
    public var meanDp: Double
    public var rmsDp: Double
    public var meanTV: Double
    public var seconds: Double
    /// Every token processed (chunks × n_ctx) per second; each is run by the reference and the candidate.
    public var tokensPerSecond: Double
}

public enum KLDMode {
    /// llama.cpp's mean and its uncertainty from a sum and a sum of squares.
    static func meanAndUncertainty(_ sum: Double, _ sum2: Double, _ count: Int) -> (Double, Double) {
        guard count >= 1 else { return (0, 0) }
        let f = sum / Double(count)
        let df = sum2 / Double(count) - f * f
        return (f, df > 0 && count > 10 ? (df / Double(count - 1)).squareRoot() : 0)
    }

    /// Linear interpolation between sorted values, as llama.cpp's `percentile`.
    static func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        if fraction <= 0 { return sorted.first! }
        if fraction >= 1 { return sorted.last! }
        let p = fraction * Double(sorted.count - 1)
        let ip = Int(p)
        let f = p - Double(ip)
        return (1 - f) * sorted[ip] + f * sorted[min(ip + 1, sorted.count - 1)]
    }

    /// Runs the FP32 reference and `candidate` over `tokens` in chunks of `nCtx` (a trailing
    /// partial chunk dropped; first token BOS when the model adds BOS) and compares the second
    /// half of every chunk. The two models run side by side on two threads.
    public static func run(model: Model, candidate: SchemeRuntime, tokens: [Int], nCtx: Int,
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> KLDResult {
        guard nCtx >= 4 else { throw QuantDriftError.invalidInput("--ctx must be at least 4, got \(nCtx)") }
        guard nCtx <= model.config.contextLength else {
            throw QuantDriftError.invalidInput("--ctx \(nCtx) exceeds the model's context length \(model.config.contextLength)")
        }
        let chunks = tokens.count / nCtx
        guard chunks >= 1 else {
            throw QuantDriftError.invalidInput("the text has \(tokens.count) tokens, fewer than one chunk of \(nCtx)")
        }
        let reference = try Transformer(model: model, contextLength: nCtx, maxBatch: nCtx, allLogits: true)
        let cand = try candidate.transformer(model: model, contextLength: nCtx, maxBatch: nCtx, allLogits: true)
        let vocab = model.config.vocabSize
        let first = nCtx / 2
        var klds: [Double] = [], dps: [Double] = []
        var sumNLL = 0.0, sumNLL2 = 0.0, sumBase = 0.0, sumBase2 = 0.0, sumKLD = 0.0, sumKLD2 = 0.0
        var sumDp = 0.0, sumDp2 = 0.0, sumTV = 0.0
        var sameTop = 0
        let start = monotonicSeconds()
        for c in 0..<chunks {
            var chunk = Array(tokens[(c * nCtx)..<((c + 1) * nCtx)])
            if model.tokenizer.spec.addBOS, let bos = model.tokenizer.spec.bosID { chunk[0] = bos }
            reference.reset()
            cand.reset()
            // Reference and candidate side by side; each writes only its own buffers.
            let models = [reference, cand]
            let errors = ErrorBox()
            let input = chunk
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                do { try models[i].forward(input, logits: .all) } catch { errors.set(error) }
            }
            if let e = errors.error { throw e }
            let p = reference.allLogits(rows: nCtx), q = cand.allLogits(rows: nCtx)
            for j in first..<(nCtx - 1) {
                let d = TokenDivergence.compare(
                    reference: UnsafeBufferPointer(rebasing: p[(j * vocab)..<((j + 1) * vocab)]),
                    candidate: UnsafeBufferPointer(rebasing: q[(j * vocab)..<((j + 1) * vocab)]),
                    target: chunk[j + 1])
                klds.append(d.kld)
                dps.append(d.dp)
                sumNLL += d.nllCandidate; sumNLL2 += d.nllCandidate * d.nllCandidate
                sumBase += d.nllReference; sumBase2 += d.nllReference * d.nllReference
                sumKLD += d.kld; sumKLD2 += d.kld * d.kld
                sumDp += d.dp; sumDp2 += d.dp * d.dp
                sumTV += d.tv
                if d.sameTop { sameTop += 1 }
            }
            progress(c + 1, chunks)
        }
        let seconds = monotonicSeconds() - start
        let n = klds.count
        let (lp, lpSE) = meanAndUncertainty(sumNLL, sumNLL2, n)
        let (lb, lbSE) = meanAndUncertainty(sumBase, sumBase2, n)
        let (mk, mkSE) = meanAndUncertainty(sumKLD, sumKLD2, n)
        let sorted = klds.sorted()
        let median = n % 2 == 0 ? 0.5 * (sorted[n / 2] + sorted[n / 2 - 1]) : sorted[n / 2]
        let keys: [(String, Double)] = [("99.9", 0.999), ("99", 0.99), ("95", 0.95), ("90", 0.90), ("50", 0.5),
                                        ("10", 0.10), ("5", 0.05), ("1", 0.01), ("0.1", 0.001)]
        let same = Double(sameTop) / Double(n)
        return KLDResult(
            nCtx: nCtx, chunks: chunks, tokensScored: n,
            pplBase: exp(lb), pplBaseSE: exp(lb) * lbSE, ppl: exp(lp), pplSE: exp(lp) * lpSE,
            meanKLD: mk, meanKLDSE: mkSE, maxKLD: sorted.last!, minKLD: sorted.first!,
            kldPercentiles: keys.map { ($0.0, $0.0 == "50" ? median : percentile(sorted, $0.1)) },
            sameTopP: same, sameTopPSE: n > 1 ? (same * (1 - same) / Double(n - 1)).squareRoot() : 0,
            meanDp: sumDp / Double(n), rmsDp: (sumDp2 / Double(n)).squareRoot(), meanTV: sumTV / Double(n),
            seconds: seconds, tokensPerSecond: Double(chunks * nCtx) / seconds)
    }
}

/// First error thrown by concurrent work.
final class ErrorBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var error: Error?
    func set(_ e: Error) {
        lock.lock()
        if error == nil { error = e }
        lock.unlock()
    }
}
