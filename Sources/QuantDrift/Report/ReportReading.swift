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
        Column(header: "Mean KLD [95% CI]") { F.withCI($0.value("mean_kld"), $0.meanKLDCI) { F.sig($0) } },
        Column(header: "p99 KLD") { F.sig($0.value("p99_kld")) },
        Column(header: "Top-1 [95% CI]") { F.withCI($0.value("top1_agreement"), $0.top1CI) { F.percent($0) } },
        Column(header: "Median first divergence") { firstDivergenceText($0) },
        Column(header: "Growth exponent") { F.fixed($0.value("growth_exponent") ?? .nan, 3) },
        Column(header: "Late/early") { F.fixed($0.value("late_early_ratio") ?? .nan, 2) },
        Column(header: "NLL ref. text") { F.fixed($0.value("reference_text_nll") ?? .nan, 3) },
        Column(header: "NLL cand. text") { F.fixed($0.value("candidate_text_nll") ?? .nan, 3) },
        Column(header: "Repetition ref./cand.") {
            let r = $0.value("repetition_reference"), c = $0.value("repetition_candidate")
            return r == nil && c == nil ? F.none : "\(F.percent(r)) / \(F.percent(c))"
        },
    ]

    /// "57", or "none (> 256)" when the median prompt never diverged.
    static func firstDivergenceText(_ s: ReportDocument.SchemeResult, maxTokens: Int? = nil) -> String {
        guard let m = s.value("median_first_divergence") else { return F.none }
        let limit = maxTokens ?? s.prompts.compactMap(\.generatedTokens).max()
        if let limit, m > Double(limit) { return "none (> \(limit))" }
        return F.count(m)
    }

    /// One plain-language paragraph per scheme, then comparisons across schemes.
    static func sentences(_ report: ReportDocument) -> [String] {
        var out: [String] = []
        let maxTokens = report.conditions.maxTokens
        for s in report.schemes {
            out.append(sentence(s, maxTokens: maxTokens))
        }
        let ranked = report.schemes.filter { $0.value("mean_kld") != nil }
            .sorted { ($0.value("mean_kld")!, $0.name) < ($1.value("mean_kld")!, $1.name) }
        if ranked.count >= 2, let best = ranked.first, let worst = ranked.last {
            out.append("Closest to the reference: \(best.name) (mean KLD \(F.sig(best.value("mean_kld")))); "
                + "furthest: \(worst.name) (mean KLD \(F.sig(worst.value("mean_kld")))).")
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

    static func sentence(_ s: ReportDocument.SchemeResult, maxTokens: Int?) -> String {
        let kld = s.value("mean_kld"), top1 = s.value("top1_agreement")
        if kld == 0, top1 == 1, s.value("diverged_prompts") ?? 0 == 0 {
            return "\(s.name): identical to the reference (KLD 0, top-1 100%, no divergence)."
        }
        var parts: [String] = []
        var head = "mean KLD \(F.sig(kld))"
        if let ci = s.meanKLDCI { head += " (95% CI \(F.sig(ci.0))–\(F.sig(ci.1)))" }
        if let top1 { head += ", top-1 agreement \(F.percent(top1))" }
        parts.append(head)
        if let m = s.value("median_first_divergence") {
            var t: String
            if let maxTokens, m > Double(maxTokens) {
                t = "most prompts never diverge within \(maxTokens) tokens"
            } else {
                t = "first divergence after a median of \(F.count(m)) tokens"
            }
            if let d = s.value("diverged_prompts") {
                let total = s.prompts.isEmpty ? nil : s.prompts.count
                t += " (\(F.count(d))\(total.map { " of \($0)" } ?? "") prompts diverged"
                if let r = s.value("reconverged_prompts"), r > 0 { t += ", \(F.count(r)) re-converged" }
                t += ")"
            }
            parts.append(t)
        }
        if let g = s.value("growth_exponent") {
            var t: String
            if g > 0.05 { t = "KLD grows with position (exponent \(F.fixed(g, 2)))" }
            else if g < -0.05 { t = "KLD shrinks with position (exponent \(F.fixed(g, 2)))" }
            else { t = "KLD is roughly flat along the generation (exponent \(F.fixed(g, 2)))" }
            if let r = s.value("late_early_ratio") { t += ", last quarter \(F.fixed(r, 2))× the first" }
            parts.append(t)
        }
        if let obs = s.survival, let pred = s.survivalPredicted, let o = obs.last, let p = pred.last, o.isFinite, p.isFinite {
            parts.append("after \(obs.count - 1) tokens \(F.percent(o, 0)) of prompts are still identical (predicted from teacher-forced TV: \(F.percent(p, 0)))")
        }
        if let r = s.value("reference_text_nll"), let c = s.value("candidate_text_nll") {
            let d = c - r
            parts.append(d >= 0
                ? "the reference finds the candidate's text \(F.fixed(d, 3)) nats/token less likely than its own"
                : "the reference finds the candidate's text \(F.fixed(-d, 3)) nats/token more likely than its own")
        }
        return "\(s.name): " + parts.joined(separator: "; ") + "."
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
