import Foundation
import QuantDrift

/// `compare --calibrations A,B --workloads X,Y`: every calibrated scheme once per calibration set,
/// on every workload (one report each in OUT/NAME/), then the calibration × workload matrix
/// (OUT/matrix.{json,md,html}).
enum CalibrationMatrixRun {
    /// A named set: Prompts/calibration/NAME (its sequence length from sets.json), or a folder/file path.
    static func calibrationSet(_ name: String, tokenizer: Tokenizer) throws -> CalibrationSet {
        let root = CalibrationOptions.resolve(CalibrationOptions.defaultPath)
        let named = (root as NSString).appendingPathComponent(name)
        var isDir: ObjCBool = false
        if !name.contains("/"), FileManager.default.fileExists(atPath: named, isDirectory: &isDir), isDir.boolValue {
            var length = 512
            let manifest = (root as NSString).appendingPathComponent("sets.json")
            if let data = FileManager.default.contents(atPath: manifest),
               let sets = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
               let entry = sets[name] as? [String: Any], let l = entry["sequence_length"] as? Int, l >= 2 {
                length = l
            }
            return try CalibrationSet.load(path: named, tokenizer: tokenizer, sequenceLength: length)
        }
        guard FileManager.default.fileExists(atPath: name) else {
            let known = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter {
                var d: ObjCBool = false
                return FileManager.default.fileExists(atPath: (root as NSString).appendingPathComponent($0), isDirectory: &d) && d.boolValue
            }.sorted()
            throw QuantDriftError.invalidInput("--calibrations: '\(name)' is neither a named set (\(known.joined(separator: ", "))) nor a folder or file")
        }
        return try CalibrationSet.load(path: name, tokenizer: tokenizer)
    }

    /// A named workload: default, long, Prompts/workloads/NAME.jsonl; or a JSONL path (named by its file).
    static func workloadPath(_ name: String) -> (label: String, path: String) {
        switch name {
        case "default": return ("default", CalibrationOptions.resolveBundled(Tracking.defaultPrompts))
        case "long": return ("long", CalibrationOptions.resolveBundled(Tracking.longPrompts))
        default:
            if name.hasSuffix(".jsonl") || name.contains("/") {
                return (((name as NSString).lastPathComponent as NSString).deletingPathExtension, name)
            }
            return (name, CalibrationOptions.resolveBundled("Prompts/workloads/\(name).jsonl"))
        }
    }

    static func execute(schemes: [Scheme], options o: TrackerCommandOptions) throws {
        let root = URL(fileURLWithPath: o.out)
        try Tracking.prepareOutput(root)
        let model = try o.modelOptions.load()
        let options = o.trackerOptions
        let calNames = o.calibrations ?? []
        let sets = try calNames.map { ($0, try calibrationSet($0, tokenizer: model.tokenizer)) }
        let calibrated = schemes.filter(\.needsCalibrationSet)
        if !calibrated.isEmpty && sets.isEmpty {
            throw QuantDriftError.invalidInput("--workloads with calibrated schemes (\(calibrated.map(\.name).joined(separator: ", "))) needs --calibrations")
        }
        // Candidates: a calibrated scheme once per set ("name@set"), any other once; then the noise floor.
        var candidates: [TrackerCandidate] = [], entries: [CalibrationMatrix.Entry] = []
        var calibrationInfo: [String: JSON] = [:]
        for s in schemes {
            if s.needsCalibrationSet {
                for (name, set) in sets {
                    CLI.note("preparing \(s.name) calibrated on \(name)…")
                    let label = "\(s.name)@\(name)"
                    candidates.append(TrackerCandidate(name: label, scheme: s, runtime: try SchemeRuntime(model: model, scheme: s, calibration: set)))
                    entries.append(.init(candidate: label, scheme: s.name, calibration: name))
                    calibrationInfo[label] = RunConditions.calibration(of: s, data: set)
                }
            } else {
                CLI.note("preparing \(s.name)…")
                candidates.append(TrackerCandidate(name: s.name, scheme: s, runtime: try SchemeRuntime(model: model, scheme: s)))
                entries.append(.init(candidate: s.name, scheme: s.name, calibration: nil))
            }
        }
        candidates.append(.noiseFloor)
        let modelSHA = try FileDigest.sha256(path: model.path)
        let modelConditions = try RunConditions.model(model, sha256: modelSHA)
        var reports: [(name: String, reportJSON: String)] = []
        let stop = Interruption.install()
        for w in o.workloads ?? [o.prompts] {
            let (label, path) = workloadPath(w)
            let workload = try Workload.load(path: path)
            let engine = try LockstepEngine(model: model, options: options)
            engine.shouldStop = { stop.requested }
            let ctx = try engine.contextLength(for: workload)
            let bar = LockedProgress(ProgressBar(label: "workload \(label)"), total: workload.prompts.count * (1 + candidates.count))
            let t0 = monotonicSeconds()
            let (references, results, referenceSeconds) = try engine.runWorkload(
                workload, candidates: candidates, contextLength: ctx, referenceProgress: { _ in bar.step() }, progress: { _ in bar.step() })
            bar.finish()
            let report = ReportBuilder(candidates: candidates, references: references, results: results, options: options,
                                       calibration: calibrationInfo)
            let dir = root.appendingPathComponent(label)
            try Tracking.prepareOutput(dir)
            try report.write(to: dir, context: ReportContext(
                model: modelConditions, workload: workload, version: QuantDriftVersion.string, referenceSeconds: referenceSeconds,
                candidatesSeconds: monotonicSeconds() - t0 - referenceSeconds))
            CLI.note("workload \(label): report in \(dir.path)")
            reports.append((label, label + "/report.json"))
        }
        let matrix = try CalibrationMatrix(
            directory: root, workloads: reports,
            calibrations: sets.map { ($0.0, .object([("source", .string($0.1.source)), ("sha256", .string($0.1.sha256)),
                                                      ("sequences", .int($0.1.sequences.count)), ("tokens", .int($0.1.tokenCount))])) },
            entries: entries,
            conditions: .object([("model", modelConditions), ("version", .string(QuantDriftVersion.string)),
                                 ("mode", .string(options.mode.rawValue)), ("max_tokens", options.forcedMaxTokens.map { .int($0) } ?? .null)]))
        try matrix.write(to: root)
        print(matrix.markdown(), terminator: "")
        CLI.note("wrote matrix.json, matrix.md and matrix.html to \(root.path)")
    }
}
