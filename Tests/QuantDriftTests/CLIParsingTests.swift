import ArgumentParser
import Foundation
import Testing
@testable import QuantDrift
@testable import QuantDriftCommands

/// Command lines parsed as the executable parses them (`QuantDriftCLI.parseAsRoot`), without
/// running anything: defaults, the shared option groups, and what `validate()` refuses.
@Suite("CLI parsing")
struct CLIParsingTests {
    static func parse<C: ParsableCommand>(_ arguments: [String], as _: C.Type = C.self) throws -> C {
        try #require(try QuantDriftCLI.parseAsRoot(arguments) as? C)
    }

    /// The one-line message the executable prints for a refused command line.
    static func refusal(_ arguments: [String]) -> String? {
        do {
            _ = try QuantDriftCLI.parseAsRoot(arguments)
            return nil
        } catch {
            return QuantDriftCLI.message(for: error)
        }
    }

    @Test func compareDefaults() throws {
        let c: CompareCommand = try Self.parse(["compare", "--schemes", "w8,kv4"])
        #expect(c.schemes.schemes.map(\.name) == ["w8", "kv4"])
        let o = c.options
        #expect(o.modelOptions.model == nil)
        #expect(o.workers == 2 && o.deprecatedThreads == nil && o.workerCount == 2)
        #expect(o.mode == .both && o.out == "report" && o.n == nil && o.prompts == Tracking.defaultPrompts)
        #expect(!o.attribute && !o.perLayer && !o.ignoreEOS && !o.resume)
        #expect(o.trace.saveReference == nil && o.trace.reference == nil)
        let t = o.trackerOptions
        #expect(t.threads == 2 && t.mode == .both && t.forcedMaxTokens == nil && t.stopAtEndOfGeneration)
        #expect(t.sampling.temperature == 0 && t.sampling.topK == 0 && t.sampling.topP == 1 && t.sampling.seed == 1)
    }

    @Test func runDefaultsToTheSchemeMatrix() throws {
        let r: RunCommand = try Self.parse(["run"])
        #expect(r.schemes == nil)
        #expect(try Tracking.defaultSchemes().map(\.name) == Tracking.defaultMatrix)
        let overridden: RunCommand = try Self.parse(["run", "--schemes", "w8 w=int4,g32", "--workers", "1"])
        #expect(overridden.schemes?.schemes.count == 2 && overridden.schemes?.schemes[0].name == "w8")
        #expect(overridden.options.workerCount == 1)
        let long: RunCommand = try Self.parse(["run", "--long"])
        #expect(long.long && long.options.prompts == Tracking.defaultPrompts)
        #expect(throws: (any Error).self) { let _: RunCommand = try Self.parse(["run", "--long", "--prompts", "x.jsonl"]) }
    }

    /// `run --long`'s workload: at least 8 prompts, every continuation 2,048 tokens, chat and raw.
    @Test func longWorkloadRunsTwoThousandTokens() throws {
        let w = try Workload.load(path: packageRoot().appendingPathComponent(Tracking.longPrompts).path)
        #expect(w.prompts.count >= 8 && w.prompts.allSatisfy { $0.maxTokens == 2048 })
        #expect(w.prompts.contains { $0.chat } && w.prompts.contains { !$0.chat })
        #expect(try Tracking.longMatrix.map(SchemeArgument.parse).count == 6)
    }

    @Test func trackerOptionGroups() throws {
        let c: CompareCommand = try Self.parse([
            "compare", "--schemes", "w8", "--model", "m.gguf", "--workers", "1", "--mode", "teacher", "-n", "32",
            "--temp", "0.8", "--top-k", "40", "--top-p", "0.9", "--seed", "7", "--save-reference", "ref.qdtrace",
        ])
        let o = c.options
        #expect(o.modelOptions.model == "m.gguf" && o.workerCount == 1 && o.mode == .teacher && o.n == 32)
        #expect(o.trace.saveReference == "ref.qdtrace" && o.trace.reference == nil)
        let s = o.trackerOptions.sampling
        #expect(s.temperature == 0.8 && s.topK == 40 && s.topP == 0.9 && s.seed == 7)
        // The old name of --workers still works, hidden.
        let old: CompareCommand = try Self.parse(["compare", "--schemes", "w8", "--threads", "3"])
        #expect(old.options.workerCount == 3 && old.options.trackerOptions.threads == 3)
    }

    @Test func singleModelOptionGroups() throws {
        let g: GenerateCommand = try Self.parse(["generate", "-p", "hi", "--model", "m.gguf", "--threads", "2", "--scheme", "w8",
                                                 "--temp", "0.5", "--seed", "3", "--json"])
        #expect(g.setup.modelOptions.model == "m.gguf" && g.setup.blas.threads == 2 && g.setup.scheme.name == "w8" && g.output.json)
        #expect(g.sampling.parameters(defaultSeed: 0).temperature == 0.5 && g.sampling.parameters(defaultSeed: 0).seed == 3)
        let plain: GenerateCommand = try Self.parse(["generate", "-p", "hi"])
        #expect(plain.setup.blas.threads == 1 && plain.setup.scheme.isReference && !plain.output.json)
        #expect(plain.sampling.parameters(defaultSeed: 0).seed == 0)
        let k: KLDCommand = try Self.parse(["kld", "--file", "t.txt", "--scheme", "q8_0", "--reference", "ref.qdtrace", "--json"])
        #expect(k.trace.reference == "ref.qdtrace" && k.trace.saveReference == nil && k.output.json && k.input.ctx == 512)
        #expect(k.setup.scheme.name == "q8_0")
        let t: TokenizeCommand = try Self.parse(["tokenize", "Hello", "--json"])
        #expect(t.output.json && t.text == "Hello")
        let c: CalibrateCommand = try Self.parse(["calibrate", "-o", "calib.json"])
        #expect(c.scheme.name == "w8a8-static" && c.artifactPath == "calib.json" && !c.output.json)
    }

    @Test(arguments: [
        (["compare", "--schemes", "w8", "--mode", "sideways"], "--mode"),
        (["compare", "--schemes", "w9"], "w9"),
        (["compare", "--schemes", "w8,w8"], "given twice"),
        (["generate", "-p", "hi", "--scheme", "w=int9"], "--scheme"),
        (["compare", "--schemes", "w8", "--save-reference", "a", "--reference", "b"], "exclude each other"),
        (["kld", "--file", "t.txt", "--save-reference", "a", "--reference", "b"], "exclude each other"),
        (["compare", "--schemes", "w8", "--workers", "0"], "--workers"),
        (["run", "--threads", "0"], "--workers"),
        (["compare", "--schemes", "w8", "-n", "0"], "-n"),
        (["bench", "--threads", "0"], "--threads"),
        (["compare", "--schemes", "w8", "--batch", "0"], "--batch"),
        (["run", "--batch", "257"], "--batch"),
        (["bench", "--batch", "0"], "--batch"),
        (["generate", "-p", "hi", "--top-p", "0"], "top-p"),
        (["calibrate", "-o", "c.json", "--scheme", "w8a8-static;calib=x.json"], "calibration file"),
    ])
    func refused(arguments: [String], expected: String) {
        let message = Self.refusal(arguments)
        #expect(message?.contains(expected) == true, "\(arguments): \(message ?? "accepted")")
    }

    /// The table `compare` and `run` print at the end, read back through the report reader:
    /// counts as counts ("193", not "193.000000") and "none (> 256)" when the median prompt never
    /// diverged, worded as in summary.md.
    @Test func finalTableShowsCountsAndNone() throws {
        var text = String(decoding: SyntheticReport.data(), as: UTF8.self)
        let first = try #require(text.range(of: #""median_first_divergence": [0-9.]+"#, options: .regularExpression))
        let second = try #require(text.range(of: #""median_first_divergence": [0-9.]+"#, options: .regularExpression,
                                              range: first.upperBound..<text.endIndex))
        text.replaceSubrange(second, with: #""median_first_divergence": 193"#)
        text.replaceSubrange(first, with: #""median_first_divergence": 257"#)
        let table = try ReportRenderer.consoleTable(Data(text.utf8))
        let rows = table.split(separator: "\n")
        #expect(rows.count == 4, "\(table)")
        #expect(rows[1].hasPrefix("w8 ") && rows[1].hasSuffix(" none (> 256)"), "\(table)")
        #expect(rows[2].hasPrefix("w4g32 ") && rows[2].hasSuffix(" 193"), "\(table)")
        #expect(!table.contains("193.0") && !table.contains("257"), "\(table)")
    }
}
