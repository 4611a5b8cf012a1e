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
    /// Seconds spent in each phase, summed over the two lanes ("reference_forward",
    /// "candidate_forward", "trace_read", "log_softmax", "compare", "trace_write"), to show where the time goes.
    public var phaseSeconds: [(String, Double)] = []
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

/// One core's share of a kld run: its own transformers and buffers, reused for every chunk it
/// takes, so the hot loop allocates nothing. A lane alone in its round (the last of an odd number
/// of chunks) splits its chunk over both cores instead: the FP32 reference beside the candidate
/// (or, with a trace, the candidate's forward itself on both cores), then half of the comparisons each.
final class KLDLane: @unchecked Sendable {
    let reference: Transformer?
    let candidate: Transformer
    let vocab: Int
    let nCtx: Int
    let rows: Int
    /// (rows, vocab) reference log-probs of the scored positions: read from a trace, or kept for one.
    var logProbs: [Float]
    /// Two scratches of 2 × vocab doubles for TokenDivergence.compare, one per core.
    private let scratch: UnsafeMutableBufferPointer<Double>
    /// One divergence per scored position of the last chunk.
    private let output: UnsafeMutableBufferPointer<TokenDivergence>
    var results: UnsafeBufferPointer<TokenDivergence> { UnsafeBufferPointer(output) }
    var error: Error?
    /// Seconds per phase: reference forward, candidate forward, trace read, log-softmax, compare
    /// (for a split chunk, each core's time is counted).
    var seconds = [Double](repeating: 0, count: 5)
    static let phaseNames = ["reference_forward", "candidate_forward", "trace_read", "log_softmax", "compare"]

    init(model: Model, candidate runtime: SchemeRuntime, nCtx: Int, rows: Int, runsReference: Bool, keepsLogProbs: Bool) throws {
        reference = runsReference ? try Transformer(model: model, contextLength: nCtx, maxBatch: nCtx, allLogits: true) : nil
        candidate = try runtime.transformer(model: model, contextLength: nCtx, maxBatch: nCtx, allLogits: true)
        vocab = model.config.vocabSize
        self.nCtx = nCtx
        self.rows = rows
        logProbs = keepsLogProbs ? [Float](repeating: 0, count: rows * vocab) : []
        scratch = .allocate(capacity: 4 * vocab)
        scratch.initialize(repeating: 0)
        output = .allocate(capacity: rows)
        output.initialize(repeating: TokenDivergence(kld: 0, reverseKLD: 0, tv: 0, sameTop: false, dp: 0, nllReference: 0,
                                                     nllCandidate: 0, entropyReference: 0, entropyCandidate: 0))
    }

    deinit {
        scratch.deallocate()
        output.deallocate()
    }

    /// Runs chunk `c`; `split` spreads it over both cores.
    func process(chunk c: Int, tokens chunk: [Int], first: Int, trace: ReferenceTraceReader?, split: Bool = false) {
        error = nil
        // Phase 1: the reference side (trace or FP32 forward) and the candidate's forward.
        let taskSeconds = SecondsPair()
        let errors = ErrorBox()
        if split && trace == nil {
            DispatchQueue.concurrentPerform(iterations: 2) { task in
                self.produce(task: task, chunk: c, tokens: chunk, trace: trace, seconds: taskSeconds, errors: errors)
            }
        } else if split {
            // Reading a trace takes a fraction of the candidate's forward: read it first, then give
            // the candidate both cores (the same values as on one).
            produce(task: 0, chunk: c, tokens: chunk, trace: trace, seconds: taskSeconds, errors: errors)
            candidate.cores = 2
            produce(task: 1, chunk: c, tokens: chunk, trace: trace, seconds: taskSeconds, errors: errors)
            candidate.cores = 1
        } else {
            produce(task: 0, chunk: c, tokens: chunk, trace: trace, seconds: taskSeconds, errors: errors)
            produce(task: 1, chunk: c, tokens: chunk, trace: trace, seconds: taskSeconds, errors: errors)
        }
        seconds[trace == nil ? 0 : 2] += taskSeconds.values[0]
        seconds[1] += taskSeconds.values[1]
        if let e = errors.error {
            error = e
            return
        }
        // Phase 2: log-softmax for a trace being saved, then the comparisons.
        let vocab = self.vocab, rows = self.rows
        // Both forwards ran the head on rows first ..< nCtx only: row r of the logits is position first + r.
        let q = candidate.allLogits(rows: nCtx - first)
        var t = monotonicSeconds()
        if let reference {
            let p = reference.allLogits(rows: nCtx - first)
            let scored = UnsafeBufferPointer(rebasing: p[0..<(rows * vocab)])
            if !logProbs.isEmpty {
                Self.logSoftmax(scored, vocab: vocab, into: &logProbs)
                seconds[3] += monotonicSeconds() - t
                t = monotonicSeconds()
            }
            compare(reference: scored, candidate: q, chunk: chunk, first: first, split: split)
        } else {
            let lp = logProbs
            lp.withUnsafeBufferPointer { compare(reference: $0, candidate: q, chunk: chunk, first: first, split: split) }
        }
        seconds[4] += (monotonicSeconds() - t) * (split ? 2 : 1)
    }

    /// Task 0 fills the reference side (trace read or FP32 forward), task 1 runs the candidate.
    private func produce(task: Int, chunk c: Int, tokens chunk: [Int], trace: ReferenceTraceReader?,
                         seconds: SecondsPair, errors: ErrorBox) {
        let t = monotonicSeconds()
        do {
            if task == 0 {
                if let trace {
                    try logProbs.withUnsafeMutableBufferPointer { try trace.readLogProbs(at: c, into: $0) }
                } else if let reference {
                    reference.reset()
                    try reference.forward(chunk, logits: .from(nCtx - 1 - rows))
                }
            } else {
                candidate.reset()
                try candidate.forward(chunk, logits: .from(nCtx - 1 - rows))
            }
        } catch { errors.set(error) }
        seconds.values[task] = monotonicSeconds() - t
    }

    /// Compares the scored rows: `reference` holds rows first ..< first+rows, `candidate` rows first ..< nCtx.
    /// Split, each core takes half of the rows with its own scratch; every row's result is the same.
    private func compare(reference: UnsafeBufferPointer<Float>, candidate q: UnsafeBufferPointer<Float>, chunk: [Int],
                         first: Int, split: Bool) {
        let rows = self.rows
        guard split else { return compareRows(0..<rows, reference: reference, candidate: q, chunk: chunk, first: first, core: 0) }
        let half = (rows + 1) / 2
        let shared = SharedRows(reference: reference, candidate: q)
        DispatchQueue.concurrentPerform(iterations: 2) { k in
            self.compareRows(k == 0 ? 0..<half : half..<rows, reference: shared.reference, candidate: shared.candidate,
                             chunk: chunk, first: first, core: k)
        }
    }

    private func compareRows(_ range: Range<Int>, reference: UnsafeBufferPointer<Float>, candidate q: UnsafeBufferPointer<Float>,
                             chunk: [Int], first: Int, core: Int) {
        let vocab = self.vocab
        let s = UnsafeMutableBufferPointer(rebasing: scratch[(core * 2 * vocab)..<((core + 1) * 2 * vocab)])
        for r in range {
            let j = first + r
            output[r] = TokenDivergence.compare(
                reference: UnsafeBufferPointer(rebasing: reference[(r * vocab)..<((r + 1) * vocab)]),
                candidate: UnsafeBufferPointer(rebasing: q[(r * vocab)..<((r + 1) * vocab)]),
                target: chunk[j + 1], scratch: s)
        }
    }

    /// Row-wise log-softmax of logits (rows, vocab) into float32 log-probs.
    static func logSoftmax(_ logits: UnsafeBufferPointer<Float>, vocab: Int, into out: inout [Float]) {
        out.withUnsafeMutableBufferPointer { o in
            for r in 0..<(logits.count / vocab) {
                let row = UnsafeBufferPointer(rebasing: logits[(r * vocab)..<((r + 1) * vocab)])
                let lse = LogSoftmax.logSumExp(row)
                for i in 0..<vocab { o[r * vocab + i] = Float(Double(row[i]) - lse) }
            }
        }
    }
}

/// Logit rows read by both cores of a split chunk (each core writes only its own results).
struct SharedRows: @unchecked Sendable {
    let reference: UnsafeBufferPointer<Float>
    let candidate: UnsafeBufferPointer<Float>
}

/// The durations of the two tasks of a split chunk, each written by its own core.
final class SecondsPair: @unchecked Sendable {
    let values = UnsafeMutablePointer<Double>.allocate(capacity: 2)
    init() { values.initialize(repeating: 0, count: 2) }
    deinit { values.deallocate() }
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
