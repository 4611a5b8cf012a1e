import Foundation
import Testing
@testable import QuantDrift

/// The calibration × workload matrix (issue 15, item 1): `compare --calibrations … --workloads …`.
@Suite("Calibration × workload matrix")
struct CalibrationMatrixTests {
    static let prose = """
    {"id": "p1", "prompt": "The lighthouse keeper climbed the stairs one last time before the storm", "chat": false, "max_tokens": 12}
    {"id": "p2", "prompt": "Rivers carve valleys slowly, and the geologist explained that", "chat": false, "max_tokens": 12}
    """
    static let code = """
    {"id": "c1", "prompt": "def parse_config(path):\\n    \\"\\"\\"Read a key=value file into a dict.\\"\\"\\"\\n", "chat": false, "max_tokens": 12}
    {"id": "c2", "prompt": "for (int i = 0; i < n; i++) {\\n    total +=", "chat": false, "max_tokens": 12}
    """

    @Test func matrixOfTwoSetsOnTwoWorkloads() throws {
        try withTemporaryDirectory { dir in
            try Data(Self.prose.utf8).write(to: dir.appendingPathComponent("prose.jsonl"))
            try Data(Self.code.utf8).write(to: dir.appendingPathComponent("code.jsonl"))
            let out = dir.appendingPathComponent("m")
            let r = try CLIRunner.run(["compare", "--schemes", "w8a8-static,w8", "--calibrations", "prose,code",
                                       "--workloads", dir.appendingPathComponent("prose.jsonl").path + "," + dir.appendingPathComponent("code.jsonl").path,
                                       "--mode", "teacher", "--out", out.path])
            #expect(r.status == 0, "\(r.stderr)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("matrix.json"))) as? [String: Any])
            #expect(json["schema"] as? String == CalibrationMatrix.schema)
            let schemes = try #require(json["schemes"] as? [[String: Any]])
            #expect(schemes.map { $0["scheme"] as? String } == ["w8a8-static", "w8"])
            let cells = try #require(schemes[0]["cells"] as? [[String: Any]])
            // Two calibration sets × two workloads; the diagonal where the set is named as the workload.
            #expect(cells.count == 4)
            for c in cells {
                #expect((c["diagonal"] as? Bool) == ((c["calibration"] as? String) == (c["workload"] as? String)))
                #expect((c["mean_kld"] as? Double ?? 0) > 0)
            }
            // The uncalibrated scheme is one row.
            #expect((schemes[1]["cells"] as? [[String: Any]])?.count == 2)
            // Each cell is the workload report's number for that candidate.
            let prose = try ReportDocument.read(path: out.appendingPathComponent("prose/report.json").path)
            let cell = try #require(cells.first { $0["calibration"] as? String == "code" && $0["workload"] as? String == "prose" })
            #expect(cell["mean_kld"] as? Double == prose.scheme(named: "w8a8-static@code")?.value(.meanKLD))
            #expect(prose.noiseFloor != nil)
            // Calibrations differ, so the two rows differ.
            let onProse = cells.filter { $0["workload"] as? String == "prose" }.compactMap { $0["mean_kld"] as? Double }
            #expect(Set(onProse).count == 2)
            let penalties = try #require(json["penalties"] as? [[String: Any]])
            #expect(penalties.count == 2)
            let reading = try #require(json["reading"] as? [String])
            #expect(reading.contains { $0.hasPrefix("w8a8-static: calibrating on another set's kind costs on average") })
            let html = try String(contentsOf: out.appendingPathComponent("matrix.html"), encoding: .utf8)
            #expect(MarkupCheck.problem(html) == nil, "\(MarkupCheck.problem(html) ?? "")")
            #expect(html.contains("class=\"diag\""))
            let md = try String(contentsOf: out.appendingPathComponent("matrix.md"), encoding: .utf8)
            #expect(md.contains("| calibrated on prose |") && md.contains("**"))
        }
    }

    @Test func badMatrixArgumentsAreOneLineErrors() throws {
        for (args, words) in [(["--calibrations", "nosuchset", "--workloads", "default"], "neither a named set"),
                              (["--workloads", "default"], "needs --calibrations"),
                              (["--calibrations", "prose,prose"], "distinct"),
                              (["--calibrations", "prose", "--per-layer"], "do not combine")] {
            let r = try CLIRunner.run(["compare", "--schemes", "w8a8-static", "-n", "4", "--out", "/tmp/qd-matrix-bad"] + args)
            #expect(r.status == 2, "\(args): \(r.stderr)")
            #expect(r.stderr.contains(words), "\(args): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
        }
    }
}
