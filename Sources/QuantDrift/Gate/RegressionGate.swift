import Foundation

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

    /// `PASS w8 max_mean_kld: 0.0042 (limit <= 0.01)`
    public var line: String {
        var s = "\(passed ? "PASS" : "FAIL") \(scheme) \(name): "
        s += measured.map { ReportFormat.short($0, 4) } ?? "not measured"
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

    /// Results of several runs of the gate (thresholds and baseline) combine by concatenation.
    public init(checks: [GateCheck], notes: [String]) {
        self.checks = checks
        self.notes = notes
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
    /// Checks `reportPath` against the limits in `thresholdsPath`.
    public static func check(reportPath: String, thresholdsPath: String) throws -> GateResult {
        let report = try ReportDocument.read(path: reportPath)
        let thresholds = try Thresholds.read(path: thresholdsPath, report: report)
        return GateResult(checks: try evaluate(report, thresholds), notes: [])
    }

    /// Checks `reportPath` against `baselinePath`: per scheme, mean and p99 KLD at most
    /// old × (1 + tolerance), top-1 agreement and median first divergence at least old × (1 − tolerance).
    public static func check(reportPath: String, baselinePath: String, tolerance: Double) throws -> GateResult {
        guard tolerance.isFinite, tolerance >= 0, tolerance < 1 else {
            throw QuantDriftError.invalidInput("--tolerance must be in [0, 1), got \(tolerance)")
        }
        let report = try ReportDocument.read(path: reportPath)
        let baseline = try ReportDocument.read(path: baselinePath)
        return try compare(report, baseline: baseline, tolerance: tolerance)
    }

    // MARK: - Evaluation

    static func evaluate(_ report: ReportDocument, _ thresholds: Thresholds) throws -> [GateCheck] {
        var checks: [GateCheck] = []
        for l in thresholds.limits {
            let s = report.scheme(named: l.scheme)!
            func add(_ name: String, _ key: SummaryKey, _ limit: Double?, atMost: Bool) {
                guard let limit else { return }
                checks.append(make(s.name, name, s.value(key), limit, atMost: atMost))
            }
            add("max_mean_kld", .meanKLD, l.maxMeanKLD, atMost: true)
            add("max_p99_kld", .p99KLD, l.maxP99KLD, atMost: true)
            add("min_top1", .top1Agreement, l.minTop1, atMost: false)
            if let limit = l.minMedianFirstDivergence {
                if s.value(.medianFirstDivergence) == nil, report.conditions.mode == "teacher" {
                    throw QuantDriftError.invalidInput("\(report.file): \(s.name) has no median_first_divergence (mode teacher): drop min_median_first_divergence or run free-running")
                }
                checks.append(make(s.name, "min_median_first_divergence", s.value(.medianFirstDivergence), limit, atMost: false))
            }
            for (p, limit) in l.maxKLDAt {
                let bin = s.bins64.first { $0.start <= p && p <= $0.end }!
                checks.append(make(s.name, "max_kld_at[\(p)]", bin.meanKLD, limit, atMost: true,
                                   detail: "bin \(bin.start)–\(bin.end)"))
            }
        }
        return checks
    }

    static func compare(_ report: ReportDocument, baseline: ReportDocument, tolerance: Double) throws -> GateResult {
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
                checks.append(make(s.name, "\(key.rawValue) vs baseline", v, b * (atMost ? up : down), atMost: atMost,
                                   detail: factor(b, atMost ? up : down)))
            }
        }
        return GateResult(checks: checks, notes: notes)
    }

    private static func make(_ scheme: String, _ name: String, _ measured: Double?, _ limit: Double, atMost: Bool,
                             detail: String = "") -> GateCheck {
        let passed = measured.map { $0.isFinite && (atMost ? $0 <= limit : $0 >= limit) } ?? false
        return GateCheck(scheme: scheme, name: name, measured: measured, limit: limit, relation: atMost ? "<=" : ">=",
                         passed: passed, detail: measured == nil ? (detail.isEmpty ? "null in the report" : detail + "; null in the report") : detail)
    }
}
