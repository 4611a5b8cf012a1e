/// llama-quantize's file types ("ftypes"): a mix of ggml formats chosen tensor by tensor, as
/// llama.cpp's `llama_tensor_get_type` chooses them without an importance matrix or overrides.
/// Only the rules that apply to dense decoder-only models are kept (no MoE, Falcon, fused QKV or
/// IQ types). A test checks every mix against the types llama-quantize wrote for the default model.
public enum LlamaCppMix: String, Sendable, Codable, CaseIterable {
    case q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k
    /// The 32-block types: one format, the tied embedding/head by the output rule.
    case q4_0, q4_1, q5_0, q5_1, q8_0

    /// The mix's base format: every tensor no rule moves.
    public var base: NumberFormat {
        switch self {
        case .q2_k: .q2_k
        case .q3_k_s, .q3_k_m, .q3_k_l: .q3_k
        case .q4_k_s, .q4_k_m: .q4_k
        case .q5_k_s, .q5_k_m: .q5_k
        case .q6_k: .q6_k
        case .q4_0: .q4_0
        case .q4_1: .q4_1
        case .q5_0: .q5_0
        case .q5_1: .q5_1
        case .q8_0: .q8_0
        }
    }

    /// The mixes `quantdrift schemes` offers as presets (q4_0, q4_1 and q8_0 have their own,
    /// on the integer kernels).
    public static let presets: [LlamaCppMix] = allCases.filter { ![.q4_0, .q4_1, .q8_0].contains($0) }

    /// layers with more bits in the _M mixes: the first and last eighth, and every third between.
    static func useMoreBits(_ layer: Int, _ layers: Int) -> Bool {
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
    }

    /// The format of tensor `kind` ("attn_q", …, "ffn_down", "lm_head", "embed") of `layer`
    /// (nil for the embedding and head) whose rows are `cols` long, in a model of `layers`
    /// layers with `gqa` query heads per KV head; `tiedHead`: the embedding is also the head.
    public func format(kind: String, layer: Int?, cols: Int, layers: Int, gqa: Int, tiedHead: Bool) -> NumberFormat {
        var f = base
        let moreBits = layer.map { Self.useMoreBits($0, layers) } ?? false
        switch kind {
        case "lm_head":
            f = headFormat(cols: cols)
        case "embed":
            if tiedHead { f = headFormat(cols: cols) }
        case "attn_v":
            let i = layer ?? 0
            switch self {
            case .q2_k: f = gqa >= 4 ? .q4_k : .q3_k
            case .q3_k_m: f = i < 2 ? .q5_k : .q4_k
            case .q3_k_l: f = .q5_k
            case .q4_k_m, .q5_k_m: if moreBits { f = .q6_k }
            case .q4_k_s: if i < 4 { f = .q5_k }
            default: break
            }
        case "ffn_down":
            let i = layer ?? 0
            switch self {
            case .q2_k: f = .q3_k
            case .q3_k_m: f = i < layers / 16 ? .q5_k : .q4_k
            case .q3_k_l: f = .q5_k
            case .q4_k_m, .q5_k_m: if moreBits { f = .q6_k }
            case .q4_k_s: if i < layers / 8 { f = .q5_k }
            default: break
            }
        case "attn_o":
            switch self {
            case .q2_k: f = .q3_k
            case .q3_k_m: f = .q4_k
            case .q3_k_l: f = .q5_k
            default: break
            }
        default:
            break
        }
        return Self.fallback(f, cols: cols)
    }

    /// The output matrix (and a tied embedding): Q8_0 when its rows do not hold whole blocks of
    /// the base format, otherwise Q6_K unless the base is Q8_0.
    func headFormat(cols: Int) -> NumberFormat {
        cols % base.blockSize != 0 || base == .q8_0 ? .q8_0 : .q6_k
    }

    /// llama-quantize's fallback when a row is not a whole number of the format's blocks
    /// (SmolLM2's 576-wide rows and the k-quants' 256).
    static func fallback(_ f: NumberFormat, cols: Int) -> NumberFormat {
        guard cols % f.blockSize != 0 else { return f }
        switch f {
        case .q2_k, .q3_k: return .q4_0
        case .q4_k: return .q5_0
        case .q5_k: return .q5_1
        case .q6_k: return .q8_0
        default: return f
        }
    }
}
