import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Artifact

/// The calibration of one site: its static int8 range and the maxima SmoothQuant and outlier
/// handling need.
public struct SiteCalibration: Sendable, Equatable {
    public var id: SiteID
    /// Clip threshold T of the static range [−T, T] of the activation as the quantizer sees it
    /// (after smoothing, outlier channels left out).
    public var range: Float
    /// Symmetric int8 scale, T / 127.
    public var scale: Float
    /// max |x| of the activation as the quantizer sees it.
    public var maxAbs: Float
    /// max |x| per input channel of the FP32 model (before smoothing).
    public var channelMaxAbs: [Float]
    /// For ranges per group of channels (`a=int8,gN,static`): N, and T and T/127 per group
    /// (`range` and `scale` are then their maxima).
    public var groupSize: Int?
    public var groupRanges: [Float]?
    public var groupScales: [Float]?

    public init(id: SiteID, range: Float, scale: Float, maxAbs: Float, channelMaxAbs: [Float],
                groupSize: Int? = nil, groupRanges: [Float]? = nil, groupScales: [Float]? = nil) {
        self.id = id
        self.range = range
        self.scale = scale
        self.maxAbs = maxAbs
        self.channelMaxAbs = channelMaxAbs
        self.groupSize = groupSize
        self.groupRanges = groupRanges
        self.groupScales = groupScales
    }
}

/// What `quantdrift calibrate` writes (schema `quantdrift.calibration/1`) and `calib=FILE.json`
/// reads: static activation ranges per (layer, site) with the conditions they were made under.
public struct CalibrationArtifact: Sendable, Equatable {
    public static let schema = "quantdrift.calibration/1"

    public var modelName: String
    /// SHA-256 of the model file (or of an HF folder's files); empty when not computed.
    public var modelSHA256: String
    /// The scheme calibrated for (canonical spec).
    public var scheme: String
    public var method: CalibrationMethod
    /// SmoothQuant α the ranges were measured under, if any.
    public var smoothAlpha: Double?
    /// Outlier threshold whose channels the ranges leave out, if any.
    public var outlierThreshold: Double?
    public var dataPath: String
    public var dataSHA256: String
    public var tokenCount: Int
    public var sequenceCount: Int
    /// Histogram bins the ranges came from.
    public var bins: Int
    /// In forward order.
    public var sites: [SiteCalibration]

    public var channelMaxAbs: [SiteID: [Float]] {
        Dictionary(uniqueKeysWithValues: sites.map { ($0.id, $0.channelMaxAbs) })
    }

    public var scales: [SiteID: Float] {
        Dictionary(uniqueKeysWithValues: sites.map { ($0.id, $0.scale) })
    }

    /// Floats are written through their shortest decimal, so they read back bit for bit.
    static func number(_ x: Float) -> JSON { .double(Double("\(x)") ?? Double(x)) }

    /// The document, keys in a fixed order (same data → same bytes).
    public var json: JSON {
        [
            "schema": .string(Self.schema),
            "model": ["name": .string(modelName), "sha256": .string(modelSHA256)],
            "scheme": .string(scheme),
            "method": .string(method.description),
            "smooth_alpha": smoothAlpha.map { .double($0) } ?? .null,
            "outlier_threshold": outlierThreshold.map { .double($0) } ?? .null,
            "data": ["path": .string(dataPath), "sha256": .string(dataSHA256), "tokens": .int(tokenCount),
                     "sequences": .int(sequenceCount)],
            "bins": .int(bins),
            "sites": .array(sites.map { s in
                var o: [(String, JSON)] = [
                    ("layer", .int(s.id.layer)), ("site", .string(s.id.site.rawValue)),
                    ("range", Self.number(s.range)), ("scale", Self.number(s.scale)), ("max_abs", Self.number(s.maxAbs)),
                ]
                if let g = s.groupSize, let r = s.groupRanges, let sc = s.groupScales {
                    o += [("group_size", .int(g)), ("group_ranges", .array(r.map(Self.number))),
                          ("group_scales", .array(sc.map(Self.number)))]
                }
                o.append(("channel_max_abs", .array(s.channelMaxAbs.map(Self.number))))
                return .object(o)
            }),
        ]
    }

    /// Writes the document to `path` through a temporary file in the same folder and a rename, so
    /// that an interrupted write never leaves a partial artifact.
    public func write(to path: String) throws {
        try RunConditions.writeAtomically(Data((json.serialized(pretty: true) + "\n").utf8), to: URL(fileURLWithPath: path))
    }

    /// Reads an artifact; anything malformed is a one-line `invalidInput` naming the file.
    public static func load(path: String) throws -> CalibrationArtifact {
        let root = try JSONNode.read(path: path)
        func bad(_ what: String) -> QuantDriftError { .invalidInput("\(path): not a calibration file: \(what)") }
        let schema = try root["schema"].string()
        guard schema == Self.schema else { throw bad("schema '\(schema)', expected '\(Self.schema)'") }
        let methodText = try root["method"].string()
        let method: CalibrationMethod
        do { method = try Scheme.parseCalibration(methodText) } catch { throw bad("unknown method '\(methodText)'") }
        func float(_ n: JSONNode) throws -> Float {
            let d = try n.double()
            guard d.isFinite, d >= 0, d <= Double(Float.greatestFiniteMagnitude) else { throw n.error("is not a finite non-negative number") }
            return Float(d)
        }
        var sites: [SiteCalibration] = []
        for s in try root["sites"].array() {
            let layer = try s["layer"].int()
            let siteName = try s["site"].string()
            guard let site = LinearSite(rawValue: siteName) else { throw try s["site"].error("'\(siteName)' is not a site name") }
            guard layer >= 0 else { throw try s["layer"].error("is negative") }
            let scale = try float(s["scale"])
            guard scale > 0 else { throw try s["scale"].error("must be positive") }
            var groupSize: Int?, groupRanges: [Float]?, groupScales: [Float]?
            if let g = try s["group_size"].optional {
                let n = try g.int()
                guard n >= 1 else { throw g.error("must be ≥ 1") }
                groupSize = n
                groupRanges = try s["group_ranges"].array().map(float)
                groupScales = try s["group_scales"].array().map(float)
                guard groupRanges!.count == groupScales!.count, !groupScales!.isEmpty, groupScales!.allSatisfy({ $0 > 0 }) else {
                    throw try s["group_scales"].error("must be positive, one per group range")
                }
            }
            sites.append(SiteCalibration(
                id: SiteID(layer, site), range: try float(s["range"]), scale: scale, maxAbs: try float(s["max_abs"]),
                channelMaxAbs: try s["channel_max_abs"].array().map(float),
                groupSize: groupSize, groupRanges: groupRanges, groupScales: groupScales))
        }
        guard !sites.isEmpty else { throw bad("no sites") }
        guard Set(sites.map(\.id)).count == sites.count else { throw bad("a site is listed twice") }
        let model = try root["model"]
        let data = try root["data"]
        return CalibrationArtifact(
            modelName: try model["name"].string(), modelSHA256: try model["sha256"].string(),
            scheme: try root["scheme"].string(), method: method,
            smoothAlpha: try root["smooth_alpha"].optional?.double(),
            outlierThreshold: try root["outlier_threshold"].optional?.double(),
            dataPath: try data["path"].string(), dataSHA256: try data["sha256"].string(),
            tokenCount: try data["tokens"].int(), sequenceCount: try data["sequences"].int(),
            bins: try root["bins"].int(), sites: sites.sorted { $0.id < $1.id })
    }

    /// Checks that this artifact fits `model` (same file, same shape) and, for static ranges, the
    /// activation part of `scheme` (same smoothing, outlier threshold and method).
    public func check(for model: Model, scheme: Scheme, path: String, modelSHA256 actual: String) throws {
        guard modelSHA256 == actual else {
            throw QuantDriftError.invalidInput("\(path): calibration was made for model \(modelName) (sha256 \(modelSHA256.prefix(12))…), not for \(model.name) (sha256 \(actual.prefix(12))…): run quantdrift calibrate on this model")
        }
        let have = Dictionary(uniqueKeysWithValues: sites.map { ($0.id, $0) })
        for (id, width) in SiteID.all(model.config) {
            guard let s = have[id] else { throw QuantDriftError.invalidInput("\(path): calibration has no site \(id)") }
            guard s.channelMaxAbs.count == width else {
                throw QuantDriftError.invalidInput("\(path): site \(id) has \(s.channelMaxAbs.count) channels, the model \(width)")
            }
        }
        guard let a = scheme.activations, a.isStatic else { return }
        guard a.smoothAlpha == smoothAlpha else {
            throw QuantDriftError.invalidInput("\(path): ranges were measured with smooth=\(smoothAlpha.map(formatNumber) ?? "none"), the scheme has smooth=\(a.smoothAlpha.map(formatNumber) ?? "none")")
        }
        guard a.outlierThreshold == outlierThreshold else {
            throw QuantDriftError.invalidInput("\(path): ranges were measured with outlier=\(outlierThreshold.map(formatNumber) ?? "none"), the scheme has outlier=\(a.outlierThreshold.map(formatNumber) ?? "none")")
        }
        if let m = scheme.calibration, m != method {
            throw QuantDriftError.invalidInput("\(path): ranges were calibrated with \(method), the scheme asks for \(m)")
        }
        let wanted: Int? = if case .group(let n) = a.granularity { n } else { nil }
        for (id, width) in SiteID.all(model.config) {
            let s = have[id]!
            guard s.groupSize == wanted else {
                let made = s.groupSize.map { "per group of \($0)" } ?? "per tensor"
                throw QuantDriftError.invalidInput("\(path): ranges were calibrated \(made), the scheme wants them \(wanted.map { "per group of \($0)" } ?? "per tensor"): run quantdrift calibrate with this scheme")
            }
            if let g = wanted, s.groupScales?.count != (width + g - 1) / g {
                throw QuantDriftError.invalidInput("\(path): site \(id) has \(s.groupScales?.count ?? 0) group scales, expected \((width + g - 1) / g)")
            }
        }
    }
}

// MARK: - Model fingerprint

public enum ModelFingerprint {
    /// SHA-256 of a model file's bytes; for an HF folder, over the names and bytes of its
    /// `.json` and `.safetensors` files in name order.
    public static func sha256(path: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw QuantDriftError.invalidInput("\(path): no such file or directory")
        }
        // The mapping must outlive the hashing: `MappedFile(path:).bytes` alone lets ARC unmap it early.
        guard isDir.boolValue else {
            let file = try MappedFile(path: path)
            return withExtendedLifetime(file) { SHA256.hex(file.bytes) }
        }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
            .filter { $0.hasSuffix(".json") || $0.hasSuffix(".safetensors") }.sorted()
        var h = SHA256()
        for n in names {
            h.update(Array(n.utf8) + [0])
            let file = try MappedFile(path: (path as NSString).appendingPathComponent(n))
            withExtendedLifetime(file) { h.update(file.bytes) }
        }
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

// MARK: - Calibrating a scheme

extension ActivationQuant {
    /// Whether the activation part needs calibration data (static ranges, SmoothQuant maxima,
    /// outlier channels).
    public var needsCalibration: Bool { isStatic || smoothAlpha != nil || outlierThreshold != nil }
}

extension Scheme {
    /// Whether building this scheme needs a `CalibrationSet` (no calibration file given).
    public var needsCalibrationSet: Bool {
        (activations?.needsCalibration == true && calibrationFile == nil)
            || weights.map { $0.method != .rtn } == true
    }
}

/// The calibration-derived parts of an activation scheme: smoothing factors and outlier channels.
public struct ActivationPlan: Sendable {
    /// SmoothQuant factors s per site (activation divided by s), when the scheme smooths.
    public var smoothing: [SiteID: [Float]]?
    /// Input channels kept in FP32 per site, when the scheme has an outlier threshold.
    public var outliers: [SiteID: [Int]]

    public static let none = ActivationPlan(smoothing: nil, outliers: [:])

    /// From the FP32 channel maxima: factors for `smooth=α`, then the channels whose max |x| after
    /// smoothing exceeds `outlier=T`.
    public static func make(_ a: ActivationQuant, channelMax: [SiteID: [Float]], model: Model) throws -> ActivationPlan {
        var plan = ActivationPlan.none
        if let alpha = a.smoothAlpha {
            plan.smoothing = try SmoothQuant.factors(alpha: alpha, channelMax: channelMax, weights: model.weights, config: model.config)
        }
        if let t = a.outlierThreshold {
            for (id, cm) in channelMax {
                let s = plan.smoothing?[id]
                let ch = cm.indices.filter { Double(cm[$0] / (s?[$0] ?? 1)) > t }
                if !ch.isEmpty { plan.outliers[id] = ch }
            }
        }
        return plan
    }

    /// Per site, the max |x| as the quantizer sees it (divided by s, channels kept in FP32 left
    /// out): for the tensor, and per group of `groupSize` channels when given.
    func quantizedMaxima(_ channelMax: [SiteID: [Float]], groupSize: Int?) -> [SiteID: (upper: Float, groups: [Float], excluded: [Bool]?)] {
        var out: [SiteID: (Float, [Float], [Bool]?)] = [:]
        for (id, cm) in channelMax {
            let s = smoothing?[id]
            var excluded: [Bool]?
            if let o = outliers[id] {
                var e = [Bool](repeating: false, count: cm.count)
                for j in o { e[j] = true }
                excluded = e
            }
            let g = max(1, min(groupSize ?? cm.count, cm.count))
            var groups = [Float](repeating: 0, count: (cm.count + g - 1) / g)
            for j in cm.indices where excluded?[j] != true { groups[j / g] = max(groups[j / g], cm[j] / (s?[j] ?? 1)) }
            out[id] = (groups.max() ?? 0, groups, excluded)
        }
        return out
    }
}

public enum ActivationCalibrator {
    /// Default method when the scheme names none.
    public static let defaultMethod = CalibrationMethod.percentile(99.99)

    /// Calibrates the activation part of `scheme` on `data`: a first FP32 pass for per-channel
    /// maxima (SmoothQuant, outliers), then, with `ranges`, a second pass over the smoothed FP32
    /// model for |x| histograms (outlier channels left out) from which `method` picks each
    /// site's static range. Without `ranges` the range is the max (one pass only).
    /// - Parameter modelSHA256: stated in the artifact (compute with `ModelFingerprint`).
    public static func calibrate(model: Model, scheme: Scheme, data: CalibrationSet, ranges: Bool = true,
                                 modelSHA256: String = "", bins: Int = AbsHistogram.defaultBins,
                                 progress: ((String, Int, Int) -> Void)? = nil) throws -> CalibrationArtifact {
        let a = scheme.activations ?? ActivationQuant(format: .int8, granularity: .tensor, isStatic: true,
                                                      smoothAlpha: nil, outlierThreshold: nil)
        let method = scheme.calibration ?? defaultMethod
        // Static ranges per group of channels when the scheme asks for them.
        let groupSize: Int? = if a.isStatic, case .group(let n) = a.granularity { n } else { nil }
        let first = try ActivationStatistics.collect(model: model, data: data) { progress?("maxima", $0, $1) }
        let channelMax = first.channelMaxAbs
        let plan = try ActivationPlan.make(a, channelMax: channelMax, model: model)
        let maxima = plan.quantizedMaxima(channelMax, groupSize: groupSize)
        var thresholds: [SiteID: [Float]] = [:]
        func usable(_ t: Float) -> Float { t > 0 && t.isFinite ? t : 1 }
        if ranges {
            var weights = model.weights
            if let s = plan.smoothing { weights = try SmoothQuant.apply(s, to: weights, config: model.config) }
            let plans = maxima.mapValues { m in
                groupSize.map { ActivationStatistics.HistogramPlan(groupUppers: m.groups, groupSize: $0, excluded: m.excluded) }
                    ?? ActivationStatistics.HistogramPlan(upper: m.upper, excluded: m.excluded)
            }
            let second = try ActivationStatistics.collect(
                model: model, weights: RuntimeWeights(fp32: weights, config: model.config), data: data,
                histograms: plans, bins: bins) { progress?("histograms", $0, $1) }
            for s in second.sites {
                guard let m = maxima[s.id], !s.histograms.isEmpty else { continue }
                thresholds[s.id] = s.histograms.map { h in usable(RangeCalibration.threshold(method, histogram: h, maxAbs: h.upper)) }
            }
        }
        let sites = first.sites.map { s -> SiteCalibration in
            let m = maxima[s.id] ?? (s.maxAbs, [s.maxAbs], nil)
            let ts = thresholds[s.id] ?? (groupSize == nil ? [m.upper] : m.groups).map(usable)
            let t = ts.max() ?? 1
            var c = SiteCalibration(id: s.id, range: t, scale: t / Float(RangeCalibration.int8Max), maxAbs: m.upper,
                                    channelMaxAbs: s.channelMaxAbs)
            if let g = groupSize {
                c.groupSize = g
                c.groupRanges = ts
                c.groupScales = ts.map { $0 / Float(RangeCalibration.int8Max) }
            }
            return c
        }
        return CalibrationArtifact(
            modelName: model.name, modelSHA256: modelSHA256, scheme: scheme.spec, method: ranges ? method : .minmax,
            smoothAlpha: a.smoothAlpha, outlierThreshold: a.outlierThreshold,
            dataPath: data.source, dataSHA256: data.sha256, tokenCount: data.tokenCount,
            sequenceCount: data.sequences.count, bins: bins, sites: sites)
    }
}
