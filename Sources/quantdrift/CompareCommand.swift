import ArgumentParser
import Foundation
import QuantDrift

/// Options shared by `compare` and `run`: what to compare, on what, and where the report goes.
struct TrackerCommandOptions: ParsableArguments {
    @Option(name: .long, help: "GGUF file or HF folder (default: the default model in Weights/).")
    var model: String?

    @Option(name: .long, help: "Workers running models side by side (results do not depend on it).")
    var threads: Int = 2

    @Option(name: .long, help: "Workload: JSONL, one {\"id\",\"prompt\",\"chat\",\"max_tokens\"} per line.")
    var prompts: String = Tracking.defaultPrompts

    @Option(name: .short, help: "Continuation length for every prompt (overrides the prompts' max_tokens).")
    var n: Int?

    @Option(name: .long, help: "teacher (candidate reads the reference's tokens), free (each generates its own) or both.")
    var mode: String = "both"

    @Option(name: .long, help: "Report folder.")
    var out: String = "report"

    @Option(name: .long, help: "Sampling temperature (0 = greedy); sampling is coupled through a shared random stream.")
    var temp: Float = 0

    @Option(name: .customLong("top-k"), help: "Top-k when sampling (0 = off).")
    var topK: Int = 0

    @Option(name: .customLong("top-p"), help: "Top-p when sampling (1 = off).")
    var topP: Float = 1

    @Option(name: .long, help: "Seed of the shared random stream and of the bootstrap.")
    var seed: UInt64 = 1

    @Flag(name: .long, help: "Split each scheme into its weight, activation and KV parts (teacher-forced).")
    var attribute = false

    @Flag(name: .customLong("per-layer"), help: "Quantize one layer at a time and rank layers by KLD (teacher-forced).")
    var perLayer = false

    @Option(name: .long, help: "Calibration texts for schemes that need them.")
    var calibration: String = CalibrationOptions.defaultPath

    @Flag(name: .customLong("ignore-eos"), help: "Keep generating after an end-of-generation token.")
    var ignoreEOS = false

    @Option(name: .customLong("save-reference"), help: "Save the FP32 reference run (tokens and Float16 log-probs, zstd) to this file.")
    var saveReference: String?

    @Option(name: .long, help: "Use a saved FP32 reference run instead of running the reference.")
    var reference: String?

    @Flag(name: .long, help: "Continue an interrupted run of the same command from the results it kept in OUT/.partial.")
    var resume = false

    func validate() throws {
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be in 1...64, got \(threads)") }
        if let n { guard (1...Workload.maxTokensLimit).contains(n) else { throw ValidationError("-n must be in 1...\(Workload.maxTokensLimit), got \(n)") } }
        guard TrackerMode(rawValue: mode) != nil else { throw ValidationError("--mode must be teacher, free or both, got '\(mode)'") }
        guard saveReference == nil || reference == nil else { throw ValidationError("--save-reference and --reference exclude each other") }
    }
}

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare schemes with the FP32 reference on a workload, teacher-forced and free-running; writes a report folder.")

    @Option(name: .long, help: "Comma-separated schemes (presets or specs; separate specs containing ',' with ' ').")
    var schemes: String

    @OptionGroup var options: TrackerCommandOptions

    func run() throws {
        try Tracking.execute(schemes: Tracking.splitSchemes(schemes), options: options)
    }
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "The main job: the default model on the default workload and scheme matrix → report/.")

    @OptionGroup var options: TrackerCommandOptions

    @Option(name: .long, help: "Override the scheme matrix (comma-separated).")
    var schemes: String?

    func run() throws {
        try Tracking.execute(schemes: schemes.map(Tracking.splitSchemes) ?? Tracking.defaultMatrix, options: options)
    }
}

enum Tracking {
    static let defaultPrompts = "Prompts/default.jsonl"
    static let defaultMatrix = ["fp32", "w8", "w4g32", "w8a8", "w8a8-smooth", "kv8", "kv4", "kivi2"]

    /// Presets are split on ','; a spec with its own commas is written with ';' between its
    /// components, so schemes are separated by ',' only between whole schemes: "w8,w=int4;g32".
    static func splitSchemes(_ s: String) -> [String] {
        s.split(separator: " ").flatMap { part -> [String] in
            let items = part.split(separator: ",").map(String.init)
            // Preset names have no '='; a spec keeps its commas.
            return items.allSatisfy { !$0.contains("=") } ? items : [String(part)]
        }.filter { !$0.isEmpty }
    }

    static func execute(schemes names: [String], options o: TrackerCommandOptions) throws {
        guard !names.isEmpty else { throw QuantDriftError.invalidInput("no schemes to compare") }
        var parsed: [Scheme] = []
        for n in names {
            let s = try Scheme(parsing: n)
            guard !parsed.contains(where: { $0.name == s.name }) else { throw QuantDriftError.invalidInput("scheme '\(s.name)' given twice") }
            parsed.append(s)
        }
        let workload = try Workload.load(path: CalibrationOptions.resolveBundled(o.prompts))
        let outDir = URL(fileURLWithPath: o.out)
        try prepareOutput(outDir)
        let sampling = SamplingParameters(temperature: o.temp, topK: o.topK, topP: o.topP, seed: o.seed)
        let options = TrackerOptions(maxTokens: 256, forcedMaxTokens: o.n, mode: TrackerMode(rawValue: o.mode)!,
                                     sampling: sampling, threads: o.threads, stopAtEndOfGeneration: !o.ignoreEOS)
        let model = try Model.load(path: o.model ?? DefaultModel.path())

        var data: CalibrationSet?
        if parsed.contains(where: \.needsCalibrationSet) {
            data = try CalibrationOptions.load(o.calibration, tokenizer: model.tokenizer)
        }
        let engine = try LockstepEngine(model: model, options: options, calibration: data)
        let stop = Interruption.install()
        engine.shouldStop = { stop.requested }
        let modelSHA = try FileDigest.sha256(path: model.path)
        let modelConditions = try RunConditions.model(model, sha256: modelSHA)
        let ctx = try engine.contextLength(for: workload)

        // A saved reference is checked before any scheme is built (that can take minutes).
        let traceReader = try o.reference.map {
            try ReferenceTraceReader(url: URL(fileURLWithPath: $0),
                                     expecting: engine.traceHeader(modelSHA256: modelSHA, workload: workload, version: QuantDriftVersion.string))
        }

        // Candidates: every scheme, then its parts and layers when asked.
        var candidates: [TrackerCandidate] = []
        var calibrationInfo: [String: JSON] = [:]
        for s in parsed {
            CLI.note("preparing \(s.name)…")
            candidates.append(TrackerCandidate(name: s.name, scheme: s,
                                               runtime: try SchemeRuntime(model: model, scheme: s, calibration: data)))
            if s.needsCalibrationSet, let data {
                calibrationInfo[s.name] = .object([("method", .string(s.calibration?.description ?? "minmax")),
                                                   ("data_sha256", .string(data.sha256)), ("tokens", .int(data.tokenCount))])
            } else if let file = s.calibrationFile {
                calibrationInfo[s.name] = .object([("method", .string(s.calibration?.description ?? "file")),
                                                   ("data_sha256", .string((try? FileDigest.sha256(path: file)) ?? "")),
                                                   ("tokens", .null)])
            }
        }
        let mains = candidates.count
        for parent in 0..<mains {
            let s = candidates[parent].scheme
            if o.attribute {
                for (label, part) in AttributionParts.split(s) {
                    candidates.append(TrackerCandidate(name: "\(s.name)/\(label)", scheme: part, role: .part(label, parent: parent)))
                }
            }
            if o.perLayer, !s.isReference, s.weights != nil || s.activations != nil || s.kv != nil {
                for l in 0..<model.config.layerCount {
                    candidates.append(TrackerCandidate(name: "\(s.name)/layer \(l)", scheme: AttributionParts.onlyLayer(s, l, of: model.config.layerCount),
                                                       role: .layer(l, parent: parent)))
                }
            }
        }

        // Everything the results depend on besides the candidate (not the worker count).
        let key = [QuantDriftVersion.string, modelConditions.serialized(), workload.sha256, o.mode, "\(sampling)",
                   "\(o.n ?? -1)", "\(o.ignoreEOS)", "\(options.chunk)", data?.sha256 ?? "-", o.reference ?? "live"].joined(separator: "\n")
        let checkpoint = try TrackerCheckpoint(folder: outDir.appendingPathComponent(".partial"), key: SHA256.hex(Array(key.utf8)),
                                               resume: o.resume)
        if o.resume { CLI.note("resuming: \(checkpoint.count) results kept") }

        let total = workload.prompts.count * (1 + candidates.count)
        let bar = LockedProgress(ProgressBar(label: "run"), total: total)
        // Prompts go in batches whose reference logits fit the budget (runWorkload).
        let traceWriter = try o.saveReference.map {
            try ReferenceTraceWriter(url: URL(fileURLWithPath: $0),
                                     header: engine.traceHeader(modelSHA256: modelSHA, workload: workload, version: QuantDriftVersion.string))
        }
        let t0 = monotonicSeconds()
        let references: [ReferenceRun], results: [[PromptResult]], referenceSeconds: Double
        do {
            (references, results, referenceSeconds) = try engine.runWorkload(
                workload, candidates: candidates, contextLength: ctx, traceReader: traceReader, traceWriter: traceWriter,
                checkpoint: checkpoint, referenceProgress: { _ in bar.step() }, progress: { _ in bar.step() })
        } catch QuantDriftError.interrupted {
            bar.finish()
            throw QuantDriftError.interrupted("interrupted: \(checkpoint.count) of \(workload.prompts.count * candidates.count) comparisons kept in \(outDir.path)/.partial; run the same command with --resume to continue")
        }
        bar.finish()
        let t2 = monotonicSeconds()

        let report = TrackerReport(candidates: candidates, references: references, results: results,
                                   options: options, calibration: calibrationInfo)
        let json: JSON = .object([
            ("schema", "quantdrift.report/1"),
            ("conditions", .object([("model", modelConditions),
                                    ("workload", RunConditions.workload(workload, options: options)),
                                    ("runtime", RunConditions.runtime(version: QuantDriftVersion.string, threads: o.threads)),
                                    ("reference", .object([("scheme", "fp32"), ("trace_file", o.reference.map { .string($0) } ?? .null),
                                                           ("trace_sha256", try o.reference.map { .string(try FileDigest.sha256(path: $0)) } ?? .null)]))])),
            ("schemes", report.schemes()),
            ("timing", .object([("reference_seconds", .double(referenceSeconds)), ("candidates_seconds", .double(t2 - t0 - referenceSeconds))])),
        ])
        try AtomicFile.write(Data((json.serialized(pretty: true) + "\n").utf8), to: outDir.appendingPathComponent("report.json"))
        try AtomicFile.write(Data(report.tokensCSV().utf8), to: outDir.appendingPathComponent("tokens.csv"))
        try ReportWriter.writeRenderings(report: json, to: outDir)
        checkpoint.remove()
        printSummary(json)
        CLI.note(String(format: "wrote report.json, tokens.csv, summary.md and report.html to %@ in %.0f s", outDir.path, t2 - t0))
    }

    static func prepareOutput(_ dir: URL) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw QuantDriftError.invalidInput("\(dir.path): exists and is not a folder") }
        } else {
            do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) }
            catch { throw QuantDriftError.invalidInput("\(dir.path): cannot create the report folder") }
        }
        guard FileManager.default.isWritableFile(atPath: dir.path) else {
            throw QuantDriftError.invalidInput("\(dir.path): the report folder is not writable")
        }
    }

    /// One line per scheme on stdout.
    static func printSummary(_ report: JSON) {
        guard case .object(let top) = report, let schemes = top.first(where: { $0.0 == "schemes" })?.1,
              case .array(let list) = schemes else { return }
        print("scheme            mean KLD    95% CI                 top-1    median first div.")
        for s in list {
            guard case .object(let fields) = s else { continue }
            func field(_ o: [(String, JSON)], _ k: String) -> JSON { o.first { $0.0 == k }?.1 ?? .null }
            guard case .string(let name) = field(fields, "name"), case .object(let sum) = field(fields, "summary") else { continue }
            func d(_ j: JSON) -> String {
                switch j {
                case .double(let x): String(format: "%.6f", x)
                case .int(let i): String(i)
                default: "–"
                }
            }
            var ci = "–"
            if case .array(let a) = field(sum, "mean_kld_ci"), a.count == 2 { ci = "[\(d(a[0])), \(d(a[1]))]" }
            print(name.padding(toLength: 16, withPad: " ", startingAt: 0) + "  " + d(field(sum, "mean_kld")).padding(toLength: 10, withPad: " ", startingAt: 0)
                  + "  " + ci.padding(toLength: 22, withPad: " ", startingAt: 0) + " " + d(field(sum, "top1_agreement")).padding(toLength: 8, withPad: " ", startingAt: 0)
                  + " " + d(field(sum, "median_first_divergence")))
        }
    }
}

/// A progress bar several workers advance.
final class LockedProgress: @unchecked Sendable {
    let bar: ProgressBar
    let total: Int
    var done = 0
    let lock = NSLock()
    init(_ bar: ProgressBar, total: Int) {
        self.bar = bar
        self.total = total
    }
    func step() {
        lock.lock()
        done += 1
        bar.update(done, of: total)
        lock.unlock()
    }
    func finish() { bar.finish() }
}

/// SIGINT/SIGTERM: the first asks the run to stop after the current step (finished results are
/// kept); a second one exits at once.
final class Interruption: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    private var sources: [DispatchSourceSignal] = []

    var requested: Bool {
        lock.lock()
        defer { lock.unlock() }
        return flag
    }

    static func install() -> Interruption {
        let i = Interruption()
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                i.lock.lock()
                let again = i.flag
                i.flag = true
                i.lock.unlock()
                if again { _exit(130) }
                CLI.note("\nstopping after the current step (again to quit at once)…")
            }
            source.resume()
            i.sources.append(source)
        }
        return i
    }
}
