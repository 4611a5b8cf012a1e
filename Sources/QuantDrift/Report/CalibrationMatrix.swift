import Foundation

/// "Calibrated on X, evaluated on Y" (`compare --calibrations … --workloads …`): every calibrated
/// scheme once per calibration set, on every workload. Per scheme a matrix of mean KLD (95% CI) and
/// top-1, the diagonal (the calibration set of the workload's own kind) marked, and sentences
/// saying what a mismatched calibration costs, all read from the per-workload report.json files.
public struct CalibrationMatrix {
    public static let schema = "quantdrift.calibration-matrix/1"

    /// A candidate of the runs: which scheme, calibrated on which set (nil: needs none).
    public struct Entry: Sendable {
        public var candidate: String
        public var scheme: String
        public var calibration: String?

        public init(candidate: String, scheme: String, calibration: String?) {
            self.candidate = candidate
            self.scheme = scheme
            self.calibration = calibration
        }
    }

    typealias Cell = ReportDocument.Headline

    let workloads: [(name: String, reportPath: String, document: ReportDocument)]
    let calibrations: [(name: String, conditions: JSON)]
    let entries: [Entry]
    let conditions: JSON

    /// Reads each workload's report.json at `reportJSON`, relative to `directory` (where the matrix goes).
    public init(directory: URL, workloads list: [(name: String, reportJSON: String)], calibrations: [(name: String, conditions: JSON)],
                entries: [Entry], conditions: JSON) throws {
        workloads = try list.map { ($0.name, $0.reportJSON, try ReportDocument.read(path: directory.appendingPathComponent($0.reportJSON).path)) }
        self.calibrations = calibrations
        self.entries = entries
        self.conditions = conditions
    }

    /// Scheme names in entry order.
    var schemeNames: [String] {
        var out: [String] = []
        for e in entries where !out.contains(e.scheme) { out.append(e.scheme) }
        return out
    }

    /// The calibration sets a scheme was run with (nil for an uncalibrated scheme).
    func rows(_ scheme: String) -> [String?] { entries.filter { $0.scheme == scheme }.map(\.calibration) }

    func cell(_ scheme: String, calibration: String?, workload: Int) -> Cell? {
        guard let e = entries.first(where: { $0.scheme == scheme && $0.calibration == calibration }),
              let s = workloads[workload].document.scheme(named: e.candidate) else { return nil }
        return s.headline
    }

    /// The diagonal: the calibration set named as the workload.
    static func isDiagonal(_ calibration: String?, _ workload: String) -> Bool { calibration == workload }

    /// Per scheme and workload with a matched calibration: the worst mismatched set and its KLD
    /// over the matched one's, and whether their intervals are apart.
    struct Penalty {
        var scheme: String
        var workload: String
        var worst: String
        var matched: Double
        var mismatched: Double
        var apart: Bool
        var ratio: Double { mismatched / matched }
    }

    func penalties() -> [Penalty] {
        var out: [Penalty] = []
        for name in schemeNames {
            let cals = rows(name).compactMap { $0 }
            for (w, wl) in workloads.enumerated() {
                guard cals.contains(wl.name), let diag = cell(name, calibration: wl.name, workload: w),
                      let m = diag.meanKLD, m > 0 else { continue }
                var worst: (String, Cell, Double)?
                for c in cals where c != wl.name {
                    guard let other = cell(name, calibration: c, workload: w), let k = other.meanKLD else { continue }
                    if worst == nil || k > worst!.2 { worst = (c, other, k) }
                }
                guard let (c, other, k) = worst else { continue }
                let apart = (other.ci?.0 ?? k) > (diag.ci?.1 ?? m)
                out.append(Penalty(scheme: name, workload: wl.name, worst: c, matched: m, mismatched: k, apart: apart))
            }
        }
        return out
    }

    /// The plain-language reading: per scheme the mean off-diagonal penalty, then where mismatch hurts most.
    public func sentences() -> [String] {
        let ps = penalties()
        var out: [String] = []
        for name in schemeNames {
            let mine = ps.filter { $0.scheme == name }
            guard !mine.isEmpty else {
                if rows(name).allSatisfy({ $0 == nil }) { out.append("\(name) needs no calibration: one row, the same for every set.") }
                continue
            }
            let geo = exp(mine.map { log($0.ratio) }.reduce(0, +) / Double(mine.count))
            let worst = mine.max { $0.ratio < $1.ratio }!
            var t = "\(name): calibrating on another set's kind costs on average \(ReportFormat.fixed(geo, 2))× the matched calibration's mean KLD"
            t += "; worst on \(worst.workload) calibrated on \(worst.worst): \(ReportFormat.sig(worst.mismatched)) against \(ReportFormat.sig(worst.matched)) (\(ReportFormat.fixed(worst.ratio, 2))×"
            t += worst.apart ? ", the intervals do not overlap)." : ", within the intervals: not a clear difference)."
            if geo < 1 { t += " A mismatched set does no worse here than the matched one." }
            out.append(t)
        }
        if let worst = ps.max(by: { $0.ratio < $1.ratio }), worst.ratio > 1 {
            out.append("Where mismatch hurts most: \(worst.scheme) calibrated on \(worst.worst), evaluated on \(worst.workload) (\(ReportFormat.fixed(worst.ratio, 2))× the mean KLD of calibrating on \(worst.workload)).")
        }
        return out
    }

    // MARK: - Renderings

    func cellText(_ c: Cell?) -> String {
        guard let c else { return ReportFormat.none }
        return ReportFormat.withCI(c.meanKLD, c.ci) { ReportFormat.sig($0) } + " · " + ReportFormat.percent(c.top1)
    }

    func label(_ calibration: String?) -> String { calibration.map { "calibrated on \($0)" } ?? "no calibration" }

    public func json() -> JSON {
        .object([
            ("schema", .string(Self.schema)),
            ("conditions", conditions),
            ("calibrations", .array(calibrations.map { .object([("name", .string($0.name)), ("calibration", $0.conditions)]) })),
            ("workloads", .array(workloads.map { w in
                .object([("name", .string(w.name)), ("report", .string(w.reportPath)), ("prompts", w.document.conditions.prompts.map { .int($0) } ?? .null)])
            })),
            ("schemes", .array(schemeNames.map { name in
                .object([("scheme", .string(name)), ("cells", .array(rows(name).flatMap { cal in
                    workloads.indices.map { w -> JSON in
                        let c = cell(name, calibration: cal, workload: w)
                        return .object([("calibration", cal.map { .string($0) } ?? .null), ("workload", .string(workloads[w].name)),
                                        ("diagonal", .bool(Self.isDiagonal(cal, workloads[w].name))),
                                        ("mean_kld", ReportBuilder.num(c?.meanKLD)),
                                        ("mean_kld_ci", c?.ci.map { .array([ReportBuilder.num($0.0), ReportBuilder.num($0.1)]) } ?? .null),
                                        ("top1_agreement", ReportBuilder.num(c?.top1))])
                    }
                }))])
            })),
            ("penalties", .array(penalties().map { p in
                .object([("scheme", .string(p.scheme)), ("workload", .string(p.workload)), ("worst_calibration", .string(p.worst)),
                         ("matched_mean_kld", .double(p.matched)), ("mismatched_mean_kld", .double(p.mismatched)),
                         ("ratio", .double(p.ratio)), ("intervals_apart", .bool(p.apart))])
            })),
            ("reading", .array(sentences().map { .string($0) })),
        ])
    }

    public func markdown() -> String {
        var md = "# Calibrated on X, evaluated on Y\n\n"
        md += "Mean KLD [95% CI] · top-1 agreement, teacher-forced. **Bold**: the diagonal (calibration set of the workload's own kind).\n\n"
        for s in sentences() { md += "- " + ReportFormat.markdown(s) + "\n" }
        for name in schemeNames {
            md += "\n## \(ReportFormat.markdown(name))\n\n| | " + workloads.map { "evaluated on \(ReportFormat.markdown($0.name))" }.joined(separator: " | ") + " |\n"
            md += "|---|" + workloads.map { _ in "---|" }.joined() + "\n"
            for cal in rows(name) {
                md += "| \(label(cal)) | " + workloads.indices.map { w in
                    let t = ReportFormat.markdown(cellText(cell(name, calibration: cal, workload: w)))
                    return Self.isDiagonal(cal, workloads[w].name) ? "**\(t)**" : t
                }.joined(separator: " | ") + " |\n"
            }
        }
        md += "\nReports: " + workloads.map { "[\(ReportFormat.markdown($0.name))](\($0.reportPath.replacingOccurrences(of: "report.json", with: "summary.md")))" }.joined(separator: ", ") + "\n"
        return md
    }

    public func html() -> String {
        let e = ReportFormat.html
        var h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>QuantDrift: calibration × workload</title>"
        h += "<style>body{font-family:system-ui,sans-serif;max-width:75em;margin:2em auto;padding:0 1em;color:#1d232b}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child,th:first-child{text-align:left}td.diag{background:#e8f1fb;font-weight:600}.note{color:#5a6572;font-size:.9em}</style></head><body>\n"
        h += "<h1>Calibrated on X, evaluated on Y</h1>\n<p class=\"note\">Mean KLD [95% CI] · top-1 agreement, teacher-forced; shaded: the diagonal (the calibration set of the workload's own kind).</p>\n<ul>"
        for s in sentences() { h += "<li>\(e(s))</li>" }
        h += "</ul>\n"
        for name in schemeNames {
            h += "<h2>\(e(name))</h2>\n<table><tr><th></th>" + workloads.map { "<th>evaluated on \(e($0.name))</th>" }.joined() + "</tr>\n"
            for cal in rows(name) {
                h += "<tr><td>\(e(label(cal)))</td>" + workloads.indices.map { w in
                    let diag = Self.isDiagonal(cal, workloads[w].name)
                    return "<td\(diag ? " class=\"diag\"" : "")>\(e(cellText(cell(name, calibration: cal, workload: w))))</td>"
                }.joined() + "</tr>\n"
            }
            h += "</table>\n"
        }
        h += "<p class=\"note\">Reports: " + workloads.map { "<a href=\"\(e($0.reportPath.replacingOccurrences(of: "report.json", with: "report.html")))\">\(e($0.name))</a>" }.joined(separator: ", ") + "</p>\n"
        return h + "</body></html>\n"
    }

    /// Writes matrix.json, matrix.md and matrix.html into `dir`, each atomically.
    public func write(to dir: URL) throws {
        try ReportWriter.writeSet(base: "matrix", json: json(), markdown: markdown(), html: html(), to: dir)
    }
}
