import ArgumentParser
import Foundation
import QuantDrift

/// Re-renders summary.md and report.html from a report.json (after an upgrade, or for a report
/// copied from elsewhere).
struct RenderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract: "Write summary.md and report.html from a report.json.")

    @Argument(help: "The report.json to render.")
    var report: String

    @Option(name: .long, help: "Folder for summary.md and report.html (default: beside the report).")
    var out: String?

    func run() throws {
        let written = try ReportWriter.writeRenderings(reportAt: URL(fileURLWithPath: report), to: out.map { URL(fileURLWithPath: $0) })
        for url in written { print(url.path) }
    }
}
