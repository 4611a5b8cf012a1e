import Foundation
import Testing
@testable import QuantDrift

/// Sweeps (issue 16, first part): plan, shards run into one folder, merge equal to `compare`.
@Suite("Sweeps", .serialized)
struct SweepTests {
    @Test func shardsCoverEveryUnitOnceAndBalance() throws {
        let options = TrackerOptions(forcedMaxTokens: 8)
        let spec = SweepSpec(models: [.init(label: "a", path: "a"), .init(label: "b", path: "b")], schemes: ["w8", "kv4", "w4g32"],
                             calibrations: [], workloads: [.init(label: "x", path: "x"), .init(label: "y", path: "y")],
                             options: options, promptsPerUnit: 3)
        let plan = SweepPlan(spec: spec, workloadSizes: [(10, 72), (4, 72)], modelParameters: [100, 300])
        let candidates = try plan.candidates { _ in false }
        #expect(candidates.map(\.name) == ["w8", "kv4", "w4g32", TrackerCandidate.noiseFloorName])
        let units = plan.candidateUnits(candidateCount: candidates.count)
        // 2 models × 4 candidates × (4 slices of workload x + 2 of y).
        #expect(units.count == 2 * 4 * (4 + 2))
        #expect(plan.referenceUnits.count == 4)
        for n in [1, 3, 5] {
            let shards = plan.shards(units, count: n)
            #expect(shards.flatMap { $0 }.count == units.count)
            #expect(units.allSatisfy { u in shards.filter { $0.contains(u) }.count == 1 })
            let loads = shards.map { $0.map(plan.cost).reduce(0, +) }
            // Largest-first to the least loaded: no shard exceeds the mean by more than the largest unit.
            #expect(loads.max()! - loads.reduce(0, +) / Double(n) <= units.map(plan.cost).max()!)
            #expect(shards == plan.shards(units, count: n), "deterministic")
        }
    }

    static let workloads = [
        "x": """
        {"id": "a", "prompt": "The old bridge over the river was", "chat": false, "max_tokens": 6}
        {"id": "b", "prompt": "Name three colours of the rainbow.", "chat": true, "max_tokens": 6}
        {"id": "c", "prompt": "def add(a, b):", "chat": false, "max_tokens": 6}
        """,
        "y": """
        {"id": "d", "prompt": "Rain fell on the market square while", "chat": false, "max_tokens": 5}
        {"id": "e", "prompt": "List two uses of copper.", "chat": true, "max_tokens": 5}
        """,
    ]

    /// 2 models × 3 schemes (+ the noise floor) × 2 workloads in 3 shards: each merged report is the
    /// one `compare --reference` writes in one process (timings aside); a shard run again does
    /// nothing; a lost result is listed with its rerun, and rerunning its shard restores the report.
    @Test func mergedReportsEqualOneProcessCompare() throws {
        try withTemporaryDirectory { dir in
            for (name, text) in Self.workloads { try Data(text.utf8).write(to: dir.appendingPathComponent("\(name).jsonl")) }
            let sweep = dir.appendingPathComponent("sweep.json")
            let w = ["x", "y"].map { dir.appendingPathComponent("\($0).jsonl").path }
            try Data(#"{"models": ["smollm2", "gemma3-270m"], "schemes": ["w8", "kv4", "w4g32"], "workloads": ["\#(w[0])", "\#(w[1])"], "mode": "both", "prompts_per_unit": 2}"#.utf8).write(to: sweep)
            let out = dir.appendingPathComponent("out")
            let refs = try CLIRunner.run(["sweep", "run", sweep.path, "--references", "--shard", "0/1", "--out", out.path])
            #expect(refs.status == 0, "\(refs.stderr)")
            for i in 0..<3 {
                let r = try CLIRunner.run(["sweep", "run", sweep.path, "--shard", "\(i)/3", "--out", out.path])
                #expect(r.status == 0, "\(r.stderr)")
            }
            let merged = try CLIRunner.run(["sweep", "merge", out.path])
            #expect(merged.status == 0, "\(merged.stderr)")
            #expect(merged.stdout.split(separator: "\n").filter { $0.hasPrefix("report ") }.count == 4)
            // The grid: every scheme × pair, each cell the pair report's number; sentences from the intervals.
            let grid = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("grid.json"))) as? [String: Any])
            #expect(grid["schema"] as? String == GridReport.schema)
            let rows = try #require(grid["rows"] as? [[String: Any]])
            #expect(rows.map { $0["scheme"] as? String } == ["w8", "kv4", "w4g32"])
            let cells = try #require(rows[2]["cells"] as? [[String: Any]])
            #expect(cells.count == 4)
            let gemmaX = try ReportDocument.read(path: out.appendingPathComponent("gemma3-270m/x/report/report.json").path)
            #expect(cells.first { $0["model"] as? String == "gemma3-270m" && $0["workload"] as? String == "x" }?["mean_kld"] as? Double
                    == gemmaX.scheme(named: "w4g32")?.value(.meanKLD))
            #expect(!(grid["reading"] as? [String] ?? []).isEmpty)
            let gridHTML = try String(contentsOf: out.appendingPathComponent("grid.html"), encoding: .utf8)
            #expect(MarkupCheck.problem(gridHTML) == nil, "\(MarkupCheck.problem(gridHTML) ?? "")")
            for model in ["smollm2", "gemma3-270m"] {
                for wl in ["x", "y"] {
                    let pair = out.appendingPathComponent(model).appendingPathComponent(wl)
                    let one = dir.appendingPathComponent("one-\(model)-\(wl)")
                    let c = try CLIRunner.run(["compare", "--model", model, "--schemes", "w8,kv4,w4g32", "--prompts", dir.appendingPathComponent("\(wl).jsonl").path,
                                               "--reference", pair.appendingPathComponent("reference.trace").path, "--out", one.path])
                    #expect(c.status == 0, "\(c.stderr)")
                    let a = try String(contentsOf: one.appendingPathComponent("report.json"), encoding: .utf8)
                    let b = try String(contentsOf: pair.appendingPathComponent("report/report.json"), encoding: .utf8)
                    #expect(CompareCLITests.withoutTimings(a) == CompareCLITests.withoutTimings(b), "\(model) × \(wl)")
                    #expect(try Data(contentsOf: one.appendingPathComponent("tokens.csv")) == Data(contentsOf: pair.appendingPathComponent("report/tokens.csv")))
                }
            }
            // A finished shard is a no-op: no result is written again.
            let results = out.appendingPathComponent("smollm2/x/results")
            let before = try FileManager.default.contentsOfDirectory(atPath: results.path).sorted().map {
                try FileManager.default.attributesOfItem(atPath: results.appendingPathComponent($0).path)[.modificationDate] as! Date
            }
            let again = try CLIRunner.run(["sweep", "run", sweep.path, "--shard", "1/3", "--out", out.path])
            #expect(again.status == 0)
            let after = try FileManager.default.contentsOfDirectory(atPath: results.path).sorted().map {
                try FileManager.default.attributesOfItem(atPath: results.appendingPathComponent($0).path)[.modificationDate] as! Date
            }
            #expect(before == after)
            // A lost result: the merge lists the unit and fails; rerunning every shard restores it.
            let lost = try #require(try FileManager.default.contentsOfDirectory(atPath: results.path).sorted().first)
            try FileManager.default.removeItem(at: results.appendingPathComponent(lost))
            let incomplete = try CLIRunner.run(["sweep", "merge", out.path])
            #expect(incomplete.status == 1)
            #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("grid.json").path), "no grid while a pair is incomplete")
            #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("smollm2/x/report/report.json").path), "nor the pair's old report")
            #expect(incomplete.stdout.contains("incomplete: 1 units missing") && incomplete.stdout.contains("quantdrift sweep run"), "\(incomplete.stdout)")
            for i in 0..<3 { _ = try CLIRunner.run(["sweep", "run", sweep.path, "--shard", "\(i)/3", "--out", out.path]) }
            #expect(try CLIRunner.run(["sweep", "merge", out.path]).status == 0)
            // Another sweep file cannot write into this folder.
            let other = dir.appendingPathComponent("other.json")
            try Data(#"{"models": ["smollm2"], "schemes": ["w8"], "workloads": ["\#(w[0])"]}"#.utf8).write(to: other)
            let refused = try CLIRunner.run(["sweep", "run", other.path, "--shard", "0/1", "--out", out.path])
            #expect(refused.status == 2 && refused.stderr.contains("holds another sweep"), "\(refused.stderr)")
        }
    }

    /// The Kubernetes manifest (not run here: no cluster): each Indexed Job's completions equal the
    /// shard count its pods read (QUANTDRIFT_SHARDS), they run `--shard auto`, and the references Job
    /// has as many completions as `sweep plan` has reference units for the example sweep.
    @Test func kubernetesManifestWiresTheIndex() throws {
        let text = try String(contentsOf: Golden.packageRoot.appendingPathComponent("scripts/k8s/sweep.yaml"), encoding: .utf8)
        let docs = text.components(separatedBy: "\n---\n")
        #expect(docs.count == 3)
        func value(_ doc: String, _ key: String) -> String? {
            doc.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(key + ":") }
                .map { $0.split(separator: ":", maxSplits: 1)[1].split(separator: "#")[0].trimmingCharacters(in: .whitespaces) }
        }
        let plan = try CLIRunner.run(["sweep", "plan", "scripts/k8s/sweep.json", "--shards", "4", "--json"])
        #expect(plan.status == 0, "\(plan.stderr)")
        let counts = try #require(try JSONSerialization.jsonObject(with: Data(plan.stdout.utf8)) as? [String: Any])
        for (doc, name) in zip(docs.prefix(2), ["quantdrift-references", "quantdrift-shards"]) {
            #expect(value(doc, "name") == name)
            #expect(value(doc, "completionMode") == "Indexed")
            let completions = try #require(value(doc, "completions").flatMap(Int.init))
            let shards = try #require(doc.components(separatedBy: "name: QUANTDRIFT_SHARDS").last!.split(separator: "\"")[1...].first.flatMap { Int($0) })
            #expect(completions == shards, "\(name)")
            #expect(doc.contains("\"--shard\", \"auto\""))
            if name == "quantdrift-references" {
                #expect(doc.contains("\"--references\"") && completions == counts["references"] as? Int)
            } else {
                #expect((counts["shards"] as? [Any])?.count == completions)
            }
        }
        #expect(docs[2].contains("\"sweep\", \"merge\""))
    }

    @Test func badSweepFilesAreOneLineErrors() throws {
        try withTemporaryDirectory { dir in
            for (text, words) in [(#"{"models": ["smollm2"], "schemes": ["w8"]}"#, "'workloads' is missing"),
                                  (#"{"models": ["smollm2"], "schemes": ["w9x"], "workloads": ["default"]}"#, "scheme"),
                                  (#"{"models": ["smollm2"], "schemes": ["w8"], "workloads": ["default"], "colour": 1}"#, "unknown key 'colour'"),
                                  (#"[1]"#, "not a JSON object"),
                                  (#"{"models": ["smollm2"], "schemes": ["w8"], "workloads": ["default"], "mode": "half"}"#, "'mode' must be")] {
                let f = dir.appendingPathComponent("s.json")
                try Data(text.utf8).write(to: f)
                let r = try CLIRunner.run(["sweep", "plan", f.path])
                #expect(r.status == 2, "\(text): \(r.stderr)")
                #expect(r.stderr.contains(words), "\(text): \(r.stderr)")
                #expect(r.stderr.split(separator: "\n").count == 1)
            }
            let ok = dir.appendingPathComponent("ok.json")
            try Data(#"{"models": ["smollm2"], "schemes": ["w8"], "workloads": ["default"]}"#.utf8).write(to: ok)
            for shard in ["3/2", "x", "auto"] {
                let r = try CLIRunner.run(["sweep", "run", ok.path, "--shard", shard, "--out", dir.appendingPathComponent("o").path])
                #expect(r.status == 2, "\(shard): \(r.stderr)")
            }
        }
    }
}
