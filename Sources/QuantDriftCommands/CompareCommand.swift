import ArgumentParser
import Foundation
import QuantDrift

extension TrackerMode: ExpressibleByArgument {}

/// Comma-separated schemes, parsed once by ArgumentParser (see `SchemeArgument.split`).
struct SchemeList {
    var schemes: [Scheme]

    static func parse(_ text: String) throws -> SchemeList { SchemeList(schemes: try SchemeArgument.parseList(text)) }
}

/// Options shared by `compare` and `run`: what to compare, on what, and where the report goes.
struct TrackerCommandOptions: ParsableArguments {
    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: "Several models (comma-separated paths or Weights/models.json names, e.g. smollm2,gemma3-270m): one report per model in OUT/NAME/ and a side-by-side family report OUT/families.{md,json,html}.",
            transform: { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } })
    var models: [String]?

    @Option(name: .long, help: "Workers running models side by side, each on one BLAS thread (results do not depend on it).")
    var workers: Int = 2

    @Option(name: .customLong("threads"), help: ArgumentHelp("Old name of --workers on compare and run.", visibility: .hidden))
    var deprecatedThreads: Int?

    @Option(name: .long, help: "Free-running sequences decoded together, reading the weights once per step (results do not depend on it).")
    var batch: Int = 16

    @Option(name: .long, help: "Workload: JSONL, one {\"id\",\"prompt\",\"chat\",\"max_tokens\"} per line.")
    var prompts: String = Tracking.defaultPrompts

    @Option(name: .short, help: "Continuation length for every prompt (overrides the prompts' max_tokens).")
    var n: Int?

    @Option(name: .long, help: "teacher (candidate reads the reference's tokens), free (each generates its own) or both.")
    var mode: TrackerMode = .both

    @Option(name: .long, help: "Report folder.")
    var out: String = "report"

    @OptionGroup(title: "Sampling (coupled through a shared random stream)") var sampling: SamplingOptions

    @Flag(name: .long, help: "Split each scheme into its weight, activation and KV parts (teacher-forced).")
    var attribute = false

    @Flag(name: .customLong("per-layer"), help: "Quantize one layer at a time and rank layers by KLD (teacher-forced).")
    var perLayer = false

    @Option(name: .long, help: "Calibration texts for schemes that need them.")
    var calibration: String = CalibrationOptions.defaultPath

    @Option(name: .long, help: "Calibration × workload matrix: named calibration sets (Prompts/calibration/NAME: prose, code, chat, long) or folders; every calibrated scheme runs once per set.",
            transform: { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } })
    var calibrations: [String]?

    @Option(name: .long, help: "Workloads for the matrix: names (Prompts/workloads/NAME.jsonl; long = Prompts/long.jsonl; default) or JSONL files; one report each in OUT/NAME/.",
            transform: { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } })
    var workloads: [String]?

    @Flag(name: .customLong("ignore-eos"), help: "Keep generating after an end-of-generation token.")
    var ignoreEOS = false

    @OptionGroup(title: "Reference trace") var trace: ReferenceTraceOptions

    @Flag(name: .long, help: "Continue an interrupted run of the same command from the results it kept in OUT/.partial.")
    var resume = false

    /// `--workers`, or the deprecated `--threads`.
    var workerCount: Int { deprecatedThreads ?? workers }

    func validate() throws {
        if let models {
            guard modelOptions.model == nil else { throw ValidationError("give either --model or --models, not both") }
            guard models.count >= 2 else { throw ValidationError("--models needs at least two models, got \(models.count)") }
            guard Set(models).count == models.count else { throw ValidationError("--models lists a model twice") }
        }
        guard (1...64).contains(workerCount) else { throw ValidationError("--workers must be in 1...64, got \(workerCount)") }
        guard (1...256).contains(batch) else { throw ValidationError("--batch must be in 1...256, got \(batch)") }
        if let n { guard (1...Workload.maxTokensLimit).contains(n) else { throw ValidationError("-n must be in 1...\(Workload.maxTokensLimit), got \(n)") } }
        if calibrations != nil || workloads != nil {
            guard models == nil else { throw ValidationError("--calibrations/--workloads take one model, not --models") }
            guard !resume, trace.reference == nil, trace.saveReference == nil, !attribute, !perLayer else {
                throw ValidationError("--calibrations/--workloads do not combine with --resume, reference traces, --attribute or --per-layer")
            }
            if let c = calibrations { guard !c.isEmpty, Set(c).count == c.count else { throw ValidationError("--calibrations: give distinct names") } }
            if let w = workloads { guard !w.isEmpty, Set(w).count == w.count else { throw ValidationError("--workloads: give distinct names") } }
        }
    }

    /// The lockstep settings: continuations of 256 tokens unless the prompt or `-n` says otherwise.
    var trackerOptions: TrackerOptions {
        var o = TrackerOptions(maxTokens: 256, forcedMaxTokens: n, mode: mode, sampling: sampling.parameters(defaultSeed: 1),
                               threads: workerCount, stopAtEndOfGeneration: !ignoreEOS)
        o.decodeBatch = batch
        return o
    }
}

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare schemes with the FP32 reference on a workload, teacher-forced and free-running; writes a report folder.")

    @Option(name: .long, help: "Comma-separated schemes (presets or specs; separate specs containing ',' with ' ').",
            transform: SchemeList.parse)
    var schemes: SchemeList

    @OptionGroup var options: TrackerCommandOptions

    func run() throws {
        try Tracking.executeAll(schemes: schemes.schemes, options: options)
    }
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "The main job: the default model on the default workload and scheme matrix → report/.")

    @OptionGroup var options: TrackerCommandOptions

    @Option(name: .long, help: "Override the scheme matrix (comma-separated).", transform: SchemeList.parse)
    var schemes: SchemeList?

    @Flag(name: .long, help: "The long workload: Prompts/long.jsonl (2,048-token continuations) on fp32, w8, w4g32, w8a8, kv4 and kivi2, into report-long/ unless --out is given.")
    var long = false

    func validate() throws {
        if long, options.prompts != Tracking.defaultPrompts { throw ValidationError("--long sets the workload: leave out --prompts") }
    }

    func run() throws {
        var o = options
        if long {
            o.prompts = Tracking.longPrompts
            if o.out == "report" { o.out = "report-long" }
        }
        let matrix = try (long ? Tracking.longMatrix : Tracking.defaultMatrix).map(SchemeArgument.parse)
        try Tracking.executeAll(schemes: schemes?.schemes ?? matrix, options: o)
    }
}

enum Tracking {
    static let defaultPrompts = "Prompts/default.jsonl"
    static let defaultMatrix = ["fp32", "w8", "w4g32", "w8a8", "w8a8-smooth", "kv8", "kv4", "kivi2"]
    /// `run --long`: continuations of 2,048 tokens, where compounding shows.
    static let longPrompts = "Prompts/long.jsonl"
    static let longMatrix = ["fp32", "w8", "w4g32", "w8a8", "kv4", "kivi2"]

    static func defaultSchemes() throws -> [Scheme] { try defaultMatrix.map(SchemeArgument.parse) }

    /// One model (`--model`), or each of `--models` into its own folder and then the family report.
    static func executeAll(schemes: [Scheme], options o: TrackerCommandOptions) throws {
        if o.calibrations != nil || o.workloads != nil {
            try CalibrationMatrixRun.execute(schemes: schemes, options: o)
            return
        }
        guard let models = o.models else {
            try execute(schemes: schemes, options: o)
            return
        }
        let root = URL(fileURLWithPath: o.out)
        try prepareOutput(root)
        var families: [(label: String, reportJSON: String, architecture: String, profile: ActivationProfile?)] = []
        var labels = Set<String>()
        for name in models {
            var label = URL(fileURLWithPath: name).deletingPathExtension().lastPathComponent
            while !labels.insert(label).inserted { label += "-2" }
            var one = o
            one.models = nil
            one.modelOptions.model = name
            one.out = root.appendingPathComponent(label).path
            CLI.note("model \(label): report in \(one.out)")
            let model = try execute(schemes: schemes, options: one)
            // The activation profile on the calibration texts: the "why" of the family contrast.
            let data = try CalibrationOptions.load(o.calibration, tokenizer: model.tokenizer)
            let bar = ProgressBar(label: "profile \(label)")
            let profile = try ActivationProfile.measure(model: model, data: data) { stage, done, total in
                bar.update(done + (stage == "histograms" ? total : 0), of: 2 * total)
            }
            bar.finish()
            families.append((label, label + "/report.json",
                             model.config.architecture.rawValue, profile))
        }
        let report = try FamilyReport(directory: root, families: families.map {
            ($0.label, $0.reportJSON, $0.architecture, $0.profile)
        })
        try report.write(to: root)
        print(report.markdown(), terminator: "")
        CLI.note("wrote families.md, families.json and families.html to \(root.path)")
    }

    @discardableResult
    static func execute(schemes: [Scheme], options o: TrackerCommandOptions) throws -> Model {
        if o.deprecatedThreads != nil { CLI.note("note: --threads on compare and run is now --workers (--threads is BLAS threads elsewhere)") }
        let workload = try Workload.load(path: CalibrationOptions.resolveBundled(o.prompts))
        let outDir = URL(fileURLWithPath: o.out)
        try prepareOutput(outDir)
        let options = o.trackerOptions
        let model = try o.modelOptions.load()

        var data: CalibrationSet?
        if schemes.contains(where: \.needsCalibrationSet) {
            data = try CalibrationOptions.load(o.calibration, tokenizer: model.tokenizer)
        }
        let engine = try LockstepEngine(model: model, options: options, calibration: data)
        let stop = Interruption.install()
        engine.shouldStop = { stop.requested }
        let modelSHA = try FileDigest.sha256(path: model.path)
        let modelConditions = try RunConditions.model(model, sha256: modelSHA)
        let ctx = try engine.contextLength(for: workload)
        let header = engine.traceHeader(modelSHA256: modelSHA, workload: workload, version: QuantDriftVersion.string)

        // A saved reference is checked before any scheme is built (that can take minutes).
        let traceReader = try o.trace.reference.map { try ReferenceTraceReader(url: URL(fileURLWithPath: $0), expecting: header) }
        let candidates = try TrackerCandidate.plan(schemes, model: model, calibration: data, attribute: o.attribute,
                                                   perLayer: o.perLayer) { CLI.note("preparing \($0.name)…") }
        var calibrationInfo: [String: JSON] = [:]
        for s in schemes { calibrationInfo[s.name] = RunConditions.calibration(of: s, data: data) }

        let key = TrackerCheckpoint.key(version: QuantDriftVersion.string, model: modelConditions, workload: workload,
                                        options: options, calibration: data, referenceTrace: o.trace.reference)
        let checkpoint = try TrackerCheckpoint(folder: outDir.appendingPathComponent(".partial"), key: key, resume: o.resume)
        if o.resume { CLI.note("resuming: \(checkpoint.count) results kept") }

        let total = workload.prompts.count * (1 + candidates.count)
        let bar = LockedProgress(ProgressBar(label: "run"), total: total)
        // Prompts go in batches whose reference logits fit the budget (runWorkload).
        let traceWriter = try o.trace.saveReference.map { try ReferenceTraceWriter(url: URL(fileURLWithPath: $0), header: header) }
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

        let report = ReportBuilder(candidates: candidates, references: references, results: results,
                                   options: options, calibration: calibrationInfo)
        let json = try report.write(to: outDir, context: ReportContext(
            model: modelConditions, workload: workload, version: QuantDriftVersion.string, referenceTrace: o.trace.reference,
            referenceSeconds: referenceSeconds, candidatesSeconds: t2 - t0 - referenceSeconds))
        checkpoint.remove()
        print(try ReportRenderer.consoleTable(json), terminator: "")
        CLI.note(String(format: "wrote report.json, tokens.csv, summary.md and report.html to %@ in %.0f s", outDir.path, t2 - t0))
        return model
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
