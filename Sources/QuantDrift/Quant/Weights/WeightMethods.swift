import Foundation

/// The weight methods that need calibration data (GPTQ, AWQ), prepared once per scheme build:
/// the FP32 model runs over the calibration set with an activation observer, then
/// - GPTQ keeps XᵀX of every linear input and quantizes each matrix from its site's Hessian;
/// - AWQ searches per-channel scales and hands out the scaled, folded FP32 weights, which are
///   then rounded by plain RTN.
/// The head (and a tied embedding) is rounded by RTN in both.
final class CalibratedWeights {
    let method: QuantMethod
    /// The weights to quantize: the model's (GPTQ) or scaled and folded (AWQ).
    let weights: ModelWeights
    /// AWQ's scales (per layer), for inspection.
    let awqScales: [AWQ.LayerScales]?
    private let stats: LinearInputStats?
    private let config: ModelConfig
    /// GPTQ: the inverse-Hessian factor of the last site used (q, k and v share one).
    private var factorCache: (index: Int, u: [Double])?

    /// nil when the scheme's weights need no calibration.
    init?(model: Model, spec: WeightQuant?, calibration: CalibrationSet?) throws {
        guard let spec, spec.method.needsCalibration else { return nil }
        guard let calibration else {
            throw QuantDriftError.invalidInput("scheme: \(spec.method.rawValue) weights need calibration data; pass a calibration set (on the command line: --calibration DIR with .txt files)")
        }
        guard spec.format.isUniformInteger else {
            throw QuantDriftError.invalidInput("scheme: \(spec.method.rawValue) applies to int4, int3 and int2 weights, not \(spec.format.rawValue)")
        }
        method = spec.method
        config = model.config
        switch spec.method {
        case .gptq:
            stats = try LinearInputStats.collect(model: model, calibration: calibration, options: .init(gram: true))
            weights = model.weights
            awqScales = nil
        case .awq:
            let s = try LinearInputStats.collect(model: model, calibration: calibration,
                                                 options: .init(absSum: true, sampleRows: 128))
            var group = Int.max  // per channel or tensor: the whole row
            if case .group(let n) = spec.granularity { group = n }
            let grid = AWQ.Grid(uniform: UniformGrid(bits: spec.format.bits, symmetric: spec.symmetric),
                                group: group, sharedAcrossRows: spec.granularity == .tensor)
            let scales = AWQ.search(weights: model.weights, config: model.config, stats: s, grid: grid)
            awqScales = scales
            weights = AWQ.apply(scales, to: model.weights, config: model.config)
            stats = nil
        case .rtn, .hqq, .mse:
            return nil
        }
    }

    /// The site whose input a matrix (scheme skip name) reads.
    static func site(of kind: String) -> LinearSite? {
        switch kind {
        case "attn_q", "attn_k", "attn_v": .attentionInput
        case "attn_o": .attentionOutput
        case "ffn_gate", "ffn_up": .feedForwardInput
        case "ffn_down": .feedForwardDownInput
        default: nil
        }
    }

    /// GPTQ's quantization of a layer matrix; nil where RTN applies (AWQ, the head).
    func quantize(_ w: [Float], rows: Int, cols: Int, kind: String, layer: Int?, spec: WeightQuant) throws -> QuantizedMatrix? {
        guard method == .gptq, let stats, let layer, let site = Self.site(of: kind),
              let i = stats.index(layer: layer, site: site) else { return nil }
        let group = try WeightQuantizer.uniformGroup(spec, cols: cols)
        let u: [Double]
        if let c = factorCache, c.index == i {
            u = c.u
        } else {
            u = try GPTQ.inverseHessianFactor(gram: stats.gram[i], n: cols, count: stats.counts[i])
            factorCache = (i, u)
        }
        return GPTQ.quantize(w, rows: rows, cols: cols, bits: spec.format.bits, group: group,
                             sharedAcrossRows: spec.granularity == .tensor, symmetric: spec.symmetric, hinvU: u)
    }
}
