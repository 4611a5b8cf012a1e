import Dispatch
import Foundation

public enum KLDMode {
    /// The header a kld reference trace carries: the model, the text, the runtime and the chunking.
    public static func traceHeader(modelSHA256: String, textSHA256: String, runtime: String, vocabSize: Int,
                                   nCtx: Int) -> ReferenceTraceHeader {
        ReferenceTraceHeader(modelSHA256: modelSHA256, workloadSHA256: textSHA256, runtime: runtime, vocabSize: vocabSize,
                             settings: ["mode": "kld", "n_ctx": String(nCtx), "scored": "second half of each chunk"])
    }

    /// Runs the FP32 reference and `candidate` over `tokens` in chunks of `nCtx` (a trailing
    /// partial chunk dropped; first token BOS when the model adds BOS) and compares the second
    /// half of every chunk. Two chunks run at a time, one per core, each through its own
    /// transformers; results are summed in chunk order, so they do not depend on the scheduling.
    /// With `.load` the reference's log-probs come from a trace and only the candidate runs;
    /// with `.save` they are also written to the trace (the comparison still uses the live logits).
    public static func run(model: Model, candidate: SchemeRuntime, tokens: [Int], nCtx: Int,
                           reference: KLDReference = .live,
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> KLDResult {
        let chunks = try Perplexity.chunkCount(tokens: tokens.count, nCtx: nCtx, model: model)
        let vocab = model.config.vocabSize
        let first = nCtx / 2
        let rows = nCtx - 1 - first
        var chunkTokens = Perplexity.chunked(tokens, chunks: chunks, nCtx: nCtx, model: model)
        var loaded: ReferenceTraceReader?
        if case .load(let reader) = reference {
            try checkTrace(reader, chunks: chunkTokens, first: first, rows: rows, vocab: vocab)
            loaded = reader
        }
        let trace = loaded
        // The lanes are the parallelism: BLAS runs one thread in each, so the result does not
        // depend on a thread setting (OpenBLAS's threaded products round differently, and with
        // integer activations a rounding difference flips codes: q8_0 moved 1.8% on a short text).
        BLAS.setThreads(1)
        let laneCount = min(2, chunks)
        let lanes = try (0..<laneCount).map { _ in
            try KLDLane(model: model, candidate: candidate, nCtx: nCtx, rows: rows,
                        runsReference: trace == nil, keepsLogProbs: trace != nil || reference.saves)
        }
        var klds: [Double] = [], dps: [Double] = []
        klds.reserveCapacity(chunks * rows)
        dps.reserveCapacity(chunks * rows)
        var sumNLL = 0.0, sumNLL2 = 0.0, sumBase = 0.0, sumBase2 = 0.0, sumKLD = 0.0, sumKLD2 = 0.0
        var sumDp = 0.0, sumDp2 = 0.0, sumTV = 0.0
        var sameTop = 0
        var writeSeconds = 0.0
        let start = monotonicSeconds()
        var next = 0
        while next < chunks {
            let round = min(laneCount, chunks - next)
            let base = next
            let input = chunkTokens
            if round == 1 {
                lanes[0].process(chunk: base, tokens: input[base], first: first, trace: trace, split: true)
            } else {
                DispatchQueue.concurrentPerform(iterations: round) { i in
                    lanes[i].process(chunk: base + i, tokens: input[base + i], first: first, trace: trace)
                }
            }
            for i in 0..<round {
                let lane = lanes[i], c = base + i
                if let e = lane.error { throw e }
                if case .save(let writer) = reference {
                    let t = monotonicSeconds()
                    try lane.logProbs.withUnsafeBufferPointer {
                        try writer.append(id: "chunk \(c)", tokens: input[c], firstScored: first, logProbs: $0)
                    }
                    writeSeconds += monotonicSeconds() - t
                }
                for d in lane.results {
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
            next += round
        }
        chunkTokens.removeAll()
        let seconds = monotonicSeconds() - start
        let n = klds.count
        let (lp, lpSE) = LlamaCppStatistics.meanAndUncertainty(sumNLL, sumNLL2, n)
        let (lb, lbSE) = LlamaCppStatistics.meanAndUncertainty(sumBase, sumBase2, n)
        let (mk, mkSE) = LlamaCppStatistics.meanAndUncertainty(sumKLD, sumKLD2, n)
        let sorted = klds.sorted()
        let median = n % 2 == 0 ? 0.5 * (sorted[n / 2] + sorted[n / 2 - 1]) : sorted[n / 2]
        let same = Double(sameTop) / Double(n)
        return KLDResult(
            nCtx: nCtx, chunks: chunks, tokensScored: n,
            pplBase: exp(lb), pplBaseSE: exp(lb) * lbSE, ppl: exp(lp), pplSE: exp(lp) * lpSE,
            meanKLD: mk, meanKLDSE: mkSE, maxKLD: sorted.last!, minKLD: sorted.first!,
            kldPercentiles: LlamaCppStatistics.percentileKeys.map { ($0.0, $0.0 == "50" ? median : LlamaCppStatistics.percentile(sorted, $0.1)) },
            sameTopP: same, sameTopPSE: n > 1 ? (same * (1 - same) / Double(n - 1)).squareRoot() : 0,
            meanDp: sumDp / Double(n), rmsDp: (sumDp2 / Double(n)).squareRoot(), meanTV: sumTV / Double(n),
            seconds: seconds, tokensPerSecond: Double(chunks * nCtx) / seconds,
            phaseSeconds: KLDLane.phaseNames.indices.map { p in (KLDLane.phaseNames[p], lanes.reduce(0) { $0 + $1.seconds[p] }) }
                + [("trace_write", writeSeconds)])
    }

    /// A trace must hold exactly this run's chunks, tokens and scored rows.
    static func checkTrace(_ reader: ReferenceTraceReader, chunks: [[Int]], first: Int, rows: Int, vocab: Int) throws {
        let name = reader.url.path
        guard reader.vocabSize == vocab else {
            throw QuantDriftError.invalidInput("reference trace \(name): vocabulary of \(reader.vocabSize), the model has \(vocab)")
        }
        guard reader.count == chunks.count else {
            throw QuantDriftError.invalidInput("reference trace \(name): \(reader.count) chunks, this run has \(chunks.count)")
        }
        for (c, chunk) in chunks.enumerated() {
            guard reader.firstScored(at: c) == first, reader.rows(at: c) == rows, reader.tokens(at: c) == chunk else {
                throw QuantDriftError.invalidInput("reference trace \(name): record \(c) (\(reader.id(at: c))) does not hold this run's chunk \(c)")
            }
        }
    }
}

/// Where the FP32 reference's side of a kld run comes from.
public enum KLDReference {
    /// Run the FP32 model.
    case live
    /// Run the FP32 model and store its scored log-probs.
    case save(ReferenceTraceWriter)
    /// Read the reference's log-probs from a trace; only the candidate runs.
    case load(ReferenceTraceReader)

    var saves: Bool { if case .save = self { return true } else { return false } }
}
