import Foundation
import QuantDrift
import Testing

/// The bad-input catalogue, through the command line: every case exits 2 with exactly one line on
/// stderr that names the file (when there is one) and the problem. Models are tiny ones written
/// by the test, so the catalogue needs no download and runs in seconds.
///
/// Cases covered elsewhere, not repeated here: unknown scheme, missing and directory prompts file,
/// `compare --out /proc/…` (CompareCLITests.badArgumentsExitTwoWithOneLine); the real model cut
/// in its header or data, empty file and a lying tensor count (CLITests.corruptModelFilesExitTwoWithOneLine);
/// every reader-level variant of these (CorruptFileTests).
@Suite("Bad-input catalogue", .serialized)
struct BadInputCatalogueTests {
    static let tiny = TinyModel(seed: 3, layers: 1)

    /// Runs the CLI and expects exit 2 and one stderr line holding every part of `expected`.
    /// `progressLines` is how many progress notes (`preparing w8…`) precede the error for
    /// commands that report progress on stderr.
    @discardableResult
    func expectRefusal(_ arguments: [String], _ expected: String..., environment: [String: String] = [:],
                       progressLines: Int = 0, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let r = try CLIRunner.run(arguments, environment: environment)
        #expect(r.status == 2, "\(arguments): exit \(r.status), stderr \(r.stderr)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 + progressLines, "\(arguments): stderr has \(lines.count) lines: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(lines.last?.hasPrefix("quantdrift: error: ") == true, "\(r.stderr)", sourceLocation: sourceLocation)
        for part in expected {
            #expect(r.stderr.contains(part), "\(arguments): stderr '\(r.stderr)' should mention '\(part)'", sourceLocation: sourceLocation)
        }
        return r.stderr
    }

    /// Writes the tiny model as `name` in `dir`, edited by `edit`, and returns its path.
    func gguf(_ dir: URL, _ name: String, tiny: TinyModel = Self.tiny, typed: (name: String, type: GGMLType)? = nil,
              _ edit: (inout GGUFWriter) -> Void = { _ in }) throws -> String {
        var g = tiny.ggufWriter(type: { $0 == typed?.name ? typed!.type : .f32 })
        edit(&g)
        let path = dir.appendingPathComponent(name).path
        try g.write(to: path)
        return path
    }

    func write(_ bytes: [UInt8], _ dir: URL, _ name: String) throws -> String {
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url.path
    }

    // MARK: - Model files

    @Test func modelFiles() throws {
        try withTemporaryDirectory { dir in
            let good = Self.tiny.ggufWriter()
            let layout = good.layout()

            try expectRefusal(["inspect", "--model", dir.appendingPathComponent("absent.gguf").path], "absent.gguf", "no such file")
            let folder = dir.appendingPathComponent("empty-folder")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try expectRefusal(["inspect", "--model", folder.path], "empty-folder", "no config.json")

            var badMagic = layout.bytes
            badMagic[3] = UInt8(ascii: "X")
            try expectRefusal(["inspect", "--model", try write(badMagic, dir, "magic.gguf")], "magic.gguf", "not a GGUF file (bad magic)")
            try expectRefusal(["inspect", "--model", try write(Array(layout.bytes.prefix(layout.headerEnd - 4)), dir, "cut-header.gguf")],
                              "cut-header.gguf", "truncated at offset")
            try expectRefusal(["inspect", "--model", try write(Array(layout.bytes.dropLast(100)), dir, "cut-data.gguf")],
                              "cut-data.gguf", "lies past the end of the file")
            try expectRefusal(["inspect", "--model", try gguf(dir, "overflow.gguf") { g in
                g.tensors[g.tensorIndex("token_embd.weight")].dims = [UInt64(Int32.max), UInt64(Int32.max)]
            }], "overflow.gguf", "token_embd.weight", "dimensions overflow")
            try expectRefusal(["inspect", "--model", try gguf(dir, "mamba.gguf") { $0.set("general.architecture", .string("mamba")) }],
                              "mamba.gguf", "architecture 'mamba' is not supported")
            try expectRefusal(["inspect", "--model", try gguf(dir, "q8k.gguf", tiny: TinyModel(seed: 3, layers: 1, hiddenDim: 256),
                                                           typed: ("blk.0.ffn_down.weight", .q8_K))],
                              "q8k.gguf", "blk.0.ffn_down.weight", "type Q8_K, which is not supported")
            try expectRefusal(["inspect", "--model", try gguf(dir, "type99.gguf") { g in
                g.tensors[g.tensorIndex("blk.0.attn_q.weight")].rawType = 99
            }], "type99.gguf", "blk.0.attn_q.weight", "unknown ggml type 99")
            try expectRefusal(["inspect", "--model", try gguf(dir, "no-up.gguf") { $0.removeTensor("blk.0.ffn_up.weight") }],
                              "no-up.gguf", "missing tensor blk.0.ffn_up.weight")
            let kvDim = Self.tiny.config.kvDim
            try expectRefusal(["inspect", "--model", try gguf(dir, "shape.gguf") { g in
                let i = g.tensorIndex("blk.0.attn_v.weight")
                g.tensors[i].dims = [32, 32]
                g.tensors[i].data = encodeFloats([Float](repeating: 0, count: 32 * 32), as: .f32)
            }], "shape.gguf", "tensor blk.0.attn_v.weight has shape [32, 32], expected [\(kvDim), 32]")
        }
    }

    /// NaN or Inf weights are refused at load (README, "Hostile inputs"): every divergence against
    /// such a reference would be NaN. Checked in GGUF files and HF folders.
    @Test func nonFiniteWeights() throws {
        try withTemporaryDirectory { dir in
            var nan = Self.tiny
            nan.weights.layers[0].wUp[5] = .nan
            let path = dir.appendingPathComponent("nan.gguf").path
            try nan.ggufWriter().write(to: path)
            try expectRefusal(["inspect", "--model", path], "nan.gguf", "tensor blk.0.ffn_up.weight holds 1 NaN/Inf weight", "element 5")

            var inf = Self.tiny
            inf.weights.layers[0].wo[7] = -.infinity
            inf.weights.outputNorm[0] = .infinity
            let folder = dir.appendingPathComponent("inf-model")
            try inf.writeSafetensors(to: folder)
            try expectRefusal(["inspect", "--model", folder.path], "model.safetensors",
                              "tensor model.layers.0.self_attn.o_proj.weight holds 1 NaN/Inf weight (first: -inf at element 7)")
        }
    }

    // MARK: - Prompts

    @Test func prompts() throws {
        try withTemporaryDirectory { dir in
            let model = try gguf(dir, "tiny.gguf")
            let out = dir.appendingPathComponent("report").path
            func compare(_ prompts: String) -> [String] {
                ["compare", "--model", model, "--schemes", "w8", "--prompts", prompts, "-n", "4", "--out", out]
            }
            // Empty prompt: on the command line, and in a workload line.
            try expectRefusal(["generate", "--model", model, "-p", ""], "the prompt is empty")
            let empty = try write(Array(#"{"id": "a", "prompt": ""}"#.utf8), dir, "empty.jsonl")
            try expectRefusal(compare(empty), "empty.jsonl:1", "prompt 'a' is empty")

            // Longer than the context (64 tokens for the tiny model).
            let long = String(repeating: "lighthouse keeper ", count: 40)
            try expectRefusal(["generate", "--model", model, "-p", long, "-n", "4"], "exceed the model's context length 64")
            let longFile = try write(Array("{\"id\": \"long\", \"prompt\": \"\(long)\"}\n".utf8), dir, "long.jsonl")
            try expectRefusal(compare(longFile), "long.jsonl", "prompt 'long'", "exceed the model's context length 64")

            // Invalid UTF-8: in a workload, and in a text file read with --file.
            let badUTF8 = try write(Array(#"{"id": "a", "prompt": "caf"#.utf8) + [0xC3, 0x28, 0xFF] + Array(#""}"#.utf8), dir, "utf8.jsonl")
            try expectRefusal(compare(badUTF8), "utf8.jsonl", "not valid UTF-8")
            let badText = try write([0x68, 0x69, 0xFF, 0xFE, 0x0A], dir, "bad.txt")
            try expectRefusal(["tokenize", "--model", model, "--file", badText], "bad.txt", "not valid UTF-8")
            try expectRefusal(["tokenize", "--model", model, "--file", dir.path], dir.path, "is a directory")
        }
    }

    // MARK: - Outputs

    /// An output path nobody can write: /proc refuses new files even to root (a read-only folder
    /// does not stop root, which the test may run as).
    @Test func unwritableCalibrationOutput() throws {
        try withTemporaryDirectory { dir in
            var longContext = Self.tiny
            longContext.config.contextLength = 1024
            let model = try gguf(dir, "tiny.gguf", tiny: longContext)
            let data = try write(Array(String(repeating: "The keeper climbed the stairs and lit the lamp. ", count: 20).utf8), dir, "calib.txt")
            try expectRefusal(["calibrate", "--model", model, "--data", data, "-o", "/proc/qd-calibration.json"],
                              "/proc/qd-calibration.json", "cannot write")
        }
    }

    /// No usable temporary folder for the reference logits (`LogitRows`): exit 2 with one line
    /// naming the folder, and the previous report survives.
    @Test func unusableTemporaryFolderForLogits() throws {
        try withTemporaryDirectory { dir in
            let model = try gguf(dir, "tiny.gguf")
            let prompts = try write(Array(#"{"id": "a", "prompt": "The keeper climbed the stairs"}"#.utf8), dir, "p.jsonl")
            let out = dir.appendingPathComponent("report")
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            let previous = Data("{\"schema\": \"previous run\"}\n".utf8)
            try previous.write(to: out.appendingPathComponent("report.json"))
            let missing = dir.appendingPathComponent("no-such-folder").path
            try expectRefusal(["compare", "--model", model, "--schemes", "w8", "--prompts", prompts, "-n", "4", "--out", out.path],
                              "temporary file for reference logits", missing, environment: ["TMPDIR": missing], progressLines: 1)
            #expect(try Data(contentsOf: out.appendingPathComponent("report.json")) == previous)
        }
    }

    /// A full disk while the report is written: exit 2 naming report.json, the previous report
    /// survives byte for byte and no temporary file is left (QUANTDRIFT_FAIL_WRITES=1 injects the
    /// failure in AtomicFile.write, as ENOSPC after half the bytes).
    @Test func diskFullKeepsThePreviousReport() throws {
        try withTemporaryDirectory { dir in
            let model = try gguf(dir, "tiny.gguf")
            let prompts = try write(Array(#"{"id": "a", "prompt": "The keeper climbed the stairs"}"#.utf8), dir, "p.jsonl")
            let out = dir.appendingPathComponent("report")
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            let previous = Data("{\"schema\": \"previous run\"}\n".utf8)
            let reportURL = out.appendingPathComponent("report.json")
            try previous.write(to: reportURL)
            let args = ["compare", "--model", model, "--schemes", "w8", "--prompts", prompts, "-n", "4", "--out", out.path]
            // The first write to fail is the first kept result in report/.partial (kept results
            // stay for --resume); the report itself is never touched.
            try expectRefusal(args, "report/.partial/", "cannot write (No space left on device)", environment: ["QUANTDRIFT_FAIL_WRITES": "1"],
                              progressLines: 1)
            #expect(try Data(contentsOf: reportURL) == previous, "the previous report.json must survive a failed write")
            let left = (FileManager.default.subpaths(atPath: out.path) ?? []).filter { $0.contains(".tmp-") }
            #expect(left.isEmpty, "temporary files left behind: \(left)")

            // Without the injected failure the same run writes the report.
            let r = try CLIRunner.run(args)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try Data(contentsOf: reportURL) != previous)
        }
    }
}
