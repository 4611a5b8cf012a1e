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
        try AtomicFile.write(Data((json.serialized(pretty: true) + "\n").utf8), to: URL(fileURLWithPath: path))
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
