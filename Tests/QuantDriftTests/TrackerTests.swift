import Foundation
import Testing
@testable import QuantDrift

@Suite("Workload files")
struct WorkloadTests {
    func parse(_ text: String) throws -> Workload { try Workload.parse(Data(text.utf8), file: "w.jsonl") }

    @Test func readsPromptsWithDefaults() throws {
        let w = try parse("""
            {"id": "a", "prompt": "Hello", "chat": true, "max_tokens": 12}

            {"id": "b", "prompt": "World"}
            """)
        #expect(w.prompts == [WorkloadPrompt(id: "a", prompt: "Hello", chat: true, maxTokens: 12),
                              WorkloadPrompt(id: "b", prompt: "World", chat: false, maxTokens: nil)])
        #expect(w.sha256.count == 64)
    }

    @Test(arguments: [
        ("{\"id\": \"a\", \"prompt\": \"x\"", "w.jsonl:1: line is not valid JSON"),
        ("{\"prompt\": \"x\"}", "w.jsonl:1: id is missing"),
        ("{\"id\": \"a\", \"prompt\": \"\"}", "prompt 'a' is empty"),
        ("{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"a\", \"prompt\": \"y\"}", "w.jsonl:2: duplicate id 'a'"),
        ("{\"id\": \"a\", \"prompt\": \"x\", \"max_token\": 3}", "unknown key 'max_token'"),
        ("{\"id\": \"a\", \"prompt\": \"x\", \"max_tokens\": 0}", "max_tokens must be in 1...65536, got 0"),
        ("{\"id\": \"a\", \"prompt\": \"x\", \"max_tokens\": \"5\"}", "max_tokens is not an integer"),
        ("{\"id\": 5, \"prompt\": \"x\"}", "id is not a string"),
        ("[1, 2]", "top level is not an object"),
        ("\n\n", "no prompts"),
    ])
    func badLinesAreOneLineErrors(text: String, expected: String) throws {
        do {
            _ = try parse(text)
            Issue.record("accepted \(text)")
        } catch let e as QuantDriftError {
            #expect(e.description.contains(expected), "\(e.description)")
            #expect(!e.description.contains("\n"))
        }
    }

    @Test func invalidUTF8IsRefused() throws {
        #expect(throws: QuantDriftError.self) { try Workload.parse(Data([0x7B, 0xFF, 0xFE, 0x7D]), file: "w.jsonl") }
    }

    /// A candidate run as two jobs is whole once `merged(freeRunning:)` has copied the free-running
    /// part's fields into the teacher-forced part's result. Every stored property of PromptResult
    /// must belong to one of the two parts here, so a field added later fails this test until
    /// someone decides which part fills it (and, for a free-running one, merges it).
    @Test func mergedKeepsEachPartsFields() {
        let teacherFields: Set<String> = ["promptIndex", "positions", "samplingTV", "clipping", "teacherSeconds"]
        let freeFields: Set<String> = ["freeTokens", "firstDivergence", "firstDivergenceMargin", "reconverged",
                                       "candidateTextNLL", "kvErrorByAge", "kvErrorByPosition", "freeSeconds"]
        let row: [Float] = [0.5, -1, 2]
        func divergence(_ scale: Float) -> TokenDivergence {
            let q = row.map { $0 * scale }
            return row.withUnsafeBufferPointer { p in q.withUnsafeBufferPointer { TokenDivergence.compare(reference: p, candidate: $0, target: 1) } }
        }
        func bins(_ values: Int) -> [ClippingBin] {
            var b = ClippingBin()
            b.values = values
            return [b]
        }
        // Both parts fill every field, each with its own values, as if a bug had crossed them.
        func filled(_ k: Double) -> PromptResult {
            var r = PromptResult(promptIndex: 4)
            r.positions = [divergence(Float(k))]
            r.samplingTV = [k]
            r.clipping = bins(Int(k))
            r.teacherSeconds = k
            r.freeTokens = [Int(k)]
            r.firstDivergence = Int(k)
            r.firstDivergenceMargin = k
            r.reconverged = k > 2
            r.candidateTextNLL = k
            r.kvErrorByAge = [(k, Int(k))]
            r.kvErrorByPosition = [(k + 1, Int(k))]
            r.freeSeconds = k
            return r
        }
        let teacher = filled(1), free = filled(3)
        let merged = teacher.merged(freeRunning: free)
        func fields(_ r: PromptResult) -> [String: String] {
            Dictionary(uniqueKeysWithValues: Mirror(reflecting: r).children.map { ($0.label ?? "?", String(describing: $0.value)) })
        }
        let t = fields(teacher), f = fields(free), m = fields(merged)
        #expect(Set(m.keys) == teacherFields.union(freeFields),
                "PromptResult's fields changed: put each new one in teacherFields or freeFields (and merge the free ones)")
        for name in freeFields { #expect(m[name] == f[name], "merged did not take \(name) from the free-running part") }
        for name in teacherFields { #expect(m[name] == t[name], "merged changed the teacher-forced part's \(name)") }
        for name in teacherFields.union(freeFields).subtracting(["promptIndex"]) {
            #expect(t[name] != f[name], "the two parts' \(name) must differ for this test to see which one was kept")
        }
    }

    /// A candidate that runs both comparisons is two jobs; every free-running part is queued
    /// before any teacher-forced one (they are the long ones), so the queue ends on short pieces.
    /// Teacher-only candidates (a scheme's parts, its layers) are one job.
    @Test func jobsQueueFreeRunningPartsFirst() {
        let main = TrackerCandidate(name: "w8", scheme: Scheme(preset: "w8"))
        let part = TrackerCandidate(name: "w8/kv", scheme: Scheme(preset: "fp32"), role: .part("kv", parent: 0))
        func job(_ c: Int, _ g: Int, free: Bool, parts: Int, first: Bool) -> LockstepEngine.Job {
            let j = LockstepEngine.Job(candidate: c, group: g, free: free, parts: parts)
            #expect(j.first == first, "job \(c).\(g) free \(free): first")
            return j
        }
        #expect(LockstepEngine.jobs([main, part, .noiseFloor], groups: 2, mode: .both) == [
            job(0, 0, free: true, parts: 2, first: true), job(0, 1, free: true, parts: 2, first: true),
            job(2, 0, free: true, parts: 2, first: true), job(2, 1, free: true, parts: 2, first: true),
            job(0, 0, free: false, parts: 2, first: false), job(0, 1, free: false, parts: 2, first: false),
            job(1, 0, free: false, parts: 1, first: true), job(1, 1, free: false, parts: 1, first: true),
            job(2, 0, free: false, parts: 2, first: false), job(2, 1, free: false, parts: 2, first: false),
        ])
        #expect(LockstepEngine.jobs([main, part, .noiseFloor], groups: 1, mode: .teacher) == [
            job(0, 0, free: false, parts: 1, first: true), job(1, 0, free: false, parts: 1, first: true),
            job(2, 0, free: false, parts: 1, first: true),
        ])
        #expect(LockstepEngine.jobs([main, part, .noiseFloor], groups: 1, mode: .free) == [
            job(0, 0, free: true, parts: 1, first: true), job(2, 0, free: true, parts: 2, first: true),
            job(1, 0, free: false, parts: 1, first: true), job(2, 0, free: false, parts: 2, first: false),
        ])
    }

    @Test func defaultWorkloadLoads() throws {
        let w = try Workload.load(path: Golden.packageRoot.appendingPathComponent("Prompts/default.jsonl").path)
        #expect(w.prompts.count >= 8)
        #expect(Set(w.prompts.map(\.id)).count == w.prompts.count)
    }
}

@Suite("Divergence metrics and statistics")
struct DivergenceMathTests {
    /// Every metric of TokenDivergence against a direct float64 computation.
    @Test(arguments: [1, 7, 33, 577])
    func tokenDivergenceMatchesDirectFloat64(vocab: Int) throws {
        var r = RandomStream(seed: UInt64(vocab))
        let p = (0..<vocab).map { _ in Float(r.nextDouble() * 12 - 6) }
        let q = p.map { $0 + Float(r.nextDouble() - 0.5) }
        let target = vocab / 2
        let d = p.withUnsafeBufferPointer { pp in q.withUnsafeBufferPointer { TokenDivergence.compare(reference: pp, candidate: $0, target: target) } }
        func softmax(_ x: [Float]) -> [Double] {
            let e = x.map { exp(Double($0)) }
            let s = e.reduce(0, +)
            return e.map { $0 / s }
        }
        let P = softmax(p), Q = softmax(q)
        var kl = 0.0, rkl = 0.0, tv = 0.0, hp = 0.0, hq = 0.0
        for i in 0..<vocab {
            kl += P[i] * log(P[i] / Q[i]); rkl += Q[i] * log(Q[i] / P[i]); tv += abs(P[i] - Q[i]) / 2
            hp -= P[i] * log(P[i]); hq -= Q[i] * log(Q[i])
        }
        let close = { (a: Double, b: Double) in abs(a - b) <= 1e-9 * max(1, abs(b)) }
        #expect(close(d.kld, kl) && close(d.reverseKLD, rkl) && close(d.tv, tv))
        #expect(close(d.entropyReference, hp) && close(d.entropyCandidate, hq))
        #expect(close(d.dp, Q[target] - P[target]))
        #expect(close(d.dNLL, log(P[target]) - log(Q[target])))
        #expect(d.sameTop == (P.indices.max { P[$0] < P[$1] } == Q.indices.max { Q[$0] < Q[$1] }))
    }

    /// Maximal coupling: the candidate's token is distributed as Q, and differs from the
    /// reference's (drawn from P) with probability TV(P, Q).
    @Test func coupledSamplerHasMarginalQAndDiffersWithProbabilityTV() {
        let p: [Double] = [0.30, 0.25, 0.20, 0.10, 0.08, 0.04, 0.02, 0.01]
        let q: [Double] = [0.10, 0.30, 0.05, 0.25, 0.08, 0.12, 0.05, 0.05]
        let tv = zip(p, q).map { abs($0 - $1) }.reduce(0, +) / 2
        let n = 200_000
        var counts = [Int](repeating: 0, count: p.count)
        var differ = 0
        var r = RandomStream(seed: 42)
        p.withUnsafeBufferPointer { pp in
            q.withUnsafeBufferPointer { qq in
                for _ in 0..<n {
                    let x = SamplingDistribution.draw(pp, r.nextDouble())
                    let y = SamplingDistribution.coupled(reference: x, p: pp, q: qq, u: r.nextDouble(), v: r.nextDouble())
                    counts[y] += 1
                    if x != y { differ += 1 }
                }
            }
        }
        for i in 0..<q.count {
            let f = Double(counts[i]) / Double(n), sd = (q[i] * (1 - q[i]) / Double(n)).squareRoot()
            #expect(abs(f - q[i]) < 5 * sd, "token \(i): \(f) vs \(q[i])")
        }
        let fd = Double(differ) / Double(n), sd = (tv * (1 - tv) / Double(n)).squareRoot()
        #expect(abs(fd - tv) < 5 * sd, "P(differ) \(fd) vs TV \(tv)")
        #expect(tv > 0.2)
    }

    @Test func samplingDistributionAppliesTopKAndTopP() {
        let logits: [Float] = [2, 1, 0, 3, 1]
        var probs = [Double](repeating: 0, count: 5)
        let d = SamplingDistribution(SamplingParameters(temperature: 1, topK: 2), vocab: 5)
        logits.withUnsafeBufferPointer { l in probs.withUnsafeMutableBufferPointer { d.compute(l, into: $0) } }
        let e3 = exp(3.0), e2 = exp(2.0)
        #expect(abs(probs[3] - e3 / (e3 + e2)) < 1e-12 && abs(probs[0] - e2 / (e3 + e2)) < 1e-12)
        #expect(probs[1] == 0 && probs[2] == 0 && probs[4] == 0)
        let g = SamplingDistribution(SamplingParameters(), vocab: 5)
        logits.withUnsafeBufferPointer { l in probs.withUnsafeMutableBufferPointer { g.compute(l, into: $0) } }
        #expect(probs == [0, 0, 0, 1, 0])
    }

    @Test func clusteredMeanAndBootstrap() {
        let stats = ClusteredStatistics(clusters: 3, seed: 7)
        let sums = [1.0, 2.0, 9.0], counts = [2, 2, 2]
        let (m, se) = stats.mean(sums: sums, counts: counts)
        #expect(m == 2)
        // Residuals S_g − n_g·m = −3, −2, 5 → sqrt(3/2 · 38) / 6.
        #expect(abs(se - (1.5 * 38).squareRoot() / 6) < 1e-12)
        let (lo, hi) = stats.interval(sums: sums, counts: counts)
        #expect(lo >= 0.5 && lo < m && hi > m && hi <= 4.5)
        let again = ClusteredStatistics(clusters: 3, seed: 7).interval(sums: sums, counts: counts)
        #expect(again.0 == lo && again.1 == hi)
    }

    @Test func binsRepetitionAndReconvergence() {
        #expect(PositionBins.logSpaced(upTo: 10).ranges == [1...1, 2...3, 4...7, 8...10])
        #expect(PositionBins.fixed(64, upTo: 130).ranges == [1...64, 65...128, 129...130])
        #expect(PositionBins.logSpaced(upTo: 100).index(of: 37) == 5)
        #expect(repeatedNGramShare([1, 2, 3, 4, 1, 2, 3, 4]) == 1.0 / 5)
        #expect(repeatedNGramShare([1, 2, 3]) == 0)
        let a = [1, 2, 3, 9, 5, 6, 7, 8, 9, 10, 11, 12, 13]
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
        #expect(reconverges(a, b, after: 3))
        #expect(!reconverges(a.map { $0 + 100 }, b, after: 0))
        #expect(abs(leastSquaresSlope([0, 1, 2], [1, 3, 5])! - 2) < 1e-12)
    }
}

@Suite("Lockstep engine on the default model")
struct LockstepTests {
    static let workload = Workload(file: "test", sha256: "", prompts: [
        WorkloadPrompt(id: "chat", prompt: "Name three colours of the rainbow.", chat: true, maxTokens: 24),
        WorkloadPrompt(id: "raw", prompt: "The old bridge over the river was", chat: false, maxTokens: 20),
    ])

    static func run(_ schemes: [String], mode: TrackerMode = .both, sampling: SamplingParameters = SamplingParameters(),
                    threads: Int = 2, referenceBudgetBytes: Int? = nil, decodeBatch: Int = 16,
                    workload: Workload = workload) throws -> (ReportBuilder, [[PromptResult]]) {
        let model = try Golden.defaultModel()
        var options = TrackerOptions(mode: mode, sampling: sampling, threads: threads, chunk: 16)
        options.decodeBatch = decodeBatch
        if let referenceBudgetBytes { options.referenceBudgetBytes = referenceBudgetBytes }
        let engine = try LockstepEngine(model: model, options: options)
        let ctx = try engine.contextLength(for: workload)
        let candidates = try schemes.map { name -> TrackerCandidate in
            let s = try Scheme(parsing: name)
            return TrackerCandidate(name: s.name, scheme: s, runtime: try SchemeRuntime(model: model, scheme: s))
        }
        let (refs, results, _) = try engine.runWorkload(workload, candidates: candidates, contextLength: ctx)
        return (ReportBuilder(candidates: candidates, references: refs, results: results, options: options), results)
    }

    /// fp32 against itself: exactly 0 KLD, full top-1 agreement, no divergence — greedy and sampled.
    @Test(arguments: [0, 0.8] as [Float])
    func selfComparisonIsExactlyZero(temperature: Float) throws {
        let (report, results) = try Self.run(["fp32"], sampling: SamplingParameters(temperature: temperature, seed: 3))
        for r in results[0] {
            #expect(!r.positions.isEmpty)
            #expect(r.positions.allSatisfy { $0.kld == 0 && $0.tv == 0 && $0.sameTop && $0.dp == 0 })
            #expect(r.firstDivergence == nil)
            #expect(r.freeTokens == report.references[r.promptIndex].continuation)
        }
        guard case .array(let schemes) = report.schemes(), case .object(let s) = schemes[0],
              case .object(let summary) = s.first(where: { $0.0 == "summary" })!.1 else { Issue.record("no summary"); return }
        let survival = summary.first { $0.0 == "survival" }!.1
        guard case .array(let values) = survival else { Issue.record("no survival"); return }
        #expect(values.allSatisfy { $0 == .double(1) })
    }

    /// Greedy: the survival predicted from teacher-forced top-1 agreement equals the observed
    /// one (both models see the same tokens until the first disagreement); the first divergence
    /// is where the teacher-forced argmax first differs.
    @Test func greedyFirstDivergenceMatchesTeacherForcedTop1() throws {
        let (_, results) = try Self.run(["kv4"])
        var diverged = 0
        for r in results[0] {
            let firstDisagreement = r.positions.firstIndex { !$0.sameTop }
            #expect(r.firstDivergence == firstDisagreement)
            if r.firstDivergence != nil { diverged += 1 }
            #expect(r.positions.contains { $0.kld > 0 })
        }
        #expect(diverged >= 1)
    }

    /// KIVI keeps its newest 32 entries in FP32: no error below age 31, error beyond.
    @Test func kvErrorByAgeShowsTheResidualWindow() throws {
        let (_, results) = try Self.run(["kivi2"], mode: .free)
        var sums = [Double](repeating: 0, count: 12), counts = [Int](repeating: 0, count: 12)
        for r in results[0] {
            let bins = try #require(r.kvErrorByAge)
            for (i, b) in bins.enumerated() where i < 12 { sums[i] += b.sum; counts[i] += b.count }
        }
        // Bins of age + 1: 1, 2–3, 4–7, 8–15, 16–31 hold ages 0…30, all in the residual window.
        for i in 0..<5 { #expect(counts[i] > 0 && sums[i] == 0, "bin \(i)") }
        #expect(counts[5] > 0 && sums[5] / Double(counts[5]) > 1e-4)   // ages 31…62: quantized from 32 on
    }

    static let three = Workload(file: "test", sha256: "", prompts: workload.prompts + [
        WorkloadPrompt(id: "list", prompt: "List four fruits.", chat: true, maxTokens: 12)])

    /// Memory is bounded by running prompts in batches: a budget of one prompt's logits gives
    /// one batch per worker (or per decode group, when that is larger), and the same report as one
    /// batch for the whole workload; the references keep only tokens and their NLL afterwards.
    @Test func batchingBoundsMemoryAndChangesNothing() throws {
        let three = Self.three
        let model = try Golden.defaultModel()
        var options = TrackerOptions(threads: 1)
        options.referenceBudgetBytes = 1
        options.decodeBatch = 1
        #expect(try LockstepEngine(model: model, options: options).referenceBatches(three) == [0..<1, 1..<2, 2..<3])
        options.threads = 2
        #expect(try LockstepEngine(model: model, options: options).referenceBatches(three) == [0..<2, 2..<3])
        options.threads = 1
        options.decodeBatch = 2
        #expect(try LockstepEngine(model: model, options: options).referenceBatches(three) == [0..<2, 2..<3])
        #expect(try LockstepEngine(model: model, options: options).decodeGroups(3) == [0..<2, 2..<3])
        options.decodeBatch = 1
        options.referenceBudgetBytes = 24 * model.config.vocabSize * 4 * 3
        #expect(try LockstepEngine(model: model, options: options).referenceBatches(three) == [0..<3])

        let sampled = SamplingParameters(temperature: 0.8, seed: 5)
        let (a, _) = try Self.run(["w8", "kv4"], sampling: sampled, threads: 1, referenceBudgetBytes: 1, decodeBatch: 1,
                                  workload: three)
        let (b, _) = try Self.run(["w8", "kv4"], sampling: sampled, threads: 1, workload: three)
        func stripped(_ r: ReportBuilder) -> String {
            r.schemes().serialized().replacingOccurrences(of: #""timing":\{[^}]*\}"#, with: "", options: .regularExpression)
        }
        #expect(stripped(a) == stripped(b))
        #expect(a.tokensCSV() == b.tokensCSV())
        #expect(a.references.allSatisfy { $0.rowsReleased && $0.teacherRows.count == 0 && $0.decodeLogits == nil })
    }

    /// Results do not depend on the decode batch: prompts decoded one at a time, or together
    /// (sequences of different lengths leaving the batch as they stop), give the same report,
    /// greedy and sampled, and the fp32 self-check stays exactly 0 in a batch.
    @Test(arguments: [0, 0.8] as [Float])
    func resultsDoNotDependOnTheDecodeBatch(temperature: Float) throws {
        let sampling = SamplingParameters(temperature: temperature, seed: 7)
        let (a, ra) = try Self.run(["fp32", "w8", "kv4"], sampling: sampling, threads: 1, decodeBatch: 1, workload: Self.three)
        let (b, _) = try Self.run(["fp32", "w8", "kv4"], sampling: sampling, threads: 2, decodeBatch: 3, workload: Self.three)
        func stripped(_ r: ReportBuilder) -> String {
            r.schemes().serialized().replacingOccurrences(of: #""timing":\{[^}]*\}"#, with: "", options: .regularExpression)
        }
        #expect(stripped(a) == stripped(b))
        #expect(a.tokensCSV() == b.tokensCSV())
        #expect(ra[0].allSatisfy { $0.firstDivergence == nil && $0.positions.allSatisfy { $0.kld == 0 } })
        // The continuations have different lengths, so the batch shrank along the way.
        #expect(Set(a.references.map(\.continuation.count)).count > 1)
    }

    /// Results do not depend on the number of workers.
    @Test func resultsAreIdenticalAcrossThreadCounts() throws {
        let (a, _) = try Self.run(["w8", "kv8"], threads: 1)
        let (b, _) = try Self.run(["w8", "kv8"], threads: 2)
        func stripped(_ r: ReportBuilder) -> String {
            r.schemes().serialized().replacingOccurrences(of: #""timing":\{[^}]*\}"#, with: "", options: .regularExpression)
        }
        #expect(stripped(a) == stripped(b))
        #expect(a.tokensCSV() == b.tokensCSV())
    }
}

@Suite("Checkpoint files")
struct CheckpointTests {
    @Test func promptResultRoundTripsExactlyAndCorruptionIsRejected() throws {
        var r = PromptResult(promptIndex: 3)
        r.positions = [TokenDivergence(kld: 0.1, reverseKLD: .leastNonzeroMagnitude, tv: 1.0 / 3, sameTop: true, dp: -0.25,
                                       nllReference: 2, nllCandidate: 2.5, entropyReference: 1, entropyCandidate: .pi,
                                       referenceMargin: 0.125, marginChange: 3e-6)]
        r.samplingTV = [0, 1]
        r.freeTokens = [5, 6, 7]
        r.firstDivergence = 2
        r.firstDivergenceMargin = 0.0625
        r.reconverged = false
        r.candidateTextNLL = 1.75
        r.kvErrorByAge = [(0.5, 2), (0, 1)]
        r.kvErrorByPosition = [(0.25, 3)]
        var bin = ClippingBin()
        bin.values = 576; bin.clipped = 3; bin.rowSites = 4; bin.ratioSum = 3.5; bin.maxRatio = 1.25
        r.clipping = [bin, ClippingBin()]
        let data = PromptResultCodec.encode(r)
        let back = try PromptResultCodec.decode(data)
        #expect(PromptResultCodec.encode(back) == data)
        #expect(back.positions == r.positions && back.freeTokens == r.freeTokens && back.firstDivergence == 2)
        #expect(back.firstDivergenceMargin == 0.0625 && back.positions[0].marginChange == 3e-6)
        #expect(back.clipping == r.clipping && back.kvErrorByPosition?.first?.count == 3)
        for cut in [0, 7, 8, 20, data.count - 1] {
            #expect(throws: QuantDriftError.self) { try PromptResultCodec.decode(data.prefix(cut)) }
        }
        var lying = data
        lying.replaceSubrange(16..<24, with: [UInt8](repeating: 0x7F, count: 8))   // positions count
        #expect(throws: QuantDriftError.self) { try PromptResultCodec.decode(lying) }
    }
}
