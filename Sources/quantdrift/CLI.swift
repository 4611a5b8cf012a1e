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
                      CalibrateCommand.self, BenchCommand.self, SchemesCommand.self])
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

struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "GGUF file or HF folder (default: the default model in Weights/).")
    var model: String?

    @Option(name: .long, help: "BLAS threads (1 is often fastest on a busy 2-core machine).")
    var threads: Int = 1

    func validate() throws {
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be in 1...256, got \(threads)") }
    }

    /// Loads the model and sets the thread count.
    func load() throws -> Model {
        BLAS.setThreads(threads)
        return try Model.load(path: model ?? DefaultModel.path())
    }
}

struct SchemeOptions: ParsableArguments {
    @Option(name: .long, help: "Quantization scheme: a preset (see `quantdrift schemes`) or a spec like 'w=int4,g32;kv=int8'.")
    var scheme: String = "fp32"

    @Option(name: .long, help: "Calibration texts (a folder of .txt files) for schemes with static ranges, SmoothQuant or outliers; read only when the scheme needs them.")
    var calibration: String = CalibrationOptions.defaultPath

    func parsed() throws -> Scheme { try Scheme(parsing: scheme) }

    /// The scheme built for `model` (quantized weights made once), with calibration data loaded
    /// when the scheme needs it.
    func runtime(for model: Model) throws -> SchemeRuntime {
        let s = try parsed()
        var data: CalibrationSet?
        if s.needsCalibrationSet {
            data = try CalibrationOptions.load(calibration, tokenizer: model.tokenizer)
            CLI.note("calibrating \(s.name) on \(data!.tokenCount) tokens of \(data!.source)…")
        }
        return try SchemeRuntime(model: model, scheme: s, calibration: data)
    }
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

    @Flag(name: .long, help: "Wrap the text in the model's chat template (ChatML) as a user turn.")
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

/// Finds the default model: Weights/ in the current directory, else beside the executable's package.
enum DefaultModel {
    static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"

    static func path() throws -> String {
        var candidates = [FileManager.default.currentDirectoryPath + "/Weights/" + fileName]
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            candidates.append(dir.appendingPathComponent("Weights/" + fileName).path)
            dir = dir.deletingLastPathComponent()
        }
        if let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) { return found }
        throw QuantDriftError.invalidInput("default model \(fileName) not found in Weights/: run Weights/fetch.sh, or pass --model")
    }
}

enum QuantDriftVersion {
    static let string = "0.1.0"
}
