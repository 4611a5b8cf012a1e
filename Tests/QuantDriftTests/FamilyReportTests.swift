import Foundation
import Testing
@testable import QuantDrift

/// The family report's words come from its numbers: a scheme whose KLD is 10× larger on one
/// family, with disjoint CIs, is called different; equal numbers are not.
@Suite("Family report")
struct FamilyReportTests {
    func build(scaleB: Double) throws -> FamilyReport {
        try withTemporaryDirectory { dir in
            for (name, scale) in [("a", 1.0), ("b", scaleB)] {
                let folder = dir.appendingPathComponent(name)
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                var o = SyntheticReport.Options()
                o.kldScale = scale
                try SyntheticReport.data(o).write(to: folder.appendingPathComponent("report.json"))
            }
            let report = try FamilyReport(directory: dir, families: [("a", "a/report.json", "llama", nil),
                                                                     ("b", "b/report.json", "gemma3", nil)])
            try report.write(to: dir)
            for f in ["families.json", "families.md", "families.html"] {
                #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent(f).path))
            }
            let json = try JSONNode.read(path: dir.appendingPathComponent("families.json").path)
            #expect(try json["schema"].string() == FamilyReport.schema)
            #expect(try json["schemes"].array().count == 3)
            return report
        }
    }

    @Test func differentFamiliesAreCalledDifferent() throws {
        let r = try build(scaleB: 10)
        let s = try #require(r.sentence(for: "w8"))
        #expect(s.contains("behaves differently") && s.contains("10.0×") && s.contains("more on b"), "\(s)")
        #expect(r.markdown().contains("| w8 |"))
        #expect(r.html().contains("<svg") && r.html().contains("Mean KLD per scheme"))
    }

    @Test func equalFamiliesAreNot() throws {
        let r = try build(scaleB: 1)
        let s = try #require(r.sentence(for: "w4g32"))
        #expect(s.contains("no difference") && s.contains("CIs overlap"), "\(s)")
    }

    @Test func oneFamilyIsRefused() throws {
        #expect(throws: QuantDriftError.self) {
            try FamilyReport(directory: URL(fileURLWithPath: "/nonexistent"), families: [("a", "a/report.json", "llama", nil)])
        }
    }
}
