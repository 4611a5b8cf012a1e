// MARK: - Parts of a scheme

/// Over which elements one scale (and zero point) is shared.
public enum Granularity: Sendable, Hashable, Codable, CustomStringConvertible {
    case tensor
    /// One per output row of a weight (per-channel) or per head-dim channel of the K cache.
    case channel
    /// One per activation row (token) or per KV entry.
    case token
    /// Groups of N consecutive elements along the reduction (input) dimension.
    case group(Int)

    public var description: String {
        switch self {
        case .tensor: "tensor"
        case .channel: "channel"
        case .token: "token"
        case .group(let n): "g\(n)"
        }
    }
}

public enum QuantMethod: String, Sendable, Codable, CaseIterable {
    /// Round to nearest.
    case rtn
    /// GPTQ: column-by-column rounding with error feedback from the calibration Hessian.
    case gptq
    /// AWQ: activation-aware per-input-channel scales searched on calibration data.
    case awq
    /// HQQ: calibration-free half-quadratic fit of each group's zero point (asymmetric int4/3/2).
    case hqq
    /// Scales searched for the least squared error of each block (NVFP4).
    case mse

    /// Runs the FP32 model over calibration data first.
    public var needsCalibration: Bool { self == .gptq || self == .awq }
}

/// How static activation ranges are found on calibration data.
public enum CalibrationMethod: Sendable, Hashable, Codable, CustomStringConvertible {
    case minmax
    case percentile(Double)
    case mse
    case entropy

    public var description: String {
        switch self {
        case .minmax: "minmax"
        case .percentile(let p): "percentile:\(formatNumber(p))"
        case .mse: "mse"
        case .entropy: "entropy"
        }
    }
}

public struct WeightQuant: Sendable, Hashable, Codable {
    public var format: NumberFormat
    public var granularity: Granularity
    public var symmetric: Bool
    public var method: QuantMethod
    /// A llama-quantize file type: each tensor gets the format its rules pick (`format` is the
    /// mix's base format).
    public var mix: LlamaCppMix? = nil
}

public struct ActivationQuant: Sendable, Hashable, Codable {
    public var format: NumberFormat
    public var granularity: Granularity
    /// Ranges from calibration (static) rather than from each row as it comes (dynamic).
    public var isStatic: Bool
    /// SmoothQuant migration strength α, folded into the preceding RMSNorm weights.
    public var smoothAlpha: Double?
    /// LLM.int8()-style: input channels whose calibration max |x| exceeds this stay in FP32.
    public var outlierThreshold: Double?
    /// `a=ggml`: each product's activations in the blocks ggml's CPU path pairs with its weight
    /// format (q8_K for the k-quants, q8_0 for the 32-element formats).
    public var followsWeights: Bool? = nil
}

/// How one of K and V is stored in the cache.
public struct KVPartQuant: Sendable, Hashable, Codable {
    public var format: NumberFormat
    /// `.token`: groups along the head dimension of each entry; `.channel`: per channel over
    /// groups of tokens (KIVI keys).
    public var axis: Granularity
    public var groupSize: Int
    public var symmetric: Bool
}

public struct KVQuant: Sendable, Hashable, Codable {
    public var key: KVPartQuant?
    public var value: KVPartQuant?
    /// Most recent tokens kept in full precision (KIVI's residual window).
    public var residual: Int
    /// First tokens kept in FP32 (attention sinks).
    public var sinks: Int
    /// Quantize keys before RoPE (RoPE applied on read).
    public var preRoPE: Bool
    /// Hadamard-rotate before quantizing, as llama.cpp's quantized caches do: Q and K per head
    /// after RoPE (order: the largest power of 2 ≥ 64 dividing the head size), V in chunks of 64
    /// with the attention output rotated back.
    public var rotate: Bool? = nil
    /// Queries rounded to q8_0 blocks before the key product, as ggml's flash attention does
    /// on a quantized K cache (its vec_dot type).
    public var roundQueries: Bool? = nil
}

/// Tensors kept in a higher weight format than the scheme's (`hi=FORMAT@TARGETS`): layers (all
/// their matrices) and tensor kinds (in every layer), as `skip=` names them. `quantdrift advise`
/// writes these; `skip=` is the FP32 case.
public struct WeightUpgrade: Sendable, Hashable, Codable {
    public var weights: WeightQuant
    public var targets: [SkipItem]

    public init(weights: WeightQuant, targets: [SkipItem]) {
        self.weights = weights
        self.targets = targets
    }

    /// Whether tensor `kind` of `layer` (nil: the embedding or the head) is kept in the higher format.
    public func covers(kind: String, layer: Int?) -> Bool {
        targets.contains { t in
            switch t {
            case .layer(let l): layer == l
            case .tensor(let k): k == kind
            }
        }
    }
}

/// What stays in FP32.
public enum SkipItem: Sendable, Hashable, Codable, CustomStringConvertible {
    case layer(Int)
    case tensor(String)

    public var description: String {
        switch self {
        case .layer(let i): String(i)
        case .tensor(let s): s
        }
    }
}

// MARK: - Scheme

/// A quantization scheme: what is quantized (weights, activations, KV cache), in which format
/// and granularity, symmetric or not, with which method and calibration, and what is skipped.
/// Parsed from and printed back to the language of DESIGN §3, e.g. `w=int4,g32,asym;kv=int8`.
/// QuaRot-style rotations folded into the weights (`rot=`; `QuaRot`): the residual stream
/// rotated by a Hadamard matrix of the model width, and/or the FFN down projection's input rotated
/// online by one of the FFN width. They change what gets quantized, not the FP32 function.
public struct WeightRotation: Sendable, Hashable, Codable {
    public var residual: Bool
    public var down: Bool

    public init(residual: Bool, down: Bool) {
        self.residual = residual
        self.down = down
    }
}

public struct Scheme: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The preset name this scheme came from, if any.
    public var preset: String?
    public var weights: WeightQuant?
    public var activations: ActivationQuant?
    public var kv: KVQuant?
    public var calibration: CalibrationMethod?
    /// A calibration artifact to load static ranges from (`calib=FILE`).
    public var calibrationFile: String?
    public var skip: [SkipItem]
    /// Rotations folded into the weights before they are quantized (`rot=`).
    public var rotation: WeightRotation? = nil
    /// Tensors kept in a higher weight format (`hi=`).
    public var upgrade: WeightUpgrade? = nil

    public init(preset: String? = nil, weights: WeightQuant? = nil, activations: ActivationQuant? = nil, kv: KVQuant? = nil,
                calibration: CalibrationMethod? = nil, calibrationFile: String? = nil, skip: [SkipItem] = []) {
        self.preset = preset
        self.weights = weights
        self.activations = activations
        self.kv = kv
        self.calibration = calibration
        self.calibrationFile = calibrationFile
        self.skip = skip
    }

    /// True for the FP32 reference (nothing quantized).
    public var isReference: Bool { weights == nil && activations == nil && kv == nil && rotation == nil }

    /// The name to show: the preset, or the canonical spec.
    public var name: String { preset ?? spec }

    /// Canonical text: components in the order w, a, kv, rot, calib, skip, every option explicit.
    public var spec: String {
        var parts: [String] = []
        if let w = weights { parts.append("w=" + Self.weightsText(w)) }
        if let a = activations, a.followsWeights == true {
            parts.append("a=ggml")
        } else if let a = activations {
            var s = "a=\(a.format.rawValue)"
            if a.format.traits.activations?.fixedLayout != true { s += ",\(a.granularity),\(a.isStatic ? "static" : "dynamic")" }
            if let alpha = a.smoothAlpha { s += ",smooth=\(formatNumber(alpha))" }
            if let t = a.outlierThreshold { s += ",outlier=\(formatNumber(t))" }
            parts.append(s)
        }
        if let kv {
            func part(_ p: KVPartQuant) -> String {
                "\(p.format.rawValue):\(p.axis == .channel ? "channel" : "token"):g\(p.groupSize):\(p.symmetric ? "sym" : "asym")"
            }
            var s = "kv="
            s += "k=" + (kv.key.map(part) ?? "fp32") + ",v=" + (kv.value.map(part) ?? "fp32")
            if kv.residual > 0 { s += ",res=\(kv.residual)" }
            if kv.sinks > 0 { s += ",sink=\(kv.sinks)" }
            if kv.preRoPE { s += ",prerope" }
            if kv.rotate == true { s += ",rot" }
            if kv.roundQueries == true { s += ",q8q" }
            parts.append(s)
        }
        if let r = rotation { parts.append("rot=" + [r.residual ? "residual" : nil, r.down ? "down" : nil].compactMap { $0 }.joined(separator: ",")) }
        if let c = calibration { parts.append("calib=\(c)") }
        if let f = calibrationFile { parts.append("calib=\(f)") }
        if !skip.isEmpty { parts.append("skip=" + skip.map(\.description).joined(separator: ",")) }
        if let up = upgrade {
            parts.append("hi=" + Self.weightsText(up.weights) + "@" + up.targets.map(\.description).joined(separator: ","))
        }
        return parts.isEmpty ? "fp32" : parts.joined(separator: ";")
    }

    /// A weight format with every option explicit, as after `w=`.
    static func weightsText(_ w: WeightQuant) -> String {
        var s = w.mix.map { "mix:" + $0.rawValue } ?? w.format.rawValue
        if !w.format.traits.weights.fixedLayout { s += ",\(w.granularity),\(w.symmetric ? "sym" : "asym")" }
        if w.method != .rtn { s += ",\(w.method.rawValue)" }
        return s
    }

    public var description: String { name == spec ? spec : "\(name) (\(spec))" }
}

func formatNumber(_ x: Double) -> String {
    x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x)
}
