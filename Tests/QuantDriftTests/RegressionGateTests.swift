import Foundation
import Testing
@testable import QuantDrift

/// `quantdrift check`: thresholds and baseline modes, bad thresholds files, JUnit, exit codes.
@Suite("Regression gate", .serialized)
struct RegressionGateTests {
    /// Writes the synthetic report (and optional files) into a temporary folder.
    private func withFiles<T>(_ files: [String: String] = [:], options: SyntheticReport.Options = .init(),
                              _ body: (URL) throws -> T) throws -> T {
        try withTemporaryDirectory { dir in
            try SyntheticReport.data(options).write(to: dir.appendingPathComponent("report.json"))
            for (name, text) in files { try Data(text.utf8).write(to: dir.appendingPathComponent(name)) }
            return try body(dir)
        }
    }

    private static let mixed = """
    {"w8": {"max_mean_kld": 0.01, "min_top1": 0.9, "max_kld_at": {"200": 0.01}},
     "w4g32": {"max_p99_kld": 1.0, "min_top1": 0.95, "min_median_first_divergence": 300}}
    """

    @Test func thresholdsPassAndFail() throws {
        try withFiles(["t.json": Self.mixed]) { dir in
            let r = try RegressionGate.check(reportPath: dir.appendingPathComponent("report.json").path,
                                             thresholdsPath: dir.appendingPathComponent("t.json").path)
            #expect(r.checks.map { "\($0.scheme) \($0.name) \($0.passed)" } == [
                "w8 max_mean_kld true", "w8 min_top1 true", "w8 max_kld_at[200] true",
                "w4g32 max_p99_kld true", "w4g32 min_top1 false", "w4g32 min_median_first_divergence false",
            ])
            #expect(r.summaryLine == "4 passed, 2 failed")
            let report = try ReportDocument.read(path: dir.appendingPathComponent("report.json").path)
            let w8 = report.scheme(named: "w8")!
            #expect(r.checks[0].measured == w8.value(.meanKLD))
            #expect(r.checks[0].limit == 0.01)
            // max_kld_at reads the bins_64 bin holding the position (193–256).
            #expect(r.checks[2].measured == w8.bins64.first { $0.start == 193 }!.meanKLD)
            #expect(r.checks[4].line.hasPrefix("FAIL w4g32 min_top1: 0.8"))
            #expect(r.checks[4].line.hasSuffix("(limit >= 0.95; judged on the 95% CI)"))
            #expect(r.checks[3].line.hasSuffix("(limit <= 1)"), "p99 has no interval: judged on the point estimate")
        }
    }

    /// The example in the README (a committed fixture) stays valid.
    @Test func exampleThresholdsFileParses() throws {
        try withFiles { dir in
            let example = fixtureURL("thresholds-example.json").path
            let r = try RegressionGate.check(reportPath: dir.appendingPathComponent("report.json").path, thresholdsPath: example)
            #expect(r.checks.count == 9)
            #expect(r.checks.filter { $0.scheme == "w8" }.map(\.name) ==
                    ["max_mean_kld", "max_p99_kld", "min_top1", "min_median_first_divergence", "max_kld_at[200]"])
        }
    }

    @Test func badThresholdsFilesAreOneLineErrors() throws {
        let cases: [(String, String?, String)] = [
            ("missing", nil, "no such file"),
            ("not JSON", "{max_mean_kld: 1", "is not valid JSON"),
            ("not an object", "[1]", "expected an object keyed by scheme name"),
            ("empty", "{}", "no thresholds"),
            ("wrong type", #"{"w8": {"max_mean_kld": "0.01"}}"#, "w8.max_mean_kld is not a number"),
            ("boolean", #"{"w8": {"min_top1": true}}"#, "w8.min_top1 is not a number"),
            ("null", #"{"w8": {"min_top1": null}}"#, "w8.min_top1 is null"),
            ("unknown key", #"{"w8": {"max_mean_kl": 0.01}}"#, "w8.max_mean_kl: unknown key"),
            ("unknown scheme", #"{"w9": {"max_mean_kld": 0.01}}"#, "scheme 'w9' is not in"),
            ("negative limit", #"{"w8": {"max_p99_kld": -0.1}}"#, "w8.max_p99_kld must be a number ≥ 0"),
            ("share above 1", #"{"w8": {"min_top1": 95}}"#, "w8.min_top1 must be at most 1"),
            ("limits not object", #"{"w8": 0.01}"#, "w8 is not an object of limits"),
            ("no limits", #"{"w8": {}}"#, "w8 has no limits"),
            ("bad position", #"{"w8": {"max_kld_at": {"abc": 0.1}}}"#, "w8.max_kld_at.abc is not a position"),
            ("position beyond", #"{"w8": {"max_kld_at": {"9999": 0.1}}}"#, "w8.max_kld_at.9999 is beyond"),
            ("max_kld_at type", #"{"w8": {"max_kld_at": 0.1}}"#, "w8.max_kld_at is not an object"),
        ]
        for (label, text, expected) in cases {
            try withFiles(text.map { ["t.json": $0] } ?? [:]) { dir in
                let t = dir.appendingPathComponent("t.json").path
                do {
                    _ = try RegressionGate.check(reportPath: dir.appendingPathComponent("report.json").path, thresholdsPath: t)
                    Issue.record("\(label): accepted")
                } catch let e as QuantDriftError {
                    #expect(e.isBadInput, "\(label)")
                    #expect(e.description.hasPrefix(t), "\(label): \(e.description)")
                    #expect(e.description.contains(expected), "\(label): \(e.description)")
                    #expect(!e.description.contains("\n"), "\(label)")
                }
            }
        }
    }

    @Test func teacherOnlyReportRefusesFreeRunningThreshold() throws {
        var o = SyntheticReport.Options()
        o.mode = "teacher"
        try withFiles(["t.json": #"{"w8": {"min_median_first_divergence": 10}}"#], options: o) { dir in
            #expect(throws: QuantDriftError.self) {
                try RegressionGate.check(reportPath: dir.appendingPathComponent("report.json").path,
                                         thresholdsPath: dir.appendingPathComponent("t.json").path)
            }
        }
    }

    @Test func baselineTolerance() throws {
        var worse = SyntheticReport.Options()
        worse.kldScale = 1.2
        try withTemporaryDirectory { dir in
            let old = dir.appendingPathComponent("old.json"), new = dir.appendingPathComponent("new.json")
            try SyntheticReport.data().write(to: old)
            try SyntheticReport.data(worse).write(to: new)
            let same = try RegressionGate.check(reportPath: old.path, baselinePath: old.path, tolerance: 0)
            // 3 schemes × (mean_kld, p99_kld, top1, median first divergence).
            #expect(same.checks.count == 12)
            #expect(same.failedCount == 0)
            let strict = try RegressionGate.check(reportPath: new.path, baselinePath: old.path, tolerance: 0.1)
            #expect(strict.checks.filter { $0.name == "mean_kld vs baseline (paired difference)" }.count == 3)
            #expect(strict.checks.filter { $0.name == "mean_kld vs baseline (paired difference)" }.allSatisfy { !$0.passed })
            #expect(strict.checks.filter { $0.name == "p99_kld vs baseline" }.allSatisfy { !$0.passed })
            let loose = try RegressionGate.check(reportPath: new.path, baselinePath: old.path, tolerance: 0.25)
            #expect(loose.failedCount == 0, "\(loose.checks.filter { !$0.passed }.map(\.line))")
            // A scheme dropped from the new report fails; a new one is only a note.
            var fewer = SyntheticReport.Options()
            fewer.schemes = ["w8", "w4g32", "kv8"]
            try SyntheticReport.data(fewer).write(to: new)
            let dropped = try RegressionGate.check(reportPath: new.path, baselinePath: old.path, tolerance: 0.1)
            #expect(dropped.checks.contains { $0.scheme == "w4a8-kv4" && $0.name == "present" && !$0.passed })
            #expect(dropped.notes.contains { $0.contains("kv8 is not in the baseline") })
            #expect(throws: QuantDriftError.self) {
                try RegressionGate.check(reportPath: new.path, baselinePath: old.path, tolerance: -0.1)
            }
        }
    }

    /// The same excess judged two ways: w8's point estimate is above the limit, its interval is not.
    @Test func ciJudgementPassesWhatOnlyThePointEstimateExceeds() throws {
        try withFiles { dir in
            let path = dir.appendingPathComponent("report.json").path
            let w8 = try #require(try ReportDocument.read(path: path).scheme(named: "w8"))
            let m = try #require(w8.value(.meanKLD)), ci = try #require(w8.meanKLDCI)
            let limit = 0.95 * m  // between the interval's low end (0.88 m) and the point estimate
            try Data(#"{"w8": {"max_mean_kld": \#(limit)}}"#.utf8).write(to: dir.appendingPathComponent("t.json"))
            let t = dir.appendingPathComponent("t.json").path
            let byCI = try RegressionGate.check(reportPath: path, thresholdsPath: t, judgement: .ci)
            let byPoint = try RegressionGate.check(reportPath: path, thresholdsPath: t, judgement: .point)
            #expect(byCI.checks.map(\.passed) == [true] && byPoint.checks.map(\.passed) == [false])
            #expect(byCI.checks[0].line.contains("the point estimate is beyond the limit, the interval is not"))
            #expect(byCI.checks[0].interval == [ci.0, ci.1])
            // The smallest regression this workload catches four times in five: 1.43 lower half-widths past the limit.
            let detectable = limit + RegressionGate.detectableHalfWidths * (m - ci.0)
            #expect(byCI.sensitivity.count == 1)
            #expect(byCI.sensitivity[0].contains("sensitivity w8 max_mean_kld") && byCI.sensitivity[0].contains(ReportFormat.short(detectable, 3)),
                    "\(byCI.sensitivity)")
            #expect(byPoint.sensitivity.isEmpty)
        }
    }

    /// Against a baseline, the mean KLD is judged on the paired difference by prompt: an 10.8% rise
    /// against a 10% tolerance is beyond it by the point estimate, not by the interval.
    @Test func baselineUsesThePairedDifference() throws {
        var worse = SyntheticReport.Options()
        worse.kldScale = 1.108
        try withTemporaryDirectory { dir in
            let old = dir.appendingPathComponent("old.json"), new = dir.appendingPathComponent("new.json")
            try SyntheticReport.data().write(to: old)
            try SyntheticReport.data(worse).write(to: new)
            let name = "mean_kld vs baseline (paired difference)"
            let byCI = try RegressionGate.check(reportPath: new.path, baselinePath: old.path, tolerance: 0.1, judgement: .ci)
            let byPoint = try RegressionGate.check(reportPath: new.path, baselinePath: old.path, tolerance: 0.1, judgement: .point)
            let ci = byCI.checks.filter { $0.name == name }, point = byPoint.checks.filter { $0.name == name }
            #expect(ci.count == 3 && point.count == 3)
            #expect(ci.allSatisfy { $0.passed }, "\(ci.map(\.line))")
            #expect(point.allSatisfy { !$0.passed }, "\(point.map(\.line))")
            // The difference is new − old over the same positions: 0.108 × the baseline's per-prompt mean.
            let base = try ReportDocument.read(path: old.path).scheme(named: "w8")!
            let sums = base.prompts.map { $0.meanKLD! * Double($0.generatedTokens!) }.reduce(0, +)
            let n = base.prompts.map { Double($0.generatedTokens!) }.reduce(0, +)
            #expect(abs(ci[0].measured! - 0.108 * sums / n) < 1e-12 * sums / n + 1e-15)
            #expect(ci[0].limit == 0.1 * base.value(.meanKLD)!)
            #expect(byCI.sensitivity.contains { $0.hasPrefix("sensitivity w8 mean_kld vs baseline") })
            // Other prompts cannot be paired: the point estimates are compared, with a note.
            var other = worse
            other.promptIDs = other.promptIDs.map { $0 + "-b" }
            try SyntheticReport.data(other).write(to: new)
            let unpaired = try RegressionGate.check(reportPath: new.path, baselinePath: old.path, tolerance: 0.1)
            #expect(unpaired.checks.contains { $0.name == "mean_kld vs baseline" })
            #expect(unpaired.notes.contains { $0.contains("do not hold the same prompts") })
        }
    }

    @Test func junitIsWellFormed() throws {
        try withFiles(["t.json": Self.mixed]) { dir in
            let r = try RegressionGate.check(reportPath: dir.appendingPathComponent("report.json").path,
                                             thresholdsPath: dir.appendingPathComponent("t.json").path)
            let xml = r.junitXML()
            #expect(MarkupCheck.problem(xml) == nil, "\(MarkupCheck.problem(xml) ?? "")")
            #expect(MarkupCheck.count("<testcase ", in: xml) == 6)
            #expect(MarkupCheck.count("<failure ", in: xml) == 2)
            #expect(xml.contains("tests=\"6\" failures=\"2\""))
            // The comparison sign is escaped inside the message.
            #expect(xml.contains("(limit &gt;= 0.95; judged on the 95% CI)"))
        }
    }

    // MARK: - Through the CLI

    @Test func exitCodesThroughTheCLI() throws {
        try withFiles(["t.json": Self.mixed, "pass.json": #"{"w8": {"max_mean_kld": 0.01}}"#, "bad.json": #"{"w8": {"max_mean_kld": -1}}"#]) { dir in
            let report = dir.appendingPathComponent("report.json").path
            let junit = dir.appendingPathComponent("junit.xml").path

            let pass = try CLIRunner.run(["check", report, "--thresholds", dir.appendingPathComponent("pass.json").path])
            #expect(pass.status == 0, "\(pass.stderr)")
            #expect(pass.stdout.hasSuffix("1 passed, 0 failed\n"), "\(pass.stdout)")

            let fail = try CLIRunner.run(["check", report, "--thresholds", dir.appendingPathComponent("t.json").path, "--junit", junit])
            #expect(fail.status == 1, "\(fail.stderr)")
            let lines = fail.stdout.split(separator: "\n")
            // 6 checks, a sensitivity line for each interval-judged mean KLD and top-1 limit (3), the summary.
            #expect(lines.count == 10)
            #expect(lines.filter { $0.hasPrefix("sensitivity ") }.count == 3)
            #expect(lines.last == "4 passed, 2 failed")
            #expect(lines.filter { $0.hasPrefix("FAIL ") }.count == 2)
            let xml = try String(contentsOfFile: junit, encoding: .utf8)
            #expect(MarkupCheck.problem(xml) == nil)
            #expect(MarkupCheck.count("<failure ", in: xml) == 2)

            let bad = try CLIRunner.run(["check", report, "--thresholds", dir.appendingPathComponent("bad.json").path])
            #expect(bad.status == 2)
            #expect(bad.stderr.contains("bad.json: w8.max_mean_kld must be a number ≥ 0"), "\(bad.stderr)")
            #expect(bad.stderr.split(separator: "\n").count == 1)

            let missing = try CLIRunner.run(["check", report, "--thresholds", dir.appendingPathComponent("nope.json").path])
            #expect(missing.status == 2)
            let noMode = try CLIRunner.run(["check", report])
            #expect(noMode.status == 2, "\(noMode.stderr)")
            let noReport = try CLIRunner.run(["check", dir.appendingPathComponent("none.json").path, "--baseline", report])
            #expect(noReport.status == 2)
            #expect(noReport.stderr.contains("none.json: no such file"))

            let baseline = try CLIRunner.run(["check", report, "--baseline", report, "--tolerance", "0"])
            #expect(baseline.status == 0, "\(baseline.stderr)")
            #expect(baseline.stdout.hasSuffix("12 passed, 0 failed\n"))
            let point = try CLIRunner.run(["check", report, "--thresholds", dir.appendingPathComponent("t.json").path, "--judge", "point"])
            #expect(point.status == 1 && !point.stdout.contains("sensitivity "), "\(point.stdout)")
            let badJudge = try CLIRunner.run(["check", report, "--baseline", report, "--judge", "median"])
            #expect(badJudge.status == 2)
        }
    }

    @Test func renderCommandWritesBothFiles() throws {
        try withFiles { dir in
            let out = dir.appendingPathComponent("out")
            let r = try CLIRunner.run(["render", dir.appendingPathComponent("report.json").path, "--out", out.path])
            #expect(r.status == 0, "\(r.stderr)")
            for name in ["summary.md", "report.html"] {
                #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(name).path), "missing \(name)")
            }
        }
    }
}
