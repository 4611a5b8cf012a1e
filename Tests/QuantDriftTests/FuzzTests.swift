import Foundation
@testable import QuantDrift
import Testing

/// Seeded mutation fuzzing of every reader of user files: each mutated input must load or throw
/// a one-line `QuantDriftError`, never crash, hang or take more than 2 s. The tests run a short
/// campaign per target; `QUANTDRIFT_FUZZ_ITERATIONS=100000 scripts/fuzz.sh` runs the long one.
@Suite("Fuzz", .serialized)
struct FuzzTests {
    /// Executions per target in the ordinary test run.
    static let shortRun = 3000

    /// An invariant of a reader that a fuzzed input broke (not a QuantDriftError: fails the run).
    struct InvariantViolation: Error, CustomStringConvertible {
        let description: String
    }

    // MARK: - Seeds

    static func json(_ object: Any) -> [UInt8] {
        Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }

    static let llama = TinyModel(seed: 1, layers: 1)
    static let qwen = TinyModel(architecture: .qwen2, seed: 2, layers: 1, tiedOutput: true)

    /// A folder per target holding a valid HF model, of which the target replaces one file.
    static func modelFolder(_ target: String, _ tiny: TinyModel = llama) throws -> URL {
        let dir = FuzzHarness.folder.appendingPathComponent("\(target)-model")
        try? FileManager.default.removeItem(at: dir)
        try tiny.writeSafetensors(to: dir)
        return dir
    }

    /// Loads a model, then tokenizes and detokenizes a little text with its tokenizer.
    static func loadAndTokenize(_ path: String) throws {
        let m = try Model.load(path: path)
        let ids = m.tokenizer.encode("Hello world, 12345 <|im_start|>user\nçà 🙂\n", parseSpecial: true)
        _ = m.tokenizer.decode(ids)
    }

    static let jsonWords = ["\"type\"", "\"vocab\"", "\"merges\"", "\"id\"", "\"content\"", "\"special\"", "\"Sequence\"",
                            "\"ByteLevel\"", "\"Split\"", "\"Regex\"", "\"model_type\"", "\"llama\"", "\"qwen2\"",
                            "\"vocab_size\"", "\"hidden_size\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "null", "[", "]",
                            "{", "}", ",", ":", "\"prompt\"", "\"max_tokens\"", "\"chat\"", "-1", "1e308", "99999999999"]

    // MARK: - Targets

    /// GGUF: header, metadata, tensor infos, every tensor dequantized, then the whole model with
    /// its tokenizer. Mutations aim at the header (where counts and offsets live) three times in four.
    static let gguf: FuzzTarget = {
        let hot = llama.ggufWriter().layout().dataOffset
        return FuzzTarget(
            name: "gguf",
            seeds: {
                [llama.ggufWriter().bytes(),
                 qwen.ggufWriter(type: { _ in .q8_0 }).bytes(),
                 llama.ggufWriter(version: 2, type: { _ in .f16 }).bytes(),
                 llama.ggufWriter(type: { $0.hasSuffix("ffn_down.weight") ? .q4_0 : .bf16 }).bytes()]
            },
            mutate: { m, seed, other in m.mutateBytes(seed, splice: other, hot: hot) },
            run: { _, path in
                let g = try GGUFFile(path: path)
                for t in g.tensors where GGMLType.dequantizable.contains(t.type) { _ = try g.floats(t) }
                try loadAndTokenize(path)
            },
            dictionary: ["GGUF", "general.alignment", "general.architecture", "llama", "token_embd.weight",
                         "tokenizer.ggml.tokens", "tokenizer.ggml.merges"])
    }()

    /// Safetensors: `model.safetensors` of an HF folder (JSON header, ranges, dtypes, shapes).
    static let safetensors = FuzzTarget(
        name: "safetensors",
        seeds: { [SafetensorsWriter(tensors: llama.hfTensors()).bytes(),
                  SafetensorsWriter(tensors: llama.hfTensors(dtype: "BF16")).bytes(),
                  SafetensorsWriter(tensors: llama.hfTensors(dtype: "F16")).bytes()] },
        mutate: { m, seed, other in
            // The header is JSON: structural mutations there, byte mutations anywhere.
            let n = Int(seed.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
            guard m.chance(0.5), n + 8 <= seed.count else { return m.mutateBytes(seed, splice: other, hot: n + 8) }
            let header = m.mutateJSON(Array(seed[8..<(8 + n)]))
            var out: [UInt8] = []
            let len = m.chance(0.9) ? UInt64(header.count) : UInt64(m.pick(Mutator.boundaryValues))
            for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: len >> (8 * UInt64(k)))) }
            return out + header + seed[(8 + n)...]
        },
        run: { input, _ in
            let dir = FuzzHarness.folder.appendingPathComponent("safetensors-model")
            if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("config.json").path) {
                _ = try modelFolder("safetensors")
            }
            try Data(input).write(to: dir.appendingPathComponent("model.safetensors"))
            try loadAndTokenize(dir.path)
        },
        dictionary: jsonWords + ["\"F32\"", "\"BF16\"", "\"I8\"", "\"__metadata__\"", "\"model.embed_tokens.weight\""])

    /// config.json of an HF folder.
    static let config = FuzzTarget(
        name: "config",
        seeds: { [json(llama.hfConfig()), json(qwen.hfConfig())] },
        mutate: { m, seed, other in m.mutateJSON(seed, splice: other) },
        run: { input, _ in
            let dir = FuzzHarness.folder.appendingPathComponent("config-model")
            if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors").path) {
                _ = try modelFolder("config")
            }
            try Data(input).write(to: dir.appendingPathComponent("config.json"))
            try loadAndTokenize(dir.path)
        },
        dictionary: jsonWords)

    /// tokenizer.json (with tokenizer_config.json and config.json beside it), then the tokenizer
    /// built from it encodes and decodes text.
    static let tokenizer = FuzzTarget(
        name: "tokenizer",
        seeds: { [json(llama.tokenizerJSON()), json(qwen.tokenizerJSON())] },
        mutate: { m, seed, other in m.mutateJSON(seed, splice: other) },
        run: { input, _ in
            let dir = FuzzHarness.folder.appendingPathComponent("tokenizer-model")
            if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("config.json").path) {
                _ = try modelFolder("tokenizer")
            }
            try Data(input).write(to: dir.appendingPathComponent("tokenizer.json"))
            let config = try JSONNode.read(path: dir.appendingPathComponent("config.json").path)
            let spec = try HFTokenizerLoader.spec(directory: dir.path, config: config, vocabSize: llama.config.vocabSize)
            let t = try Tokenizer(spec: spec)
            let ids = t.encode("Hello world, 12345 <|im_start|>user\nçà 🙂\n", parseSpecial: true)
            _ = t.decode(ids)
        },
        dictionary: jsonWords)

    /// Scheme strings: presets, their specs and the grammar's components. A parsed scheme must
    /// print a canonical spec that parses back to itself.
    static let scheme = FuzzTarget(
        name: "scheme",
        seeds: {
            var s = Scheme.presets.map(\.name) + Scheme.presets.map(\.spec).filter { !$0.isEmpty }
            s += ["w=nf4,g64,asym,awq;a=int8,g32,static,outlier=6;calib=mse", "kv=int4,k=channel,v=token,g32,asym,res=16,sink=4,prerope",
                  "w=mxfp4;skip=lm_head,embed,3,attn_q", "w=fp8e4m3,tensor;a=q8_0;calib=percentile:99.9", "w8a8,kv4", "w4g32;kv8"]
            return s.map { Array($0.utf8) }
        },
        mutate: { m, seed, other in
            var b = m.mutateBytes(seed, splice: other)
            if m.chance(0.3) { b = m.mutateBytes(b) }
            return b
        },
        run: { input, _ in
            let text = String(decoding: input, as: UTF8.self)
            let s = try Scheme(parsing: text)
            let again = try Scheme(parsing: s.spec)
            guard again.spec == s.spec else {
                throw InvariantViolation(description: "'\(text)' prints as '\(s.spec)', which parses to '\(again.spec)'")
            }
        },
        dictionary: ["w=", "a=", "kv=", "calib=", "skip=", ";", ",", ":", "=", "int8", "int4", "int3", "int2", "nf4",
                     "fp8e4m3", "fp8e5m2", "mxfp4", "fp16", "bf16", "q8_0", "q4_0", "q4_1", "tensor", "channel", "token",
                     "g0", "g1", "g32", "g128", "g99999999999999999999", "g-1", "sym", "asym", "rtn", "gptq", "awq",
                     "dynamic", "static", "smooth=", "outlier=", "k=", "v=", "res=", "sink=", "prerope", "percentile:",
                     "minmax", "mse", "entropy", "nan", "inf", "-1", "1e308", "0.5", "lm_head", "embed", "attn_q",
                     "9223372036854775807", "w8", "kivi2", "fp32"])

    /// Prompts JSONL: lines written by code, mutated one at a time or as a whole file.
    static let workload = FuzzTarget(
        name: "workload",
        seeds: {
            let lines = [
                #"{"id": "story", "prompt": "Write a short story about a lighthouse.", "chat": true, "max_tokens": 192}"#,
                #"{"id": "cont", "prompt": "The train left the valley an hour before dawn,", "chat": false}"#,
                #"{"id": "code-1", "prompt": "def f(x):\n    return x * 2\n", "max_tokens": 64}"#,
                #"{"id": "ünï", "prompt": "Ça va? 你好 🙂 \u00e9", "chat": true, "max_tokens": 1}"#,
            ]
            return lines.map { Array($0.utf8) } + [Array(lines.joined(separator: "\n").utf8), Array((lines.joined(separator: "\r\n\n") + "\n").utf8)]
        },
        mutate: { m, seed, other in
            guard m.chance(0.7) else { return m.mutateBytes(seed, splice: other) }
            // Mutate one line of the file as JSON.
            var lines = seed.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
            let i = m.below(lines.count)
            lines[i] = m.mutateJSON(lines[i], splice: other)
            if m.chance(0.1) { lines.append(lines[m.below(lines.count)]) }  // duplicate ids
            return Array(lines.joined(separator: [UInt8(ascii: "\n")]))
        },
        run: { input, path in _ = try Workload.parse(Data(input), file: path) },
        dictionary: jsonWords)

    /// The synthetic report `check` reads thresholds against.
    static let report: ReportDocument = try! ReportDocument.parse(SyntheticReport.data(), file: "report.json")

    /// Thresholds files for `check`, keyed by the synthetic report's schemes.
    static let thresholds = FuzzTarget(
        name: "thresholds",
        seeds: {
            let names = report.schemes.map(\.name)
            return [
                "{\"\(names[0])\": {\"max_mean_kld\": 0.01, \"max_p99_kld\": 0.1, \"min_top1\": 0.95, \"min_median_first_divergence\": 64, \"max_kld_at\": {\"64\": 0.02}}}",
                "{\"\(names[1])\": {\"max_mean_kld\": 0.1}, \"\(names[0])\": {\"min_top1\": 0.5}}",
            ].map { Array($0.utf8) }
        },
        mutate: { m, seed, other in m.chance(0.7) ? m.mutateJSON(seed, splice: other) : m.mutateBytes(seed, splice: other) },
        run: { _, path in _ = try Thresholds.read(path: path, report: report) },
        dictionary: jsonWords + ["max_mean_kld", "max_p99_kld", "min_top1", "min_median_first_divergence", "max_kld_at"])

    /// report.json as `check` and `render` read it.
    static let reportReader = FuzzTarget(
        name: "report",
        seeds: { [Array(SyntheticReport.data())] },
        mutate: { m, seed, other in m.chance(0.7) ? m.mutateJSON(seed, splice: other) : m.mutateBytes(seed, splice: other) },
        run: { input, path in
            let doc = try ReportDocument.parse(Data(input), file: path)
            _ = MarkdownReport.render(doc)
            _ = HTMLReport.render(doc)
        },
        dictionary: jsonWords)

    static let targets = [gguf, safetensors, config, tokenizer, scheme, workload, thresholds, reportReader]

    static func fuzz(_ target: FuzzTarget, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let n = FuzzHarness.iterations(short: shortRun)
        let r = try FuzzHarness.run(target, iterations: n, sourceLocation: sourceLocation)
        #expect(r.executions == n, sourceLocation: sourceLocation)
        // A campaign that rejects everything (or accepts everything) is not exploring the reader.
        #expect(r.accepted > 0 && r.rejected > 0, "\(target.name): \(r.accepted) accepted, \(r.rejected) rejected",
                sourceLocation: sourceLocation)
    }

    @Test func ggufReader() throws { try Self.fuzz(Self.gguf) }
    @Test func safetensorsReader() throws { try Self.fuzz(Self.safetensors) }
    @Test func configReader() throws { try Self.fuzz(Self.config) }
    @Test func tokenizerReader() throws { try Self.fuzz(Self.tokenizer) }
    @Test func schemeParser() throws { try Self.fuzz(Self.scheme) }
    @Test func workloadReader() throws { try Self.fuzz(Self.workload) }
    @Test func thresholdsReader() throws { try Self.fuzz(Self.thresholds) }
    @Test func reportReaderAndRenderers() throws { try Self.fuzz(Self.reportReader) }

    // MARK: - Regressions (minimized inputs the fuzzer found)

    /// Scheme errors quoted the user's text raw: a newline in it made a two-line message.
    @Test func schemeErrorWithNewlineIsOneLine() {
        let e = expectBadInput("scheme: unknown scheme or component 'w8\\nx'") { _ = try Scheme(parsing: "w8\nx") }
        #expect(e?.description.contains("\n") == false)
        expectBadInput("unknown KV option 'asy\\r\\u{1B}'") { _ = try Scheme(parsing: "kv=int4,token,g32,asy\r\u{1B}") }
    }

    /// The mutator is deterministic: the same seed gives the same inputs.
    @Test func mutatorIsSeeded() {
        let seed = Array("{\"id\": \"a\", \"prompt\": \"b\"}".utf8)
        var a = Mutator(seed: 7), b = Mutator(seed: 7)
        for _ in 0..<200 {
            #expect(a.mutateJSON(seed) == b.mutateJSON(seed))
            #expect(a.mutateBytes(seed) == b.mutateBytes(seed))
        }
    }
}
