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
        guard (1...256).contains(options.decodeBatch) else {
            throw QuantDriftError.invalidInput("--batch must be in 1…256 (got \(options.decodeBatch))")
        }
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

    /// Consecutive prompt ranges whose reference logits fit `options.referenceBudgetBytes`, but
    /// each at least one prompt per worker and one decode group (`decodeBatch` prompts: a smaller
    /// batch would starve the batched decode of sequences) as long as the group's logits fit
    /// `decodeGroupBudgetBytes`: the FP32 run, the comparisons and the release of the logits go
    /// batch by batch.
    public func referenceBatches(_ workload: Workload) -> [Range<Int>] {
        let n = workload.prompts.count
        guard n > 0 else { return [] }
        let longest = workload.prompts.map { options.maxTokens(for: $0) }.max() ?? 1
        let perPrompt = max(1, longest) * vocab * MemoryLayout<Float>.size * (options.sampling.isGreedy ? 1 : 2)
        let group = min(options.decodeBatch, Self.decodeGroupBudgetBytes / perPrompt)
        let size = max(options.threads, group, options.referenceBudgetBytes / perPrompt, 1)
        return stride(from: 0, to: n, by: size).map { $0..<min(n, $0 + size) }
    }

    /// The most reference logits a batch may hold to keep a whole decode group together.
    static let decodeGroupBudgetBytes = 8 << 30

    /// Consecutive groups of at most `options.decodeBatch` of `count` prompts: the sequences one
    /// transformer decodes together.
    func decodeGroups(_ count: Int) -> [Range<Int>] {
        stride(from: 0, to: count, by: options.decodeBatch).map { $0..<min(count, $0 + options.decodeBatch) }
    }

    /// Cores each worker's transformer may use: 2 when there are fewer work items than threads
    /// (a lone group would leave a core idle). Results do not depend on it.
    func coresPerWorker(items: Int) -> Int { options.threads >= 2 && items < options.threads ? 2 : 1 }

    /// Runs the FP32 reference on the prompts `range` (all by default): each group of
    /// `options.decodeBatch` prompts decoded together, then every prompt's teacher-forced rows, a
    /// prompt per worker (a lone decode group would leave the other core idle through them; the
    /// rows do not depend on which worker or transformer computes them).
    public func referenceRuns(_ workload: Workload, prompts range: Range<Int>? = nil, contextLength: Int,
                              progress: @Sendable (String) -> Void = { _ in }) throws -> [ReferenceRun] {
        let range = range ?? 0..<workload.prompts.count
        let ps = range.map { workload.prompts[$0] }
        let prompts = try ps.map { try Self.promptTokens($0, tokenizer: model.tokenizer) }
        let decoded = ResultBox<Decoded>(count: range.count)
        let groups = decodeGroups(range.count)
        let sequences = groups.map(\.count).max() ?? 1
        let cores = coresPerWorker(items: groups.count)
        try parallel(groups.count, makeState: {
            let t = try Transformer(model: model, contextLength: contextLength, maxBatch: options.chunk, allLogits: true,
                                    sequences: sequences)
            t.cores = cores
            return t
        }) { reference, g in
            let runs = try self.decodeReference(groups[g].map { ps[$0] }, prompts: groups[g].map { prompts[$0] },
                                                indices: groups[g].map { range.lowerBound + $0 }, transformer: reference)
            for (j, run) in runs.enumerated() { decoded.set(groups[g].lowerBound + j, run) }
        }
        let continuations = decoded.values()
        let runs = ResultBox<ReferenceRun>(count: range.count)
        let teacherCores = coresPerWorker(items: range.count)
        try parallel(range.count, makeState: {
            let t = try Transformer(model: model, contextLength: contextLength, maxBatch: options.chunk, allLogits: true)
            t.cores = teacherCores
            return t
        }) { reference, i in
            let rows = try LogitRows(spillingRowsOf: self.vocab)
            let d = continuations[i]
            try self.teacherForced(reference, prompt: prompts[i], continuation: d.continuation) { _, row in try rows.append(row) }
            runs.set(i, ReferenceRun(id: ps[i].id, promptTokens: prompts[i], continuation: d.continuation,
                                     maxTokens: self.options.maxTokens(for: ps[i]), rows: rows, decodeRows: d.decodeRows))
            progress(ps[i].id)
        }
        return runs.values()
    }

    /// A reference continuation before its teacher-forced rows.
    struct Decoded: Sendable {
        var continuation: [Int]
        var decodeRows: LogitRows?
    }

    /// The reference's free-running continuations of prompts decoded together (`indices`: their
    /// workload numbers, which pick their random streams), with their decode logits when sampling.
    func decodeReference(_ ps: [WorkloadPrompt], prompts: [[Int]], indices: [Int], transformer r: Transformer) throws -> [Decoded] {
        let limits = ps.map { options.maxTokens(for: $0) }
        let sampling = options.sampling
        let distribution = sampling.isGreedy ? nil : SamplingDistribution(sampling, vocab: vocab)
        var probs = [Double](repeating: 0, count: sampling.isGreedy ? 0 : vocab)
        let decodeLogits = try ps.map { _ in distribution == nil ? nil : try LogitRows(spillingRowsOf: vocab) }
        var continuations = [[Int]](repeating: [], count: ps.count)
        try decodeTogether(r, prompts: prompts) { i, logits in
            let t = continuations[i].count
            let token: Int
            if let distribution {
                try decodeLogits[i]!.append(logits)
                probs.withUnsafeMutableBufferPointer { distribution.compute(logits, into: $0) }
                token = probs.withUnsafeBufferPointer {
                    SamplingDistribution.draw($0, uniforms.uniform(prompt: indices[i], step: t, draw: 0))
                }
            } else {
                token = Sampler.argmax(logits)
            }
            continuations[i].append(token)
            if options.stopAtEndOfGeneration && model.tokenizer.isEndOfGeneration(token) { return nil }
            return t == limits[i] - 1 ? nil : token
        }
        return ps.indices.map { Decoded(continuation: continuations[$0], decodeRows: decodeLogits[$0]) }
    }

    /// Decodes the sequences of `prompts` together, sequence i in slot i of `m`: each prompt is
    /// prefilled on its own, then every unfinished sequence advances one token per `step`.
    /// `next(i, logits)` gets the logits for sequence i's next token and returns the token to feed
    /// (nil: the sequence is finished and leaves the batch).
    func decodeTogether(_ m: Transformer, prompts: [[Int]],
                        _ next: (Int, UnsafeBufferPointer<Float>) throws -> Int?) throws {
        precondition(prompts.count <= m.sequences)
        var pending = [Int?](repeating: nil, count: prompts.count)
        for (i, p) in prompts.enumerated() {
            m.reset(slot: i)
            pending[i] = try next(i, try m.forward(p, logits: .last, slot: i))
        }
        var tokens: [Int] = [], slots: [Int] = []
        tokens.reserveCapacity(prompts.count)
        slots.reserveCapacity(prompts.count)
        while true {
            tokens.removeAll(keepingCapacity: true)
            slots.removeAll(keepingCapacity: true)
            for (i, t) in pending.enumerated() {
                if let t { tokens.append(t); slots.append(i) }
            }
            if slots.isEmpty { return }
            try checkStop()
            let logits = try m.step(tokens, slots: slots)
            for (r, i) in slots.enumerated() {
                pending[i] = try next(i, UnsafeBufferPointer(rebasing: logits[(r * vocab)..<((r + 1) * vocab)]))
            }
        }
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
            try checkStop()  // a long continuation's passes take minutes: stop between chunks
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
        let groups = decodeGroups(references.count)
        let jobs = Self.jobs(candidates, groups: groups.count, mode: options.mode)
        let box = ResultBox<PromptResult>(count: candidates.count * references.count)
        let halves = HalfResults()
        let sequences = groups.map(\.count).max() ?? 1
        let cores = coresPerWorker(items: jobs.count)
        try parallel(jobs.count, makeState: { WorkerState() }) { state, index in
            let job = jobs[index]
            let c = job.candidate, group = groups[job.group]
            let cand = candidates[c]
            /// Results kept from an interrupted run: whole, or of this job's part.
            func keptResults(part: String? = nil) -> [PromptResult]? {
                let r = group.compactMap { p in
                    checkpoint?.load(cand, prompt: firstPrompt + p, part: part).flatMap { $0.promptIndex == firstPrompt + p ? $0 : nil }
                }
                return r.count == group.count ? r : nil
            }
            if let kept = keptResults() {
                guard job.first else { return }  // the candidate's other part reports them
                for (j, p) in group.enumerated() {
                    box.set(c * references.count + p, kept[j])
                    progress("\(cand.name) · \(references[p].id) (kept)")
                }
                return
            }
            // A part of a two-job candidate is saved on its own, so an interrupted run keeps it.
            let part = job.parts == 2 ? (job.free ? "free" : "teacher") : nil
            var results: [PromptResult]
            if let part, let kept = keptResults(part: part) {
                results = kept
            } else {
                results = try self.compareGroup(job, cand, group: group, references: references, firstPrompt: firstPrompt,
                                                sequences: sequences, cores: cores, contextLength: contextLength, state: &state)
                if let part {
                    for (j, p) in group.enumerated() { try checkpoint?.save(results[j], cand, prompt: firstPrompt + p, part: part) }
                }
            }
            // A candidate run in two parts is whole when the second of them finishes.
            if part != nil {
                guard let other = halves.exchange(candidate: c, group: job.group, results) else { return }
                results = job.free ? zip(other, results).map { $0.merged(freeRunning: $1) }
                    : zip(results, other).map { $0.merged(freeRunning: $1) }
            }
            for (j, p) in group.enumerated() {
                try checkpoint?.save(results[j], cand, prompt: firstPrompt + p)
                box.set(c * references.count + p, results[j])
                progress("\(cand.name) · \(references[p].id)")
            }
        }
        let flat = box.values()
        return (0..<candidates.count).map { Array(flat[($0 * references.count)..<(($0 + 1) * references.count)]) }
    }

    /// What a worker keeps between jobs: the transformer it ran last (a candidate's free-running
    /// part decodes a group together, its teacher-forced part uses one slot), and one reference
    /// to score free text.
    struct WorkerState {
        var transformerFor: (candidate: Int, free: Bool)?
        var transformer: Transformer?
        var reference: Transformer?
        /// The candidate's static activation ranges (main candidates), watched during teacher-forced passes.
        var staticRanges: [SiteID: SiteCalibration] = [:]
    }

    /// One job's comparison of candidate `cand` on the prompts `group` of `references`, on the
    /// worker's transformer for it (built when the worker last ran something else).
    func compareGroup(_ job: Job, _ cand: TrackerCandidate, group: Range<Int>, references: [ReferenceRun], firstPrompt: Int,
                      sequences: Int, cores: Int, contextLength: Int, state: inout WorkerState) throws -> [PromptResult] {
        let c = job.candidate
        if state.transformerFor?.candidate != c || state.transformerFor?.free != job.free {
            state.transformer = nil
            let runtime = try cand.runtime ?? SchemeRuntime(model: model, scheme: cand.scheme, calibration: calibration)
            state.staticRanges = cand.role == .main && cand.scheme.activations?.outlierThreshold == nil ? runtime.staticRanges : [:]
            // Only free-running decodes a group together: teacher-forced passes use one slot.
            state.transformer = try runtime.transformer(model: model, contextLength: contextLength,
                                                        maxBatch: options.chunk, allLogits: true,
                                                        sequences: job.free ? sequences : 1)
            state.transformer!.cores = cores
            state.transformer!.rowKernelsOnly = cand.role == .noiseFloor
            state.transformerFor = (c, job.free)
        }
        if job.free && state.reference == nil {
            state.reference = try Transformer(model: model, contextLength: contextLength, maxBatch: options.chunk, allLogits: true)
            state.reference!.cores = cores
        }
        return try compare(state.transformer!, Array(references[group]), firstPromptIndex: firstPrompt + group.lowerBound,
                           free: job.free, scorer: state.reference, staticRanges: state.staticRanges)
    }

    /// A candidate's work on a group of prompts: its free-running comparison, or its
    /// teacher-forced one. A candidate that runs both does them as two jobs (`parts` 2), so two
    /// workers can share a long candidate and the queue ends on short pieces.
    struct Job: Equatable {
        let candidate: Int
        let group: Int
        /// Free-running (else teacher-forced).
        let free: Bool
        /// Jobs the candidate's results on this group come from (1 or 2).
        let parts: Int
        /// The first of them in the queue (the one that reports results kept from a checkpoint):
        /// free-running parts are queued before teacher-forced ones.
        var first: Bool { free || parts == 1 }
    }

    /// The jobs of a run, in the order workers take them: every free-running part first (they are
    /// the longest: a batched decode, then the reference's scoring of the texts), then the
    /// teacher-forced parts, each list in candidate order. Which worker runs what does not change
    /// any result.
    static func jobs(_ candidates: [TrackerCandidate], groups: Int, mode: TrackerMode) -> [Job] {
        var free: [Job] = [], teacher: [Job] = []
        for (c, cand) in candidates.enumerated() {
            let runsFree = mode.freeRunning && (cand.role == .main || cand.role == .noiseFloor)
            let runsTeacher = mode.teacherForced || cand.role != .main
            let parts = (runsFree ? 1 : 0) + (runsTeacher ? 1 : 0)
            for g in 0..<groups {
                if runsFree { free.append(Job(candidate: c, group: g, free: true, parts: parts)) }
                if runsTeacher { teacher.append(Job(candidate: c, group: g, free: false, parts: parts)) }
            }
        }
        return free + teacher
    }

    /// One candidate on a group of prompts: the teacher-forced comparison prompt by prompt, or
    /// (`free`) the free-running continuations decoded together, each scored by the reference.
    func compare(_ m: Transformer, _ refs: [ReferenceRun], firstPromptIndex: Int, free: Bool,
                 scorer: Transformer?, staticRanges: [SiteID: SiteCalibration] = [:]) throws -> [PromptResult] {
        var results = refs.indices.map { PromptResult(promptIndex: firstPromptIndex + $0) }
        let sampling = options.sampling
        let distP = sampling.isGreedy ? nil : SamplingDistribution(sampling, vocab: vocab)
        let distQ = sampling.isGreedy ? nil : SamplingDistribution(sampling, vocab: vocab)
        var p = [Double](repeating: 0, count: sampling.isGreedy ? 0 : vocab)
        var q = p
        let scratch = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * vocab)
        defer { scratch.deallocate() }
        let refRow = UnsafeMutableBufferPointer<Float>.allocate(capacity: vocab)
        defer { refRow.deallocate() }
        if !free {
            // Static ranges: clipping by position, watched along the teacher-forced pass.
            let recorder = staticRanges.isEmpty ? nil : ClippingRecorder(ranges: staticRanges, contextLength: m.contextLength)
            recorder?.firstPosition = { [unowned m] in m.position }
            m.observer = recorder
            defer { m.observer = nil }
            for (i, ref) in refs.enumerated() {
                recorder?.reset()
                defer { if let recorder { results[i].clipping = recorder.totals } }
                let t0 = monotonicSeconds()
                results[i].positions.reserveCapacity(ref.continuation.count)
                try teacherForced(m, prompt: ref.promptTokens, continuation: ref.continuation) { t, row in
                    ref.teacherRows.copyRow(t, into: refRow)
                    let r = UnsafeBufferPointer(refRow)
                    let d = TokenDivergence.compare(reference: r, candidate: row, target: ref.continuation[t], scratch: scratch)
                    results[i].positions.append(d)
                    if let distP, let distQ {
                        p.withUnsafeMutableBufferPointer { distP.compute(r, into: $0) }
                        q.withUnsafeMutableBufferPointer { distQ.compute(row, into: $0) }
                        results[i].samplingTV.append(p.withUnsafeBufferPointer { pp in
                            q.withUnsafeBufferPointer { SamplingDistribution.totalVariation(pp, $0) } })
                    } else {
                        results[i].samplingTV.append(d.sameTop ? 0 : 1)
                    }
                }
                results[i].teacherSeconds = monotonicSeconds() - t0
            }
        }
        guard free else { return results }
        let t1 = monotonicSeconds()
        try freeRun(m, refs, results: &results, p: &p, q: &q, distP: distP, distQ: distQ, refRow: refRow)
        // The decode is shared by the group: each prompt is charged an equal part of it.
        let shared = (monotonicSeconds() - t1) / Double(refs.count)
        for (i, ref) in refs.enumerated() {
            let t2 = monotonicSeconds()
            if let first = results[i].firstDivergence, let scorer, let tokens = results[i].freeTokens {
                // The reference's NLL of the candidate's own text.
                var sum = 0.0
                try teacherForced(scorer, prompt: ref.promptTokens, continuation: tokens) { t, row in
                    sum += LogSoftmax.logSumExp(row) - Double(row[tokens[t]])
                }
                results[i].candidateTextNLL = sum / Double(tokens.count)
                results[i].reconverged = reconverges(tokens, ref.continuation, after: first)
            } else if results[i].firstDivergence == nil {
                results[i].candidateTextNLL = ref.textNLL()
                results[i].reconverged = false
            }
            results[i].freeSeconds = shared + monotonicSeconds() - t2
        }
        return results
    }

    /// The candidate's own continuations of a group of prompts, decoded together: greedy, or
    /// coupled with the reference's draws while the two texts agree; first divergences and the
    /// KV cache's error by age along the way.
    func freeRun(_ m: Transformer, _ refs: [ReferenceRun], results: inout [PromptResult],
                 p: inout [Double], q: inout [Double], distP: SamplingDistribution?, distQ: SamplingDistribution?,
                 refRow: UnsafeMutableBufferPointer<Float>) throws {
        var tokens = refs.map { r -> [Int] in
            var t: [Int] = []
            t.reserveCapacity(r.maxTokens)
            return t
        }
        var identical = [Bool](repeating: true, count: refs.count)
        try decodeTogether(m, prompts: refs.map(\.promptTokens)) { i, logits in
            let ref = refs[i]
            let t = tokens[i].count
            let promptIndex = results[i].promptIndex
            let token: Int
            if let distP, let distQ {
                q.withUnsafeMutableBufferPointer { distQ.compute(logits, into: $0) }
                if identical[i] && t < ref.continuation.count {
                    (ref.decodeLogits ?? ref.teacherRows).copyRow(t, into: refRow)
                    p.withUnsafeMutableBufferPointer { distP.compute(UnsafeBufferPointer(refRow), into: $0) }
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
            tokens[i].append(token)
            if let cache = m.caches[i] as? QuantizedKVCache, (t + 1) % Self.kvSnapshotEvery == 0 {
                recordKVError(cache, count: m.positions[i], into: &results[i])
            }
            if identical[i] && (t >= ref.continuation.count || token != ref.continuation[t]) {
                identical[i] = false
                results[i].firstDivergence = t
                if distP == nil && t < ref.continuation.count {
                    // The prefixes agree up to here, so the reference's row at t saw this context.
                    ref.teacherRows.copyRow(t, into: refRow)
                    results[i].firstDivergenceMargin = Double(refRow[ref.continuation[t]]) - Double(refRow[token])
                }
            }
            if options.stopAtEndOfGeneration && model.tokenizer.isEndOfGeneration(token) { return nil }
            return t == ref.maxTokens - 1 ? nil : token
        }
        for i in refs.indices {
            if let cache = m.caches[i] as? QuantizedKVCache, tokens[i].count % Self.kvSnapshotEvery != 0 {
                recordKVError(cache, count: m.positions[i], into: &results[i])
            }
            if identical[i] && tokens[i].count != refs[i].continuation.count { results[i].firstDivergence = tokens[i].count }
            results[i].freeTokens = tokens[i]
        }
    }

    /// Free-running steps between two snapshots of the KV cache's error by age.
    static let kvSnapshotEvery = 16

    /// Adds the cache's per-entry reconstruction error, binned by position in the sequence and by age (log-spaced bins of
    /// age + 1), at the current step.
    func recordKVError(_ cache: QuantizedKVCache, count: Int, into result: inout PromptResult) {
        let bins = PositionBins.logSpaced(upTo: cache.contextLength)
        if result.kvErrorByAge == nil { result.kvErrorByAge = Array(repeating: (0, 0), count: bins.ranges.count) }
        if result.kvErrorByPosition == nil { result.kvErrorByPosition = Array(repeating: (0, 0), count: bins.ranges.count) }
        for (pos, e) in cache.relativeErrors(count: count).enumerated() {
            if let b = bins.index(of: count - pos) {
                result.kvErrorByAge![b].sum += e
                result.kvErrorByAge![b].count += 1
            }
            if let b = bins.index(of: pos + 1) {
                result.kvErrorByPosition![b].sum += e
                result.kvErrorByPosition![b].count += 1
            }
        }
    }
}
