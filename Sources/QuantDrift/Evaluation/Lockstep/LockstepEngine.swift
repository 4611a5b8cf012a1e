import Dispatch
import Foundation

/// Runs the FP32 reference and candidates in lockstep over a workload (DESIGN §4).
public final class LockstepEngine: @unchecked Sendable {
    public let model: Model
    public let options: TrackerOptions
    public let calibration: CalibrationSet?
    let vocab: Int
    let uniforms: SharedUniforms
    /// Polled between work items and decode steps: true stops the run with `.interrupted`.
    public var shouldStop: @Sendable () -> Bool = { false }

    public init(model: Model, options: TrackerOptions, calibration: CalibrationSet? = nil) throws {
        guard options.threads >= 1 else { throw QuantDriftError.invalidInput("--threads must be ≥ 1") }
        guard options.chunk >= 1 else { throw QuantDriftError.invalidInput("chunk must be ≥ 1") }
        try options.sampling.validate()
        self.model = model
        self.options = options
        self.calibration = calibration
        vocab = model.config.vocabSize
        uniforms = SharedUniforms(seed: options.sampling.seed)
    }

    /// Token ids of a workload prompt: BOS when the model adds it, the chat template when asked.
    public static func promptTokens(_ p: WorkloadPrompt, tokenizer: Tokenizer) throws -> [Int] {
        var ids: [Int] = []
        if tokenizer.spec.addBOS, let bos = tokenizer.spec.bosID { ids.append(bos) }
        ids += p.chat ? tokenizer.encode(tokenizer.chatPrompt(user: p.prompt), parseSpecial: true) : tokenizer.encode(p.prompt)
        guard !ids.isEmpty else { throw QuantDriftError.invalidInput("prompt '\(p.id)' has no tokens") }
        return ids
    }

    /// Positions the transformers must hold for this workload; throws when a prompt does not fit.
    public func contextLength(for workload: Workload) throws -> Int {
        var need = 1
        for p in workload.prompts {
            let n = options.maxTokens(for: p)
            let l = try Self.promptTokens(p, tokenizer: model.tokenizer).count
            guard l + n <= model.config.contextLength else {
                throw QuantDriftError.invalidInput("\(workload.file): prompt '\(p.id)' (\(l) tokens) + \(n) new tokens exceed the model's context length \(model.config.contextLength)")
            }
            need = max(need, l + n)
        }
        return need
    }

    // MARK: - Parallel work

    /// Runs `count` work items on `options.threads` workers (each with its own state from
    /// `makeState`), items taken in order; the first error stops the rest.
    func parallel<State>(_ count: Int, makeState: @Sendable () throws -> State,
                         _ body: @Sendable (inout State, Int) throws -> Void) throws {
        let workers = max(1, min(options.threads, count))
        let queue = WorkQueue(count: count)
        let errors = ErrorBox()
        BLAS.setThreads(1)  // the workers are the parallelism; results do not depend on their number
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            do {
                var state = try makeState()
                while errors.error == nil, let i = queue.take() {
                    try checkStop()
                    try body(&state, i)
                }
            } catch {
                errors.set(error)
            }
        }
        if let e = errors.error { throw e }
    }

    func checkStop() throws {
        if shouldStop() { throw QuantDriftError.interrupted("interrupted") }
    }

    // MARK: - Reference

    /// Consecutive prompt ranges whose reference logits fit `options.referenceBudgetBytes`
    /// (each at least one prompt per worker): the FP32 run, the comparisons and the release of
    /// the logits go batch by batch.
    public func referenceBatches(_ workload: Workload) -> [Range<Int>] {
        let n = workload.prompts.count
        guard n > 0 else { return [] }
        let longest = workload.prompts.map { options.maxTokens(for: $0) }.max() ?? 1
        let perPrompt = max(1, longest) * vocab * MemoryLayout<Float>.size * (options.sampling.isGreedy ? 1 : 2)
        let size = max(options.threads, options.referenceBudgetBytes / perPrompt, 1)
        return stride(from: 0, to: n, by: size).map { $0..<min(n, $0 + size) }
    }

    /// Runs the FP32 reference on the prompts `range` (all by default).
    public func referenceRuns(_ workload: Workload, prompts range: Range<Int>? = nil, contextLength: Int,
                              progress: @Sendable (String) -> Void = { _ in }) throws -> [ReferenceRun] {
        let range = range ?? 0..<workload.prompts.count
        let box = ResultBox<ReferenceRun>(count: range.count)
        try parallel(range.count, makeState: {
            try Transformer(model: model, contextLength: contextLength, maxBatch: options.chunk, allLogits: true)
        }) { reference, j in
            let i = range.lowerBound + j
            let run = try self.reference(workload.prompts[i], index: i, transformer: reference)
            box.set(j, run)
            progress(workload.prompts[i].id)
        }
        return box.values()
    }

    func reference(_ p: WorkloadPrompt, index: Int, transformer r: Transformer) throws -> ReferenceRun {
        let prompt = try Self.promptTokens(p, tokenizer: model.tokenizer)
        let n = options.maxTokens(for: p)
        let sampling = options.sampling
        let distribution = sampling.isGreedy ? nil : SamplingDistribution(sampling, vocab: vocab)
        var probs = [Double](repeating: 0, count: sampling.isGreedy ? 0 : vocab)
        var decodeLogits: [Float] = []
        var continuation: [Int] = []
        r.reset()
        var logits = try r.forward(prompt, logits: .last)
        for t in 0..<n {
            let token: Int
            if let distribution {
                decodeLogits.append(contentsOf: logits)
                probs.withUnsafeMutableBufferPointer { distribution.compute(logits, into: $0) }
                token = probs.withUnsafeBufferPointer {
                    SamplingDistribution.draw($0, uniforms.uniform(prompt: index, step: t, draw: 0))
                }
            } else {
                token = Sampler.argmax(logits)
            }
            continuation.append(token)
            if options.stopAtEndOfGeneration && model.tokenizer.isEndOfGeneration(token) { break }
            if t == n - 1 { break }
            try checkStop()
            logits = try r.forward(CollectionOfOne(token), logits: .last)
        }
        var rows = [Float](repeating: 0, count: continuation.count * vocab)
        try rows.withUnsafeMutableBufferPointer { out in
            try teacherForced(r, prompt: prompt, continuation: continuation) { t, row in
                out.baseAddress!.advanced(by: t * vocab).update(from: row.baseAddress!, count: vocab)
            }
        }
        return ReferenceRun(id: p.id, promptTokens: prompt, continuation: continuation, maxTokens: n, teacherRows: rows,
                            decodeLogits: distribution == nil ? nil : decodeLogits)
    }

    /// Batched forward over prompt + continuation (all but its last token): calls `row(t, logits)`
    /// with the logits that predict continuation[t].
    func teacherForced(_ m: Transformer, prompt: [Int], continuation: [Int],
                       _ row: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws {
        m.reset()
        if prompt.count > 1 { try m.forward(prompt.dropLast(), logits: .none) }
        let inputs = [prompt.last!] + continuation.dropLast()
        var start = 0
        while start < inputs.count {
            let end = min(start + m.maxBatch, inputs.count)
            let logits = try m.forward(inputs[start..<end], logits: .all)
            for j in 0..<(end - start) {
                try row(start + j, UnsafeBufferPointer(rebasing: logits[(j * vocab)..<((j + 1) * vocab)]))
            }
            start = end
        }
    }

    // MARK: - Candidates

    /// Runs every candidate on every prompt; results[candidate][prompt].
    /// With a checkpoint, results kept there are reused and every new one is saved as it finishes.
    /// The whole workload, batch by batch (`referenceBatches`): the reference runs (live, or
    /// read from `traceReader`; appended to `traceWriter` when given), every candidate's
    /// comparisons, then the batch's logits released, so memory stays within the budget
    /// whatever the workload's size. Returns the references (tokens and own-text NLL only), the
    /// results per candidate and prompt, and the seconds spent on the reference.
    public func runWorkload(_ workload: Workload, candidates: [TrackerCandidate], contextLength: Int,
                            traceReader: ReferenceTraceReader? = nil, traceWriter: ReferenceTraceWriter? = nil,
                            checkpoint: TrackerCheckpoint? = nil,
                            referenceProgress: @Sendable (String) -> Void = { _ in },
                            progress: @Sendable (String) -> Void = { _ in }) throws
        -> (references: [ReferenceRun], results: [[PromptResult]], referenceSeconds: Double) {
        var references: [ReferenceRun] = []
        var results = [[PromptResult]](repeating: [], count: candidates.count)
        var referenceSeconds = 0.0
        for batch in referenceBatches(workload) {
            let t0 = monotonicSeconds()
            var refs: [ReferenceRun]
            if let traceReader {
                refs = try load(traceReader, workload: workload, prompts: batch)
                for r in refs { referenceProgress(r.id) }
            } else {
                refs = try referenceRuns(workload, prompts: batch, contextLength: contextLength, progress: referenceProgress)
            }
            if let traceWriter { try append(refs, to: traceWriter) }
            referenceSeconds += monotonicSeconds() - t0
            let batchResults = try run(candidates, references: refs, firstPrompt: batch.lowerBound, contextLength: contextLength,
                                       checkpoint: checkpoint, progress: progress)
            for c in candidates.indices { results[c] += batchResults[c] }
            for i in refs.indices { refs[i].releaseRows() }
            references += refs
        }
        try traceWriter?.finish()
        return (references, results, referenceSeconds)
    }

    /// Compares every candidate with the reference runs of prompts `firstPrompt…` (a batch of
    /// the workload: prompt indices, checkpoints and random streams use the workload's numbering).
    public func run(_ candidates: [TrackerCandidate], references: [ReferenceRun], firstPrompt: Int = 0, contextLength: Int,
                    checkpoint: TrackerCheckpoint? = nil,
                    progress: @Sendable (String) -> Void = { _ in }) throws -> [[PromptResult]] {
        let jobs = candidates.count * references.count
        let box = ResultBox<PromptResult>(count: jobs)
        // Workers keep the transformer of the candidate they ran last (jobs are ordered by
        // candidate, so a worker usually stays on one), and one reference to score free text.
        struct WorkerState {
            var candidate = -1
            var transformer: Transformer?
            var reference: Transformer?
        }
        try parallel(jobs, makeState: { WorkerState() }) { state, job in
            let c = job / references.count, p = job % references.count
            let cand = candidates[c]
            let index = firstPrompt + p
            if let kept = checkpoint?.load(cand, prompt: index), kept.promptIndex == index {
                box.set(job, kept)
                progress("\(cand.name) · \(references[p].id) (kept)")
                return
            }
            if state.candidate != c {
                state.transformer = nil
                let runtime = try cand.runtime ?? SchemeRuntime(model: model, scheme: cand.scheme, calibration: calibration)
                state.transformer = try runtime.transformer(model: model, contextLength: contextLength,
                                                            maxBatch: options.chunk, allLogits: true)
                state.candidate = c
            }
            let free = options.mode.freeRunning && cand.role == .main
            if free && state.reference == nil {
                state.reference = try Transformer(model: model, contextLength: contextLength, maxBatch: options.chunk, allLogits: true)
            }
            let result = try self.compare(state.transformer!, references[p], promptIndex: index,
                                          teacher: options.mode.teacherForced || cand.role != .main,
                                          free: free, scorer: state.reference)
            try checkpoint?.save(result, cand, prompt: index)
            box.set(job, result)
            progress("\(cand.name) · \(references[p].id)")
        }
        let flat = box.values()
        return (0..<candidates.count).map { Array(flat[($0 * references.count)..<(($0 + 1) * references.count)]) }
    }

    func compare(_ m: Transformer, _ ref: ReferenceRun, promptIndex: Int, teacher: Bool, free: Bool,
                 scorer: Transformer?) throws -> PromptResult {
        var result = PromptResult(promptIndex: promptIndex)
        let sampling = options.sampling
        let distP = sampling.isGreedy ? nil : SamplingDistribution(sampling, vocab: vocab)
        let distQ = sampling.isGreedy ? nil : SamplingDistribution(sampling, vocab: vocab)
        var p = [Double](repeating: 0, count: sampling.isGreedy ? 0 : vocab)
        var q = p
        let t0 = monotonicSeconds()
        let scratch = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * vocab)
        defer { scratch.deallocate() }
        if teacher {
            result.positions.reserveCapacity(ref.continuation.count)
            try ref.teacherRows.withUnsafeBufferPointer { refRows in
                try teacherForced(m, prompt: ref.promptTokens, continuation: ref.continuation) { t, row in
                    let r = UnsafeBufferPointer(rebasing: refRows[(t * vocab)..<((t + 1) * vocab)])
                    let d = TokenDivergence.compare(reference: r, candidate: row, target: ref.continuation[t], scratch: scratch)
                    result.positions.append(d)
                    if let distP, let distQ {
                        p.withUnsafeMutableBufferPointer { distP.compute(r, into: $0) }
                        q.withUnsafeMutableBufferPointer { distQ.compute(row, into: $0) }
                        result.samplingTV.append(p.withUnsafeBufferPointer { pp in
                            q.withUnsafeBufferPointer { SamplingDistribution.totalVariation(pp, $0) } })
                    } else {
                        result.samplingTV.append(d.sameTop ? 0 : 1)
                    }
                }
            }
        }
        let t1 = monotonicSeconds()
        result.teacherSeconds = t1 - t0
        if free {
            try freeRun(m, ref, promptIndex: promptIndex, result: &result, p: &p, q: &q, distP: distP, distQ: distQ)
            if let first = result.firstDivergence, let scorer, let tokens = result.freeTokens {
                // The reference's NLL of the candidate's own text.
                var sum = 0.0
                try teacherForced(scorer, prompt: ref.promptTokens, continuation: tokens) { t, row in
                    sum += LogSoftmax.logSumExp(row) - Double(row[tokens[t]])
                }
                result.candidateTextNLL = sum / Double(tokens.count)
                result.reconverged = reconverges(tokens, ref.continuation, after: first)
            } else if result.firstDivergence == nil {
                result.candidateTextNLL = ref.textNLL()
                result.reconverged = false
            }
            result.freeSeconds = monotonicSeconds() - t1
        }
        return result
    }

    func freeRun(_ m: Transformer, _ ref: ReferenceRun, promptIndex: Int, result: inout PromptResult,
                 p: inout [Double], q: inout [Double], distP: SamplingDistribution?, distQ: SamplingDistribution?) throws {
        let n = ref.maxTokens
        var tokens: [Int] = []
        tokens.reserveCapacity(n)
        var identical = true
        m.reset()
        var logits = try m.forward(ref.promptTokens, logits: .last)
        for t in 0..<n {
            let token: Int
            if let distP, let distQ {
                q.withUnsafeMutableBufferPointer { distQ.compute(logits, into: $0) }
                if identical && t < ref.continuation.count {
                    let rows = ref.decodeLogits ?? ref.teacherRows
                    rows.withUnsafeBufferPointer { r in
                        p.withUnsafeMutableBufferPointer {
                            distP.compute(UnsafeBufferPointer(rebasing: r[(t * vocab)..<((t + 1) * vocab)]), into: $0)
                        }
                    }
                    token = p.withUnsafeBufferPointer { pp in
                        q.withUnsafeBufferPointer {
                            SamplingDistribution.coupled(reference: ref.continuation[t], p: pp, q: $0,
                                                         u: uniforms.uniform(prompt: promptIndex, step: t, draw: 1),
                                                         v: uniforms.uniform(prompt: promptIndex, step: t, draw: 2))
                        }
                    }
                } else {
                    token = q.withUnsafeBufferPointer {
                        SamplingDistribution.draw($0, uniforms.uniform(prompt: promptIndex, step: t, draw: 0))
                    }
                }
            } else {
                token = Sampler.argmax(logits)
            }
            tokens.append(token)
            if let cache = m.cache as? QuantizedKVCache, (t + 1) % Self.kvSnapshotEvery == 0 {
                recordKVError(cache, count: m.position, into: &result)
            }
            if identical && (t >= ref.continuation.count || token != ref.continuation[t]) {
                identical = false
                result.firstDivergence = t
            }
            if options.stopAtEndOfGeneration && model.tokenizer.isEndOfGeneration(token) { break }
            if t == n - 1 { break }
            try checkStop()
            logits = try m.forward(CollectionOfOne(token), logits: .last)
        }
        if let cache = m.cache as? QuantizedKVCache, tokens.count % Self.kvSnapshotEvery != 0 {
            recordKVError(cache, count: m.position, into: &result)
        }
        if identical && tokens.count != ref.continuation.count { result.firstDivergence = tokens.count }
        result.freeTokens = tokens
    }

    /// Free-running steps between two snapshots of the KV cache's error by age.
    static let kvSnapshotEvery = 16

    /// Adds the cache's per-entry reconstruction error, binned by age (log-spaced bins of
    /// age + 1), at the current step.
    func recordKVError(_ cache: QuantizedKVCache, count: Int, into result: inout PromptResult) {
        let bins = PositionBins.logSpaced(upTo: cache.contextLength)
        if result.kvErrorByAge == nil { result.kvErrorByAge = Array(repeating: (0, 0), count: bins.ranges.count) }
        for (pos, e) in cache.relativeErrors(count: count).enumerated() {
            guard let b = bins.index(of: count - pos) else { continue }
            result.kvErrorByAge![b].sum += e
            result.kvErrorByAge![b].count += 1
        }
    }
}
