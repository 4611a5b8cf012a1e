import ArgumentParser
import Foundation
import QuantDrift

struct QuantDriftCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantdrift",
        abstract: "How much does a quantization scheme change what an LLM says, and how does that change grow along a generation?",
        version: QuantDriftVersion.string,
        subcommands: [RunCommand.self, CompareCommand.self, CheckCommand.self, RenderCommand.self, GenerateCommand.self,
                      TokenizeCommand.self, LogitsCommand.self, PerplexityCommand.self, KLDCommand.self, InspectCommand.self,
                      CalibrateCommand.self, BenchCommand.self, SchemesCommand.self, AdviseCommand.self, SweepCommand.self])
}

/// The executable's entry point: parse, run, and turn every error into one line on stderr with
/// exit code 2 (bad input) or 1 (internal failure). Help and --version exit 0.
public enum CommandLineTool {
    public static func main() -> Never {
        do {
            var command = try QuantDriftCLI.parseAsRoot()
            try command.run()
            fflush(nil)
            exit(0)
        } catch let error as QuantDriftError {
            fflush(nil)
            if case .interrupted = error { CLI.fail(error.description, code: 130) }
            CLI.fail(error.description, code: error.isBadInput ? 2 : 1)
        } catch {
            fflush(nil)
            let code = QuantDriftCLI.exitCode(for: error)
            if code == .success {
                print(QuantDriftCLI.fullMessage(for: error))
                exit(0)
            }
            let message = QuantDriftCLI.message(for: error)
                .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                .joined(separator: " ")
            CLI.fail(message.isEmpty ? "\(error)" : message, code: 2)
        }
    }
}

/// Shared helpers of the commands: stderr, exit, output files.
enum CLI {
    static func fail(_ message: String, code: Int32) -> Never {
        let line = message.replacingOccurrences(of: "\n", with: " ")
        FileHandle.standardError.write(Data("quantdrift: error: \(line)\n".utf8))
        exit(code)
    }

    static func note(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }

    static func printJSON(_ json: JSON) {
        print(json.serialized(pretty: true))
    }

    /// Reads a UTF-8 text file with a one-line error naming it.
    static func readText(_ path: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw QuantDriftError.invalidInput("\(path): no such file")
        }
        guard !isDir.boolValue else { throw QuantDriftError.invalidInput("\(path): is a directory, expected a text file") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw QuantDriftError.invalidInput("\(path): cannot read")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw QuantDriftError.invalidInput("\(path): not valid UTF-8 text")
        }
        return text
    }
}

// MARK: - Shared options

/// `--model`: the model a command runs.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "GGUF file, HF folder, or a model name from Weights/models.json (smollm2, gemma3-270m; default: the manifest's default).")
    var model: String?

    /// The model's path: `--model` (a path or a manifest name), or the default model.
    func path() throws -> String { try DefaultModel.resolve(model) }

    /// Loads the model, with `blas` threads for each BLAS product when given.
    func load(_ blas: BLASOptions? = nil) throws -> Model {
        if let blas { BLAS.setThreads(blas.threads) }
        return try Model.load(path: path())
    }
}

/// `--threads`: BLAS threads, and nothing else (`--workers` runs models side by side).
struct BLASOptions: ParsableArguments {
    @Option(name: .long, help: "BLAS threads per matrix product (1 is often fastest on a busy 2-core machine; kld and perplexity run two chunks side by side on one BLAS thread each and ignore it).")
    var threads: Int = 1

    func validate() throws {
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be in 1...256, got \(threads)") }
    }
}

/// `--json`.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print one JSON document on stdout instead of text.")
    var json = false
}

/// `--temp --top-k --top-p --seed`: how tokens are drawn (greedy by default).
struct SamplingOptions: ParsableArguments {
    @Option(name: .long, help: "Sampling temperature (0 = greedy).")
    var temp: Float = 0

    @Option(name: .customLong("top-k"), help: "Keep the k most likely tokens (0 = all).")
    var topK: Int = 0

    @Option(name: .customLong("top-p"), help: "Keep the smallest set of tokens reaching this probability (1 = all).")
    var topP: Float = 1

    @Option(name: .long, help: "Seed of the random stream (default: 1 for compare and run, also seeding the bootstrap; 0 for generate).")
    var seed: UInt64?

    func validate() throws {
        do { try parameters(defaultSeed: 0).validate() } catch let e as QuantDriftError { throw ValidationError(e.description) }
    }

    func parameters(defaultSeed: UInt64) -> SamplingParameters {
        SamplingParameters(temperature: temp, topK: topK, topP: topP, seed: seed ?? defaultSeed)
    }
}

/// `--save-reference F | --reference F`: keep the FP32 reference run in a trace file, or read it back.
struct ReferenceTraceOptions: ParsableArguments {
    @Option(name: .customLong("save-reference"), help: "Save the FP32 reference run (tokens and Float16 log-probs, zstd) to this trace file.")
    var saveReference: String?

    @Option(name: .customLong("reference"), help: "Read the FP32 reference run from this trace file (made with --save-reference) instead of running it.")
    var reference: String?

    func validate() throws {
        guard saveReference == nil || reference == nil else { throw ValidationError("--save-reference and --reference exclude each other") }
    }
}

/// A scheme option's value, parsed once by ArgumentParser: a preset or a spec. A transform rather
/// than `ExpressibleByArgument` so that the parser's reason ("unknown scheme 'w9'…") reaches the user.
enum SchemeArgument {
    static let fp32 = try! Scheme(parsing: "fp32")

    static func parse(_ text: String) throws -> Scheme { try Scheme(parsing: text) }

    /// Comma-separated schemes, each once (see `split`).
    static func parseList(_ text: String) throws -> [Scheme] {
        var schemes: [Scheme] = []
        for name in split(text) {
            let s = try Scheme(parsing: name)
            guard !schemes.contains(where: { $0.name == s.name }) else { throw QuantDriftError.invalidInput("scheme '\(s.name)' given twice") }
            schemes.append(s)
        }
        guard !schemes.isEmpty else { throw QuantDriftError.invalidInput("no schemes to compare") }
        return schemes
    }

    /// Presets are split on ','; a spec with its own commas is written with ';' between its
    /// components, so schemes are separated by ',' only between whole schemes: "w8,w=int4;g32".
    static func split(_ s: String) -> [String] {
        s.split(separator: " ").flatMap { part -> [String] in
            let items = part.split(separator: ",").map(String.init)
            // Preset names have no '='; a spec keeps its commas.
            return items.allSatisfy { !$0.contains("=") } ? items : [String(part)]
        }.filter { !$0.isEmpty }
    }
}

struct SchemeOptions: ParsableArguments {
    @Option(name: .long, help: "Quantization scheme: a preset (see `quantdrift schemes`) or a spec like 'w=int4,g32;kv=int8' (default: fp32).",
            transform: SchemeArgument.parse)
    var scheme: Scheme = SchemeArgument.fp32

    @Option(name: .long, help: "Calibration texts (a folder of .txt files) for schemes with static ranges, SmoothQuant or outliers; read only when the scheme needs them.")
    var calibration: String = CalibrationOptions.defaultPath

    /// The scheme built for `model` (quantized weights made once), with calibration data loaded
    /// when the scheme needs it.
    func runtime(for model: Model) throws -> SchemeRuntime {
        let s = scheme
        var data: CalibrationSet?
        if s.needsCalibrationSet {
            data = try CalibrationOptions.load(calibration, tokenizer: model.tokenizer)
            CLI.note("calibrating \(s.name) on \(data!.tokenCount) tokens of \(data!.source)…")
        }
        return try SchemeRuntime(model: model, scheme: s, calibration: data)
    }
}

/// `--model --threads --scheme --calibration`: one model run under one scheme.
struct SchemeModelOptions: ParsableArguments {
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var blas: BLASOptions
    @OptionGroup var schemeOptions: SchemeOptions

    var scheme: Scheme { schemeOptions.scheme }

    /// The model (with `--threads` BLAS threads) and the scheme built for it.
    func load() throws -> (Model, SchemeRuntime) {
        let model = try modelOptions.load(blas)
        return (model, try schemeOptions.runtime(for: model))
    }
}

/// `--file F --ctx N`: llama.cpp's protocols over a text file cut into chunks of N tokens.
struct ChunkedTextOptions: ParsableArguments {
    @Option(name: .long, help: "Text file.")
    var file: String

    @Option(name: .long, help: "Chunk length in tokens (each chunk from an empty cache, its second half scored).")
    var ctx: Int = 512
}

enum CalibrationOptions {
    static let defaultPath = "Prompts/calibration"

    /// Resolves the default folder from the current directory or beside the executable's package.
    static func resolve(_ path: String) -> String {
        path == defaultPath ? resolveBundled(path) : path
    }

    /// Resolves a path under the package (Prompts/…) from the current directory or beside the executable.
    static func resolveBundled(_ path: String) -> String {
        guard !path.hasPrefix("/"), !FileManager.default.fileExists(atPath: path) else { return path }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            let candidate = dir.appendingPathComponent(path).path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return path
    }

    static func load(_ path: String, tokenizer: Tokenizer) throws -> CalibrationSet {
        try CalibrationSet.load(path: resolve(path), tokenizer: tokenizer)
    }
}

struct PromptOptions: ParsableArguments {
    @Flag(name: .long, help: "Parse control tokens such as <|im_start|> written in the text.")
    var special = false

    @Flag(name: .long, help: "Wrap the text in the model's chat template (ChatML, or Gemma's turns) as a user turn.")
    var chat = false

    /// Token ids of `text`, with the chat template and BOS as the model wants.
    func tokens(_ text: String, model: Model) throws -> [Int] {
        guard !text.isEmpty else { throw QuantDriftError.invalidInput("the prompt is empty") }
        let tok = model.tokenizer
        var ids: [Int] = []
        if tok.spec.addBOS, let bos = tok.spec.bosID { ids.append(bos) }
        if chat {
            ids += tok.encode(tok.chatPrompt(user: text), parseSpecial: true)
        } else {
            ids += tok.encode(text, parseSpecial: special)
        }
        guard !ids.isEmpty else { throw QuantDriftError.invalidInput("the prompt has no tokens") }
        return ids
    }
}

/// The models of `Weights/models.json`: `--model` takes a manifest name or alias (`smollm2`,
/// `gemma3-270m`) as well as a path; without `--model`, the manifest's default. Weights/ is looked
/// for in the current directory, then beside the executable's package.
enum DefaultModel {
    struct Entry {
        let name: String
        let aliases: [String]
        let file: String
    }

    static func weightsDirectories() -> [URL] {
        var dirs = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("Weights")]
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            dirs.append(dir.appendingPathComponent("Weights"))
            dir = dir.deletingLastPathComponent()
        }
        return dirs
    }

    /// The first Weights/ that holds a manifest, with its entries and default name.
    static func manifest() throws -> (dir: URL, defaultName: String, entries: [Entry]) {
        guard let dir = weightsDirectories().first(where: {
            FileManager.default.fileExists(atPath: $0.appendingPathComponent("models.json").path)
        }) else {
            throw QuantDriftError.invalidInput("no Weights/models.json found (run from the project folder, or pass --model PATH)")
        }
        let path = dir.appendingPathComponent("models.json").path
        guard let data = FileManager.default.contents(atPath: path),
              let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let defaultName = root["default"] as? String, let models = root["models"] as? [[String: Any]] else {
            throw QuantDriftError.invalidInput("\(path): not a model manifest (needs \"default\" and \"models\")")
        }
        let entries = models.compactMap { m -> Entry? in
            guard let name = m["name"] as? String, let file = m["file"] as? String else { return nil }
            return Entry(name: name, aliases: m["aliases"] as? [String] ?? [], file: file)
        }
        return (dir, defaultName, entries)
    }

    /// The path of a manifest model, failing with the fetch command when it is not fetched yet.
    static func path(named name: String? = nil) throws -> String {
        let m = try manifest()
        let wanted = name ?? m.defaultName
        guard let e = m.entries.first(where: { $0.name == wanted || $0.aliases.contains(wanted) }) else {
            let known = m.entries.map { ([$0.name] + $0.aliases).joined(separator: "/") }.joined(separator: ", ")
            throw QuantDriftError.invalidInput("\(wanted): no such file, and not a model in Weights/models.json (known: \(known))")
        }
        let path = m.dir.appendingPathComponent(e.file).path
        guard FileManager.default.fileExists(atPath: path) else {
            throw QuantDriftError.invalidInput("model \(e.name) (\(e.file)) is not in Weights/: run Weights/fetch.sh \(e.name)")
        }
        return path
    }

    /// `--model`: an existing file or folder as given, else a manifest name or alias.
    static func resolve(_ model: String?) throws -> String {
        guard let model else { return try path(named: nil) }
        // A path (or anything that looks like one) is taken as given; the loader reports it missing.
        if FileManager.default.fileExists(atPath: model) || model.contains("/") || model.hasSuffix(".gguf") { return model }
        return try path(named: model)
    }
}

enum QuantDriftVersion {
    static let string = "0.1.0"
}
