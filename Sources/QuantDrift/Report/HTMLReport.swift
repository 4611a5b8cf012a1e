import Foundation

/// `report.html`: one self-contained file (inline CSS and SVG, no scripts, no external resources),
/// written as well-formed XHTML-style markup so that a simple XML check can verify it.
enum HTMLReport {
    typealias F = ReportFormat

    static func render(_ report: ReportDocument) -> String {
        var h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
        h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n"
        h += "<title>QuantDrift report: \(F.html(report.conditions.modelName ?? "model"))</title>\n"
        h += "<style>\(css)</style>\n</head>\n<body>\n<main>\n"
        h += "<h1>QuantDrift report</h1>\n<p class=\"sub\">\(F.html(ReportReading.subtitle(report)))</p>\n"

        h += "<section id=\"reading\">\n<h2>Reading</h2>\n<ul>\n"
        for s in ReportReading.sentences(report) { h += "<li>\(F.html(s))</li>\n" }
        h += "</ul>\n</section>\n"

        h += "<section id=\"metrics\">\n<h2>Schemes × metrics</h2>\n"
        h += table(ReportReading.columns.map(\.header), ReportReading.metricsRows(report),
                   colours: report.schemes.indices.map(SVGPlot.colour), cls: "metrics")
        h += "<p class=\"note\">KLD in nats per token (teacher-forced); first divergence, survival, text NLL and repetition from free-running generations. – = does not apply.</p>\n"
        let distribution = ReportReading.distributionRows(report)
        if !distribution.isEmpty {
            h += "<h3>KLD distribution</h3>\n"
            h += table(ReportReading.distributionHeader, distribution)
            h += "<p class=\"note\">\(F.html(ReportReading.distributionNote))</p>\n"
        }
        let floorRows = ReportReading.noiseFloorRows(report)
        if !floorRows.isEmpty {
            h += "<h3>Noise floor and tie flips</h3>\n"
            h += table(ReportReading.noiseFloorHeader, floorRows)
            h += "<p class=\"note\">\(F.html(ReportReading.noiseFloorNote(report)))</p>\n"
        }
        let pairs = ReportReading.pairs(report)
        if !pairs.isEmpty {
            h += "<h3>Paired differences (first − second, paired by prompt)</h3>\n"
            h += table(ReportReading.pairedHeader, ReportReading.pairedRows(pairs))
        }
        h += "</section>\n"

        h += "<section id=\"plots\">\n<h2>Along the generation</h2>\n"
        h += figure(kldPlot(report), caption: "Mean KL(P‖Q) per log-spaced position bin, shaded: 95% bootstrap interval over prompts.")
        h += figure(top1Plot(report), caption: "Share of positions where the candidate's most likely token is the reference's.")
        if let survival = survivalPlot(report) {
            h += figure(survival, caption: "Free-running: share of prompts whose continuation is still identical to the reference's after t tokens (solid), the survival predicted from teacher-forced TV, Π(1 − TV) (dashed), and, where some flips are ties, the survival to the first real flip (dotted, Kaplan–Meier).")
        } else {
            h += "<p class=\"note\">No survival curves: this report has no free-running results (mode teacher).</p>\n"
        }
        h += "</section>\n"

        let perLayer = report.schemes.enumerated().filter { !($0.element.perLayer ?? []).isEmpty }
        let attributed = report.schemes.enumerated().filter { !($0.element.attribution ?? []).isEmpty }
        if !perLayer.isEmpty || !attributed.isEmpty {
            h += "<section id=\"attribution\">\n<h2>Where the drift comes from</h2>\n"
            for (i, s) in attributed { h += figure(attributionPlot(s, colour: SVGPlot.colour(i)), caption: "Each part of \(s.name) alone against the reference; whiskers: 95% CI.") }
            for (i, s) in perLayer {
                h += figure(perLayerPlot(s, colour: SVGPlot.colour(i)), caption: "One layer of \(s.name) quantized at a time; the five most sensitive layers are labelled.")
                let ranked = MarkdownReport.rankedLayers(s.perLayer!)
                h += "<details><summary>Per-layer ranking: \(F.html(s.name))</summary>\n"
                h += table(["Rank", "Layer", "Mean KLD", "Top-1"], ranked.enumerated().map { k, l in
                    [String(k + 1), String(l.layer), F.sig(l.meanKLD), F.percent(l.top1)]
                })
                h += "</details>\n"
            }
            h += "</section>\n"
        }

        let clipped = report.schemes.filter { !($0.clipping ?? []).isEmpty }
        let kvByPosition = report.schemes.filter { !($0.kvErrorByPosition ?? []).isEmpty }
        if !clipped.isEmpty || !kvByPosition.isEmpty {
            h += "<section id=\"sequence\">\n<h2>Along the sequence</h2>\n"
            for s in clipped {
                h += "<h3>Static activation ranges: \(F.html(s.name))</h3>\n" + table(ReportReading.clippingHeader, ReportReading.clippingRows(s.clipping!))
            }
            if !clipped.isEmpty { h += "<p class=\"note\">\(F.html(ReportReading.clippingNote))</p>\n" }
            for s in kvByPosition {
                h += "<h3>KV-cache error by position: \(F.html(s.name))</h3>\n" + table(["Position", "Entries", "Relative error"],
                                                                                       ReportReading.kvErrorRows(s.kvErrorByPosition!))
            }
            h += "</section>\n"
        }

        h += "<section id=\"prompts\">\n<h2>Per prompt</h2>\n"
        for s in report.schemes where !s.prompts.isEmpty {
            h += "<details><summary>\(F.html(s.name)): \(s.prompts.count) prompts</summary>\n"
            h += table(["Prompt", "Generated", "Mean KLD", "Max KLD", "Top-1", "First divergence", "Re-converged"], s.prompts.map { p in
                [p.id, p.generatedTokens.map(String.init) ?? F.none, F.sig(p.meanKLD), F.sig(p.maxKLD), F.percent(p.top1),
                 p.firstDivergence.map { "\($0)" + (p.tieFlip == true ? " (tie flip)" : "") } ?? "none",
                 p.reconverged.map { $0 ? "yes" : "no" } ?? F.none]
            })
            h += "</details>\n"
        }
        h += "</section>\n"

        h += "<section id=\"conditions\">\n<h2>Conditions</h2>\n"
        for (title, entries) in report.conditions.sections where !entries.isEmpty {
            h += "<h3>\(F.html(title))</h3>\n<dl>\n"
            for (k, v) in entries { h += "<dt>\(F.html(k))</dt><dd>\(F.html(v))</dd>\n" }
            h += "</dl>\n"
        }
        h += "<h3>Schemes</h3>\n"
        h += table(["Scheme", "Spec", "Calibration"], report.schemes.map { [$0.name, $0.spec, MarkdownReport.calibrationText($0.calibration)] },
                   colours: report.schemes.indices.map(SVGPlot.colour))
        h += "</section>\n</main>\n</body>\n</html>\n"
        return h
    }

    // MARK: - Plots

    /// x of a bin: the geometric middle of its positions (log axis).
    private static func middle(_ b: ReportDocument.Bin) -> Double { (Double(b.start) * Double(b.end)).squareRoot() }

    static func kldPlot(_ report: ReportDocument) -> String {
        let series = report.schemes.enumerated().map { i, s in
            SVGPlot.Series(name: s.name, colour: SVGPlot.colour(i),
                           points: s.logBins.map { (middle($0), $0.meanKLD ?? .nan) },
                           band: s.logBins.compactMap { b in b.meanKLDCI.map { (middle(b), $0.0, $0.1) } },
                           dashed: i >= SVGPlot.palette.count, markers: true)
        }
        return SVGPlot.line(.init(title: "Mean KLD vs position", xLabel: "position in the continuation (tokens)",
                                  yLabel: "mean KLD (nats)", logX: true, logY: nil, xRange: positionRange(report), series: series))
    }

    static func top1Plot(_ report: ReportDocument) -> String {
        let series = report.schemes.enumerated().map { i, s in
            SVGPlot.Series(name: s.name, colour: SVGPlot.colour(i), points: s.logBins.map { (middle($0), $0.top1 ?? .nan) },
                           dashed: i >= SVGPlot.palette.count, markers: true)
        }
        let lowest = series.flatMap { $0.points.map(\.y) }.filter(\.isFinite).min() ?? 0
        // Zoom in when every scheme agrees often: top-1 of good schemes sits above 90%.
        let floor = lowest >= 0.9 ? 0.9 : lowest >= 0.5 ? 0.5 : 0
        return SVGPlot.line(.init(title: "Top-1 agreement vs position", xLabel: "position in the continuation (tokens)",
                                  yLabel: "top-1 agreement", logX: true, yRange: (floor, 1), xRange: positionRange(report),
                                  yPercent: true, series: series))
    }

    /// Positions 1 … the last bin's end, so the axis spans the whole continuation.
    private static func positionRange(_ report: ReportDocument) -> (Double, Double)? {
        guard let end = report.schemes.flatMap({ $0.logBins.map(\.end) }).max(), end > 1 else { return nil }
        return (1, Double(end))
    }

    static func survivalPlot(_ report: ReportDocument) -> String? {
        var series: [SVGPlot.Series] = []
        var legend: [SVGPlot.LegendEntry] = []
        var anyTies = false
        for (i, s) in report.schemes.enumerated() {
            guard let obs = s.survival, !obs.isEmpty else { continue }
            let colour = SVGPlot.colour(i)
            series.append(.init(name: s.name, colour: colour, points: obs.enumerated().map { (Double($0), $1) }))
            if let pred = s.survivalPredicted, !pred.isEmpty {
                series.append(.init(name: s.name + " predicted", colour: colour,
                                    points: pred.enumerated().map { (Double($0), $1) }, dashed: true))
            }
            if let real = s.survivalReal, (s.value(.tieFlips) ?? 0) > 0 {
                series.append(.init(name: s.name + " real flips", colour: colour,
                                    points: real.enumerated().map { (Double($0), $1) }, dotted: true))
                anyTies = true
            }
            legend.append(.init(name: s.name, colour: colour))
        }
        guard !series.isEmpty else { return nil }
        legend.append(.init(name: "observed", colour: "#333333"))
        legend.append(.init(name: "predicted from TV", colour: "#333333", dashed: true))
        if anyTies { legend.append(.init(name: "real flips only", colour: "#333333", dotted: true)) }
        let maxT = series.map { Double($0.points.count - 1) }.max() ?? 1
        return SVGPlot.line(.init(title: "Survival: prompts still identical after t tokens", xLabel: "t (generated tokens)",
                                  yLabel: "share of prompts", yRange: (0, 1), xRange: (0, max(maxT, 1)), yPercent: true,
                                  series: series, legend: legend))
    }

    static func perLayerPlot(_ s: ReportDocument.SchemeResult, colour: String) -> String {
        let layers = (s.perLayer ?? []).sorted { $0.layer < $1.layer }
        let top = Set(MarkdownReport.rankedLayers(layers).prefix(5).map(\.layer))
        let bars = layers.map { l in
            SVGPlot.Bar(label: String(l.layer), value: l.meanKLD, colour: top.contains(l.layer) ? colour : colour + "99",
                        valueLabel: top.contains(l.layer) ? F.sig(l.meanKLD, 2) : nil)
        }
        return SVGPlot.bars(.init(title: "Per-layer sensitivity: \(s.name)", valueLabel: "mean KLD (nats)",
                                  categoryLabel: "layer quantized alone", bars: bars))
    }

    static func attributionPlot(_ s: ReportDocument.SchemeResult, colour: String) -> String {
        let bars = (s.attribution ?? []).map { a in
            SVGPlot.Bar(label: a.spec.map { "\(a.part): \($0)" } ?? a.part, value: a.meanKLD, ci: a.meanKLDCI,
                        colour: a.part == "all" ? colour : colour + "aa")
        }
        return SVGPlot.bars(.init(title: "Attribution: \(s.name)", valueLabel: "mean KLD (nats)", categoryLabel: "part",
                                  bars: bars, horizontal: true))
    }

    // MARK: - Pieces

    private static func figure(_ svg: String, caption: String) -> String {
        "<figure>\n\(svg)\n<figcaption>\(F.html(caption))</figcaption>\n</figure>\n"
    }

    /// A table with escaped cells; `colours` marks the first cell of each row with a swatch.
    private static func table(_ header: [String], _ rows: [[String]], colours: [String]? = nil, cls: String? = nil) -> String {
        var t = (cls.map { "<div class=\"wide\"><table class=\"\($0)\">" } ?? "<table>") + "\n<thead><tr>" + header.map { "<th>\(F.html($0))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
        for (i, r) in rows.enumerated() {
            t += "<tr>"
            for (k, cell) in r.enumerated() {
                if k == 0, let colours, i < colours.count {
                    t += "<td class=\"name\"><span class=\"swatch\" style=\"background:\(colours[i])\"></span>\(F.html(cell))</td>"
                } else {
                    t += "<td>\(F.html(cell))</td>"
                }
            }
            t += "</tr>\n"
        }
        return t + "</tbody>\n</table>\n" + (cls == nil ? "" : "</div>\n")
    }

    private static let css = """
    body{margin:0;background:#f6f7f9;color:#1d232b;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
    main{max-width:1200px;margin:0 auto;padding:24px 20px 48px}
    h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 10px;border-bottom:1px solid #d5dae1;padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
    .sub{color:#4a5562;margin:0 0 8px}.note{color:#5a6572;font-size:13px}
    table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0;width:100%}
    th,td{border:1px solid #d5dae1;padding:4px 7px;text-align:left;vertical-align:top}th{background:#eef1f5}
    td.name{white-space:nowrap;font-weight:600}table.metrics td{white-space:nowrap}.wide{overflow-x:auto}.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
    figure{margin:14px 0;background:#fff;border:1px solid #d5dae1;padding:6px}figcaption{font-size:13px;color:#4a5562;padding:2px 6px}
    svg.plot{display:block;width:100%;height:auto}
    svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#1d232b}
    svg .title{font-size:16px;font-weight:600}svg .tick{font-size:12px;fill:#4a5562}svg .label{font-size:13px}
    svg .legend{font-size:13px}svg .value{font-size:11px;fill:#333}svg .note{font-size:11px;fill:#5a6572}
    svg .grid{stroke:#e4e8ee;stroke-width:1}svg .axis{stroke:#55606c;stroke-width:1.2}svg .whisker{stroke:#222;stroke-width:1.4}
    details{margin:8px 0}summary{cursor:pointer;font-weight:600}
    dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:4px 0;font-size:14px}dt{color:#4a5562}dd{margin:0;word-break:break-all}
    """
}
