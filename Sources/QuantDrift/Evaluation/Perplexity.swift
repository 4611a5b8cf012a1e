import Foundation

/// llama.cpp's perplexity statistics for one run.
public struct PerplexityResult: Sendable, Codable {
    public var nCtx: Int
    public var chunks: Int
    public var tokensScored: Int
    public var ppl: Double
    public var pplSE: Double
    public var seconds: Double
    /// Every token processed (chunks × n_ctx) per second.
    public var tokensPerSecond: Double
}

public enum Perplexity {
    /// Whole chunks of `nCtx` in `tokens` tokens (llama.cpp's protocol drops a partial tail),
    /// after checking `nCtx` fits the model; shared by perplexity and kld.
    static func chunkCount(tokens: Int, nCtx: Int, model: Model) throws -> Int {
        guard nCtx >= 4 else { throw QuantDriftError.invalidInput("--ctx must be at least 4, got \(nCtx)") }
        guard nCtx <= model.config.contextLength else {
            throw QuantDriftError.invalidInput("--ctx \(nCtx) exceeds the model's context length \(model.config.contextLength)")
        }
        let chunks = tokens / nCtx
        guard chunks >= 1 else {
            throw QuantDriftError.invalidInput("the text has \(tokens) tokens, fewer than one chunk of \(nCtx)")
        }
        return chunks
    }

    /// The token stream llama.cpp's perplexity and KL tools cut into chunks: BOS first when the
    /// model adds BOS (Gemma; not SmolLM2), then the text without parsing special tokens. Without
    /// that BOS every chunk after the first would start one token earlier than llama.cpp's.
    public static func textTokens(_ text: String, tokenizer: Tokenizer) -> [Int] {
        var ids: [Int] = []
        if tokenizer.spec.addBOS, let bos = tokenizer.spec.bosID { ids.append(bos) }
        return ids + tokenizer.encode(text, parseSpecial: false)
    }

    /// The first `chunks` chunks of `nCtx` tokens, each starting with BOS when the model adds BOS
    /// (llama.cpp replaces the chunk's first token); shared by perplexity and kld.
    static func chunked(_ tokens: [Int], chunks: Int, nCtx: Int, model: Model) -> [[Int]] {
        (0..<chunks).map { c in
            var chunk = Array(tokens[(c * nCtx)..<((c + 1) * nCtx)])
            if model.tokenizer.spec.addBOS, let bos = model.tokenizer.spec.bosID { chunk[0] = bos }
            return chunk
        }
    }

    /// llama.cpp's `llama-perplexity` protocol: the text's tokens are cut into chunks of `nCtx`
    /// (a trailing partial chunk is dropped); each chunk is evaluated from an empty cache (its
    /// first token replaced by BOS when the model adds BOS); the second half of each chunk is
    /// scored (predictions of tokens nCtx/2+1 … nCtx-1). Two chunks run at a time, one per core,
    /// each with BLAS on one thread, and the sums run in chunk order: the result does not depend on
    /// a thread setting (OpenBLAS's threaded sgemm rounds differently, and with integer activations
    /// that flips codes: q8_0 gave 22.7696 on one BLAS thread and 22.7200 on two).
    public static func run(model: Model, scheme: SchemeRuntime? = nil, tokens: [Int], nCtx: Int,
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> PerplexityResult {
        let chunks = try chunkCount(tokens: tokens.count, nCtx: nCtx, model: model)
        BLAS.setThreads(1)
        let lanes = try (0..<min(2, chunks)).map { _ in
            try scheme?.transformer(model: model, contextLength: nCtx, maxBatch: nCtx, allLogits: true)
                ?? Transformer(model: model, contextLength: nCtx, maxBatch: nCtx, allLogits: true)
        }
        let first = nCtx / 2
        let chunkTokens = chunked(tokens, chunks: chunks, nCtx: nCtx, model: model)
        var nll = 0.0, nll2 = 0.0
        var count = 0
        let start = monotonicSeconds()
        var next = 0
        while next < chunks {
            let round = min(lanes.count, chunks - next)
            let out = RoundLogProbs(count: round)
            let base = next
            DispatchQueue.concurrentPerform(iterations: round) { i in
                do {
                    out.values[i] = try scoredLogProbs(lanes[i], chunk: chunkTokens[base + i], first: first)
                } catch { out.errors.set(error) }
            }
            if let e = out.errors.error { throw e }
            for i in 0..<round {
                for lp in out.values[i] {
                    nll -= lp
                    nll2 += lp * lp
                    count += 1
                }
                progress(base + i + 1, chunks)
            }
            next += round
        }
        let seconds = monotonicSeconds() - start
        let meanNLL = nll / Double(count)
        let ppl = Foundation.exp(meanNLL)
        let variance = nll2 / Double(count) - meanNLL * meanNLL
        let se = variance > 0 && count > 1 ? (variance / Double(count - 1)).squareRoot() * ppl : 0
        return PerplexityResult(nCtx: nCtx, chunks: chunks, tokensScored: count, ppl: ppl, pplSE: se,
                                seconds: seconds, tokensPerSecond: Double(chunks * nCtx) / seconds)
    }

    /// The log-probability of every scored next token of one chunk, in position order.
    private static func scoredLogProbs(_ t: Transformer, chunk: [Int], first: Int) throws -> [Double] {
        let vocab = t.config.vocabSize
        t.reset()
        // The head runs on the scored half only: logits row j - first is position j.
        let logits = try t.forward(chunk, logits: .from(first))
        return (first..<(chunk.count - 1)).map { j in
            let row = UnsafeBufferPointer(rebasing: logits[((j - first) * vocab)..<((j - first + 1) * vocab)])
            return Double(row[chunk[j + 1]]) - LogSoftmax.logSumExp(row)
        }
    }
}

/// One round's per-chunk results, each slot written by its own core.
private final class RoundLogProbs: @unchecked Sendable {
    let count: Int
    let values: UnsafeMutablePointer<[Double]>
    let errors = ErrorBox()
    init(count: Int) {
        self.count = count
        values = .allocate(capacity: count)
        values.initialize(repeating: [], count: count)
    }
    deinit {
        values.deinitialize(count: count)
        values.deallocate()
    }
}
