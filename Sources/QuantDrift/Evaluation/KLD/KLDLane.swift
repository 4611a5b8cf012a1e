import Dispatch
import Foundation

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
