import Foundation

/// What both renderers say: the scheme × metric table and the plain-language reading. Text here is
/// unescaped; each renderer escapes it for its format.
enum ReportReading {
    typealias F = ReportFormat

    struct Column: Sendable {
        let header: String
        let cell: @Sendable (ReportDocument.SchemeResult) -> String
    }

    /// The scheme × metric table, one row per scheme.
    static let columns: [Column] = [
        Column(header: "Scheme") { $0.name },
        Column(header: "Mean KLD [95% CI]") { F.withCI($0.value(.meanKLD), $0.meanKLDCI) { F.sig($0) } },
        Column(header: "p99 KLD") { F.sig($0.value(.p99KLD)) },
        Column(header: "Top-1 [95% CI]") { F.withCI($0.value(.top1Agreement), $0.top1CI) { F.percent($0) } },
        Column(header: "Median first divergence") { firstDivergenceText($0) },
        Column(header: "Growth exponent") { F.fixed($0.value(.growthExponent) ?? .nan, 3) },
        Column(header: "Late/early") { F.fixed($0.value(.lateEarlyRatio) ?? .nan, 2) },
        Column(header: "NLL ref. text") { F.fixed($0.value(.referenceTextNLL) ?? .nan, 3) },
        Column(header: "NLL cand. text") { F.fixed($0.value(.candidateTextNLL) ?? .nan, 3) },
        Column(header: "Repetition ref./cand.") {
            let r = $0.value(.repetitionReference), c = $0.value(.repetitionCandidate)
            return r == nil && c == nil ? F.none : "\(F.percent(r)) / \(F.percent(c))"
        },
    ]

    /// The KLD distribution table: the median, how much of the total the worst 1% of positions
    /// carry, KLD by the reference's entropy, and top-k containment both ways.
    static let distributionHeader = ["Scheme", "Median KLD", "Top 1% of positions: share of KLD", "KLD, H below 0.5",
                                     "H 0.5–2", "H 2 and above", "Ref. top-1 in cand. top 5", "Cand. top-1 in ref. top 5"]
    static let distributionNote = "H: the reference's entropy in nats at the position (low: it is sure of the next token). Teacher-forced positions."

    /// One row per scheme with teacher-forced positions.
    static func distributionRows(_ report: ReportDocument) -> [[String]] {
        report.schemes.filter { $0.value(.medianKLD) != nil }.map { s in
            [s.name, F.sig(s.value(.medianKLD)), F.percent(s.value(.kldTailShare)), F.sig(s.value(.meanKLDLowEntropy)),
             F.sig(s.value(.meanKLDMidEntropy)), F.sig(s.value(.meanKLDHighEntropy)),
             F.percent(s.value(.referenceTop1InCandidateTop5)), F.percent(s.value(.candidateTop1InReferenceTop5))]
        }
    }

    /// The cells of the scheme × metric table, one row per scheme.
    static func metricsRows(_ report: ReportDocument) -> [[String]] {
        report.schemes.map { s in columns.map { $0.cell(s) } }
    }

    /// "57", or "none (> 256)" when the median prompt never diverged.
    static func firstDivergenceText(_ s: ReportDocument.SchemeResult, maxTokens: Int? = nil,
                                    key: SummaryKey = .medianFirstDivergence) -> String {
        guard let m = s.value(key) else { return F.none }
        let limit = maxTokens ?? s.prompts.compactMap(\.generatedTokens).max()
        if let limit, m > Double(limit) { return "none (> \(limit))" }
        return F.count(m)
    }

    /// The table `compare` and `run` print when they finish: one line per scheme, counts as
    /// counts and the first divergence worded as in the scheme × metric table.
    static func consoleTable(_ report: ReportDocument) -> String {
        func cell(_ s: String, _ width: Int) -> String { s.padding(toLength: max(width, s.count), withPad: " ", startingAt: 0) }
        func d(_ x: Double?) -> String { x.map { String(format: "%.6f", $0) } ?? F.none }
        var out = "scheme            mean KLD    95% CI                 top-1    median first div.\n"
        for s in report.schemes {
            let ci = s.meanKLDCI.map { "[\(d($0.0)), \(d($0.1))]" } ?? F.none
            out += cell(s.name, 16) + "  " + cell(d(s.value(.meanKLD)), 10) + "  " + cell(ci, 22) + " "
                + cell(d(s.value(.top1Agreement)), 8) + " " + firstDivergenceText(s) + "\n"
        }
        if let f = report.noiseFloor, let kld = f.meanKLD {
            out += "noise floor (fp32 summed in another order): mean KLD \(F.sig(kld)), tie margin \(F.sig(f.tieMargin)) nats"
            if let ties = report.schemes.compactMap({ $0.value(.tieFlips) }).reduce(nil, { ($0 ?? 0) + $1 }), ties > 0 {
                out += ", \(F.count(ties)) tie flips"
            }
            out += "\n"
        }
        return out
    }

    /// One plain-language paragraph per scheme, then comparisons across schemes.
    static func sentences(_ report: ReportDocument) -> [String] {
        var out: [String] = []
        let maxTokens = report.conditions.maxTokens
        if let floor = noiseFloorSentence(report) { out.append(floor) }
        for s in report.schemes {
            out.append(sentence(s, maxTokens: maxTokens, floor: report.noiseFloor))
        }
        for s in report.schemes { if let c = clippingSentence(s) { out.append(c) } }
        let ranked = report.schemes.filter { $0.value(.meanKLD) != nil }
            .sorted { ($0.value(.meanKLD)!, $0.name) < ($1.value(.meanKLD)!, $1.name) }
        if ranked.count >= 2, let best = ranked.first, let worst = ranked.last {
            out.append("Closest to the reference: \(best.name) (mean KLD \(F.sig(best.value(.meanKLD)))); "
                + "furthest: \(worst.name) (mean KLD \(F.sig(worst.value(.meanKLD)))).")
        }
        for (a, p) in pairs(report) {
            guard let d = p.diff, let ci = p.diffCI else { continue }
            let verdict: String
            if ci.0 > 0 { verdict = "\(a.name) drifts more than \(p.other) (the 95% CI excludes 0)" }
            else if ci.1 < 0 { verdict = "\(a.name) drifts less than \(p.other) (the 95% CI excludes 0)" }
            else { verdict = "no clear difference between \(a.name) and \(p.other) (the 95% CI includes 0)" }
            out.append("\(a.name) − \(p.other): mean KLD difference \(F.sig(d)) [\(F.sig(ci.0)), \(F.sig(ci.1))]: \(verdict).")
        }
        return out
    }

    /// What the FP32 reference changes against itself, and the tie margin that follows from it.
    static func noiseFloorSentence(_ report: ReportDocument) -> String? {
        guard let f = report.noiseFloor, let kld = f.meanKLD else { return nil }
        var t = "Noise floor: the FP32 reference against itself with every product summed in another order gives mean KLD \(F.sig(kld))"
        if let m = f.maxKLD { t += " (max \(F.sig(m)))" }
        if let top1 = f.top1 { t += " and top-1 agreement \(F.percent(top1, 2))" }
        if let tau = f.tieMargin {
            t += "; a free-running flip where the reference prefers its own token by at most \(F.sig(tau, 2)) nats (the largest change rounding made to a top-1/top-2 gap) counts as a tie flip, not a real one"
        }
        if let d = f.divergedPrompts {
            t += d == 0 ? "; its own free-running text never diverged" : "; its own free-running text diverged on \(d) prompts (\(f.tieFlips.map(String.init) ?? F.none) of them tie flips)"
        }
        return t + "."
    }

    /// The noise-floor table: per scheme, its flips split into real and tie flips, and its KLD over the floor's.
    static let noiseFloorHeader = ["Scheme", "Diverged prompts", "Tie flips", "Median first divergence, all flips",
                                   "Median first divergence, real flips", "Mean KLD ÷ noise floor"]

    static func noiseFloorNote(_ report: ReportDocument) -> String {
        let tau = report.noiseFloor?.tieMargin.map { F.sig($0, 2) + " nats" } ?? "the tie margin"
        return "Noise floor: \(report.noiseFloor?.method ?? "an FP32-vs-FP32 comparison"). A tie flip is a free-running first divergence where the reference prefers its own token over the candidate's by at most \(tau). Real flips only: Kaplan–Meier, a tie flip censoring its prompt. Tie flips are told in greedy runs only."
    }

    static func noiseFloorRows(_ report: ReportDocument) -> [[String]] {
        guard report.noiseFloor != nil else { return [] }
        return report.schemes.map { s in
            [s.name, F.count(s.value(.divergedPrompts)), F.count(s.value(.tieFlips)), firstDivergenceText(s),
             firstDivergenceText(s, key: .medianFirstRealDivergence), F.sig(s.value(.kldOverNoiseFloor))]
        }
    }

    static func sentence(_ s: ReportDocument.SchemeResult, maxTokens: Int?, floor: ReportDocument.NoiseFloor? = nil) -> String {
        let kld = s.value(.meanKLD), top1 = s.value(.top1Agreement)
        if kld == 0, top1 == 1, s.value(.divergedPrompts) ?? 0 == 0 {
            return "\(s.name): identical to the reference (KLD 0, top-1 100%, no divergence)."
        }
        var parts: [String] = []
        var head = "mean KLD \(F.sig(kld))"
        if let ci = s.meanKLDCI { head += " (95% CI \(F.sig(ci.0))–\(F.sig(ci.1)))" }
        if let r = s.value(.kldOverNoiseFloor), r > 0 {
            // Within the floor's own interval, the scheme cannot be told from rounding.
            if let ci = s.meanKLDCI, let fci = floor?.meanKLDCI, ci.0 <= fci.1 {
                head += ", no more than the FP32 noise floor"
            } else {
                head += ", \(F.sig(r, 2))× the FP32 noise floor"
            }
        }
        if let top1 { head += ", top-1 agreement \(F.percent(top1))" }
        parts.append(head)
        if let m = s.value(.medianFirstDivergence) {
            var t: String
            if let maxTokens, m > Double(maxTokens) {
                t = "most prompts never diverge within \(maxTokens) tokens"
            } else {
                t = "first divergence after a median of \(F.count(m)) tokens"
            }
            if let d = s.value(.divergedPrompts) {
                let total = s.prompts.isEmpty ? nil : s.prompts.count
                t += " (\(F.count(d))\(total.map { " of \($0)" } ?? "") prompts diverged"
                if let r = s.value(.reconvergedPrompts), r > 0 { t += ", \(F.count(r)) re-converged" }
                if let ties = s.value(.tieFlips), ties > 0 {
                    t += "; \(F.count(ties)) of the flips \(ties == 1 ? "is a tie" : "are ties"), and counting real flips only the median first divergence is \(firstDivergenceText(s, maxTokens: maxTokens, key: .medianFirstRealDivergence))"
                }
                t += ")"
            }
            parts.append(t)
        }
        if let g = s.value(.growthExponent) {
            var t: String
            if g > 0.05 { t = "KLD grows with position (exponent \(F.fixed(g, 2)))" }
            else if g < -0.05 { t = "KLD shrinks with position (exponent \(F.fixed(g, 2)))" }
            else { t = "KLD is roughly flat along the generation (exponent \(F.fixed(g, 2)))" }
            if let r = s.value(.lateEarlyRatio) { t += ", last quarter \(F.fixed(r, 2))× the first" }
            parts.append(t)
        }
        if let obs = s.survival, let pred = s.survivalPredicted, let o = obs.last, let p = pred.last, o.isFinite, p.isFinite {
            parts.append("after \(obs.count - 1) tokens \(F.percent(o, 0)) of prompts are still identical (predicted from teacher-forced TV: \(F.percent(p, 0)))")
        }
        if let r = s.value(.referenceTextNLL), let c = s.value(.candidateTextNLL) {
            let d = c - r
            parts.append(d >= 0
                ? "the reference finds the candidate's text \(F.fixed(d, 3)) nats/token less likely than its own"
                : "the reference finds the candidate's text \(F.fixed(-d, 3)) nats/token more likely than its own")
        }
        return "\(s.name): " + parts.joined(separator: "; ") + "."
    }

    /// The KV cache's error per age or position bin: range, entries, relative error.
    static func kvErrorRows(_ bins: [ReportDocument.AgeBin]) -> [[String]] {
        bins.map { [$0.start == $0.end ? String($0.start) : "\($0.start)–\($0.end)", $0.n.map(F.grouped) ?? F.none, F.sig($0.relError)] }
    }

    /// Static activation ranges along the sequence: one row per position bin.
    static let clippingHeader = ["Positions", "Values", "Clipped", "Mean max |x| ÷ range", "Largest max |x| ÷ range"]
    static let clippingNote = "Teacher-forced, every linear input but the head's, against the static range calibrated for its site: values beyond it are clipped by the quantizer; a ratio above 1 means the range no longer covers the row."

    static func clippingRows(_ bins: [ReportDocument.ClippingBin]) -> [[String]] {
        bins.map { b in
            [b.start == b.end ? String(b.start) : "\(b.start)–\(b.end)", b.values.map(F.grouped) ?? F.none,
             b.clippedShare.map { F.sig($0 * 100, 2) + "%" } ?? F.none, F.sig(b.meanMaxOverRange), F.sig(b.maxOverRange)]
        }
    }

    /// Where along the sequence the calibrated ranges stop covering: the bin that clips most, and
    /// whether clipping rises again towards the end after its lowest point.
    static func clippingSentence(_ s: ReportDocument.SchemeResult) -> String? {
        guard let bins = s.clipping?.filter({ $0.clippedShare != nil }), !bins.isEmpty else { return nil }
        func span(_ b: ReportDocument.ClippingBin) -> String { b.start == b.end ? "position \(b.start)" : "positions \(b.start)–\(b.end)" }
        func pct(_ b: ReportDocument.ClippingBin) -> String { F.sig(b.clippedShare! * 100, 2) + "%" }
        let worst = bins.max { $0.clippedShare! < $1.clippedShare! }!
        var t = "\(s.name): static ranges clip \(pct(worst)) of activation values at \(span(worst)), the most of any position bin"
        if let low = bins.indices.min(by: { bins[$0].clippedShare! < bins[$1].clippedShare! }), low < bins.count - 1,
           let last = bins.last, last.clippedShare! > 1.2 * bins[low].clippedShare! {
            t += "; after its lowest, \(pct(bins[low])) at \(span(bins[low])), clipping rises again to \(pct(last)) at \(span(last)) (\(F.fixed(last.clippedShare! / bins[low].clippedShare!, 1))×): the calibration covers late positions less"
        }
        if let within = bins.firstIndex(where: { ($0.meanMaxOverRange ?? 0) <= 1 }) {
            t += within == 0 ? "; the typical row stays within its range" : "; the typical row is within its range from \(span(bins[within])) on"
        } else {
            t += "; the typical row exceeds its range at every position"
        }
        return t + "."
    }

    /// Each paired comparison once: (a, a − b) with a before b in the report's scheme order.
    static func pairs(_ report: ReportDocument) -> [(ReportDocument.SchemeResult, ReportDocument.Paired)] {
        let index = Dictionary(report.schemes.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [(ReportDocument.SchemeResult, ReportDocument.Paired)] = []
        for (i, s) in report.schemes.enumerated() {
            for p in s.paired where (index[p.other] ?? Int.max) > i { out.append((s, p)) }
        }
        return out
    }

    /// The paired-differences table: one row per pair of `pairs`.
    static let pairedHeader = ["Scheme", "Other", "Δ mean KLD", "95% CI", "CI excludes 0"]

    static func pairedRows(_ pairs: [(ReportDocument.SchemeResult, ReportDocument.Paired)]) -> [[String]] {
        pairs.map { s, p in
            [s.name, p.other, F.sig(p.diff), p.diffCI.map { "[\(F.sig($0.0)), \(F.sig($0.1))]" } ?? F.none,
             p.diffCI.map { $0.0 > 0 || $0.1 < 0 ? "yes" : "no" } ?? F.none]
        }
    }

    /// The summary statement under the title: model, workload and reference in one line.
    static func subtitle(_ report: ReportDocument) -> String {
        let c = report.conditions
        var t = "\(c.modelName ?? "model") against its \(c.referenceScheme ?? "fp32") reference"
        if let n = c.prompts { t += ", \(n) prompts" }
        if let m = c.maxTokens { t += ", up to \(m) generated tokens" }
        if let mode = c.mode { t += ", mode \(mode)" }
        return t + "."
    }
}
