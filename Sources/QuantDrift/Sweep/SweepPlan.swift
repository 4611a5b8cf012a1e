import Foundation

/// A sweep: the model × scheme × calibration × workload grid of `sweep.json` (see sweep-schema.md),
/// resolved to files, cut into independent units and those into shards.
public struct SweepSpec: Sendable {
    /// A model or a workload: its file, and the label used in folder names and reports (the
    /// manifest or workload name, or the file's name).
    public struct Entry: Sendable {
        public var label: String
        public var path: String
        public init(label: String, path: String) {
            self.label = label
            self.path = path
        }
    }

    public var models: [Entry]
    /// Scheme texts as `compare --schemes` takes them (presets or specs).
    public var schemes: [String]
    /// Named calibration sets (`compare --calibrations`); empty: calibrated schemes use the default set.
    public var calibrations: [String]
    public var workloads: [Entry]
    public var options: TrackerOptions
    /// Prompts per candidate unit.
    public var promptsPerUnit: Int

    public init(models: [Entry], schemes: [String], calibrations: [String], workloads: [Entry],
                options: TrackerOptions, promptsPerUnit: Int) {
        self.models = models
        self.schemes = schemes
        self.calibrations = calibrations
        self.workloads = workloads
        self.options = options
        self.promptsPerUnit = promptsPerUnit
    }
}

/// The units of a sweep and their shards: one reference unit per model × workload (its FP32 run,
/// saved as a trace that every candidate of that pair reads), then candidate units (one candidate
/// on a slice of a workload's prompts), which need their pair's reference first.
public struct SweepPlan: Sendable {
    public enum Unit: Sendable, Equatable {
        case reference(model: Int, workload: Int)
        /// Candidate `candidate` (index into `candidates(model:)`) on prompts `prompts`.
        case candidate(model: Int, workload: Int, candidate: Int, prompts: Range<Int>)
    }

    public struct CandidateSpec: Sendable, Equatable {
        /// The name in reports: the scheme's, `SCHEME@SET` when calibrated per set, or the noise floor's.
        public var name: String
        public var scheme: String
        public var calibration: String?
        public var noiseFloor: Bool
    }

    public let spec: SweepSpec
    /// Per workload, its prompt count and an estimate of tokens per prompt (prompt + continuation).
    public let workloadSizes: [(prompts: Int, tokens: Int)]
    /// Per model, parameters (for the cost estimate).
    public let modelParameters: [Int]

    public init(spec: SweepSpec, workloadSizes: [(prompts: Int, tokens: Int)], modelParameters: [Int]) {
        self.spec = spec
        self.workloadSizes = workloadSizes
        self.modelParameters = modelParameters
    }

    /// The candidates of every model × workload, in report order: each scheme (calibrated ones once
    /// per named set), then the noise floor.
    public func candidates(calibrated: (String) throws -> Bool) throws -> [CandidateSpec] {
        var out: [CandidateSpec] = []
        for s in spec.schemes {
            if try calibrated(s), !spec.calibrations.isEmpty {
                for c in spec.calibrations { out.append(CandidateSpec(name: "\(try Scheme(parsing: s).name)@\(c)", scheme: s, calibration: c, noiseFloor: false)) }
            } else {
                out.append(CandidateSpec(name: (try? Scheme(parsing: s).name) ?? s, scheme: s, calibration: nil, noiseFloor: false))
            }
        }
        out.append(CandidateSpec(name: TrackerCandidate.noiseFloorName, scheme: "fp32", calibration: nil, noiseFloor: true))
        return out
    }

    public var referenceUnits: [Unit] {
        spec.models.indices.flatMap { m in spec.workloads.indices.map { Unit.reference(model: m, workload: $0) } }
    }

    public func candidateUnits(candidateCount: Int) -> [Unit] {
        var out: [Unit] = []
        for m in spec.models.indices {
            for w in spec.workloads.indices {
                let n = workloadSizes[w].prompts
                for c in 0..<candidateCount {
                    for start in stride(from: 0, to: n, by: spec.promptsPerUnit) {
                        out.append(.candidate(model: m, workload: w, candidate: c, prompts: start..<min(n, start + spec.promptsPerUnit)))
                    }
                }
            }
        }
        return out
    }

    /// Estimated cost: tokens run × model parameters (a reference also decodes its continuations).
    public func cost(_ u: Unit) -> Double {
        switch u {
        case .reference(let m, let w):
            return 2 * Double(workloadSizes[w].prompts * workloadSizes[w].tokens) * Double(modelParameters[m])
        case .candidate(let m, let w, _, let p):
            return Double(p.count * workloadSizes[w].tokens) * Double(modelParameters[m]) * (spec.options.mode == .both ? 2 : 1)
        }
    }

    /// `units` into `count` shards, balanced by cost: largest first, each to the least loaded shard
    /// (ties to the lowest index), then each shard's units back in plan order. Deterministic.
    public func shards(_ units: [Unit], count: Int) -> [[Unit]] {
        var load = [Double](repeating: 0, count: count)
        var assigned = [[Int]](repeating: [], count: count)
        let order = units.indices.sorted { cost(units[$0]) != cost(units[$1]) ? cost(units[$0]) > cost(units[$1]) : $0 < $1 }
        for i in order {
            let s = load.indices.min { load[$0] != load[$1] ? load[$0] < load[$1] : $0 < $1 }!
            load[s] += cost(units[i])
            assigned[s].append(i)
        }
        return assigned.map { $0.sorted().map { units[$0] } }
    }
}
