// MARK: - Presets

/// A named scheme with a one-line description (the CLI contract's preset names).
public struct SchemePreset: Sendable {
    public let name: String
    public let spec: String
    public let summary: String
}

public extension Scheme {
    /// The presets, in the order `quantdrift schemes` lists them.
    static let presets: [SchemePreset] = [
        SchemePreset(name: "fp32", spec: "", summary: "the FP32 reference itself (self-check: zero divergence)"),
        SchemePreset(name: "w8", spec: "w=int8,channel,sym", summary: "int8 weights, one scale per output channel, symmetric"),
        SchemePreset(name: "w4g128", spec: "w=int4,g128,sym", summary: "int4 weights in groups of 128 inputs, symmetric"),
        SchemePreset(name: "w4g32", spec: "w=int4,g32,sym", summary: "int4 weights in groups of 32 inputs, symmetric"),
        SchemePreset(name: "w8a8", spec: "w=int8,channel,sym;a=int8,token,dynamic", summary: "w8 + int8 activations, dynamic per token (Int8×Int8→Int32)"),
        SchemePreset(name: "w8a8-static", spec: "w=int8,channel,sym;a=int8,tensor,static;calib=percentile:99.99", summary: "w8 + int8 activations, one static range per tensor from calibration"),
        SchemePreset(name: "w8a8-smooth", spec: "w=int8,channel,sym;a=int8,token,dynamic,smooth=0.5", summary: "w8a8 with SmoothQuant (α 0.5) folded into the RMSNorm weights"),
        SchemePreset(name: "w4a8", spec: "w=int4,g128,sym;a=int8,token,dynamic", summary: "w4g128 + int8 activations per token (Int4×Int8→Int32)"),
        SchemePreset(name: "w4a4", spec: "w=int4,g128,sym;a=int4,token,dynamic", summary: "w4g128 + int4 activations per token (Int4×Int4→Int32): the case rotations exist for"),
        SchemePreset(name: "w4a4-rot", spec: "w=int4,g128,sym;a=int4,token,dynamic;rot=quarot", summary: "w4a4 with QuaRot rotations: Hadamard residual stream folded into the weights, online Hadamard before ffn_down"),
        SchemePreset(name: "w4a8-rot", spec: "w=int4,g128,sym;a=int8,token,dynamic;rot=quarot", summary: "w4a8 with QuaRot rotations"),
        SchemePreset(name: "kv8", spec: "kv=int8,token,g0,sym", summary: "int8 KV cache, per token, one group per head"),
        SchemePreset(name: "kv4", spec: "kv=int4,token,g32,asym", summary: "int4 KV cache, per token, groups of 32, asymmetric"),
        SchemePreset(name: "kv4-rot", spec: "kv=int4,token,g32,asym,rot", summary: "kv4 with Hadamard rotations of Q/K (after RoPE) and V before quantizing"),
        SchemePreset(name: "kv2", spec: "kv=int2,token,g32,asym", summary: "int2 KV cache, per token, groups of 32, asymmetric"),
        SchemePreset(name: "kv-fp8e4m3", spec: "kv=fp8e4m3,token,g0", summary: "FP8 E4M3 KV cache (emulated), per token, one scale per head (max |x| → 448)"),
        SchemePreset(name: "kv-fp8e5m2", spec: "kv=fp8e5m2,token,g0", summary: "FP8 E5M2 KV cache (emulated), per token, one scale per head (max |x| → 57344)"),
        SchemePreset(name: "kivi2", spec: "kv=int2,k=channel,v=token,g32,asym,res=32", summary: "KIVI 2-bit: per-channel keys, per-token values, g32, FP residual window of 32"),
        SchemePreset(name: "q8_0", spec: "w=q8_0;a=q8_0", summary: "llama.cpp Q8_0 weights, activations in q8_0 blocks (as ggml's CPU path)"),
        SchemePreset(name: "q4_0", spec: "w=q4_0;a=q8_0", summary: "llama.cpp Q4_0 (embedding/head in Q8_0 as llama-quantize does), q8_0 activations"),
        SchemePreset(name: "q4_1", spec: "w=q4_1;a=q8_0", summary: "llama.cpp Q4_1 (embedding/head in Q8_0), q8 activations"),
    ] + ["q8_0", "q5_1", "q5_0", "q4_1", "iq4_nl", "q4_0"].map { t in
        SchemePreset(name: "kv-\(t)", spec: "kv=\(t),rot,q8q",
                     summary: "llama.cpp -ctk \(t) -ctv \(t): its blocks, Hadamard rotation and q8_0 queries (as its flash attention)")
    } + LlamaCppMix.presets.map { m in
        SchemePreset(name: m.rawValue, spec: "w=mix:\(m.rawValue);a=ggml",
                     summary: "llama-quantize \(m.rawValue.uppercased()): its per-tensor formats (fallbacks where rows are not whole 256-blocks), activations as ggml's CPU path")
    }

    /// The grammar, as `quantdrift schemes` prints it.
    static let grammar = """
    components joined by ';' (a preset name may stand for its components):
      w=FORMAT[,tensor|channel|gN][,sym|asym][,rtn|gptq|awq|hqq|mse]      weights (a llama.cpp format falls back as llama-quantize does where rows do not hold whole blocks)
      w=mix:\(LlamaCppMix.allCases.map(\.rawValue).joined(separator: "|"))   llama-quantize's per-tensor formats
      a=\(FormatTraits.names { $0.activations != nil }.joined(separator: "|"))[,token|tensor|gN][,dynamic|static][,smooth=ALPHA][,outlier=T]   activations of every linear input
      a=ggml                                                      activations in the blocks ggml pairs with each weight format (q8_K, q8_0)
      rot=quarot|residual|down                                    QuaRot rotations folded into the weights: the residual stream (Hadamard of the model width), the FFN down input (online Hadamard)
      kv=[FORMAT][,k=FORMAT|channel|token][,v=FORMAT|channel|token][,gN][,sym|asym][,res=N][,sink=N][,prerope][,rot][,q8q]   KV cache (rot: Hadamard rotation, q8q: queries in q8_0 for the key product; both as llama.cpp)
      calib=minmax|percentile:P|mse|entropy|FILE.json              calibration for static ranges
      skip=lm_head|embed|attn_q|attn_k|attn_v|attn_o|ffn_gate|ffn_up|ffn_down|LAYER,...   left in FP32
      hi=FORMAT[,channel|gN][,sym|asym]@TARGET,...               these layers / tensor kinds (as skip=) kept in a higher weight format (quantdrift advise)
    formats: \(FormatTraits.names { _ in true }.joined(separator: " "))
    kv formats: \(FormatTraits.names { $0.kv != nil }.joined(separator: " ")) (FP8: one byte per value, symmetric); kv g0 = one group per head
    """

    /// Parses a preset name or a spec in the scheme language.
    init(parsing text: String) throws {
        let trimmed = text.trimmingSpaces
        guard !trimmed.isEmpty else { throw schemeError("empty scheme") }
        self.init()
        if let preset = Scheme.presets.first(where: { $0.name == trimmed }) {
            if !preset.spec.isEmpty { self = try Scheme(parsing: preset.spec) }
            self.preset = preset.name
            return
        }
        for component in trimmed.split(separator: ";", omittingEmptySubsequences: false).map({ String($0).trimmingSpaces }) {
            guard !component.isEmpty else { throw schemeError("empty component in '\(text)'") }
            if let preset = Scheme.presets.first(where: { $0.name == component }) {
                try merge(Scheme(parsing: preset.spec.isEmpty ? "skip=" : preset.spec), from: component)
                continue
            }
            guard let eq = component.firstIndex(of: "=") else {
                throw schemeError("unknown scheme or component '\(component)'; presets: \(Scheme.presets.map(\.name).joined(separator: ", ")); components: w=, a=, kv=, rot=, calib=, skip=, hi=")
            }
            let key = String(component[..<eq]), value = String(component[component.index(after: eq)...])
            switch key {
            case "w": try setOnce(&weights, try Self.parseWeights(value), "w")
            case "a": try setOnce(&activations, try Self.parseActivations(value), "a")
            case "kv": try setOnce(&kv, try Self.parseKV(value), "kv")
            case "rot": try setOnce(&rotation, try Self.parseRotation(value), "rot")
            case "calib":
                if value.hasSuffix(".json") || value.contains("/") {
                    calibrationFile = value
                } else {
                    try setOnce(&calibration, try Self.parseCalibration(value), "calib")
                }
            case "skip":
                if !value.isEmpty { skip += try Self.parseSkip(value) }
            case "hi":
                guard let at = value.firstIndex(of: "@"), value.index(after: at) != value.endIndex else {
                    throw schemeError("hi= takes FORMAT@TARGETS, like hi=int8,channel,sym@0,29,lm_head")
                }
                let w = try Self.parseWeights(String(value[..<at]))
                try setOnce(&upgrade, WeightUpgrade(weights: w, targets: try Self.parseSkip(String(value[value.index(after: at)...]))), "hi")
            default:
                throw schemeError("unknown component '\(key)='; known: w=, a=, kv=, rot=, calib=, skip=, hi=")
            }
        }
        try validate()
    }

    private mutating func merge(_ other: Scheme, from name: String) throws {
        if let w = other.weights { try setOnce(&weights, w, "w (from \(name))") }
        if let a = other.activations { try setOnce(&activations, a, "a (from \(name))") }
        if let k = other.kv { try setOnce(&kv, k, "kv (from \(name))") }
        if let c = other.calibration { try setOnce(&calibration, c, "calib (from \(name))") }
        if let r = other.rotation { try setOnce(&rotation, r, "rot (from \(name))") }
        skip += other.skip
    }

    /// Checks combinations that parse but make no sense.
    func validate() throws {
        if let a = activations {
            guard a.format.traits.activations != nil else {
                throw schemeError("activation format \(a.format.rawValue) is not supported; supported: \(FormatTraits.names { $0.activations != nil }.joined(separator: ", "))")
            }
            if case .channel = a.granularity { throw schemeError("activations take token, tensor or gN granularity, not channel") }
            if a.isStatic, case .token = a.granularity { throw schemeError("static activation ranges are per tensor or per group, not per token") }
            if a.format == .int4, a.isStatic || a.smoothAlpha != nil || a.outlierThreshold != nil {
                throw schemeError("int4 activations are dynamic (per token or group); static ranges, smooth= and outlier= are calibrated for int8")
            }
            if let alpha = a.smoothAlpha, !(alpha >= 0 && alpha <= 1) { throw schemeError("smooth=\(alpha) must be in [0, 1]") }
            if let t = a.outlierThreshold, !(t > 0) { throw schemeError("outlier=\(t) must be positive") }
        }
        if rotation != nil {
            if let a = activations, a.isStatic || a.smoothAlpha != nil || a.outlierThreshold != nil {
                throw schemeError("rot= with calibrated activations (static ranges, smooth=, outlier=) is not supported: calibration runs on the unrotated model")
            }
            if let w = weights, w.method.needsCalibration {
                throw schemeError("rot= with \(w.method.rawValue) is not supported: its calibration runs on the unrotated model")
            }
        }
        if let up = upgrade {
            guard weights != nil else { throw schemeError("hi= keeps tensors in a higher weight format: it needs w=") }
            if up.weights.mix != nil { throw schemeError("hi= takes one weight format, not a mix") }
            if up.weights.method.needsCalibration { throw schemeError("hi= formats are round-to-nearest (or hqq, mse): \(up.weights.method.rawValue) is not supported there") }
        }
        if activations?.followsWeights == true, !(weights.map { $0.format.isBlockFormat || $0.format.ggmlType != nil } ?? false) {
            throw schemeError("a=ggml needs llama.cpp weights (w=q8_0, q4_0, q4_k, mix:q4_k_m, …)")
        }
        if let w = weights {
            if case .token = w.granularity { throw schemeError("weights take tensor, channel or gN granularity, not token") }
            if !w.format.traits.weights.methods.contains(w.method) {
                let formats = FormatTraits.names { $0.weights.methods.contains(w.method) }
                let list = formats.count > 1 ? formats.dropLast().joined(separator: ", ") + " and " + formats.last! : formats.first ?? "no"
                throw schemeError("\(w.method.rawValue) applies to \(list) weights, not \(w.format.rawValue)")
            }
        }
    }

    // MARK: Components

    private static func parseFormat(_ s: String) throws -> NumberFormat {
        guard let f = NumberFormat(rawValue: s) else {
            throw schemeError("unknown format \(s); known: \(NumberFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return f
    }

    private static func parseGroup(_ s: String) throws -> Int? {
        guard s.hasPrefix("g"), let n = Int(s.dropFirst()) else { return nil }
        guard n >= 0, n <= 1 << 16 else { throw schemeError("group size \(n) out of range 1...65536") }
        return n
    }

    static func parseWeights(_ value: String) throws -> WeightQuant {
        let items = value.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingSpaces }
        if items[0].hasPrefix("mix:") {
            guard let mix = LlamaCppMix(rawValue: String(items[0].dropFirst(4))) else {
                throw schemeError("unknown llama.cpp mix '\(items[0].dropFirst(4))'; known: \(LlamaCppMix.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard items.count == 1 else { throw schemeError("w=mix:\(mix.rawValue) takes no options (its rules fix every tensor's format)") }
            let t = mix.base.traits.weights
            return WeightQuant(format: mix.base, granularity: t.granularity, symmetric: t.symmetric, method: .rtn, mix: mix)
        }
        let format = try parseFormat(items[0])
        let traits = format.traits.weights
        var w = WeightQuant(format: format, granularity: traits.granularity, symmetric: traits.symmetric, method: .rtn)
        var symmetry: Bool?
        for item in items.dropFirst() {
            switch item {
            case "tensor": w.granularity = .tensor
            case "channel": w.granularity = .channel
            case "sym": symmetry = true
            case "asym": symmetry = false
            case _ where QuantMethod(rawValue: item) != nil: w.method = QuantMethod(rawValue: item)!
            default:
                if let g = try parseGroup(item) {
                    guard g >= 1 else { throw schemeError("weight group size must be ≥ 1") }
                    w.granularity = .group(g)
                } else {
                    throw schemeError("unknown weight option '\(item)' in w=\(value); known: tensor, channel, gN, sym, asym, \(QuantMethod.allCases.map(\.rawValue).joined(separator: ", "))")
                }
            }
        }
        // HQQ fits a zero point: asymmetric unless asked otherwise (and then refused).
        w.symmetric = symmetry ?? (w.method == .hqq ? false : traits.symmetric)
        if w.method == .hqq, w.symmetric { throw schemeError("hqq fits a scale and a zero point per group: it is asymmetric (drop sym)") }
        if traits.fixedLayout {
            guard w.granularity == traits.granularity else { throw schemeError("\(format.rawValue) has fixed blocks of \(traits.granularity.description.dropFirst())") }
            guard w.symmetric == traits.symmetric else { throw schemeError("\(format.rawValue) has a fixed symmetry") }
        }
        return w
    }

    /// `rot=quarot` (residual and down), `rot=residual`, `rot=down`, or `rot=residual,down`.
    static func parseRotation(_ value: String) throws -> WeightRotation {
        var r = WeightRotation(residual: false, down: false)
        for item in value.split(separator: ",", omittingEmptySubsequences: false).map({ String($0).trimmingSpaces }) {
            switch item {
            case "quarot": r.residual = true; r.down = true
            case "residual": r.residual = true
            case "down": r.down = true
            default: throw schemeError("unknown rotation '\(item)' in rot=\(value); known: quarot (= residual,down), residual, down")
            }
        }
        return r
    }

    static func parseActivations(_ value: String) throws -> ActivationQuant {
        let items = value.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingSpaces }
        if items[0] == "ggml" {
            guard items.count == 1 else { throw schemeError("a=ggml takes no options (each weight format fixes its activation blocks)") }
            return ActivationQuant(format: .q8_0, granularity: .group(32), isStatic: false, smoothAlpha: nil, outlierThreshold: nil,
                                   followsWeights: true)
        }
        let format = try parseFormat(items[0])
        let traits = format.traits.activations
        var a = ActivationQuant(format: format, granularity: traits?.granularity ?? .token, isStatic: false,
                                smoothAlpha: nil, outlierThreshold: nil)
        for item in items.dropFirst() {
            switch item {
            case "token": a.granularity = .token
            case "tensor": a.granularity = .tensor
            case "channel": a.granularity = .channel
            case "dynamic": a.isStatic = false
            case "static": a.isStatic = true
            default:
                if item.hasPrefix("smooth=") {
                    guard let v = Double(item.dropFirst(7)) else { throw schemeError("smooth= needs a number, got '\(item)'") }
                    a.smoothAlpha = v
                } else if item.hasPrefix("outlier=") {
                    guard let v = Double(item.dropFirst(8)) else { throw schemeError("outlier= needs a number, got '\(item)'") }
                    a.outlierThreshold = v
                } else if let g = try parseGroup(item) {
                    guard g >= 1 else { throw schemeError("activation group size must be ≥ 1") }
                    a.granularity = .group(g)
                } else {
                    throw schemeError("unknown activation option '\(item)' in a=\(value); known: token, tensor, gN, dynamic, static, smooth=A, outlier=T")
                }
            }
        }
        if let traits, traits.fixedLayout, a.granularity != traits.granularity {
            throw schemeError("\(format.rawValue) activations have fixed blocks of \(traits.granularity.description.dropFirst())")
        }
        return a
    }

    static func parseKV(_ value: String) throws -> KVQuant {
        // Options before k=/v= apply to both parts; k=FORMAT:AXIS:gN:sym sets one part's own.
        struct PartOptions { var format: NumberFormat?; var axis: Granularity?; var group: Int?; var symmetric: Bool? }
        var shared = PartOptions(), key = PartOptions(), val = PartOptions()
        var kv = KVQuant(key: nil, value: nil, residual: 0, sinks: 0, preRoPE: false)
        func apply(_ item: String, to p: inout PartOptions) throws -> Bool {
            if let f = NumberFormat(rawValue: item) { p.format = f; return true }
            switch item {
            case "sym": p.symmetric = true
            case "asym": p.symmetric = false
            case "token": p.axis = .token
            case "channel": p.axis = .channel
            case "fp32": p.format = nil
            default:
                guard let g = try parseGroup(item) else { return false }
                p.group = g
            }
            return true
        }
        for item in value.split(separator: ",", omittingEmptySubsequences: false).map({ String($0).trimmingSpaces }) {
            if item.hasPrefix("k=") || item.hasPrefix("v=") {
                let isKey = item.hasPrefix("k=")
                for sub in item.dropFirst(2).split(separator: ":").map(String.init) {
                    if isKey {
                        guard try apply(sub, to: &key) else { throw schemeError("unknown KV option '\(sub)' in \(item)") }
                    } else {
                        guard try apply(sub, to: &val) else { throw schemeError("unknown KV option '\(sub)' in \(item)") }
                    }
                }
                continue
            }
            if try apply(item, to: &shared) { continue }
            if item == "prerope" {
                kv.preRoPE = true
            } else if item == "rot" {
                kv.rotate = true
            } else if item == "q8q" {
                kv.roundQueries = true
            } else if item.hasPrefix("res="), let n = Int(item.dropFirst(4)), n >= 0, n <= 1 << 20 {
                kv.residual = n
            } else if item.hasPrefix("sink="), let n = Int(item.dropFirst(5)), n >= 0, n <= 1 << 20 {
                kv.sinks = n
            } else {
                throw schemeError("unknown KV option '\(item)' in kv=\(value); known: FORMAT, k=…, v=…, token, channel, gN, sym, asym, res=N, sink=N, prerope, rot, q8q")
            }
        }
        func resolve(_ p: PartOptions, isKey: Bool) throws -> KVPartQuant? {
            guard let f = p.format ?? shared.format else { return nil }
            let axis = p.axis ?? (isKey ? shared.axis : nil) ?? .token
            if !isKey && axis == .channel { throw schemeError("values are quantized per token; v=channel is not supported") }
            // Defaults from the format (8-bit formats: one scale per head); FP8 is sign-magnitude, so always symmetric.
            let traits = try FormatTraits.kv(f)
            if traits.ggml != nil {
                // llama.cpp's cache types fix their blocks: 32 values per token along the head dimension.
                guard axis == .token else { throw schemeError("\(f.rawValue) KV blocks are per token; channel does not apply") }
                if let g = p.group ?? shared.group, g != 32 { throw schemeError("\(f.rawValue) KV blocks hold 32 values; g\(g) does not apply") }
                if let s = p.symmetric ?? shared.symmetric, s != traits.symmetric { throw schemeError("\(f.rawValue) KV blocks have a fixed symmetry") }
            }
            let g = p.group ?? shared.group ?? traits.group
            if axis == .channel && g == 0 { throw schemeError("per-channel keys need a token group size gN") }
            let symmetric = p.symmetric ?? shared.symmetric ?? traits.symmetric
            if traits.signMagnitude && !symmetric { throw schemeError("\(f.rawValue) KV codes are sign-magnitude with one scale per group; asym does not apply") }
            return KVPartQuant(format: f, axis: axis, groupSize: g, symmetric: symmetric)
        }
        kv.key = try resolve(key, isKey: true)
        kv.value = try resolve(val, isKey: false)
        guard kv.key != nil || kv.value != nil else {
            throw schemeError("kv= needs a format (e.g. kv=int8 or k=int4,v=int8)")
        }
        if kv.rotate == true && kv.preRoPE { throw schemeError("rot rotates keys after RoPE; it does not combine with prerope") }
        if kv.roundQueries == true && kv.key == nil { throw schemeError("q8q rounds the queries of a quantized K cache; this scheme keeps K in FP32") }
        return kv
    }

    static func parseCalibration(_ value: String) throws -> CalibrationMethod {
        switch value {
        case "minmax": return .minmax
        case "mse": return .mse
        case "entropy": return .entropy
        default:
            if value.hasPrefix("percentile:"), let p = Double(value.dropFirst(11)), p > 0, p <= 100 { return .percentile(p) }
            throw schemeError("unknown calibration '\(value)'; known: minmax, percentile:P (0 < P ≤ 100), mse, entropy, or a calibration FILE.json")
        }
    }

    static let skippableTensors = ["lm_head", "embed", "attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate", "ffn_up", "ffn_down"]

    static func parseSkip(_ value: String) throws -> [SkipItem] {
        try value.split(separator: ",", omittingEmptySubsequences: false).map { s in
            let item = String(s).trimmingSpaces
            if let i = Int(item) {
                guard i >= 0 else { throw schemeError("skip layer \(i) must be ≥ 0") }
                return .layer(i)
            }
            guard skippableTensors.contains(item) else {
                throw schemeError("unknown skip item '\(item)'; known: a layer number or \(skippableTensors.joined(separator: ", "))")
            }
            return .tensor(item)
        }
    }
}

private func setOnce<T>(_ slot: inout T?, _ value: T, _ name: String) throws {
    guard slot == nil else { throw schemeError("component \(name) given twice") }
    slot = value
}

private func schemeError(_ message: String) -> QuantDriftError {
    .invalidInput("scheme: " + message)
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s.removeFirst() }
        while s.last?.isWhitespace == true { s.removeLast() }
        return String(s)
    }
}
