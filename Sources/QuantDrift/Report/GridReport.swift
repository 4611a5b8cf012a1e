import Foundation

/// A sweep's grid (`sweep merge`): model family × scheme × calibration × workload, every cell read
/// from that pair's report.json (mean KLD with its 95% CI, top-1, median first divergence, growth
/// exponent), and sentences saying where a result does not transfer: across families, workloads or
/// calibration sets, the extreme cells' intervals do not overlap.
public struct GridReport {
    public static let schema = "quantdrift.grid/1"

    /// One merged pair: the model's label and architecture, the workload's label, its report.
    public struct Pair {
        public var model: String
        public var architecture: String
        public var workload: String
        public var reportPath: String
        var document: ReportDocument
    }

    /// A grid row: a scheme, calibrated on a named set or not; `candidate` is its name in the reports.
    public struct Row: Sendable, Equatable {
        public var scheme: String
        public var calibration: String?
        public var candidate: String
        public init(scheme: String, calibration: String?, candidate: String) {
            self.scheme = scheme
            self.calibration = calibration
            self.candidate = candidate
        }
        var label: String { calibration.map { "\(scheme) (calibrated on \($0))" } ?? scheme }
    }

    typealias Cell = ReportDocument.Headline

    public let pairs: [Pair]
    public let rows: [Row]

    /// Reads each pair's report at `reportJSON` relative to `directory` (where the grid goes).
    public init(directory: URL, pairs list: [(model: String, architecture: String, workload: String, reportJSON: String)], rows: [Row]) throws {
        pairs = try list.map {
            Pair(model: $0.model, architecture: $0.architecture, workload: $0.workload, reportPath: $0.reportJSON,
                 document: try ReportDocument.read(path: directory.appendingPathComponent($0.reportJSON).path))
        }
        self.rows = rows
    }

    var models: [String] { pairs.reduce(into: [String]()) { if !$0.contains($1.model) { $0.append($1.model) } } }
    var workloads: [String] { pairs.reduce(into: [String]()) { if !$0.contains($1.workload) { $0.append($1.workload) } } }

    func cell(_ row: Row, model: String, workload: String) -> Cell? {
        guard let p = pairs.first(where: { $0.model == model && $0.workload == workload }),
              let s = p.document.scheme(named: row.candidate) else { return nil }
        return s.headline
    }

    // MARK: - Transfer

    /// Among `cells` (label, cell), the lowest and highest mean KLD, when their intervals are apart.
    static func apart(_ cells: [(String, Cell)]) -> (low: (String, Cell), high: (String, Cell))? {
        let valued = cells.filter { $0.1.meanKLD != nil && $0.1.ci != nil }
        guard valued.count >= 2 else { return nil }
        let low = valued.min { $0.1.meanKLD! < $1.1.meanKLD! }!, high = valued.max { $0.1.meanKLD! < $1.1.meanKLD! }!
        return high.1.ci!.0 > low.1.ci!.1 ? (low, high) : nil
    }

    static func describe(_ x: (String, Cell)) -> String {
        "\(x.0) \(ReportFormat.sig(x.1.meanKLD)) [\(ReportFormat.sig(x.1.ci?.0)), \(ReportFormat.sig(x.1.ci?.1))]"
    }

    /// Where a row's result does not carry over: across families (per workload), across workloads
    /// (per family), across calibration sets (per family and workload). Nothing when every
    /// comparison's intervals overlap.
    public func sentences() -> [String] {
        var out: [String] = []
        let ms = models, ws = workloads
        for row in rows where row.scheme != TrackerCandidate.noiseFloorName {
            if ms.count >= 2 {
                for w in ws {
                    let cells = ms.compactMap { m in cell(row, model: m, workload: w).map { (m, $0) } }
                    if let (lo, hi) = Self.apart(cells) {
                        out.append("\(row.label) on \(w) does not transfer across families: \(Self.describe(hi)) against \(Self.describe(lo)) (\(ReportFormat.fixed(hi.1.meanKLD! / max(lo.1.meanKLD!, .leastNonzeroMagnitude), 1))×, intervals apart).")
                    }
                }
            }
            if ws.count >= 2 {
                for m in ms {
                    let cells = ws.compactMap { w in cell(row, model: m, workload: w).map { (w, $0) } }
                    if let (lo, hi) = Self.apart(cells) {
                        out.append("\(row.label) on \(m) does not transfer across workloads: \(Self.describe(hi)) against \(Self.describe(lo)) (\(ReportFormat.fixed(hi.1.meanKLD! / max(lo.1.meanKLD!, .leastNonzeroMagnitude), 1))×, intervals apart).")
                    }
                }
            }
        }
        // Calibration sets of one scheme, per family and workload.
        var schemes: [String] = []
        for r in rows where r.calibration != nil && !schemes.contains(r.scheme) { schemes.append(r.scheme) }
        for s in schemes {
            let sets = rows.filter { $0.scheme == s && $0.calibration != nil }
            guard sets.count >= 2 else { continue }
            for m in ms {
                for w in ws {
                    let cells = sets.compactMap { r in cell(r, model: m, workload: w).map { ("calibrated on \(r.calibration!)", $0) } }
                    if let (lo, hi) = Self.apart(cells) {
                        out.append("\(s) on \(m) × \(w) depends on its calibration set: \(Self.describe(hi)) against \(Self.describe(lo)).")
                    }
                }
            }
        }
        if out.isEmpty { out.append("Every result carries over: across families, workloads and calibration sets the extreme cells' 95% intervals overlap.") }
        return out
    }

    // MARK: - Renderings

    func cellText(_ c: Cell?) -> String {
        guard let c else { return ReportFormat.none }
        var t = ReportFormat.withCI(c.meanKLD, c.ci) { ReportFormat.sig($0) } + " · top-1 " + ReportFormat.percent(c.top1)
        if let f = c.medianFirstDivergence { t += " · first div. " + ReportFormat.count(f) }
        if let g = c.growth { t += " · growth " + ReportFormat.fixed(g, 2) }
        return t
    }

    public func json() -> JSON {
        .object([
            ("schema", .string(Self.schema)),
            ("pairs", .array(pairs.map { .object([("model", .string($0.model)), ("architecture", .string($0.architecture)),
                                                  ("workload", .string($0.workload)), ("report", .string($0.reportPath))]) })),
            ("rows", .array(rows.map { r in
                .object([("scheme", .string(r.scheme)), ("calibration", r.calibration.map { .string($0) } ?? .null),
                         ("candidate", .string(r.candidate)),
                         ("cells", .array(pairs.map { p in
                             let c = cell(r, model: p.model, workload: p.workload)
                             return .object([("model", .string(p.model)), ("workload", .string(p.workload)),
                                             ("mean_kld", ReportBuilder.num(c?.meanKLD)),
                                             ("mean_kld_ci", c?.ci.map { .array([ReportBuilder.num($0.0), ReportBuilder.num($0.1)]) } ?? .null),
                                             ("top1_agreement", ReportBuilder.num(c?.top1)),
                                             ("median_first_divergence", ReportBuilder.num(c?.medianFirstDivergence)),
                                             ("growth_exponent", ReportBuilder.num(c?.growth))])
                         }))])
            })),
            ("reading", .array(sentences().map { .string($0) })),
        ])
    }

    public func markdown() -> String {
        var md = "# Sweep grid\n\nPer cell: mean KLD [95% CI] · top-1 · median first divergence · growth exponent (each pair's report).\n\n"
        for s in sentences() { md += "- " + ReportFormat.markdown(s) + "\n" }
        md += "\n| scheme | " + pairs.map { "\(ReportFormat.markdown($0.model)) × \(ReportFormat.markdown($0.workload))" }.joined(separator: " | ") + " |\n"
        md += "|---|" + pairs.map { _ in "---|" }.joined() + "\n"
        for r in rows {
            md += "| \(ReportFormat.markdown(r.label)) | " + pairs.map { ReportFormat.markdown(cellText(cell(r, model: $0.model, workload: $0.workload))) }.joined(separator: " | ") + " |\n"
        }
        md += "\nReports: " + pairs.map { "[\(ReportFormat.markdown($0.model)) × \(ReportFormat.markdown($0.workload))](\($0.reportPath.replacingOccurrences(of: "report.json", with: "summary.md")))" }.joined(separator: ", ") + "\n"
        return md
    }

    public func html() -> String {
        let e = ReportFormat.html
        var h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>QuantDrift: sweep grid</title>"
        h += "<style>body{font-family:system-ui,sans-serif;max-width:90em;margin:2em auto;padding:0 1em;color:#1d232b}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right;vertical-align:top}td:first-child,th:first-child{text-align:left}.note{color:#5a6572;font-size:.9em}</style></head><body>\n"
        h += "<h1>Sweep grid</h1>\n<p class=\"note\">Per cell: mean KLD [95% CI] · top-1 · median first divergence · growth exponent, from each pair's report.</p>\n<ul>"
        for s in sentences() { h += "<li>\(e(s))</li>" }
        h += "</ul>\n<table><tr><th>scheme</th>" + pairs.map { "<th>\(e($0.model)) (\(e($0.architecture))) × \(e($0.workload))</th>" }.joined() + "</tr>\n"
        for r in rows {
            h += "<tr><td>\(e(r.label))</td>" + pairs.map { "<td>\(e(cellText(cell(r, model: $0.model, workload: $0.workload))))</td>" }.joined() + "</tr>\n"
        }
        h += "</table>\n<p class=\"note\">Reports: " + pairs.map { "<a href=\"\(e($0.reportPath.replacingOccurrences(of: "report.json", with: "report.html")))\">\(e($0.model)) × \(e($0.workload))</a>" }.joined(separator: ", ") + "</p>\n"
        return h + "</body></html>\n"
    }

    /// Writes grid.json, grid.md and grid.html into `dir`, each atomically.
    public func write(to dir: URL) throws {
        try ReportWriter.writeSet(base: "grid", json: json(), markdown: markdown(), html: html(), to: dir)
    }
}
