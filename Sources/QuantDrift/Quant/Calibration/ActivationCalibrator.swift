import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension ActivationQuant {
    /// Whether the activation part needs calibration data (static ranges, SmoothQuant maxima,
    /// outlier channels).
    public var needsCalibration: Bool { isStatic || smoothAlpha != nil || outlierThreshold != nil }
}

extension Scheme {
    /// Whether building this scheme needs a `CalibrationSet` (no calibration file given).
    public var needsCalibrationSet: Bool {
        (activations?.needsCalibration == true && calibrationFile == nil)
            || weights.map { $0.method.needsCalibration } == true
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
    /// - Parameter modelSHA256: stated in the artifact (compute with `FileDigest`).
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
