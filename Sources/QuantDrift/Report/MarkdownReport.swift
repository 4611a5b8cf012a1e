import Foundation

/// `summary.md`: conditions, the scheme × metric table, paired differences, attribution and
/// per-layer rankings, and a short plain-language reading.
enum MarkdownReport {
    typealias F = ReportFormat

    static func render(_ report: ReportDocument) -> String {
        var md = "# QuantDrift report\n\n"
        md += F.markdown(ReportReading.subtitle(report)) + "\n\n"

        md += "## Reading\n\n"
        for s in ReportReading.sentences(report) { md += "- " + F.markdown(s) + "\n" }
        md += "\n"

        md += "## Schemes × metrics\n\n"
        md += table(ReportReading.columns.map(\.header), ReportReading.metricsRows(report))
        md += "\nKLD in nats per token (teacher-forced); first divergence, survival, text NLL and repetition from free-running generations.\n\n"

        let withPercentiles = report.schemes.filter { !$0.kldPercentiles.isEmpty }
        if !withPercentiles.isEmpty {
            md += "### KLD percentiles\n\n"
            let keys = ReportKeys.percentiles.map { $0.key }
            md += table(["Scheme"] + keys.map { "\($0)%" }, withPercentiles.map { s in
                [s.name] + keys.map { k in F.sig(s.kldPercentiles.first { $0.0 == k }?.1) }
            })
            md += "\n"
        }

        let distribution = ReportReading.distributionRows(report)
        if !distribution.isEmpty {
            md += "### KLD distribution\n\n"
            md += table(ReportReading.distributionHeader, distribution)
            md += "\n" + ReportReading.distributionNote + "\n\n"
        }

        let floorRows = ReportReading.noiseFloorRows(report)
        if !floorRows.isEmpty {
            md += "### Noise floor and tie flips\n\n"
            md += table(ReportReading.noiseFloorHeader, floorRows)
            md += "\n" + F.markdown(ReportReading.noiseFloorNote(report)) + "\n\n"
        }

        let pairs = ReportReading.pairs(report)
        if !pairs.isEmpty {
            md += "## Paired differences\n\nMean KLD of the first scheme minus the second, paired by prompt.\n\n"
            md += table(ReportReading.pairedHeader, ReportReading.pairedRows(pairs))
            md += "\n"
        }

        for s in report.schemes {
            guard let parts = s.attribution, !parts.isEmpty else { continue }
            md += "## Attribution: \(F.markdown(s.name))\n\nThe scheme split by source, each part alone against the reference.\n\n"
            md += table(["Part", "Spec", "Mean KLD [95% CI]", "Top-1"], parts.map {
                [$0.part, $0.spec ?? F.none, F.withCI($0.meanKLD, $0.meanKLDCI) { F.sig($0) }, F.percent($0.top1)]
            })
            md += "\n"
        }

        for s in report.schemes {
            guard let layers = s.perLayer, !layers.isEmpty else { continue }
            md += "## Per-layer sensitivity: \(F.markdown(s.name))\n\nOne layer quantized at a time, ranked by mean KLD.\n\n"
            md += table(["Rank", "Layer", "Mean KLD", "Top-1"], rankedLayers(layers).enumerated().map { i, l in
                [String(i + 1), String(l.layer), F.sig(l.meanKLD), F.percent(l.top1)]
            })
            md += "\n"
        }

        for (title, column, bins) in [("age", "Age (tokens)", \ReportDocument.SchemeResult.kvErrorByAge),
                                      ("position", "Position", \ReportDocument.SchemeResult.kvErrorByPosition)] {
            for s in report.schemes {
                guard let rows = s[keyPath: bins], !rows.isEmpty else { continue }
                md += "## KV-cache error by \(title): \(F.markdown(s.name))\n\n"
                md += table([column, "Entries", "Relative error"], ReportReading.kvErrorRows(rows))
                md += "\n"
            }
        }

        for s in report.schemes {
            guard let bins = s.clipping, !bins.isEmpty else { continue }
            md += "## Static activation ranges along the sequence: \(F.markdown(s.name))\n\n"
            md += table(ReportReading.clippingHeader, ReportReading.clippingRows(bins))
            md += "\n" + F.markdown(ReportReading.clippingNote) + "\n\n"
        }

        md += "## Conditions\n\n"
        for (title, entries) in report.conditions.sections where !entries.isEmpty {
            md += "- **\(title)**: " + entries.map { "\(F.markdown($0.0)) \(F.markdown($0.1))" }.joined(separator: "; ") + "\n"
        }
        md += "\n"
        md += table(["Scheme", "Spec", "Calibration"], report.schemes.map { [$0.name, $0.spec, calibrationText($0.calibration)] })
        return md
    }

    /// Layers by mean KLD, largest first (ties by layer index), whatever order the file has.
    static func rankedLayers(_ layers: [ReportDocument.LayerResult]) -> [ReportDocument.LayerResult] {
        layers.sorted { ($0.meanKLD ?? -.infinity, -$0.layer) > ($1.meanKLD ?? -.infinity, -$1.layer) }
    }

    static func calibrationText(_ c: ReportDocument.Calibration?) -> String {
        guard let c else { return "none" }
        var parts: [String] = []
        if let m = c.method { parts.append(m) }
        if let t = c.tokens { parts.append("\(F.grouped(t)) tokens") }
        if let h = c.dataSHA256 { parts.append("data sha256 \(h)") }
        return parts.isEmpty ? "yes" : parts.joined(separator: ", ")
    }

    /// A pipe table with escaped cells; numeric-looking columns stay left-aligned for simplicity.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var t = "| " + header.map(F.markdown).joined(separator: " | ") + " |\n"
        t += "|" + header.map { _ in " --- |" }.joined() + "\n"
        for r in rows { t += "| " + r.map(F.markdown).joined(separator: " | ") + " |\n" }
        return t
    }
}
