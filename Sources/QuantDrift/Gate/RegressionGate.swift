import Foundation

/// How a limit is judged where the report gives the value a 95% interval (mean KLD, top-1, the
/// 64-token bins' mean KLD, and the paired difference against a baseline): `ci` fails only when
/// the whole interval lies beyond the limit (a regression the workload shows beyond sampling
/// noise); `point` fails when the point estimate does. Values without an interval (p99 KLD, the
/// median first divergence) are always judged on the point estimate.
public enum GateJudgement: String, Sendable, CaseIterable {
    case ci, point
}

/// One check of the regression gate: a measured value against a limit.
public struct GateCheck: Sendable, Equatable {
    public let scheme: String
    /// What was checked: `max_mean_kld`, `max_kld_at[512]`, `mean_kld vs baseline`, …
    public let name: String
    public let measured: Double?
    public let limit: Double?
    /// `<=` or `>=`: how `measured` must relate to `limit`.
    public let relation: String
    public let passed: Bool
    /// Extra words for the line (baseline value, why a value is missing).
    public let detail: String
    /// The measured value's 95% interval, when the check was judged on it.
    public var interval: [Double]? = nil

    /// `PASS w8 max_mean_kld: 0.0042 [0.0037, 0.0048] (limit <= 0.01; judged on the 95% CI)`
    public var line: String {
        var s = "\(passed ? "PASS" : "FAIL") \(scheme) \(name): "
        s += measured.map { ReportFormat.short($0, 4) } ?? "not measured"
        if let interval, interval.count == 2 {
            s += " [\(ReportFormat.short(interval[0], 4)), \(ReportFormat.short(interval[1], 4))]"
        }
        if let limit { s += " (limit \(relation) \(ReportFormat.short(limit, 4))\(detail.isEmpty ? "" : "; " + detail))" }
        else if !detail.isEmpty { s += " (\(detail))" }
        return s
    }
}

/// The outcome of `quantdrift check`: every check in a fixed order, plus notes that are not checks
/// (a scheme new since the baseline, conditions that differ).
public struct GateResult: Sendable {
    public let checks: [GateCheck]
    public let notes: [String]
    /// What this workload can see: per CI-judged check, the smallest regression it detects.
    public let sensitivity: [String]

    /// Results of several runs of the gate (thresholds and baseline) combine by concatenation.
    public init(checks: [GateCheck], notes: [String], sensitivity: [String] = []) {
        self.checks = checks
        self.notes = notes
        self.sensitivity = sensitivity
    }

    public var passedCount: Int { checks.filter(\.passed).count }
    public var failedCount: Int { checks.count - passedCount }
    /// Exactly `N passed, N failed`.
    public var summaryLine: String { "\(passedCount) passed, \(failedCount) failed" }

    /// JUnit XML: one testsuite, one testcase per check, a `failure` element for each failed one.
    public func junitXML(suite: String = "quantdrift check") -> String {
        let e = ReportFormat.html
        var x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        x += "<testsuites name=\"\(e(suite))\" tests=\"\(checks.count)\" failures=\"\(failedCount)\" errors=\"0\">\n"
        x += "  <testsuite name=\"\(e(suite))\" tests=\"\(checks.count)\" failures=\"\(failedCount)\" errors=\"0\" skipped=\"0\">\n"
        for c in checks {
            x += "    <testcase classname=\"quantdrift.\(e(c.scheme))\" name=\"\(e(c.name))\""
            if c.passed { x += "/>\n"; continue }
            x += ">\n      <failure type=\"regression\" message=\"\(e(c.line))\">\(e(c.line))</failure>\n    </testcase>\n"
        }
        x += "  </testsuite>\n</testsuites>\n"
        return x
    }

    /// Writes the JUnit XML atomically.
    public func writeJUnit(to path: String, suite: String = "quantdrift check") throws {
        try AtomicFile.write(Data(junitXML(suite: suite).utf8), to: URL(fileURLWithPath: path))
    }
}

/// `quantdrift check`: a report against absolute thresholds, or against an older report.
public enum RegressionGate {
    /// 80% power at 95% confidence: a true regression must exceed the limit by (1.96 + 0.84) standard
    /// errors, 1.43 half-widths of a 95% interval, to be caught four times in five.
    static let detectableHalfWidths = (1.96 + 0.84) / 1.96

    /// Checks `reportPath` against the limits in `thresholdsPath`.
    public static func check(reportPath: String, thresholdsPath: String, judgement: GateJudgement = .ci) throws -> GateResult {
        let report = try ReportDocument.read(path: reportPath)
        let thresholds = try Thresholds.read(path: thresholdsPath, report: report)
        return try evaluate(report, thresholds, judgement: judgement)
    }

    /// Checks `reportPath` against `baselinePath`: per scheme, the mean KLD may rise by at most
    /// old × tolerance and top-1 agreement fall by at most old × tolerance, judged on the paired
    /// difference by prompt (new − old, bootstrap 95% interval over prompts) when both reports
    /// hold the same prompts; p99 KLD at most old × (1 + tolerance) and the median first
    /// divergence at least old × (1 − tolerance), on the point estimates.
    public static func check(reportPath: String, baselinePath: String, tolerance: Double,
                             judgement: GateJudgement = .ci) throws -> GateResult {
        guard tolerance.isFinite, tolerance >= 0, tolerance < 1 else {
            throw QuantDriftError.invalidInput("--tolerance must be in [0, 1), got \(tolerance)")
        }
        let report = try ReportDocument.read(path: reportPath)
        let baseline = try ReportDocument.read(path: baselinePath)
        return try compare(report, baseline: baseline, tolerance: tolerance, judgement: judgement)
    }

    // MARK: - Evaluation

    /// A check of `value` (with its interval) against `limit`: on the interval when judged so and
    /// one is given, else on the point estimate.
    static func judged(_ scheme: String, _ name: String, _ value: Double?, _ interval: (Double, Double)?, _ limit: Double,
                       atMost: Bool, judgement: GateJudgement, detail: String = "") -> GateCheck {
        guard judgement == .ci, let value, let ci = interval, ci.0.isFinite, ci.1.isFinite else {
            return make(scheme, name, value, limit, atMost: atMost, detail: detail)
        }
        // Fail only when the whole interval lies beyond the limit.
        let passed = atMost ? ci.0 <= limit : ci.1 >= limit
        var words = detail.isEmpty ? "" : detail + "; "
        words += "judged on the 95% CI"
        if passed && (atMost ? value > limit : value < limit) { words += ": the point estimate is beyond the limit, the interval is not" }
        return GateCheck(scheme: scheme, name: name, measured: value, limit: limit, relation: atMost ? "<=" : ">=",
                         passed: passed, detail: words, interval: [ci.0, ci.1])
    }

    /// "w8 max_mean_kld: …": how far beyond the limit the true value must be for this workload to
    /// fail it four times in five (1.43 half-widths of the interval on the side that matters).
    static func sensitivity(_ c: GateCheck, what: String, prompts: Int?) -> String? {
        guard let iv = c.interval, let m = c.measured, let limit = c.limit else { return nil }
        let half = c.relation == "<=" ? m - iv[0] : iv[1] - m
        guard half.isFinite, half >= 0 else { return nil }
        let d = detectableHalfWidths * half
        let f = { (x: Double) in ReportFormat.short(x, 3) }
        let bound = c.relation == "<=" ? limit + d : limit - d
        let n = prompts.map { " with \($0) prompts" } ?? ""
        return "sensitivity \(c.scheme) \(c.name): this workload\(n) fails the check reliably (80% power) only once \(what) is beyond \(f(bound)) (the limit \(c.relation == "<=" ? "+" : "−") \(f(d))); a smaller regression may pass"
    }

    static func evaluate(_ report: ReportDocument, _ thresholds: Thresholds, judgement: GateJudgement) throws -> GateResult {
        var checks: [GateCheck] = []
        var sensitivity: [String] = []
        let prompts = report.conditions.prompts
        for l in thresholds.limits {
            let s = report.scheme(named: l.scheme)!
            if let limit = l.maxMeanKLD {
                let c = judged(s.name, "max_mean_kld", s.value(.meanKLD), s.meanKLDCI, limit, atMost: true, judgement: judgement)
                checks.append(c)
                if let t = Self.sensitivity(c, what: "the mean KLD", prompts: prompts) { sensitivity.append(t) }
            }
            if let limit = l.maxP99KLD { checks.append(make(s.name, "max_p99_kld", s.value(.p99KLD), limit, atMost: true)) }
            if let limit = l.minTop1 {
                let c = judged(s.name, "min_top1", s.value(.top1Agreement), s.top1CI, limit, atMost: false, judgement: judgement)
                checks.append(c)
                if let t = Self.sensitivity(c, what: "top-1 agreement", prompts: prompts) { sensitivity.append(t) }
            }
            if let limit = l.minMedianFirstDivergence {
                if s.value(.medianFirstDivergence) == nil, report.conditions.mode == "teacher" {
                    throw QuantDriftError.invalidInput("\(report.file): \(s.name) has no median_first_divergence (mode teacher): drop min_median_first_divergence or run free-running")
                }
                checks.append(make(s.name, "min_median_first_divergence", s.value(.medianFirstDivergence), limit, atMost: false))
            }
            for (p, limit) in l.maxKLDAt {
                let bin = s.bins64.first { $0.start <= p && p <= $0.end }!
                checks.append(judged(s.name, "max_kld_at[\(p)]", bin.meanKLD, bin.meanKLDCI, limit, atMost: true,
                                     judgement: judgement, detail: "bin \(bin.start)–\(bin.end)"))
            }
        }
        return GateResult(checks: checks, notes: [], sensitivity: sensitivity)
    }

    /// Per-prompt sums of a per-position mean (value × positions), in the report's prompt order;
    /// nil when a prompt lacks the value.
    static func promptSums(_ s: ReportDocument.SchemeResult, _ value: (ReportDocument.PromptResult) -> Double?) -> ([Double], [Int])? {
        var sums: [Double] = [], counts: [Int] = []
        for p in s.prompts {
            guard let v = value(p), let n = p.generatedTokens, n > 0 else { return nil }
            sums.append(v * Double(n))
            counts.append(n)
        }
        return sums.isEmpty ? nil : (sums, counts)
    }

    /// new − old of a per-position mean, paired by prompt: (difference, 95% bootstrap interval), or
    /// nil when the two reports do not hold the same prompts with the same lengths.
    static func pairedDifference(_ new: ReportDocument.SchemeResult, _ old: ReportDocument.SchemeResult,
                                 _ value: (ReportDocument.PromptResult) -> Double?) -> (Double, (Double, Double))? {
        guard new.prompts.map(\.id) == old.prompts.map(\.id),
              let (a, n) = promptSums(new, value), let (b, m) = promptSums(old, value), n == m else { return nil }
        let diff = zip(a, b).map { $0 - $1 }
        let stats = ClusteredStatistics(clusters: diff.count, seed: 1)
        return (stats.mean(sums: diff, counts: n).mean, stats.interval(sums: diff, counts: n))
    }

    static func compare(_ report: ReportDocument, baseline: ReportDocument, tolerance: Double,
                        judgement: GateJudgement = .ci) throws -> GateResult {
        let common = report.schemes.filter { baseline.scheme(named: $0.name) != nil }
        guard !common.isEmpty else {
            throw QuantDriftError.invalidInput("\(report.file) and \(baseline.file) have no scheme in common")
        }
        var notes: [String] = []
        for (title, new) in report.conditions.sections {
            guard let old = baseline.conditions.sections.first(where: { $0.0 == title })?.1 else { continue }
            for key in ["sha256", "prompts_sha256", "max_tokens", "mode", "sampling", "seed"] {
                if let a = new.first(where: { $0.0 == key })?.1, let b = old.first(where: { $0.0 == key })?.1, a != b {
                    notes.append("note: \(title.lowercased()) \(key) differs from the baseline (\(b) → \(a)): the comparison may not be like for like")
                }
            }
        }
        for s in report.schemes where baseline.scheme(named: s.name) == nil {
            notes.append("note: scheme \(s.name) is not in the baseline: not checked")
        }
        let up = 1 + tolerance, down = 1 - tolerance
        func factor(_ b: Double, _ f: Double) -> String { "baseline \(ReportFormat.short(b, 4)) × \(ReportFormat.short(f, 4))" }
        var checks: [GateCheck] = []
        var sensitivity: [String] = []
        for old in baseline.schemes {
            guard let s = report.scheme(named: old.name) else {
                checks.append(GateCheck(scheme: old.name, name: "present", measured: nil, limit: nil, relation: "",
                                        passed: false, detail: "in the baseline but missing from the report"))
                continue
            }
            for (key, atMost) in [(SummaryKey.meanKLD, true), (.p99KLD, true), (.top1Agreement, false), (.medianFirstDivergence, false)] {
                guard let b = old.value(key) else { continue }
                guard let v = s.value(key) else {
                    // A free-running value that the new run did not measure (mode teacher) is not a regression of it.
                    if key.part == .freeRunning { notes.append("note: \(s.name) \(key.rawValue) is null in the report: not checked"); continue }
                    checks.append(make(s.name, "\(key.rawValue) vs baseline", nil, b * (atMost ? up : down), atMost: atMost,
                                       detail: factor(b, atMost ? up : down)))
                    continue
                }
                // Mean KLD and top-1: the paired difference new − old against ± tolerance × old.
                let perPrompt: ((ReportDocument.PromptResult) -> Double?)? =
                    key == .meanKLD ? { $0.meanKLD } : key == .top1Agreement ? { $0.top1 } : nil
                if let perPrompt, let (d, ci) = pairedDifference(s, old, perPrompt) {
                    let allowed = atMost ? b * tolerance : -b * tolerance
                    let c = judged(s.name, "\(key.rawValue) vs baseline (paired difference)", d, ci, allowed, atMost: atMost,
                                   judgement: judgement,
                                   detail: "baseline \(ReportFormat.short(b, 4)) \(atMost ? "+" : "−") \(ReportFormat.short(tolerance * 100, 3))%, new − old over \(s.prompts.count) prompts")
                    checks.append(c)
                    if let t = Self.sensitivity(c, what: key == .meanKLD ? "the rise in mean KLD" : "the change in top-1 agreement",
                                                prompts: s.prompts.count) {
                        sensitivity.append(t)
                    }
                    continue
                }
                if perPrompt != nil { notes.append("note: \(s.name) \(key.rawValue): the reports do not hold the same prompts: judged on the point estimates, unpaired") }
                checks.append(make(s.name, "\(key.rawValue) vs baseline", v, b * (atMost ? up : down), atMost: atMost,
                                   detail: factor(b, atMost ? up : down)))
            }
        }
        return GateResult(checks: checks, notes: notes, sensitivity: sensitivity)
    }

    private static func make(_ scheme: String, _ name: String, _ measured: Double?, _ limit: Double, atMost: Bool,
                             detail: String = "") -> GateCheck {
        let passed = measured.map { $0.isFinite && (atMost ? $0 <= limit : $0 >= limit) } ?? false
        return GateCheck(scheme: scheme, name: name, measured: measured, limit: limit, relation: atMost ? "<=" : ">=",
                         passed: passed, detail: measured == nil ? (detail.isEmpty ? "null in the report" : detail + "; null in the report") : detail)
    }
}
