import Foundation
import Testing
@testable import QuantDrift

@Suite("compare and run on the default model")
struct CompareCLITests {
    static func workload() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qd-compare-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent("w.jsonl")
        try """
        {"id": "colours", "prompt": "Name three colours.", "chat": true, "max_tokens": 12}
        {"id": "river", "prompt": "The river ran", "max_tokens": 10}
        """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// report.json without its timing fields (the only values allowed to change between runs).
    static func withoutTimings(_ text: String) -> String {
        text.split(separator: "\n").filter { !$0.contains("_seconds\"") && !$0.contains("_tok_s\"") }.joined(separator: "\n")
    }

    static func report(_ dir: URL) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("report.json"))) as! [String: Any]
    }

    @Test func compareWritesTheContractAndIsByteIdenticalAcrossRunsAndThreads() throws {
        let w = try Self.workload()
        let a = w.deletingLastPathComponent().appendingPathComponent("a"), b = w.deletingLastPathComponent().appendingPathComponent("b")
        let common = ["compare", "--schemes", "fp32,w8a8", "--prompts", w.path, "--attribute"]
        let r1 = try CLIRunner.run(common + ["--out", a.path, "--workers", "1"])
        #expect(r1.status == 0, "\(r1.stderr)")
        let r2 = try CLIRunner.run(common + ["--out", b.path, "--workers", "2"])
        #expect(r2.status == 0, "\(r2.stderr)")
        let ta = try String(contentsOf: a.appendingPathComponent("report.json"), encoding: .utf8)
        let tb = try String(contentsOf: b.appendingPathComponent("report.json"), encoding: .utf8)
        #expect(Self.withoutTimings(ta).replacingOccurrences(of: "\"threads\": 1", with: "")
                == Self.withoutTimings(tb).replacingOccurrences(of: "\"threads\": 2", with: ""))
        #expect(try Data(contentsOf: a.appendingPathComponent("tokens.csv")) == Data(contentsOf: b.appendingPathComponent("tokens.csv")))

        let report = try Self.report(a)
        #expect(report["schema"] as? String == "quantdrift.report/1")
        let conditions = try #require(report["conditions"] as? [String: Any])
        for key in ["model", "workload", "runtime"] { #expect(conditions[key] != nil, "conditions.\(key)") }
        let model = try #require(conditions["model"] as? [String: Any])
        #expect((model["sha256"] as? String)?.count == 64)
        let schemes = try #require(report["schemes"] as? [[String: Any]])
        #expect(schemes.map { $0["name"] as? String } == ["fp32", "w8a8"])
        for s in schemes {
            let summary = try #require(s["summary"] as? [String: Any])
            for key in ["mean_kld", "mean_kld_ci", "p99_kld", "top1_agreement", "median_first_divergence", "survival"] {
                #expect(summary[key] != nil, "summary.\(key)")
            }
        }
        let fp32 = try #require(schemes[0]["summary"] as? [String: Any])
        #expect(fp32["mean_kld"] as? Double == 0 && fp32["top1_agreement"] as? Double == 1)
        #expect(fp32["reference_top1_in_candidate_top5"] as? Double == 1 && fp32["kld_tail_share"] is NSNull)
        // The distribution beyond the mean: tail share, top-5 containment both ways, KLD by entropy.
        let w8a8 = try #require(schemes[1]["summary"] as? [String: Any])
        for key in ["kld_tail_share", "reference_top1_in_candidate_top5", "candidate_top1_in_reference_top5"] {
            let v = try #require(w8a8[key] as? Double, "summary.\(key)")
            #expect(v > 0 && v <= 1, "\(key) = \(v)")
        }
        #expect((w8a8["reference_top1_in_candidate_top5"] as! Double) >= (w8a8["top1_agreement"] as! Double))
        let buckets = ["mean_kld_low_entropy", "mean_kld_mid_entropy", "mean_kld_high_entropy"].compactMap { w8a8[$0] as? Double }
        #expect(!buckets.isEmpty && buckets.allSatisfy { $0 >= 0 })
        let md = try String(contentsOf: a.appendingPathComponent("summary.md"), encoding: .utf8)
        let html = try String(contentsOf: a.appendingPathComponent("report.html"), encoding: .utf8)
        #expect(md.contains("### KLD distribution") && md.contains("Ref. top-1 in cand. top 5"))
        #expect(html.contains("<h3>KLD distribution</h3>"))
        // The noise floor: measured (not 0), with its tie margin, and the tie-flip view of each scheme.
        let floor = try #require(report["noise_floor"] as? [String: Any])
        #expect((floor["mean_kld"] as? Double ?? 0) > 0 && (floor["tie_margin"] as? Double ?? 0) > 0)
        #expect(floor["diverged_prompts"] is Int && floor["tie_flips"] is Int)
        #expect(w8a8["tie_flips"] is Int && w8a8["survival_real"] is [Double] && (w8a8["kld_over_noise_floor"] as? Double ?? 0) > 1)
        #expect(md.contains("### Noise floor and tie flips") && html.contains("<h3>Noise floor and tie flips</h3>"))
        // w8a8 splits into its weight and activation parts, plus the whole.
        let parts = try #require(schemes[1]["attribution"] as? [[String: Any]])
        #expect(parts.map { $0["part"] as? String } == ["weights", "activations", "all"])
        #expect(parts.allSatisfy { ($0["mean_kld"] as? Double ?? 0) > 0 })
        // tokens.csv: a header and one row per scheme × prompt × position.
        let csv = try String(contentsOf: a.appendingPathComponent("tokens.csv"), encoding: .utf8)
        let positions = schemes.map { (($0["summary"] as! [String: Any])["positions"] as! Int) }.reduce(0, +)
        #expect(csv.split(separator: "\n").count >= 1 + positions)
    }

    /// SIGINT mid-run keeps the finished comparisons and writes no report; --resume finishes the
    /// run, and its report equals an uninterrupted run's byte for byte (timings aside).
    @Test func interruptedThenResumedEqualsUninterrupted() throws {
        let w = try Self.workload()
        let base = w.deletingLastPathComponent()
        let whole = base.appendingPathComponent("whole"), cut = base.appendingPathComponent("cut")
        try? FileManager.default.removeItem(at: cut)
        // Resume covers every kind of kept result: KV error by age and position (kv4), static ranges'
        // clipping by position (w8a8-static), the noise floor (every run). One named calibration
        // set (a third of the default texts): the three runs calibrate w8a8-static three times.
        let args = ["compare", "--schemes", "w8,kv4,w4g32,w8a8-static", "--prompts", w.path, "--workers", "1",
                    "--calibration", "Prompts/calibration/prose"]
        let full = try CLIRunner.run(args + ["--out", whole.path])
        #expect(full.status == 0, "\(full.stderr)")
        let schemes = try #require(Self.report(whole)["schemes"] as? [[String: Any]])
        let curves = schemes.map { $0["curves"] as? [String: Any] ?? [:] }
        #expect(curves[1]["kv_error_by_position"] is [Any] && curves[3]["activation_clipping_by_position"] is [Any])
        #expect(curves[0]["activation_clipping_by_position"] is NSNull)

        let p = Process()
        p.executableURL = CLIRunner.executable
        p.arguments = args + ["--out", cut.path]
        p.currentDirectoryURL = Golden.packageRoot
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        // Interrupt once two comparisons are kept.
        let deadline = Date().addingTimeInterval(600)
        func kept(_ suffix: String = ".bin") -> Int {
            let dirs = (try? FileManager.default.contentsOfDirectory(atPath: cut.path + "/.partial")) ?? []
            return dirs.map { ((try? FileManager.default.contentsOfDirectory(atPath: cut.path + "/.partial/" + $0)) ?? [])
                .filter { $0.hasSuffix(suffix) }.count }.reduce(0, +)
        }
        while kept() < 2 && p.isRunning && Date() < deadline { usleep(50_000) }
        kill(p.processIdentifier, SIGINT)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 130, "\(stderr)")
        #expect(stderr.contains("--resume"), "\(stderr)")
        #expect(!FileManager.default.fileExists(atPath: cut.appendingPathComponent("report.json").path))
        let keptBefore = kept()
        #expect(keptBefore >= 2 && keptBefore < 6)
        // Free-running parts run first and are kept on their own (a scheme's two parts are two
        // jobs): the resumed run reuses them too.
        #expect(kept(".free.half") > keptBefore, "free-running parts kept: \(kept(".free.half"))")

        let resumed = try CLIRunner.run(args + ["--out", cut.path, "--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resuming: \(keptBefore) results kept"), "\(resumed.stderr)")
        let a = try String(contentsOf: whole.appendingPathComponent("report.json"), encoding: .utf8)
        let b = try String(contentsOf: cut.appendingPathComponent("report.json"), encoding: .utf8)
        #expect(Self.withoutTimings(a).replacingOccurrences(of: whole.path, with: "") == Self.withoutTimings(b).replacingOccurrences(of: cut.path, with: ""))
        #expect(try Data(contentsOf: whole.appendingPathComponent("tokens.csv")) == Data(contentsOf: cut.appendingPathComponent("tokens.csv")))
        #expect(!FileManager.default.fileExists(atPath: cut.appendingPathComponent(".partial").path))
    }

    /// A saved reference trace (Float16 log-probs) reproduces the live run's mean KLD within 1%,
    /// and a trace made for another workload is refused with one line.
    @Test func savedReferenceReproducesTheLiveRun() throws {
        let w = try Self.workload()
        let base = w.deletingLastPathComponent()
        let trace = base.appendingPathComponent("ref.qdtrace")
        let live = base.appendingPathComponent("live"), replay = base.appendingPathComponent("replay")
        let args = ["compare", "--schemes", "w4g32", "--prompts", w.path, "--mode", "teacher"]
        let r1 = try CLIRunner.run(args + ["--out", live.path, "--save-reference", trace.path])
        #expect(r1.status == 0, "\(r1.stderr)")
        let r2 = try CLIRunner.run(args + ["--out", replay.path, "--reference", trace.path])
        #expect(r2.status == 0, "\(r2.stderr)")
        func meanKLD(_ dir: URL) throws -> Double {
            let s = try #require(Self.report(dir)["schemes"] as? [[String: Any]])
            return try #require((s[0]["summary"] as? [String: Any])?["mean_kld"] as? Double)
        }
        let a = try meanKLD(live), b = try meanKLD(replay)
        #expect(a > 0 && abs(a - b) / a < 0.01, "live \(a), from trace \(b)")
        let other = base.appendingPathComponent("other.jsonl")
        try "{\"id\": \"x\", \"prompt\": \"Something else\", \"max_tokens\": 4}\n".write(to: other, atomically: true, encoding: .utf8)
        let r3 = try CLIRunner.run(["compare", "--schemes", "w4g32", "--prompts", other.path, "--mode", "teacher",
                                    "--out", replay.path, "--reference", trace.path])
        #expect(r3.status == 2 && r3.stderr.contains("workload_sha256"), "\(r3.stderr)")
        #expect(r3.stderr.split(separator: "\n").count == 1, "\(r3.stderr)")   // refused before any scheme is prepared
    }

    @Test func perLayerRanksEveryLayer() throws {
        let w = try Self.workload()
        let out = w.deletingLastPathComponent().appendingPathComponent("layers")
        let r = try CLIRunner.run(["compare", "--schemes", "w4g32,kv4", "--prompts", w.path, "--mode", "teacher", "-n", "4",
                                   "--per-layer", "--out", out.path])
        #expect(r.status == 0, "\(r.stderr)")
        let schemes = try #require(Self.report(out)["schemes"] as? [[String: Any]])
        // Weights (w4g32) and, for a KV-only scheme, the cache of one layer at a time.
        for s in 0..<2 {
            let layers = try #require(schemes[s]["per_layer"] as? [[String: Any]])
            #expect(layers.count == 30)
            let klds = layers.map { $0["mean_kld"] as? Double ?? -1 }
            #expect(klds == klds.sorted(by: >) && klds.allSatisfy { $0 > 0 }, "scheme \(s)")
        }
        // Teacher-only: no free-running figures.
        let summary = try #require(schemes[0]["summary"] as? [String: Any])
        #expect(summary["survival"] is NSNull)
    }

    @Test(arguments: [
        (["compare", "--schemes", "w9", "--prompts", "Prompts/default.jsonl"], "unknown"),
        (["compare", "--schemes", "w8", "--prompts", "/nonexistent.jsonl"], "no such file"),
        (["compare", "--schemes", "w8", "--prompts", "Prompts"], "is a directory"),
        (["compare", "--schemes", "w8", "--mode", "sideways"], "--mode"),
        (["compare", "--schemes", "w8", "-n", "100000"], "-n"),
        (["compare", "--schemes", "w8", "--out", "/proc/qd-report"], "report folder"),
    ])
    func badArgumentsExitTwoWithOneLine(arguments: [String], expected: String) throws {
        let r = try CLIRunner.run(arguments)
        #expect(r.status == 2, "\(arguments): \(r.stderr)")
        #expect(r.stderr.contains(expected), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }
}
