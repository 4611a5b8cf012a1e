import Foundation

/// The same schemes on several model families side by side (`run --models a,b`): per scheme each
/// family's mean KLD with its CI, top-1 agreement and median first divergence, sentences saying
/// where a scheme behaves differently across families (from the CIs, not from a threshold on the
/// means), and the activation profiles that explain it. Built from the per-family report.json
/// files, so every number here is one of theirs.
public struct FamilyReport {
    public static let schema = "quantdrift.families/1"

    /// One family's run: its label (manifest name), its report and optionally its activation profile.
    public struct Family {
        public var label: String
        public var reportPath: String
        var document: ReportDocument
        public var architecture: String
        public var profile: ActivationProfile?
    }

    public private(set) var families: [Family]
    /// Scheme names in the order of the first family's report, then any others.
    public private(set) var schemes: [String]

    /// Reads each family's report.json, at `reportJSON` relative to `directory` (the folder the
    /// family report goes to; the relative path is what it links to).
    public init(directory: URL, families list: [(label: String, reportJSON: String, architecture: String, profile: ActivationProfile?)]) throws {
        guard list.count >= 2 else { throw QuantDriftError.invalidInput("a family report needs at least two models, got \(list.count)") }
        families = try list.map {
            Family(label: $0.label, reportPath: $0.reportJSON,
                   document: try ReportDocument.read(path: directory.appendingPathComponent($0.reportJSON).path),
                   architecture: $0.architecture, profile: $0.profile)
        }
        var names: [String] = []
        for f in families { for s in f.document.schemes where !names.contains(s.name) { names.append(s.name) } }
        schemes = names
    }

    // MARK: - Comparisons

    typealias Cell = ReportDocument.Headline

    func cell(_ f: Family, _ scheme: String) -> Cell? {
        guard let s = f.document.scheme(named: scheme) else { return nil }
        return s.headline
    }

    /// The sentence for one scheme: the families with the largest and smallest mean KLD, their
    /// ratio, and whether their bootstrap CIs are disjoint (then the scheme behaves differently).
    public func sentence(for scheme: String) -> String? {
        let cells = families.compactMap { f in cell(f, scheme).flatMap { c in c.meanKLD.map { (f.label, c, $0) } } }
        guard cells.count >= 2 else { return nil }
        let sorted = cells.sorted { $0.2 < $1.2 }  // stable: equal means keep the families' order
        let hi = sorted.last!, lo = sorted.first!
        if hi.2 == 0 { return "**\(scheme)** is exact on every family (mean KLD 0)." }
        func ci(_ c: Cell) -> String { c.ci.map { "[\(ReportFormat.sig($0.0)), \(ReportFormat.sig($0.1))]" } ?? "(no CI)" }
        let ratio = lo.2 > 0 ? String(format: "%.1f×", hi.2 / lo.2) : "infinitely"
        var divergence = ""
        if let a = hi.1.medianFirstDivergence, let b = lo.1.medianFirstDivergence {
            divergence = "; free-running, the median first divergence is token \(ReportFormat.count(a)) on \(hi.0) and \(ReportFormat.count(b)) on \(lo.0)"
        }
        let numbers = "mean KLD \(ReportFormat.sig(hi.2)) \(ci(hi.1)) on \(hi.0) vs \(ReportFormat.sig(lo.2)) \(ci(lo.1)) on \(lo.0)"
        if let a = hi.1.ci, let b = lo.1.ci, a.0 > b.1 {
            return "**\(scheme)** behaves differently across families: \(numbers), \(ratio) more on \(hi.0), and the 95% CIs do not overlap\(divergence)."
        }
        return "**\(scheme)** shows no difference between families that this sample can resolve: \(numbers) (the 95% CIs overlap)\(divergence)."
    }

    /// Per site kind and family: the largest kurtosis over layers, the median, and the outlier
    /// channels summed over layers.
    struct SiteContrast {
        var site: LinearSite
        var byFamily: [(label: String, maxKurtosis: Double, medianKurtosis: Double, outliers: Int, maxAbs: Float)]
    }

    func siteContrasts() -> [SiteContrast] {
        guard families.allSatisfy({ $0.profile != nil }) else { return [] }
        return LinearSite.allCases.compactMap { site in
            let rows = families.compactMap { f -> (String, Double, Double, Int, Float)? in
                let s = f.profile!.sites.filter { $0.id.site == site }
                guard !s.isEmpty else { return nil }
                let k = s.map(\.kurtosis).sorted()
                return (f.label, k.last!, k[k.count / 2], s.reduce(0) { $0 + $1.outliers.count }, s.map(\.maxAbs).max()!)
            }
            return rows.count == families.count ? SiteContrast(site: site, byFamily: rows) : nil
        }
    }

    /// What the profiles say, in words: the site kind whose tails differ most between families.
    public func activationSentence() -> String? {
        let contrasts = siteContrasts()
        guard let widest = contrasts.max(by: { spread($0) < spread($1) }) else { return nil }
        let hi = widest.byFamily.max { $0.maxKurtosis < $1.maxKurtosis }!, lo = widest.byFamily.min { $0.maxKurtosis < $1.maxKurtosis }!
        return String(format: "The activations differ most at the %@ inputs: kurtosis up to %.0f on %@ against %.0f on %@ (3 for a Gaussian), max |x| %.0f vs %.0f, %d vs %d outlier channels over all layers. Heavier tails cost a per-tensor or per-token activation format more, which is where weight+activation schemes part ways across families.",
                      widest.site.rawValue, hi.maxKurtosis, hi.label, lo.maxKurtosis, lo.label, hi.maxAbs, lo.maxAbs, hi.outliers, lo.outliers)
    }

    private func spread(_ c: SiteContrast) -> Double {
        let k = c.byFamily.map { log(max($0.maxKurtosis, 1)) }
        return k.max()! - k.min()!
    }

    // MARK: - Output

    public func json() -> JSON {
        func num(_ x: Double?) -> JSON { x.map { $0.isFinite ? .double($0) : .null } ?? .null }
        let rows: [JSON] = schemes.map { name in
            .object([("scheme", .string(name)), ("families", .array(families.map { f in
                guard let c = cell(f, name) else { return .object([("model", .string(f.label)), ("present", .bool(false))]) }
                return .object([
                    ("model", .string(f.label)), ("mean_kld", num(c.meanKLD)),
                    ("mean_kld_ci", c.ci.map { .array([.double($0.0), .double($0.1)]) } ?? .null),
                    ("top1_agreement", num(c.top1)), ("median_first_divergence", num(c.medianFirstDivergence)),
                    ("growth_exponent", num(c.growth)),
                ])
            })), ("sentence", sentence(for: name).map { .string($0) } ?? .null)])
        }
        let contrasts: [JSON] = siteContrasts().map { c in
            .object([("site", .string(c.site.rawValue)), ("families", .array(c.byFamily.map {
                .object([("model", .string($0.label)), ("max_kurtosis", .double($0.maxKurtosis)),
                         ("median_kurtosis", .double($0.medianKurtosis)), ("outlier_channels", .int($0.outliers)),
                         ("max_abs", .double(Double($0.maxAbs)))])
            }))])
        }
        return .object([
            ("schema", .string(Self.schema)),
            ("models", .array(families.map { f in
                .object([("name", .string(f.label)), ("architecture", .string(f.architecture)),
                         ("report", .string(f.reportPath)), ("model_file", .string(f.document.conditions.modelName ?? "")),
                         ("profile_tokens", f.profile.map { .int($0.tokenCount) } ?? .null)])
            })),
            ("schemes", .array(rows)),
            ("activation_contrast", .array(contrasts)),
            ("activation_sentence", activationSentence().map { .string($0) } ?? .null),
            ("outlier_rule", .string(ActivationProfile.outlierRule)),
        ])
    }

    public func markdown() -> String {
        var md = "# QuantDrift: the same schemes on \(families.count) model families\n\n"
        md += "Models: " + families.map { "\($0.label) (\($0.architecture), report: `\($0.reportPath)`)" }.joined(separator: "; ") + ".\n"
        md += "Each family's own report states its workload, sampling and calibration; the numbers below are copied from them.\n\n"
        md += "## Per scheme\n\n| scheme | " + families.map { "\($0.label) mean KLD [95% CI] | top-1 | median first div." }.joined(separator: " | ") + " |\n"
        md += "|---|" + String(repeating: "---|---|---|", count: families.count) + "\n"
        for name in schemes {
            md += "| \(name) | " + families.map { f in
                guard let c = cell(f, name) else { return "— | — | —" }
                return "\(ReportFormat.withCI(c.meanKLD, c.ci) { ReportFormat.sig($0) }) | \(ReportFormat.percent(c.top1)) | \(ReportFormat.count(c.medianFirstDivergence))"
            }.joined(separator: " | ") + " |\n"
        }
        md += "\n## Where the families differ\n\n"
        for name in schemes { if let s = sentence(for: name) { md += "- \(s)\n" } }
        let contrasts = siteContrasts()
        if !contrasts.isEmpty {
            md += "\n## Why: activation profiles (FP32, calibration texts)\n\n"
            md += "Outlier channel: \(ActivationProfile.outlierRule). Kurtosis is Pearson's (3 for a Gaussian).\n\n"
            md += "| site | " + families.map { "\($0.label) max / median kurtosis | outliers | max abs" }.joined(separator: " | ") + " |\n"
            md += "|---|" + String(repeating: "---|---|---|", count: families.count) + "\n"
            for c in contrasts {
                md += "| \(c.site.rawValue) | " + c.byFamily.map {
                    String(format: "%.1f / %.1f | %d | %.1f", $0.maxKurtosis, $0.medianKurtosis, $0.outliers, $0.maxAbs)
                }.joined(separator: " | ") + " |\n"
            }
            if let s = activationSentence() { md += "\n\(s)\n" }
        }
        return md
    }

    public func html() -> String {
        var h = "<!doctype html><html><head><meta charset=\"utf-8\"><title>QuantDrift: model families</title>"
        h += "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}td:first-child{text-align:left}</style></head><body>"
        h += "<h1>The same schemes on \(families.count) model families</h1><p>"
        h += families.map { "<a href=\"\(ReportFormat.html($0.reportPath.replacingOccurrences(of: "report.json", with: "report.html")))\">\(ReportFormat.html($0.label))</a> (\(ReportFormat.html($0.architecture)))" }.joined(separator: ", ")
        h += "</p><table><tr><th>scheme</th>" + families.map { "<th>\(ReportFormat.html($0.label)) mean KLD [95% CI]</th><th>top-1</th><th>median first div.</th>" }.joined() + "</tr>"
        for name in schemes {
            h += "<tr><td>\(ReportFormat.html(name))</td>" + families.map { f in
                guard let c = cell(f, name) else { return "<td>—</td><td>—</td><td>—</td>" }
                return "<td>\(ReportFormat.html(ReportFormat.withCI(c.meanKLD, c.ci) { ReportFormat.sig($0) }))</td><td>\(ReportFormat.percent(c.top1))</td><td>\(ReportFormat.count(c.medianFirstDivergence))</td>"
            }.joined() + "</tr>"
        }
        h += "</table>" + kldPlot() + "<h2>Where the families differ</h2><ul>"
        for name in schemes {
            if let s = sentence(for: name) {
                h += "<li>" + ReportFormat.html(s).replacingOccurrences(of: "**\(name)**", with: "<b>\(ReportFormat.html(name))</b>") + "</li>"
            }
        }
        h += "</ul>"
        let contrasts = siteContrasts()
        if !contrasts.isEmpty {
            h += "<h2>Why: activation profiles</h2><p>\(ReportFormat.html(ActivationProfile.outlierRule)); Pearson kurtosis.</p><table><tr><th>site</th>"
            h += families.map { "<th>\(ReportFormat.html($0.label)) max / median kurtosis</th><th>outliers</th><th>max |x|</th>" }.joined() + "</tr>"
            for c in contrasts {
                h += "<tr><td>\(c.site.rawValue)</td>" + c.byFamily.map {
                    String(format: "<td>%.1f / %.1f</td><td>%d</td><td>%.1f</td>", $0.maxKurtosis, $0.medianKurtosis, $0.outliers, $0.maxAbs)
                }.joined() + "</tr>"
            }
            h += "</table>"
            if let s = activationSentence() { h += "<p>\(ReportFormat.html(s))</p>" }
        }
        return h + "</body></html>\n"
    }

    /// Mean KLD per scheme (x: the schemes with KLD > 0 in table order), one series per family with
    /// its CI band, on a log axis when the schemes span decades.
    func kldPlot() -> String {
        let shown = schemes.filter { name in families.contains { (cell($0, name)?.meanKLD ?? 0) > 0 } }
        guard !shown.isEmpty else { return "" }
        let series = families.enumerated().map { i, f in
            var points: [(x: Double, y: Double)] = [], band: [(x: Double, lo: Double, hi: Double)] = []
            for (j, name) in shown.enumerated() {
                guard let c = cell(f, name), let m = c.meanKLD, m > 0 else { continue }
                points.append((Double(j + 1), m))
                if let ci = c.ci { band.append((Double(j + 1), ci.0, ci.1)) }
            }
            return SVGPlot.Series(name: f.label, colour: SVGPlot.colour(i), points: points, band: band, markers: true)
        }
        let key = shown.enumerated().map { "\($0.offset + 1) = \($0.element)" }.joined(separator: ", ")
        return "<h2>Mean KLD per scheme</h2>" + SVGPlot.line(SVGPlot.LinePlot(
            title: "Mean KLD (teacher-forced) per scheme and family, 95% CI", xLabel: "scheme: \(key)", yLabel: "mean KLD",
            logY: nil, xRange: (0.5, Double(shown.count) + 0.5), series: series))
    }

    /// Writes families.json, families.md and families.html into `dir`, each atomically.
    public func write(to dir: URL) throws {
        try ReportWriter.writeSet(base: "families", json: json(), markdown: markdown(), html: html(), to: dir)
    }
}
