import Foundation
import Testing
@testable import QuantDrift

/// The noise floor and tie flips (issue 15, item 3): every report compares the FP32 reference with
/// itself summed in another order; a free-running flip at a reference margin within what that
/// changed is a tie flip, counted apart from real flips.
@Suite("Noise floor and tie flips")
struct NoiseFloorTests {
    @Test func topTwoMarginAndItsChange() {
        var p = [Float](repeating: 0, count: 40), q = p
        p[3] = 5; p[17] = 4.5; p[30] = 4.25  // reference top two: 3, then 17 (gap 0.5)
        q[3] = 5; q[17] = 4.8; q[30] = 1     // the candidate narrows that gap to 0.2
        let d = p.withUnsafeBufferPointer { pp in q.withUnsafeBufferPointer { TokenDivergence.compare(reference: pp, candidate: $0, target: 3) } }
        #expect(d.referenceMargin == 0.5)
        #expect(abs(d.marginChange - 0.3) < 1e-6)
        // A tie at the top: the margin is 0, whichever index comes first.
        p[17] = 5
        let t = p.withUnsafeBufferPointer { pp in q.withUnsafeBufferPointer { TokenDivergence.compare(reference: pp, candidate: $0, target: 3) } }
        #expect(t.referenceMargin == 0)
        // The top-1 being the first entry (index 0) still finds a second.
        var r = [Float](repeating: -1, count: 5)
        r[0] = 2; r[4] = 1.5
        let u = r.withUnsafeBufferPointer { rr in TokenDivergence.compare(reference: rr, candidate: rr, target: 0) }
        #expect(u.referenceMargin == 0.5 && u.marginChange == 0)
    }

    /// Three prompts of 8 tokens; the floor moved top-two gaps by at most 0.01 nats. Prompt a flips
    /// at token 3 where the reference preferred its token by 0.005 (a tie), prompt b at token 5 by
    /// 0.3 (real), prompt c never.
    static func builder(sampling: SamplingParameters = SamplingParameters(), floor: Bool = true) -> ReportBuilder {
        let vocab = 4
        let refs = ["a", "b", "c"].map { id in
            ReferenceRun(id: id, promptTokens: [1], continuation: Array(repeating: 2, count: 8), maxTokens: 8,
                         teacherRows: [Float](repeating: 0, count: 8 * vocab))
        }
        func position(_ change: Double) -> TokenDivergence {
            TokenDivergence(kld: 1e-12, reverseKLD: 1e-12, tv: 0, sameTop: true, dp: 0, nllReference: 1, nllCandidate: 1,
                            entropyReference: 1, entropyCandidate: 1, referenceMargin: 1, marginChange: change)
        }
        var floorResults = (0..<3).map { PromptResult(promptIndex: $0) }
        for i in 0..<3 {
            floorResults[i].positions = (0..<8).map { position($0 == 5 && i == 1 ? 0.01 : 0.001) }
            floorResults[i].samplingTV = Array(repeating: 0, count: 8)
            floorResults[i].freeTokens = Array(repeating: 2, count: 8)
        }
        var main = (0..<3).map { PromptResult(promptIndex: $0) }
        for i in 0..<3 {
            main[i].positions = (0..<8).map { _ in position(0.5) }
            main[i].samplingTV = Array(repeating: 0, count: 8)
            main[i].freeTokens = Array(repeating: 2, count: 8)
        }
        main[0].firstDivergence = 2; main[0].firstDivergenceMargin = 0.005
        main[1].firstDivergence = 4; main[1].firstDivergenceMargin = 0.3
        var candidates = [TrackerCandidate(name: "x", scheme: Scheme(preset: "x"))]
        var results = [main]
        if floor {
            candidates.append(.noiseFloor)
            results.append(floorResults)
        }
        return ReportBuilder(candidates: candidates, references: refs, results: results,
                             options: TrackerOptions(maxTokens: 8, sampling: sampling))
    }

    static func summary(_ b: ReportBuilder) throws -> [String: Any] {
        let doc = try JSONSerialization.jsonObject(with: Data(b.schemes().serialized().utf8)) as! [[String: Any]]
        return doc[0]["summary"] as! [String: Any]
    }

    @Test func aTieFlipIsClassifiedAsOne() throws {
        let b = Self.builder()
        #expect(b.tieMargin == 0.01)
        let s = try Self.summary(b)
        #expect(s["tie_flips"] as? Int == 1)
        #expect(s["diverged_prompts"] as? Int == 2)
        // All flips: a leaves after token 2, b after token 4.
        let third: Double = 1.0 / 3, twoThirds: Double = 2.0 / 3
        let observed: [Double] = [1, 1, 1, twoThirds, twoThirds, third, third, third, third]
        #expect(s["survival"] as? [Double] == observed)
        // Real flips only: a is censored at token 3; b's flip at 5 leaves one of the two still at risk.
        let real: [Double] = [1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5]
        #expect(s["survival_real"] as? [Double] == real)
        #expect(s["median_first_real_divergence"] as? Double == 5)
        let doc = try JSONSerialization.jsonObject(with: Data(b.schemes().serialized().utf8)) as! [[String: Any]]
        let prompts = doc[0]["prompts"] as! [[String: Any]]
        #expect(prompts.map { $0["tie_flip"] as? Bool } == [true, false, nil])
        // The floor's own section states the margin and counts its (absent) flips.
        let floor = try JSONSerialization.jsonObject(with: Data(b.noiseFloorSection().serialized().utf8)) as! [String: Any]
        #expect(floor["tie_margin"] as? Double == 0.01)
        #expect(floor["diverged_prompts"] as? Int == 0 && floor["tie_flips"] as? Int == 0)
        #expect(floor["positions"] as? Int == 24)
        #expect((s["kld_over_noise_floor"] as? Double).map { abs($0 - 1) < 1e-9 } == true)
    }

    @Test func withoutTiesRealSurvivalIsTheObservedOne() throws {
        // A margin above the tie margin is a real flip: both views then agree exactly.
        var b = Self.builder()
        b = ReportBuilder(candidates: b.candidates, references: b.references,
                          results: [b.results[0].map { r in var r = r; if r.firstDivergence != nil { r.firstDivergenceMargin = 1 }; return r },
                                    b.results[1]], options: b.options)
        let s = try Self.summary(b)
        #expect(s["tie_flips"] as? Int == 0)
        #expect(s["survival_real"] as? [Double] == s["survival"] as? [Double])
        #expect(s["median_first_real_divergence"] as? Double == s["median_first_divergence"] as? Double)
    }

    @Test func noFloorOrSamplingLeavesTiesUntold() throws {
        let none = try Self.summary(Self.builder(floor: false))
        #expect(none["tie_flips"] is NSNull && none["survival_real"] is NSNull && none["kld_over_noise_floor"] is NSNull)
        #expect(Self.builder(floor: false).noiseFloorSection() == .null)
        let sampled = try Self.summary(Self.builder(sampling: SamplingParameters(temperature: 0.8)))
        #expect(sampled["tie_flips"] is NSNull)
    }

    @Test func theReportsTellTieFlipsApart() throws {
        let b = Self.builder()
        let json = try b.document(ReportContext(model: .object([("name", "toy")]), workload: Workload(file: "w", sha256: "", prompts: []),
                                                version: "test", referenceSeconds: 0, candidatesSeconds: 0))
        let report = try ReportDocument.parse(Data(json.serialized().utf8), file: "report.json")
        #expect(report.noiseFloor?.tieMargin == 0.01)
        let md = MarkdownReport.render(report), html = HTMLReport.render(report)
        for text in [md, html] {
            #expect(text.contains("Noise floor and tie flips"))
            #expect(text.contains("a free-running flip where the reference prefers its own token by at most 0.010 nats"))
            #expect(text.contains("1 of the flips is a tie"))
        }
        #expect(html.contains("(tie flip)"))
        #expect(html.contains("real flips only"))  // the dotted survival curve's legend
    }
}

@Suite("Noise floor on the default model")
struct NoiseFloorModelTests {
    /// The floor is measured, not assumed: the FP32 model summed in another order is not bit for bit
    /// the reference, yet far below any scheme; the first divergences carry the reference's margin.
    @Test func theFloorIsMeasuredAndFarBelowW8() throws {
        let model = try Golden.defaultModel()
        let workload = LockstepTests.workload
        var options = TrackerOptions(mode: .both, threads: 2, chunk: 16)
        options.decodeBatch = 16
        let engine = try LockstepEngine(model: model, options: options)
        let ctx = try engine.contextLength(for: workload)
        let w8 = try Scheme(parsing: "w8")
        let candidates = [TrackerCandidate(name: "w8", scheme: w8, runtime: try SchemeRuntime(model: model, scheme: w8)), .noiseFloor]
        let (refs, results, _) = try engine.runWorkload(workload, candidates: candidates, contextLength: ctx)
        let b = ReportBuilder(candidates: candidates, references: refs, results: results, options: options)
        let floorKLD = results[1].flatMap(\.positions).map(\.kld)
        let mean = floorKLD.reduce(0, +) / Double(floorKLD.count)
        #expect(mean > 0, "the row kernels and OpenBLAS sum differently: the floor cannot be exactly 0")
        #expect(mean < 1e-8)
        let tau = try #require(b.tieMargin)
        #expect(tau > 0 && tau < 1e-2, "tie margin \(tau)")
        #expect(results[1].allSatisfy { $0.freeTokens != nil }, "the floor runs free-running too")
        let w8KLD = results[0].flatMap(\.positions).map(\.kld)
        #expect(w8KLD.reduce(0, +) / Double(w8KLD.count) > 100 * mean)
        // Every greedy first divergence within the reference's text records the reference's margin.
        for r in results[0] + results[1] {
            guard let first = r.firstDivergence, first < refs[r.promptIndex].continuation.count else { continue }
            let m = try #require(r.firstDivergenceMargin)
            #expect(m > -tau, "the reference's own token leads at the divergence (teacher-forced rows may differ by rounding)")
        }
    }
}
