import Foundation
import Testing
@testable import QuantDrift

/// summary.md and report.html rendered from report.json: structure, escaping, determinism.
@Suite("Report rendering")
struct ReportRenderTests {
    typealias Options = SyntheticReport.Options

    private func html(_ o: Options = Options(), pretty: Bool = true) throws -> String {
        try ReportRenderer.html(SyntheticReport.data(o, pretty: pretty))
    }

    @Test func htmlIsWellFormedWithOneSVGPerPlot() throws {
        let h = try html()
        #expect(MarkupCheck.problem(h) == nil, "\(MarkupCheck.problem(h) ?? "")")
        // KLD, top-1, survival, per-layer (scheme 1), attribution (scheme 2).
        #expect(MarkupCheck.count("<svg", in: h) == 5)
        #expect(MarkupCheck.count("</svg>", in: h) == 5)
        for title in ["Mean KLD vs position", "Top-1 agreement vs position", "Survival: prompts still identical",
                      "Per-layer sensitivity: w4g32", "Attribution: w4a8-kv4"] {
            #expect(h.contains(title), "missing plot \(title)")
        }
        // Every scheme drawn: a KLD polyline, a top-1 polyline, an observed and a predicted survival line.
        #expect(MarkupCheck.count("<polyline", in: h) >= 3 * 4)
        #expect(MarkupCheck.count("stroke-dasharray", in: h) >= 3)
        // CI bands on the KLD plot.
        #expect(MarkupCheck.count("<polygon", in: h) == 3)
    }

    @Test func htmlIsSelfContained() throws {
        let h = try html().lowercased()
        for bad in ["<script", "<link", "src=", "href=", "url(", "http:", "https:", "@import"] {
            #expect(!h.contains(bad), "report.html contains \(bad)")
        }
    }

    @Test func hostileNamesAreEscaped() throws {
        var o = Options()
        let hostile = "<script>alert(1)</script>&\""
        o.schemes = [hostile, "w4g32", "a'b<i>"]
        o.promptIDs[0] = "<img src=x onerror=alert(1)>"
        let h = try html(o)
        #expect(MarkupCheck.problem(h) == nil, "\(MarkupCheck.problem(h) ?? "")")
        #expect(!h.lowercased().contains("<script"))
        #expect(!h.contains("<img"))
        #expect(!h.contains("<i>"))
        #expect(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;"))
        #expect(h.contains("&lt;img src=x onerror=alert(1)&gt;"))
        let md = try ReportRenderer.markdown(SyntheticReport.data(o))
        #expect(!md.contains("<script"))
        #expect(md.contains("&lt;script>alert(1)&lt;/script>&amp;\""))
    }

    @Test func renderingIsByteIdenticalAndIndependentOfJSONLayout() throws {
        let a = try html(), b = try html()
        #expect(a == b)
        // The same report written compactly renders the same bytes.
        #expect(try html(pretty: false) == a)
        let m1 = try ReportRenderer.markdown(SyntheticReport.data()), m2 = try ReportRenderer.markdown(SyntheticReport.data(pretty: false))
        #expect(m1 == m2)
    }

    @Test func teacherOnlyReportHasNoSurvivalAndNoNaN() throws {
        var o = Options()
        o.mode = "teacher"
        let h = try html(o)
        #expect(MarkupCheck.problem(h) == nil, "\(MarkupCheck.problem(h) ?? "")")
        #expect(MarkupCheck.count("<svg", in: h) == 4)
        #expect(!h.contains("Survival: prompts still identical"))
        #expect(h.contains("No survival curves"))
        for bad in ["nan", "NaN", "inf"] { #expect(!h.contains(bad), "contains \(bad)") }
        let md = try ReportRenderer.markdown(SyntheticReport.data(o))
        #expect(!md.contains("first divergence after"))
        #expect(!md.contains("nan"))
    }

    @Test func markdownHasTheTableReadingAndRankings() throws {
        let md = try ReportRenderer.markdown(SyntheticReport.data())
        for needle in ["| Scheme | Mean KLD [95% CI] | p99 KLD | Top-1 [95% CI] | Median first divergence |",
                       "## Paired differences", "## Attribution: w4a8-kv4", "## Per-layer sensitivity: w4g32",
                       "## KV-cache error by age: w4a8-kv4", "## Conditions", "KLD grows with position (exponent 0.12)",
                       "first divergence after a median of", "SmolLM2-135M-Instruct", "percentile:99.99",
                       "134,515,008", "greedy (temperature 0)"] {
            #expect(md.contains(needle), "summary.md lacks \(needle)")
        }
        // Per-layer ranking: layer 0 (most sensitive in the synthetic data) ranks first.
        #expect(md.contains("| 1 | 0 |"))
        // Three schemes → three paired rows (each pair once), under a header and a separator line.
        let pairedSection = md.components(separatedBy: "## Paired differences")[1].components(separatedBy: "##")[0]
        #expect(MarkupCheck.count("\n| ", in: pairedSection) == 2 + 3)
    }

    /// The fp32 self-check (KLD exactly 0) cannot sit on a log axis: it is named, not drawn.
    @Test func zeroDriftSchemeAndEmptyReportRender() throws {
        var o = Options()
        o.schemes = ["fp32", "w8", "w4g32"]
        o.baseKLD = [0, 0.002, 0.1]
        let h = try html(o)
        #expect(MarkupCheck.problem(h) == nil, "\(MarkupCheck.problem(h) ?? "")")
        #expect(h.contains("fp32 (zero: not shown)"))
        #expect(!h.contains("nan") && !h.contains("inf"))
        let md = try ReportRenderer.markdown(SyntheticReport.data(o))
        #expect(md.contains("fp32: identical to the reference (KLD 0, top-1 100%, no divergence)."))
        #expect(md.contains("| fp32 | 0 [0, 0] |"))
        #expect(md.contains("none (> 256)"))

        o.schemes = []
        let empty = try html(o)
        #expect(MarkupCheck.problem(empty) == nil, "\(MarkupCheck.problem(empty) ?? "")")
        #expect(MarkupCheck.count("<svg", in: empty) == 2)
    }

    @Test func emptyCurvesAndNullValuesRender() throws {
        var json = SyntheticReport.make()
        // Strip curves and null every summary number of the first scheme.
        guard case .object(var root) = json, case .array(var schemes)? = root.first(where: { $0.0 == "schemes" })?.1,
              case .object(var first) = schemes[0] else { Issue.record("unexpected synthetic layout"); return }
        first = first.map { k, v in
            switch k {
            case "curves": return (k, ["log_bins": [], "bins_64": [], "kv_error_by_age": .null])
            case "summary":
                guard case .object(let s) = v else { return (k, v) }
                return (k, .object(s.map { ($0.0, .null) }))
            default: return (k, v)
            }
        }
        schemes[0] = .object(first)
        root = root.map { $0.0 == "schemes" ? ($0.0, .array(schemes)) : $0 }
        json = .object(root)
        let data = Data(json.serialized().utf8)
        let h = try ReportRenderer.html(data)
        #expect(MarkupCheck.problem(h) == nil, "\(MarkupCheck.problem(h) ?? "")")
        #expect(!h.contains("nan"))
        let md = try ReportRenderer.markdown(data)
        #expect(md.contains("| w8 | – |"))
    }

    @Test func badReportsAreOneLineErrors() throws {
        func message(_ text: String) -> String? {
            do { _ = try ReportRenderer.html(Data(text.utf8), file: "r.json"); return nil }
            catch let e as QuantDriftError { return e.isBadInput ? e.description : nil }
            catch { return nil }
        }
        #expect(message("not json")?.hasPrefix("r.json:") == true)
        #expect(message("[1,2]")?.contains("not a JSON object") == true)
        #expect(message(#"{"schema": "other/1"}"#)?.contains("schema 'other/1'") == true)
        let noName = SyntheticReport.make().serialized().replacingOccurrences(of: "\"name\":\"w8\"", with: "\"name\":7")
        #expect(message(noName)?.contains("name is not a string") == true)
    }

    @Test func writeRenderingsWritesBothFilesAtomically() throws {
        try withTemporaryDirectory { dir in
            let out = dir.appendingPathComponent("report")
            let written = try ReportWriter.writeRenderings(reportJSON: SyntheticReport.data(), to: out)
            #expect(written.map(\.lastPathComponent) == ["summary.md", "report.html"])
            let names = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
            #expect(names == ["report.html", "summary.md"], "left: \(names)")
            let html = try String(contentsOf: out.appendingPathComponent("report.html"), encoding: .utf8)
            #expect(html == (try self.html()))
        }
        // A sample for eyes and for scripts/check-html.sh: QUANTDRIFT_SAMPLE_REPORT=DIR swift test … --filter "Report rendering"
        if let dir = ProcessInfo.processInfo.environment["QUANTDRIFT_SAMPLE_REPORT"] {
            let url = URL(fileURLWithPath: dir)
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            try AtomicFile.write(SyntheticReport.data(), to: url.appendingPathComponent("report.json"))
            try ReportWriter.writeRenderings(reportAt: url.appendingPathComponent("report.json"))
            #expect(FileManager.default.fileExists(atPath: url.appendingPathComponent("report.html").path))
        }
    }

    @Test func numberFormattingIsFixed() {
        typealias F = ReportFormat
        #expect(F.sig(0.0042) == "0.00420")
        #expect(F.sig(1.5e-5) == "1.50e-5")
        #expect(F.sig(123.456) == "123")
        #expect(F.sig(0) == "0")
        #expect(F.sig(nil) == "–")
        #expect(F.sig(.nan) == "–")
        #expect(F.percent(0.97312) == "97.3%")
        #expect(F.fixed(-0.0001, 2) == "0.00")
        #expect(F.grouped(134_515_008) == "134,515,008")
        #expect(F.count(57) == "57")
        #expect(F.count(56.5) == "56.5")
        #expect(SVGPlot.tickLabel(1e-4) == "1e-4")
        #expect(SVGPlot.tickLabel(0.25) == "0.25")
        #expect(SVGPlot.tickLabel(512) == "512")
        #expect(SVGPlot.logTicks(1, 256) == [1, 2, 5, 10, 20, 50, 100, 200])
        #expect(SVGPlot.linearTicks(0, 1).map(SVGPlot.tickLabel) == ["0", "0.2", "0.4", "0.6", "0.8", "1"])
        #expect(F.html("<a href=\"x\">&'") == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;")
    }
}
