import ArgumentParser
import Foundation
import QuantDrift

extension GateJudgement: ExpressibleByArgument {}

/// The regression gate: exit 0 when every check passes, 1 on any regression, 2 on bad input.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Regression gate: check a report.json against thresholds or against an older report.",
        discussion: """
        Thresholds file, keyed by scheme name:
          {"w8": {"max_mean_kld": 0.01, "max_p99_kld": 0.1, "min_top1": 0.95,
                  "min_median_first_divergence": 64, "max_kld_at": {"512": 0.02}}}
        Judging (--judge ci, the default): max_mean_kld, min_top1 and max_kld_at fail only when the
        whole 95% interval of the value lies beyond the limit; max_p99_kld and
        min_median_first_divergence (no interval in the report) on the point estimate. --judge point
        judges every check on its point estimate. Against --baseline, mean KLD and top-1 are judged
        on the paired difference new − old by prompt (bootstrap 95% interval), allowed to move by
        tolerance × the baseline value.
        Prints one line per check, for each interval-judged check the smallest regression this
        workload detects (80% power), then `N passed, N failed`. Exit 0: all passed; 1: a check
        failed; 2: bad input.
        """)

    @Argument(help: "The report.json to check.")
    var report: String

    @Option(name: .long, help: "Thresholds file (JSON, keyed by scheme name).")
    var thresholds: String?

    @Option(name: .long, help: "An older report.json to compare against.")
    var baseline: String?

    @Option(name: .long, help: "Relative tolerance against the baseline (0.1 = 10% worse allowed).")
    var tolerance: Double = 0.1

    @Option(name: .long, help: "ci: fail only when the 95% interval lies beyond the limit (where the report has one); point: on the point estimate.")
    var judge: GateJudgement = .ci

    @Option(name: .long, help: "Also write the checks as JUnit XML to this file.")
    var junit: String?

    func validate() throws {
        guard thresholds != nil || baseline != nil else { throw ValidationError("give --thresholds T.json or --baseline OLD.json (or both)") }
    }

    func run() throws {
        var checks: [GateCheck] = []
        var notes: [String] = [], sensitivity: [String] = []
        if let thresholds {
            let r = try RegressionGate.check(reportPath: report, thresholdsPath: thresholds, judgement: judge)
            checks += r.checks
            notes += r.notes
            sensitivity += r.sensitivity
        }
        if let baseline {
            let r = try RegressionGate.check(reportPath: report, baselinePath: baseline, tolerance: tolerance, judgement: judge)
            checks += r.checks
            notes += r.notes
            sensitivity += r.sensitivity
        }
        let result = GateResult(checks: checks, notes: notes, sensitivity: sensitivity)
        for n in result.notes { CLI.note(n) }
        for c in result.checks { print(c.line) }
        for s in result.sensitivity { print(s) }
        print(result.summaryLine)
        if let junit { try result.writeJUnit(to: junit) }
        fflush(nil)
        if result.failedCount > 0 { Foundation.exit(1) }
    }
}
