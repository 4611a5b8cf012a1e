import Foundation

/// Runs sweep units into a shared folder and merges them into reports.
///
/// Layout of `dir`: `MODEL/WORKLOAD/reference.trace` (the FP32 run, written by the reference unit,
/// or by the first candidate unit that needs it), `MODEL/WORKLOAD/results/KEY-PROMPT.bin` (one
/// candidate's result on one prompt, the checkpoint codec), `MODEL/WORKLOAD/report/` (merge).
/// Every file is written to a temporary name and renamed into place: a finished unit is a no-op
/// when run again, a killed one keeps what it finished, and two runs of the same unit at once
/// write the same bytes (everything is deterministic), the last rename winning.
public final class SweepRunner {
    public let plan: SweepPlan
    public let dir: URL
    public let version: String
    /// A named calibration set (nil: the default set), tokenized by the model that uses it.
    let calibrationSet: (String?, Tokenizer) throws -> CalibrationSet
    public var progress: (String) -> Void = { _ in }

    private var models: [Int: Model] = [:]
    private var digests: [Int: String] = [:]
    /// Calibration sets by model and set name (their tokens depend on the model's tokenizer).
    private var calibrations: [String: CalibrationSet] = [:]
    /// The candidate built last (a shard's units are in candidate order, so consecutive units share it).
    private var built: (model: Int, candidate: Int, runtime: TrackerCandidate, data: CalibrationSet?)?

    public init(plan: SweepPlan, dir: URL, version: String, calibrationSet: @escaping (String?, Tokenizer) throws -> CalibrationSet) {
        self.plan = plan
        self.dir = dir
        self.version = version
        self.calibrationSet = calibrationSet
    }

    // MARK: - Paths

    public func pairDir(_ m: Int, _ w: Int) -> URL {
        dir.appendingPathComponent(plan.spec.models[m].label).appendingPathComponent(plan.spec.workloads[w].label)
    }

    public func tracePath(_ m: Int, _ w: Int) -> URL { pairDir(m, w).appendingPathComponent("reference.trace") }

    func resultURL(_ m: Int, _ w: Int, _ c: SweepPlan.CandidateSpec, prompt: Int) -> URL {
        var h = SHA256()
        h.update(Array((c.name + "\n" + c.scheme + "\n" + (c.calibration ?? "-")).utf8))
        return pairDir(m, w).appendingPathComponent("results").appendingPathComponent(String(h.finalizeHex().prefix(16)) + "-\(prompt).bin")
    }

    // MARK: - Pieces

    func model(_ m: Int) throws -> Model {
        if let x = models[m] { return x }
        let x = try Model.load(path: plan.spec.models[m].path)
        models[m] = x
        return x
    }

    func digest(_ m: Int) throws -> String {
        if let d = digests[m] { return d }
        let d = try FileDigest.sha256(path: plan.spec.models[m].path)
        digests[m] = d
        return d
    }

    func calibration(_ name: String?, model m: Int) throws -> CalibrationSet {
        let key = "\(m)/\(name ?? "")"
        if let c = calibrations[key] { return c }
        let c = try calibrationSet(name, try model(m).tokenizer)
        calibrations[key] = c
        return c
    }

    public func candidates() throws -> [SweepPlan.CandidateSpec] {
        try plan.candidates { try Scheme(parsing: $0).needsCalibrationSet }
    }

    func trackerCandidate(_ c: SweepPlan.CandidateSpec, model m: Int) throws -> (TrackerCandidate, CalibrationSet?) {
        if c.noiseFloor { return (.noiseFloor, nil) }
        let s = try Scheme(parsing: c.scheme)
        let data = s.needsCalibrationSet ? try calibration(c.calibration, model: m) : nil
        return (TrackerCandidate(name: c.name, scheme: s, runtime: try SchemeRuntime(model: try model(m), scheme: s, calibration: data)), data)
    }

    func workload(_ w: Int) throws -> Workload { try Workload.load(path: plan.spec.workloads[w].path) }

    func engine(_ m: Int) throws -> LockstepEngine { try LockstepEngine(model: try model(m), options: plan.spec.options) }

    // MARK: - Units

    /// The reference unit: the FP32 run of every prompt, saved as the pair's trace (a no-op when it exists).
    public func runReference(model m: Int, workload w: Int) throws {
        let url = tracePath(m, w)
        if FileManager.default.fileExists(atPath: url.path) { return }
        progress("reference \(plan.spec.models[m].label) × \(plan.spec.workloads[w].label)")
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let wl = try workload(w)
        let e = try engine(m)
        let writer = try ReferenceTraceWriter(url: url, header: e.traceHeader(modelSHA256: try digest(m), workload: wl, version: version))
        let refs = try e.referenceRuns(wl, contextLength: try e.contextLength(for: wl))
        try e.append(refs, to: writer)
        try writer.finish()
    }

    /// A candidate unit: the candidate on its prompts against the pair's reference (run first
    /// when missing); prompts whose result is kept are skipped.
    public func runCandidate(model m: Int, workload w: Int, candidate c: Int, prompts: Range<Int>) throws {
        let spec = try candidates()[c]
        let todo = prompts.filter { !FileManager.default.fileExists(atPath: resultURL(m, w, spec, prompt: $0).path) }
        guard let first = todo.first, let last = todo.last else { return }
        try runReference(model: m, workload: w)
        progress("\(spec.name) on \(plan.spec.models[m].label) × \(plan.spec.workloads[w].label), prompts \(first)…\(last)")
        let wl = try workload(w)
        let mdl = try model(m)
        if built?.model != m || built?.candidate != c {
            built = nil  // release the previous candidate's weights before building the next
            let (runtime, data) = try trackerCandidate(spec, model: m)
            built = (m, c, runtime, data)
        }
        let (cand, data) = (built!.runtime, built!.data)
        let e = try LockstepEngine(model: mdl, options: plan.spec.options, calibration: data)
        let reader = try ReferenceTraceReader(url: tracePath(m, w), expecting: e.traceHeader(modelSHA256: try digest(m), workload: wl, version: version))
        let range = first..<(last + 1)
        let refs = try e.load(reader, workload: wl, prompts: range)
        let results = try e.run([cand], references: refs, firstPrompt: range.lowerBound, contextLength: try e.contextLength(for: wl))[0]
        try FileManager.default.createDirectory(at: pairDir(m, w).appendingPathComponent("results"), withIntermediateDirectories: true)
        for (j, r) in results.enumerated() {
            try AtomicFile.write(PromptResultCodec.encode(r), to: resultURL(m, w, spec, prompt: range.lowerBound + j))
        }
    }

    public func run(_ unit: SweepPlan.Unit) throws {
        switch unit {
        case .reference(let m, let w): try runReference(model: m, workload: w)
        case .candidate(let m, let w, let c, let p): try runCandidate(model: m, workload: w, candidate: c, prompts: p)
        }
    }

    // MARK: - Merge

    /// What merging found: the reports written, and the units still missing.
    public struct MergeOutcome: Sendable {
        public var reports: [(model: String, workload: String, path: String)] = []
        public var missing: [SweepPlan.Unit] = []
        /// grid.{json,md,html} in `dir`, written only when every pair is complete.
        public var grid: String?
    }

    /// Writes `MODEL/WORKLOAD/report/` for every pair whose reference and results are all there —
    /// the report `compare --reference MODEL/WORKLOAD/reference.trace` writes in one process, byte
    /// for byte apart from timings — and lists the units still missing for the others.
    public func merge() throws -> MergeOutcome {
        var out = MergeOutcome()
        var pairs: [(model: String, architecture: String, workload: String, reportJSON: String)] = []
        let specs = try candidates()
        let units = plan.candidateUnits(candidateCount: specs.count)
        for m in plan.spec.models.indices {
            for w in plan.spec.workloads.indices {
                let missing = units.filter { u in
                    guard case .candidate(m, w, let c, let p) = u else { return false }
                    return p.contains { !FileManager.default.fileExists(atPath: resultURL(m, w, specs[c], prompt: $0).path) }
                }
                if !FileManager.default.fileExists(atPath: tracePath(m, w).path) { out.missing.append(.reference(model: m, workload: w)) }
                out.missing += missing
                guard missing.isEmpty, FileManager.default.fileExists(atPath: tracePath(m, w).path) else {
                    // An incomplete pair shows no report, not an older one.
                    try? FileManager.default.removeItem(at: pairDir(m, w).appendingPathComponent("report"))
                    continue
                }
                progress("merge \(plan.spec.models[m].label) × \(plan.spec.workloads[w].label)")
                let wl = try workload(w)
                let mdl = try model(m)
                let e = try engine(m)
                let reader = try ReferenceTraceReader(url: tracePath(m, w), expecting: e.traceHeader(modelSHA256: try digest(m), workload: wl, version: version))
                let refs = try e.load(reader, workload: wl)
                var candidates: [TrackerCandidate] = [], results: [[PromptResult]] = [], calibrationInfo: [String: JSON] = [:]
                for spec in specs {
                    if spec.noiseFloor {
                        candidates.append(.noiseFloor)
                    } else {
                        let s = try Scheme(parsing: spec.scheme)
                        candidates.append(TrackerCandidate(name: spec.name, scheme: s))
                        calibrationInfo[spec.name] = RunConditions.calibration(of: s, data: s.needsCalibrationSet ? try calibration(spec.calibration, model: m) : nil)
                    }
                    results.append(try refs.indices.map { p in
                        let data = try Data(contentsOf: resultURL(m, w, spec, prompt: p))
                        return try PromptResultCodec.decode(data)
                    })
                }
                let report = ReportBuilder(candidates: candidates, references: refs, results: results, options: plan.spec.options,
                                           calibration: calibrationInfo)
                let target = pairDir(m, w).appendingPathComponent("report")
                try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
                try report.write(to: target, context: ReportContext(
                    model: try RunConditions.model(mdl, sha256: try digest(m)), workload: wl, version: version,
                    referenceTrace: tracePath(m, w).path, referenceSeconds: 0, candidatesSeconds: 0))
                out.reports.append((plan.spec.models[m].label, plan.spec.workloads[w].label, target.path))
                pairs.append((plan.spec.models[m].label, mdl.config.architecture.rawValue, plan.spec.workloads[w].label,
                              "\(plan.spec.models[m].label)/\(plan.spec.workloads[w].label)/report/report.json"))
            }
        }
        // The grid only when nothing is missing: nothing partial is presented as complete.
        if out.missing.isEmpty {
            let rows = try specs.filter { !$0.noiseFloor }.map {
                GridReport.Row(scheme: try Scheme(parsing: $0.scheme).name, calibration: $0.calibration, candidate: $0.name)
            }
            try GridReport(directory: dir, pairs: pairs, rows: rows).write(to: dir)
            out.grid = dir.appendingPathComponent("grid.html").path
        } else {
            for f in ["grid.json", "grid.md", "grid.html"] { try? FileManager.default.removeItem(at: dir.appendingPathComponent(f)) }
        }
        return out
    }
}
