import ArgumentParser
import Foundation
import QuantDrift

/// The regression gate: exit 0 when every check passes, 1 on any regression, 2 on bad input.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Regression gate: check a report.json against thresholds or against an older report.",
        discussion: """
        Thresholds file, keyed by scheme name:
          {"w8": {"max_mean_kld": 0.01, "max_p99_kld": 0.1, "min_top1": 0.95,
                  "min_median_first_divergence": 64, "max_kld_at": {"512": 0.02}}}
        Prints one line per check, then `N passed, N failed`. Exit 0: all passed; 1: a check failed; 2: bad input.
        """)

    @Argument(help: "The report.json to check.")
    var report: String

    @Option(name: .long, help: "Thresholds file (JSON, keyed by scheme name).")
    var thresholds: String?

    @Option(name: .long, help: "An older report.json to compare against.")
    var baseline: String?

    @Option(name: .long, help: "Relative tolerance against the baseline (0.1 = 10% worse allowed).")
    var tolerance: Double = 0.1

    @Option(name: .long, help: "Also write the checks as JUnit XML to this file.")
    var junit: String?

    func validate() throws {
        guard thresholds != nil || baseline != nil else { throw ValidationError("give --thresholds T.json or --baseline OLD.json (or both)") }
    }

    func run() throws {
        var checks: [GateCheck] = []
        var notes: [String] = []
        if let thresholds {
            let r = try RegressionGate.check(reportPath: report, thresholdsPath: thresholds)
            checks += r.checks
            notes += r.notes
        }
        if let baseline {
            let r = try RegressionGate.check(reportPath: report, baselinePath: baseline, tolerance: tolerance)
            checks += r.checks
            notes += r.notes
        }
        let result = GateResult(checks: checks, notes: notes)
        for n in result.notes { CLI.note(n) }
        for c in result.checks { print(c.line) }
        print(result.summaryLine)
        if let junit { try result.writeJUnit(to: junit) }
        fflush(nil)
        if result.failedCount > 0 { Foundation.exit(1) }
    }
}
