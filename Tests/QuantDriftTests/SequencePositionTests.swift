import Foundation
import Testing
@testable import QuantDrift

/// Sequence-length-conditional risk (issue 15, item 2): static ranges' clipping by position, and
/// the KV cache's error by position as well as by age.
@Suite("Clipping and KV error by position")
struct SequencePositionTests {
    /// Values beyond the range are counted, per bin of the row's position; a group range applies per group.
    @Test func recorderCountsWhatTheRangeClips() {
        let site = SiteID(0, .attentionInput)
        let tensor = SiteCalibration(id: site, range: 2, scale: 2 / 127, maxAbs: 2, channelMaxAbs: [])
        let r = ClippingRecorder(ranges: [site: tensor], contextLength: 8)
        var start = 0
        r.firstPosition = { start }
        let rows: [Float] = [1, -3, 0.5, 2,   // position 1: one beyond 2 (−3), max/range 1.5
                             4, 4, -4, 0]     // position 2: three beyond, max/range 2
        rows.withUnsafeBufferPointer { r.observe(layer: 0, site: .attentionInput, x: $0.baseAddress!, rows: 2, width: 4) }
        // Other sites and the head are not watched.
        rows.withUnsafeBufferPointer { r.observe(layer: 0, site: .feedForwardInput, x: $0.baseAddress!, rows: 2, width: 4) }
        rows.withUnsafeBufferPointer { r.observe(layer: 0, site: .headInput, x: $0.baseAddress!, rows: 2, width: 4) }
        var expected = ClippingBin()
        expected.values = 4; expected.clipped = 1; expected.rowSites = 1; expected.ratioSum = 1.5; expected.maxRatio = 1.5
        #expect(r.totals[0] == expected)
        #expect(r.totals[1].clipped == 3 && r.totals[1].maxRatio == 2)
        // Positions come from the pass: rows of a later chunk land in later bins (4–7 here: position 6).
        start = 5
        rows.withUnsafeBufferPointer { r.observe(layer: 0, site: .attentionInput, x: $0.baseAddress!, rows: 1, width: 4) }
        #expect(r.totals[2].values == 4 && r.totals[2].clipped == 1)
        // Per-group ranges: each group against its own.
        let grouped = SiteCalibration(id: site, range: 10, scale: 10 / 127, maxAbs: 10, channelMaxAbs: [],
                                      groupSize: 2, groupRanges: [10, 0.5], groupScales: [10 / 127, 0.5 / 127])
        let g = ClippingRecorder(ranges: [site: grouped], contextLength: 4)
        rows.withUnsafeBufferPointer { g.observe(layer: 0, site: .attentionInput, x: $0.baseAddress!, rows: 1, width: 4) }
        #expect(g.totals[0].clipped == 1 && g.totals[0].maxRatio == 4)  // 2 > 0.5 in the second group; 2 / 0.5
    }

    /// On the default model: every teacher-forced position of every watched site is counted, the
    /// report carries the curve, and a KV scheme's error comes by position as well as by age.
    @Test func staticRangesAndKVErrorAlongTheSequence() throws {
        let model = try Golden.defaultModel()
        let workload = LockstepTests.workload
        var options = TrackerOptions(mode: .both, threads: 2, chunk: 16)
        options.decodeBatch = 16
        let engine = try LockstepEngine(model: model, options: options)
        let ctx = try engine.contextLength(for: workload)
        let data = try CalibrationFixtures.small()
        let static8 = try Scheme(parsing: "w8a8-static"), kv4 = try Scheme(parsing: "kv4")
        let candidates = [TrackerCandidate(name: "w8a8-static", scheme: static8, runtime: try SchemeRuntime(model: model, scheme: static8, calibration: data)),
                          TrackerCandidate(name: "kv4", scheme: kv4, runtime: try SchemeRuntime(model: model, scheme: kv4))]
        let (refs, results, _) = try engine.runWorkload(workload, candidates: candidates, contextLength: ctx)
        let c = model.config
        for (p, r) in results[0].enumerated() {
            let bins = try #require(r.clipping)
            let rows = refs[p].promptTokens.count + refs[p].continuation.count - 1
            let values: Int = bins.map(\.values).reduce(0, +), rowSites: Int = bins.map(\.rowSites).reduce(0, +)
            let perRow: Int = c.layerCount * (2 * c.dim + c.qDim + c.hiddenDim)
            #expect(values == rows * perRow)
            #expect(rowSites == rows * c.layerCount * 4)
            #expect(bins.allSatisfy { $0.clipped <= $0.values && $0.maxRatio >= 0 })
        }
        #expect(results[1].allSatisfy { $0.clipping == nil }, "dynamic ranges are not watched")
        for r in results[1] {
            let age = try #require(r.kvErrorByAge), position = try #require(r.kvErrorByPosition)
            #expect(age.map(\.count).reduce(0, +) == position.map(\.count).reduce(0, +))
            let a: Double = age.map(\.sum).reduce(0, +), b: Double = position.map(\.sum).reduce(0, +)
            #expect(abs(a - b) < 1e-9)
        }
        let b = ReportBuilder(candidates: candidates, references: refs, results: results, options: options)
        let json = try b.document(ReportContext(model: .object([("name", "m")]), workload: workload, version: "t",
                                                referenceSeconds: 0, candidatesSeconds: 0))
        let report = try ReportDocument.parse(Data(json.serialized().utf8), file: "report.json")
        let clipping = try #require(report.scheme(named: "w8a8-static")?.clipping)
        #expect(!clipping.isEmpty && clipping.first?.start == 1)
        #expect(report.scheme(named: "kv4")?.clipping == nil)
        #expect(report.scheme(named: "kv4")?.kvErrorByPosition?.isEmpty == false)
        let md = MarkdownReport.render(report), html = HTMLReport.render(report)
        #expect(md.contains("## Static activation ranges along the sequence: w8a8-static") && md.contains("## KV-cache error by position: kv4"))
        #expect(html.contains("<h3>Static activation ranges: w8a8-static</h3>") && MarkupCheck.problem(html) == nil)
        #expect(ReportReading.sentences(report).contains { $0.hasPrefix("w8a8-static: static ranges clip") })
    }
}
