import ArgumentParser
import Foundation
import QuantDrift

/// `quantdrift sweep plan|run|merge`: the model × scheme × calibration × workload grid of a
/// sweep.json, as independent units in shards that any machine (or Slurm array task) can run into
/// a shared folder, merged into the reports one process would have written.
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Plan, run (a shard at a time) and merge a grid of comparisons (see Sources/QuantDrift/Sweep/sweep-schema.md).",
        subcommands: [SweepPlanCommand.self, SweepRunCommand.self, SweepMergeCommand.self])
}

/// sweep.json, resolved: models to files, workloads to JSONL files.
enum SweepFile {
    static let keys = ["models", "schemes", "calibrations", "workloads", "mode", "max_tokens", "temperature", "top_k", "top_p",
                       "seed", "prompts_per_unit", "workers", "batch", "ignore_eos"]

    static func load(_ path: String) throws -> (spec: SweepSpec, bytes: Data) {
        guard let data = FileManager.default.contents(atPath: path) else { throw QuantDriftError.invalidInput("\(path): no such file") }
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw QuantDriftError.invalidInput("\(path): not a JSON object (expected {\"models\": [...], \"schemes\": [...], \"workloads\": [...]})")
        }
        for k in root.keys.sorted() where !keys.contains(k) {
            throw QuantDriftError.invalidInput("\(path): unknown key '\(k)' (known: \(keys.joined(separator: ", ")))")
        }
        func strings(_ key: String, required: Bool = true) throws -> [String] {
            guard let v = root[key] else {
                if required { throw QuantDriftError.invalidInput("\(path): '\(key)' is missing") }
                return []
            }
            guard let a = v as? [String], !a.isEmpty || !required else { throw QuantDriftError.invalidInput("\(path): '\(key)' must be a non-empty list of strings") }
            guard Set(a).count == a.count else { throw QuantDriftError.invalidInput("\(path): '\(key)' lists an entry twice") }
            return a
        }
        func int(_ key: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let v = root[key] else { return nil }
            guard let n = v as? Int, range.contains(n) else { throw QuantDriftError.invalidInput("\(path): '\(key)' must be an integer in \(range.lowerBound)…\(range.upperBound)") }
            return n
        }
        func number(_ key: String) throws -> Double? {
            guard let v = root[key] else { return nil }
            guard let n = v as? Double, n.isFinite else { throw QuantDriftError.invalidInput("\(path): '\(key)' must be a number") }
            return n
        }
        let models = try strings("models").map { name -> SweepSpec.Entry in
            let p = try DefaultModel.resolve(name)
            let label = name.contains("/") || name.hasSuffix(".gguf") ? ((p as NSString).lastPathComponent as NSString).deletingPathExtension : name
            return SweepSpec.Entry(label: label, path: p)
        }
        let schemes = try strings("schemes")
        for s in schemes { _ = try SchemeArgument.parse(s) }
        let workloads = try strings("workloads").map { w -> SweepSpec.Entry in
            let (label, p) = CalibrationMatrixRun.workloadPath(w)
            return SweepSpec.Entry(label: label, path: p)
        }
        guard Set(models.map(\.label)).count == models.count, Set(workloads.map(\.label)).count == workloads.count else {
            throw QuantDriftError.invalidInput("\(path): two models or two workloads share a name")
        }
        var mode = TrackerMode.both
        if let m = root["mode"] {
            guard let s = m as? String, let parsed = TrackerMode(rawValue: s) else { throw QuantDriftError.invalidInput("\(path): 'mode' must be teacher, free or both") }
            mode = parsed
        }
        let sampling = SamplingParameters(temperature: Float(try number("temperature") ?? 0), topK: try int("top_k", 0...1_000_000) ?? 0,
                                          topP: Float(try number("top_p") ?? 1), seed: UInt64(try int("seed", 0...Int(Int32.max)) ?? 1))
        var options = TrackerOptions(maxTokens: 256, forcedMaxTokens: try int("max_tokens", 1...Workload.maxTokensLimit), mode: mode,
                                     sampling: sampling, threads: try int("workers", 1...64) ?? 2,
                                     stopAtEndOfGeneration: !((root["ignore_eos"] as? Bool) ?? false))
        options.decodeBatch = try int("batch", 1...256) ?? 16
        try options.sampling.validate()
        let spec = SweepSpec(models: models, schemes: schemes, calibrations: try strings("calibrations", required: false),
                             workloads: workloads, options: options, promptsPerUnit: try int("prompts_per_unit", 1...100_000) ?? 4)
        return (spec, data)
    }

    /// The plan, with each workload's size and each model's parameters read from the files.
    static func plan(_ spec: SweepSpec) throws -> SweepPlan {
        let sizes = try spec.workloads.map { w -> (prompts: Int, tokens: Int) in
            let wl = try Workload.load(path: w.path)
            let tokens = wl.prompts.map { spec.options.forcedMaxTokens ?? $0.maxTokens ?? spec.options.maxTokens }.max() ?? 1
            return (wl.prompts.count, tokens + 64)
        }
        let params = try spec.models.map { m -> Int in
            let attrs = try FileManager.default.attributesOfItem(atPath: m.path)
            return (attrs[.size] as? Int ?? 1)  // bytes on disk stand for parameters in the estimate
        }
        return SweepPlan(spec: spec, workloadSizes: sizes, modelParameters: params)
    }

    static func runner(_ plan: SweepPlan, dir: URL) -> SweepRunner {
        let r = SweepRunner(plan: plan, dir: dir, version: QuantDriftVersion.string) { name, tokenizer in
            guard let name else { return try CalibrationOptions.load(CalibrationOptions.defaultPath, tokenizer: tokenizer) }
            return try CalibrationMatrixRun.calibrationSet(name, tokenizer: tokenizer)
        }
        r.progress = { CLI.note($0) }
        return r
    }

    /// "I/N" (0-based I) or "auto": the index from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, the
    /// count from `shards`, else SLURM_ARRAY_TASK_COUNT or QUANTDRIFT_SHARDS.
    static func shard(_ text: String, shards: Int?) throws -> (index: Int, count: Int) {
        let env = ProcessInfo.processInfo.environment
        var index: Int?, count = shards
        if text == "auto" {
            index = env["SLURM_ARRAY_TASK_ID"].flatMap(Int.init) ?? env["JOB_COMPLETION_INDEX"].flatMap(Int.init)
            if count == nil { count = env["SLURM_ARRAY_TASK_COUNT"].flatMap(Int.init) ?? env["QUANTDRIFT_SHARDS"].flatMap(Int.init) }
            guard index != nil else { throw QuantDriftError.invalidInput("--shard auto: neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set") }
        } else {
            let parts = text.split(separator: "/")
            guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]) else { throw QuantDriftError.invalidInput("--shard must be I/N (0-based) or auto, got '\(text)'") }
            index = i
            count = n
        }
        guard let i = index, let n = count, n >= 1, (0..<n).contains(i) else {
            throw QuantDriftError.invalidInput("--shard: index \(index.map(String.init) ?? "?") is not in 0..<\(count.map(String.init) ?? "?") (give --shards N with auto)")
        }
        return (i, n)
    }

    static func describe(_ u: SweepPlan.Unit, _ spec: SweepSpec, _ candidates: [SweepPlan.CandidateSpec]) -> String {
        switch u {
        case .reference(let m, let w): return "reference \(spec.models[m].label) × \(spec.workloads[w].label)"
        case .candidate(let m, let w, let c, let p):
            return "\(candidates[c].name) on \(spec.models[m].label) × \(spec.workloads[w].label), prompts \(p.lowerBound)…\(p.upperBound - 1)"
        }
    }
}

struct SweepPlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "plan", abstract: "Print the units and shards of a sweep.")

    @Argument(help: "The sweep file (JSON).")
    var sweep: String

    @Option(name: .long, help: "Candidate shards.")
    var shards: Int = 4

    @Flag(name: .long, help: "Print the counts as JSON (for scripts: references, shards, largest model in MB).")
    var json = false

    func run() throws {
        guard shards >= 1 else { throw QuantDriftError.invalidInput("--shards must be ≥ 1") }
        let spec = try SweepFile.load(sweep).spec
        let plan = try SweepFile.plan(spec)
        let candidates = try plan.candidates { try Scheme(parsing: $0).needsCalibrationSet }
        let refs = plan.referenceUnits
        if json {
            let units = plan.candidateUnits(candidateCount: candidates.count)
            let largest = try spec.models.map { (try FileManager.default.attributesOfItem(atPath: $0.path)[.size] as? Int) ?? 0 }.max() ?? 0
            CLI.printJSON(.object([
                ("references", .int(refs.count)), ("candidates", .array(candidates.map { .string($0.name) })),
                ("candidate_units", .int(units.count)),
                ("shards", .array(plan.shards(units, count: shards).map { s in
                    .object([("units", .int(s.count)), ("cost", .double(s.map(plan.cost).reduce(0, +)))])
                })),
                ("largest_model_mb", .int((largest + (1 << 20) - 1) >> 20)),
            ]))
            return
        }
        print("references (run first: sweep run --references --shard I/\(refs.count)):")
        for (i, u) in refs.enumerated() { print(String(format: "  %d  %@  cost %.3g", i, SweepFile.describe(u, spec, candidates), plan.cost(u))) }
        let units = plan.candidateUnits(candidateCount: candidates.count)
        print("candidate shards (after their references: sweep run --shard I/\(shards)): \(units.count) units")
        for (i, s) in plan.shards(units, count: shards).enumerated() {
            print(String(format: "  shard %d: %d units, cost %.3g", i, s.count, s.map(plan.cost).reduce(0, +)))
            for u in s { print("    " + SweepFile.describe(u, spec, candidates)) }
        }
    }
}

struct SweepRunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run one shard of a sweep into a shared folder.")

    @Argument(help: "The sweep file (JSON).")
    var sweep: String

    @Option(name: .long, help: "I/N (0-based) or auto (SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX).")
    var shard: String

    @Option(name: .long, help: "Shard count for --shard auto (default: SLURM_ARRAY_TASK_COUNT or QUANTDRIFT_SHARDS).")
    var shards: Int?

    @Flag(name: .long, help: "Run reference units (one per model × workload) instead of candidate units.")
    var references = false

    @Option(name: .long, help: "The shared results folder.")
    var out: String

    func run() throws {
        let (spec, bytes) = try SweepFile.load(sweep)
        let dir = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // The folder belongs to one sweep: its file is kept there, and another one is refused.
        let kept = dir.appendingPathComponent("sweep.json")
        if let old = FileManager.default.contents(atPath: kept.path) {
            guard old == bytes else { throw QuantDriftError.invalidInput("\(out) holds another sweep (its sweep.json differs from \(sweep))") }
        } else {
            try AtomicFile.write(bytes, to: kept)
        }
        let plan = try SweepFile.plan(spec)
        let runner = SweepFile.runner(plan, dir: dir)
        let candidates = try runner.candidates()
        let units = references ? plan.referenceUnits : plan.candidateUnits(candidateCount: candidates.count)
        let (i, n) = try SweepFile.shard(shard, shards: shards)
        let mine = references ? units.enumerated().filter { $0.offset % n == i }.map(\.element) : plan.shards(units, count: n)[i]
        for u in mine { try runner.run(u) }
        CLI.note("shard \(i)/\(n): \(mine.count) units done")
    }
}

struct SweepMergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "merge", abstract: "Merge a sweep's folder into reports.")

    @Argument(help: "The shared results folder (holding sweep.json).")
    var dir: String

    func run() throws {
        let file = (dir as NSString).appendingPathComponent("sweep.json")
        let spec = try SweepFile.load(file).spec
        let plan = try SweepFile.plan(spec)
        let runner = SweepFile.runner(plan, dir: URL(fileURLWithPath: dir))
        let outcome = try runner.merge()
        for r in outcome.reports { print("report \(r.model) × \(r.workload): \(r.path)") }
        if let g = outcome.grid { print("grid: \(g) (and grid.json, grid.md)") }
        if !outcome.missing.isEmpty {
            let candidates = try runner.candidates()
            let units = plan.candidateUnits(candidateCount: candidates.count)
            print("incomplete: \(outcome.missing.count) units missing; their pairs have no report:")
            for u in outcome.missing {
                let rerun: String
                if case .reference = u {
                    rerun = "quantdrift sweep run \(file) --references --shard \(plan.referenceUnits.firstIndex(of: u)!)/\(plan.referenceUnits.count) --out \(dir)"
                } else {
                    rerun = "quantdrift sweep run \(file) --out \(dir) --shard I/N (the shard that holds it; candidate units: \(units.count))"
                }
                print("  \(SweepFile.describe(u, spec, candidates)): \(rerun)")
            }
            // Like a failed check: exit 1, the listing on stdout.
            fflush(nil)
            Foundation.exit(1)
        }
    }
}
