import Foundation

/// Inline SVG charts drawn by our own code: line plots (optional log axes, CI bands, dashed
/// series) and bar charts (vertical or horizontal, optional whiskers). Coordinates print with one
/// decimal through a fixed format, so the same data gives the same bytes.
enum SVGPlot {
    typealias F = ReportFormat

    /// Readable, colour-blind-friendly-ish palette (Tableau 10); schemes beyond ten reuse it dashed.
    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

    static func colour(_ i: Int) -> String { palette[i % palette.count] }

    struct Series {
        var name: String
        var colour: String
        var points: [(x: Double, y: Double)]
        var band: [(x: Double, lo: Double, hi: Double)] = []
        var dashed = false
        var markers = false
        /// Dotted instead (a third line style, after solid and dashed).
        var dotted = false
    }

    struct LegendEntry {
        var name: String
        var colour: String
        var dashed = false
        var dotted = false
    }

    // Geometry of every chart (SVG user units; the SVG scales to the page width).
    static let width = 960.0
    static let left = 78.0, right = 215.0, top = 40.0, bottom = 56.0

    // MARK: - Line plot

    struct LinePlot {
        var title: String
        var xLabel: String
        var yLabel: String
        var logX = false
        /// nil: decide from the data (log when the series means span more than two decades).
        var logY: Bool? = false
        var yRange: (Double, Double)? = nil
        var xRange: (Double, Double)? = nil
        var yPercent = false
        var series: [Series]
        var legend: [LegendEntry]? = nil
        var height = 380.0
        var note: String? = nil
    }

    static func line(_ p: LinePlot) -> String {
        let plotW = width - left - right, plotH = p.height - top - bottom
        let finite = p.series.flatMap { s in s.points.filter { $0.x.isFinite && $0.y.isFinite } }
        let xs = finite.map(\.x)
        var ys = finite.map(\.y)
        ys += p.series.flatMap { $0.band.flatMap { [$0.lo, $0.hi] } }.filter(\.isFinite)

        // Decide the y scale: log when positive means differ by more than a factor 10 (a good
        // scheme's line would otherwise lie flat on the axis).
        var logY = p.logY ?? false
        if p.logY == nil {
            let means = p.series.compactMap { s -> Double? in
                let v = s.points.map(\.y).filter { $0.isFinite && $0 > 0 }
                return v.isEmpty ? nil : v.reduce(0, +) / Double(v.count)
            }
            if let lo = means.min(), let hi = means.max(), hi / lo > 10 { logY = true }
        }

        var x0 = p.xRange?.0 ?? (xs.min() ?? 1), x1 = p.xRange?.1 ?? (xs.max() ?? 2)
        if p.logX { x0 = max(x0, 1); x1 = max(x1, x0 * 2) } else if x1 <= x0 { x1 = x0 + 1 }
        var y0: Double, y1: Double
        if let r = p.yRange { (y0, y1) = r } else if logY {
            // The lower end follows the lines, not the bands (a band reaching 0 would stretch the axis
            // over many empty decades); bands are clipped at the axis.
            let low = finite.map(\.y).filter { $0 > 0 }.min() ?? 1e-3
            let high = ys.filter { $0 > 0 }.max() ?? 1
            y0 = pow(10, floor(log10(low)))
            y1 = pow(10, ceil(log10(high)))
            if y1 <= y0 { y1 = y0 * 10 }
        } else {
            y0 = min(0, ys.min() ?? 0)
            let hi = ys.max() ?? 1
            y1 = hi > y0 ? niceCeil(hi * 1.05) : y0 + 1
        }

        func sx(_ x: Double) -> Double {
            let t = p.logX ? (log10(max(x, x0)) - log10(x0)) / (log10(x1) - log10(x0)) : (x - x0) / (x1 - x0)
            return left + min(max(t, 0), 1) * plotW
        }
        func sy(_ y: Double) -> Double {
            let t = logY ? (log10(max(y, y0)) - log10(y0)) / (log10(y1) - log10(y0)) : (y - y0) / (y1 - y0)
            return top + (1 - min(max(t, 0), 1)) * plotH
        }

        var svg = open(p.title, height: p.height)
        // Grid and ticks.
        let xt = p.logX ? logTicks(x0, x1) : linearTicks(x0, x1)
        let yt = logY ? logTicks(y0, y1) : linearTicks(y0, y1)
        for t in yt {
            let y = sy(t)
            svg += "<line class=\"grid\" x1=\"\(c(left))\" y1=\"\(c(y))\" x2=\"\(c(left + plotW))\" y2=\"\(c(y))\"/>"
            svg += "<text class=\"tick\" x=\"\(c(left - 6))\" y=\"\(c(y + 4))\" text-anchor=\"end\">\(F.html(p.yPercent ? F.percent(t, 0) : tickLabel(t)))</text>"
        }
        for t in xt {
            let x = sx(t)
            svg += "<line class=\"grid\" x1=\"\(c(x))\" y1=\"\(c(top))\" x2=\"\(c(x))\" y2=\"\(c(top + plotH))\"/>"
            svg += "<text class=\"tick\" x=\"\(c(x))\" y=\"\(c(top + plotH + 16))\" text-anchor=\"middle\">\(F.html(tickLabel(t)))</text>"
        }
        svg += axes(plotW: plotW, plotH: plotH, xLabel: p.xLabel + (p.logX ? " (log scale)" : ""),
                    yLabel: p.yLabel + (logY ? " (log scale)" : ""))

        // Bands under lines.
        for s in p.series where !s.band.isEmpty {
            let band = s.band.filter { $0.x.isFinite && $0.lo.isFinite && $0.hi.isFinite }
            guard band.count >= 2 else { continue }
            let upper = band.map { "\(c(sx($0.x))),\(c(sy($0.hi)))" }
            let lower = band.reversed().map { "\(c(sx($0.x))),\(c(sy($0.lo)))" }
            svg += "<polygon points=\"\((upper + lower).joined(separator: " "))\" fill=\"\(s.colour)\" fill-opacity=\"0.15\" stroke=\"none\"/>"
        }
        for s in p.series {
            // Points a log axis cannot show (≤ 0) or that are NaN break the line.
            var runs: [[(Double, Double)]] = [[]]
            for pt in s.points {
                let ok = pt.x.isFinite && pt.y.isFinite && (!logY || pt.y > 0) && (!p.logX || pt.x > 0)
                if ok { runs[runs.count - 1].append((sx(pt.x), sy(pt.y))) } else if !runs[runs.count - 1].isEmpty { runs.append([]) }
            }
            let dash = s.dotted ? " stroke-dasharray=\"2 4\"" : s.dashed ? " stroke-dasharray=\"7 5\"" : ""
            for run in runs where run.count >= 2 {
                svg += "<polyline points=\"\(run.map { "\(c($0.0)),\(c($0.1))" }.joined(separator: " "))\" fill=\"none\" stroke=\"\(s.colour)\" stroke-width=\"2\"\(dash)/>"
            }
            if s.markers || runs.allSatisfy({ $0.count < 2 }) {
                for run in runs { for pt in run { svg += "<circle cx=\"\(c(pt.0))\" cy=\"\(c(pt.1))\" r=\"3\" fill=\"\(s.colour)\"/>" } }
            }
        }
        let legend = p.legend ?? p.series.map { s in
            let visible = s.points.contains { $0.y.isFinite && (!logY || $0.y > 0) }
            return LegendEntry(name: s.name + (visible ? "" : logY ? " (zero: not shown)" : " (no data)"), colour: s.colour, dashed: s.dashed, dotted: s.dotted)
        }
        svg += legendBlock(legend)
        if let note = p.note {
            svg += "<text class=\"note\" x=\"\(c(left))\" y=\"\(c(p.height - 6))\">\(F.html(note))</text>"
        }
        return svg + "</svg>"
    }

    // MARK: - Bar chart

    struct Bar {
        var label: String
        var value: Double?
        var ci: (Double, Double)? = nil
        var colour: String
        var valueLabel: String? = nil
    }

    struct BarChart {
        var title: String
        var valueLabel: String
        var categoryLabel: String
        var bars: [Bar]
        /// Horizontal bars (labels on the left) suit few bars with long labels.
        var horizontal = false
        var legend: [LegendEntry] = []
    }

    static func bars(_ b: BarChart) -> String {
        let values = b.bars.compactMap(\.value).filter(\.isFinite) + b.bars.compactMap { $0.ci.map { $0.1 } }.filter(\.isFinite)
        // Headroom for the value labels written above (or beside) the bars.
        let labelled = b.bars.contains { $0.valueLabel != nil }
        let vmax = niceCeil(max(values.max() ?? 1, 1e-12) * (labelled && !b.horizontal ? 1.3 : 1.08))
        let ticks = linearTicks(0, vmax)
        if b.horizontal {
            let labelW = 250.0
            let rowH = 34.0
            let height = top + bottom + rowH * Double(max(b.bars.count, 1))
            let x0 = left + labelW - 60, plotW = width - x0 - 120, plotH = height - top - bottom
            func sx(_ v: Double) -> Double { x0 + min(max(v / vmax, 0), 1) * plotW }
            var svg = open(b.title, height: height)
            for t in ticks {
                svg += "<line class=\"grid\" x1=\"\(c(sx(t)))\" y1=\"\(c(top))\" x2=\"\(c(sx(t)))\" y2=\"\(c(top + plotH))\"/>"
                svg += "<text class=\"tick\" x=\"\(c(sx(t)))\" y=\"\(c(top + plotH + 16))\" text-anchor=\"middle\">\(F.html(tickLabel(t)))</text>"
            }
            svg += "<line class=\"axis\" x1=\"\(c(x0))\" y1=\"\(c(top))\" x2=\"\(c(x0))\" y2=\"\(c(top + plotH))\"/>"
            svg += "<line class=\"axis\" x1=\"\(c(x0))\" y1=\"\(c(top + plotH))\" x2=\"\(c(x0 + plotW))\" y2=\"\(c(top + plotH))\"/>"
            svg += "<text class=\"label\" x=\"\(c(x0 + plotW / 2))\" y=\"\(c(height - 12))\" text-anchor=\"middle\">\(F.html(b.valueLabel))</text>"
            for (i, bar) in b.bars.enumerated() {
                let yMid = top + rowH * (Double(i) + 0.5)
                svg += "<text class=\"tick\" x=\"\(c(x0 - 8))\" y=\"\(c(yMid + 4))\" text-anchor=\"end\">\(F.html(F.truncated(bar.label, 40)))</text>"
                guard let v = bar.value, v.isFinite else {
                    svg += "<text class=\"tick\" x=\"\(c(x0 + 6))\" y=\"\(c(yMid + 4))\">no data</text>"
                    continue
                }
                svg += "<rect x=\"\(c(x0))\" y=\"\(c(yMid - rowH * 0.32))\" width=\"\(c(max(sx(v) - x0, 0.5)))\" height=\"\(c(rowH * 0.64))\" fill=\"\(bar.colour)\"/>"
                var end = sx(v)
                if let ci = bar.ci, ci.0.isFinite, ci.1.isFinite {
                    svg += "<line class=\"whisker\" x1=\"\(c(sx(ci.0)))\" y1=\"\(c(yMid))\" x2=\"\(c(sx(ci.1)))\" y2=\"\(c(yMid))\"/>"
                    svg += "<line class=\"whisker\" x1=\"\(c(sx(ci.0)))\" y1=\"\(c(yMid - 6))\" x2=\"\(c(sx(ci.0)))\" y2=\"\(c(yMid + 6))\"/>"
                    svg += "<line class=\"whisker\" x1=\"\(c(sx(ci.1)))\" y1=\"\(c(yMid - 6))\" x2=\"\(c(sx(ci.1)))\" y2=\"\(c(yMid + 6))\"/>"
                    end = max(end, sx(ci.1))
                }
                svg += "<text class=\"value\" x=\"\(c(end + 6))\" y=\"\(c(yMid + 4))\">\(F.html(bar.valueLabel ?? F.sig(v)))</text>"
            }
            return svg + "</svg>"
        }

        let height = 340.0
        let plotW = width - left - (b.legend.isEmpty ? 30 : right), plotH = height - top - bottom
        let slot = plotW / Double(max(b.bars.count, 1))
        func sy(_ v: Double) -> Double { top + (1 - min(max(v / vmax, 0), 1)) * plotH }
        var svg = open(b.title, height: height)
        for t in ticks {
            svg += "<line class=\"grid\" x1=\"\(c(left))\" y1=\"\(c(sy(t)))\" x2=\"\(c(left + plotW))\" y2=\"\(c(sy(t)))\"/>"
            svg += "<text class=\"tick\" x=\"\(c(left - 6))\" y=\"\(c(sy(t) + 4))\" text-anchor=\"end\">\(F.html(tickLabel(t)))</text>"
        }
        svg += axes(plotW: plotW, plotH: plotH, xLabel: b.categoryLabel, yLabel: b.valueLabel, height: height)
        // Label every bar when they fit, else every k-th.
        let every = max(1, Int((Double(b.bars.count) * 22 / plotW).rounded(.up)))
        for (i, bar) in b.bars.enumerated() {
            let x = left + slot * Double(i)
            if i % every == 0 {
                svg += "<text class=\"tick\" x=\"\(c(x + slot / 2))\" y=\"\(c(top + plotH + 16))\" text-anchor=\"middle\">\(F.html(F.truncated(bar.label, 8)))</text>"
            }
            guard let v = bar.value, v.isFinite else { continue }
            svg += "<rect x=\"\(c(x + slot * 0.15))\" y=\"\(c(sy(v)))\" width=\"\(c(slot * 0.7))\" height=\"\(c(max(top + plotH - sy(v), 0.5)))\" fill=\"\(bar.colour)\"/>"
            if let label = bar.valueLabel {
                // Vertical, so that labels of neighbouring bars never overlap.
                let lx = x + slot / 2 + 4, ly = sy(v) - 5
                svg += "<text class=\"value\" x=\"\(c(lx))\" y=\"\(c(ly))\" transform=\"rotate(-90 \(c(lx)) \(c(ly)))\">\(F.html(label))</text>"
            }
        }
        svg += legendBlock(b.legend)
        return svg + "</svg>"
    }

    // MARK: - Pieces

    /// One decimal, fixed format: deterministic coordinates.
    static func c(_ v: Double) -> String { F.fixed(v, 1) }

    private static func open(_ title: String, height: Double) -> String {
        "<svg class=\"plot\" viewBox=\"0 0 \(c(width)) \(c(height))\" width=\"\(c(width))\" height=\"\(c(height))\" role=\"img\" aria-label=\"\(F.html(title))\">"
            + "<title>\(F.html(title))</title>"
            + "<rect x=\"0\" y=\"0\" width=\"\(c(width))\" height=\"\(c(height))\" fill=\"#ffffff\"/>"
            + "<text class=\"title\" x=\"\(c(left))\" y=\"24\">\(F.html(title))</text>"
    }

    private static func axes(plotW: Double, plotH: Double, xLabel: String, yLabel: String, height: Double? = nil) -> String {
        let h = height ?? (top + plotH + bottom)
        var s = "<line class=\"axis\" x1=\"\(c(left))\" y1=\"\(c(top))\" x2=\"\(c(left))\" y2=\"\(c(top + plotH))\"/>"
        s += "<line class=\"axis\" x1=\"\(c(left))\" y1=\"\(c(top + plotH))\" x2=\"\(c(left + plotW))\" y2=\"\(c(top + plotH))\"/>"
        s += "<text class=\"label\" x=\"\(c(left + plotW / 2))\" y=\"\(c(h - 18))\" text-anchor=\"middle\">\(F.html(xLabel))</text>"
        let cy = top + plotH / 2
        s += "<text class=\"label\" x=\"16\" y=\"\(c(cy))\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(c(cy)))\">\(F.html(yLabel))</text>"
        return s
    }

    private static func legendBlock(_ entries: [LegendEntry]) -> String {
        guard !entries.isEmpty else { return "" }
        let x = width - right + 18
        var s = ""
        for (i, e) in entries.enumerated() {
            let y = top + 8 + Double(i) * 20
            let dash = e.dotted ? " stroke-dasharray=\"2 4\"" : e.dashed ? " stroke-dasharray=\"7 5\"" : ""
            s += "<line x1=\"\(c(x))\" y1=\"\(c(y))\" x2=\"\(c(x + 26))\" y2=\"\(c(y))\" stroke=\"\(e.colour)\" stroke-width=\"3\"\(dash)/>"
            s += "<text class=\"legend\" x=\"\(c(x + 32))\" y=\"\(c(y + 4))\">\(F.html(F.truncated(e.name, 24)))</text>"
        }
        return s
    }

    /// The smallest 1, 2, 2.5 or 5 × 10^k at or above `v`.
    static func niceCeil(_ v: Double) -> Double {
        guard v > 0, v.isFinite else { return 1 }
        let p = pow(10, floor(log10(v)))
        for m in [1.0, 2, 2.5, 5, 10] where m * p >= v * (1 - 1e-12) { return m * p }
        return 10 * p
    }

    /// About five round ticks from lo to hi.
    static func linearTicks(_ lo: Double, _ hi: Double) -> [Double] {
        guard hi > lo else { return [lo] }
        let raw = (hi - lo) / 6
        let p = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * p }.first { $0 >= raw * 0.75 } ?? 10 * p
        var ticks: [Double] = []
        var k = (lo / step).rounded(.up)
        while k * step <= hi * (1 + 1e-9) + 1e-300, ticks.count < 50 {
            ticks.append(k * step == 0 ? 0 : k * step)
            k += 1
        }
        return ticks
    }

    /// 1, 2, 5 × 10^k inside [lo, hi]; only decades when that gives enough ticks.
    static func logTicks(_ lo: Double, _ hi: Double) -> [Double] {
        let k0 = Int(floor(log10(lo))), k1 = Int(ceil(log10(hi)))
        var decades: [Double] = [], all: [Double] = []
        for k in k0...max(k0, k1) {
            let p = pow(10, Double(k))
            for m in [1.0, 2, 5] {
                let v = m * p
                guard v >= lo * (1 - 1e-9), v <= hi * (1 + 1e-9) else { continue }
                all.append(v)
                if m == 1 { decades.append(v) }
            }
        }
        return decades.count >= 4 ? decades : all
    }

    /// Tick text: short, no trailing zeros ("0.25", "1e-4", "512").
    static func tickLabel(_ v: Double) -> String {
        if v == 0 { return "0" }
        let a = abs(v)
        if a >= 1e-3, a < 1e6 {
            var s = F.fixed(v, 4)
            while s.contains("."), s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
            return s
        }
        return F.sig(v, 2).replacingOccurrences(of: ".0e", with: "e")
    }
}
