import Foundation

/// A `quantdrift.report/1` document (see report-schema.md) read back for the renderers, the
/// regression gate and the CLI's summary table, through the keys `ReportBuilder` writes
/// (`ReportKeys`, `SummaryKey`). Values that may be `null` are optionals; a key the schema requires but the file
/// lacks, or a value of the wrong type, is a one-line `invalidInput` naming the file and key.
struct ReportDocument {
    let file: String
    let conditions: Conditions
    let schemes: [SchemeResult]
    /// The FP32-vs-FP32 comparison (`noise_floor`); nil when the run had none.
    let noiseFloor: NoiseFloor?

    struct NoiseFloor {
        var method: String?
        var positions: Int?
        var meanKLD: Double?
        var meanKLDCI: (Double, Double)?
        var maxKLD: Double?
        var top1: Double?
        var tieMargin: Double?
        var marginChangeP99: Double?
        var divergedPrompts: Int?
        var tieFlips: Int?
    }

    /// Conditions in display order: each section's known keys first, then any others sorted.
    struct Conditions {
        var modelName: String?
        var maxTokens: Int?
        var prompts: Int?
        var mode: String?
        var referenceScheme: String?
        /// (section title, [(key, value as text)]) for the conditions block.
        var sections: [(String, [(String, String)])]
    }

    struct Calibration {
        var method: String?
        var dataSHA256: String?
        var tokens: Int?
    }

    struct Bin {
        var start: Int
        var end: Int
        var n: Int?
        var meanKLD: Double?
        var meanKLDCI: (Double, Double)?
        var top1: Double?
        var meanTV: Double?
    }

    struct AgeBin {
        var start: Int
        var end: Int
        var n: Int?
        var relError: Double?
    }

    struct ClippingBin {
        var start: Int
        var end: Int
        var values: Int?
        var clippedShare: Double?
        var meanMaxOverRange: Double?
        var maxOverRange: Double?
    }

    struct Attribution {
        var part: String
        var spec: String?
        var meanKLD: Double?
        var meanKLDCI: (Double, Double)?
        var top1: Double?
    }

    struct LayerResult {
        var layer: Int
        var meanKLD: Double?
        var top1: Double?
    }

    struct Paired {
        var other: String
        var diff: Double?
        var diffCI: (Double, Double)?
    }

    struct PromptResult {
        var id: String
        var generatedTokens: Int?
        var meanKLD: Double?
        var maxKLD: Double?
        var top1: Double?
        var firstDivergence: Int?
        var tieFlip: Bool?
        var reconverged: Bool?
    }

    struct SchemeResult {
        var name: String
        var spec: String
        var calibration: Calibration?
        /// The summary's numbers (`SummaryKey`s of shape `.number`); absent when null.
        var summary: [SummaryKey: Double]
        var meanKLDCI: (Double, Double)?
        var top1CI: (Double, Double)?
        var kldPercentiles: [(String, Double)]
        var survival: [Double]?
        var survivalPredicted: [Double]?
        var survivalReal: [Double]?
        var logBins: [Bin]
        var bins64: [Bin]
        var kvErrorByAge: [AgeBin]?
        var kvErrorByPosition: [AgeBin]?
        var clipping: [ClippingBin]?
        var attribution: [Attribution]?
        var perLayer: [LayerResult]?
        var paired: [Paired]
        var prompts: [PromptResult]

        func value(_ key: SummaryKey) -> Double? { summary[key] }

        /// The numbers the side-by-side reports (families, calibration matrix, sweep grid) put in a cell.
        var headline: Headline {
            Headline(meanKLD: value(.meanKLD), ci: meanKLDCI, top1: value(.top1Agreement),
                     medianFirstDivergence: value(.medianFirstDivergence), growth: value(.growthExponent))
        }
    }

    /// One scheme's headline numbers in one report.
    struct Headline {
        var meanKLD: Double?
        var ci: (Double, Double)?
        var top1: Double?
        var medianFirstDivergence: Double?
        var growth: Double?
    }

    // MARK: - Reading

    static func read(path: String) throws -> ReportDocument {
        guard FileManager.default.fileExists(atPath: path) else { throw QuantDriftError.invalidInput("\(path): no such file") }
        return try ReportDocument(try JSONNode.read(path: path))
    }

    static func parse(_ data: Data, file: String) throws -> ReportDocument {
        let root = try data.withUnsafeBytes { try JSONNode.parse($0, file: file, what: "report") }
        return try ReportDocument(root)
    }

    init(_ root: JSONNode) throws {
        file = root.file
        guard root.value is [String: Any] else { throw root.error("is not a JSON object (expected a quantdrift report)") }
        let schema = try root["schema"].string()
        guard schema == ReportKeys.schema else {
            throw QuantDriftError.invalidInput("\(root.file): schema '\(schema)', expected '\(ReportKeys.schema)'")
        }
        conditions = try Self.readConditions(try root["conditions"])
        schemes = try root["schemes"].array().map(Self.readScheme)
        noiseFloor = try root["noise_floor"].optional.map { f in
            NoiseFloor(method: try f["method"].optional?.string(), positions: try Self.integer(try f["positions"]),
                       meanKLD: try Self.number(try f["mean_kld"]), meanKLDCI: try Self.interval(try f["mean_kld_ci"]),
                       maxKLD: try Self.number(try f["max_kld"]), top1: try Self.number(try f["top1_agreement"]),
                       tieMargin: try Self.number(try f["tie_margin"]), marginChangeP99: try Self.number(try f["margin_change_p99"]),
                       divergedPrompts: try Self.integer(try f["diverged_prompts"]), tieFlips: try Self.integer(try f["tie_flips"]))
        }
        var seen = Set<String>()
        for s in schemes where !seen.insert(s.name).inserted {
            throw QuantDriftError.invalidInput("\(root.file): scheme '\(s.name)' appears twice")
        }
    }

    func scheme(named name: String) -> SchemeResult? { schemes.first { $0.name == name } }

    // MARK: - Helpers

    /// JSONSerialization gives numbers and booleans both as NSNumber (and `1 is Bool` holds), so a
    /// boolean is told apart by its storage type.
    static func isJSONBoolean(_ v: Any?) -> Bool {
        guard let n = v as? NSNumber else { return false }
        return String(cString: n.objCType) == "c"
    }

    /// A number or nil for null; integers and floats both accepted.
    static func number(_ n: JSONNode) throws -> Double? {
        guard let v = n.optional else { return nil }
        if isJSONBoolean(v.value) { throw v.error("is not a number") }
        return try v.double()
    }

    static func integer(_ n: JSONNode) throws -> Int? {
        guard let d = try number(n) else { return nil }
        guard d == d.rounded(), abs(d) < 1e15 else { throw n.error("is not an integer") }
        return Int(d)
    }

    static func interval(_ n: JSONNode) throws -> (Double, Double)? {
        guard let v = n.optional else { return nil }
        let a = try v.array()
        guard a.count == 2 else { throw v.error("is not a [low, high] pair") }
        guard let lo = try number(a[0]), let hi = try number(a[1]) else { return nil }
        return (lo, hi)
    }

    static func numbers(_ n: JSONNode) throws -> [Double]? {
        guard let v = n.optional else { return nil }
        // A null inside (NaN written as null) becomes NaN so positions keep their index; plots skip it.
        return try v.array().map { try number($0) ?? .nan }
    }

    /// Text for any scalar in the conditions block (objects and arrays as compact JSON-ish text).
    static func text(_ n: JSONNode) -> String {
        guard let v = n.value, !(v is NSNull) else { return "none" }
        if let s = v as? String { return s }
        if isJSONBoolean(v), let b = v as? Bool { return b ? "yes" : "no" }
        if let i = v as? Int { return ReportFormat.grouped(i) }
        if let d = v as? Double { return ReportFormat.sig(d, 4) }
        if let o = try? n.object() {
            return o.keys.sorted().map { "\($0) \(text(o[$0]!))" }.joined(separator: ", ")
        }
        if let a = try? n.array() { return a.map(text).joined(separator: ", ") }
        return "\(v)"
    }

    private static func section(_ node: JSONNode, order: [String]) throws -> [(String, String)] {
        guard let o = try node.optional?.object() else { return [] }
        let known = order.filter { o[$0] != nil }
        let extra = o.keys.filter { !order.contains($0) }.sorted()
        return (known + extra).map { ($0, text(o[$0]!)) }
    }

    private static func readConditions(_ c: JSONNode) throws -> Conditions {
        let model = try c["model"], workload = try c["workload"], runtime = try c["runtime"], reference = try c["reference"]
        var sampling = try section(try workload["sampling"], order: ["temperature", "top_k", "top_p"])
        // Flatten sampling into one readable value ("greedy" or "temperature 0.8, top_k 40, top_p 0.9").
        let temperature = try number(try workload["sampling"]["temperature"])
        let samplingText = temperature == 0 ? "greedy (temperature 0)" : sampling.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
        sampling = []
        var workloadSection = try section(workload, order: ["prompts_file", "prompts_sha256", "prompts", "max_tokens", "mode", "sampling", "seed"])
        if let i = workloadSection.firstIndex(where: { $0.0 == "sampling" }) { workloadSection[i].1 = samplingText }
        return Conditions(
            modelName: try model["name"].optional?.string(),
            maxTokens: try integer(try workload["max_tokens"]),
            prompts: try integer(try workload["prompts"]),
            mode: try workload["mode"].optional?.string(),
            referenceScheme: try reference["scheme"].optional?.string(),
            sections: [
                ("Model", try section(model, order: ["name", "architecture", "parameters", "file", "sha256"])),
                ("Workload", workloadSection),
                ("Runtime", try section(runtime, order: ["version", "cpu", "threads", "blas", "kernels"])),
                ("Reference", try section(reference, order: ["scheme", "trace_file", "trace_sha256"])),
            ])
    }

    private static func readBin(_ b: JSONNode) throws -> Bin {
        Bin(start: try b["start"].int(), end: try b["end"].int(), n: try integer(try b["n"]),
            meanKLD: try number(try b["mean_kld"]), meanKLDCI: try interval(try b["mean_kld_ci"]),
            top1: try number(try b["top1_agreement"]), meanTV: try number(try b["mean_tv"]))
    }

    private static func readScheme(_ s: JSONNode) throws -> SchemeResult {
        let summary = try s["summary"]
        var values: [SummaryKey: Double] = [:]
        for key in SummaryKey.allCases where key.shape == .number {
            if let v = try number(try summary[key.rawValue]) { values[key] = v }
        }
        var percentiles: [(String, Double)] = []
        if let p = try summary[SummaryKey.kldPercentiles.rawValue].optional {
            for (key, _) in ReportKeys.percentiles { if let v = try number(try p[key]) { percentiles.append((key, v)) } }
        }
        let calibration = try s["calibration"].optional.map {
            Calibration(method: try $0["method"].optional?.string(), dataSHA256: try $0["data_sha256"].optional?.string(),
                        tokens: try integer(try $0["tokens"]))
        }
        let curves = try s["curves"]
        return SchemeResult(
            name: try s["name"].string(),
            spec: try s["spec"].optional?.string() ?? "",
            calibration: calibration,
            summary: values,
            meanKLDCI: try interval(try summary[SummaryKey.meanKLDCI.rawValue]),
            top1CI: try interval(try summary[SummaryKey.top1AgreementCI.rawValue]),
            kldPercentiles: percentiles,
            survival: try numbers(try summary[SummaryKey.survival.rawValue]),
            survivalPredicted: try numbers(try summary[SummaryKey.survivalPredicted.rawValue]),
            survivalReal: try numbers(try summary[SummaryKey.survivalReal.rawValue]),
            logBins: try curves["log_bins"].optional?.array().map(readBin) ?? [],
            bins64: try curves["bins_64"].optional?.array().map(readBin) ?? [],
            kvErrorByAge: try curves["kv_error_by_age"].optional?.array().map {
                AgeBin(start: try $0["start"].int(), end: try $0["end"].int(), n: try integer(try $0["n"]),
                       relError: try number(try $0["rel_error"]))
            },
            kvErrorByPosition: try curves["kv_error_by_position"].optional?.array().map {
                AgeBin(start: try $0["start"].int(), end: try $0["end"].int(), n: try integer(try $0["n"]),
                       relError: try number(try $0["rel_error"]))
            },
            clipping: try curves["activation_clipping_by_position"].optional?.array().map {
                ClippingBin(start: try $0["start"].int(), end: try $0["end"].int(), values: try integer(try $0["values"]),
                            clippedShare: try number(try $0["clipped_share"]), meanMaxOverRange: try number(try $0["mean_max_over_range"]),
                            maxOverRange: try number(try $0["max_over_range"]))
            },
            attribution: try s["attribution"].optional?.array().map {
                Attribution(part: try $0["part"].string(), spec: try $0["spec"].optional?.string(),
                            meanKLD: try number(try $0["mean_kld"]), meanKLDCI: try interval(try $0["mean_kld_ci"]),
                            top1: try number(try $0["top1_agreement"]))
            },
            perLayer: try s["per_layer"].optional?.array().map {
                LayerResult(layer: try $0["layer"].int(), meanKLD: try number(try $0["mean_kld"]),
                            top1: try number(try $0["top1_agreement"]))
            },
            paired: try s["paired"].optional?.array().map {
                Paired(other: try $0["other"].string(), diff: try number(try $0["mean_kld_diff"]),
                       diffCI: try interval(try $0["mean_kld_diff_ci"]))
            } ?? [],
            prompts: try s["prompts"].optional?.array().map {
                PromptResult(id: try $0["id"].string(), generatedTokens: try integer(try $0["generated_tokens"]),
                             meanKLD: try number(try $0["mean_kld"]), maxKLD: try number(try $0["max_kld"]),
                             top1: try number(try $0["top1_agreement"]),
                             firstDivergence: try integer(try $0["first_divergence"]),
                             tieFlip: try $0["tie_flip"].optional?.bool(),
                             reconverged: try $0["reconverged"].optional?.bool())
            } ?? [])
    }
}
