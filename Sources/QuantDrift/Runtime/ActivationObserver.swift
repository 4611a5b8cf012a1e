/// The places where activations enter linear layers: each feeds one or more matrices.
public enum LinearSite: String, Sendable, CaseIterable, Codable {
    /// Normed block input: feeds attn_q, attn_k, attn_v.
    case attentionInput = "attn_in"
    /// Attention output: feeds attn_o.
    case attentionOutput = "attn_out"
    /// Normed input of the feed-forward block: feeds ffn_gate, ffn_up.
    case feedForwardInput = "ffn_in"
    /// SwiGLU product: feeds ffn_down.
    case feedForwardDownInput = "ffn_down_in"
    /// Final normed hidden state: feeds the output head (layer index = layer count).
    case headInput = "head_in"

    /// The matrices (scheme skip names) that read this input.
    public var consumers: [String] {
        switch self {
        case .attentionInput: ["attn_q", "attn_k", "attn_v"]
        case .attentionOutput: ["attn_o"]
        case .feedForwardInput: ["ffn_gate", "ffn_up"]
        case .feedForwardDownInput: ["ffn_down"]
        case .headInput: ["lm_head"]
        }
    }
}

/// Receives the FP32 input of every linear site during a forward pass: (rows, width) row-major,
/// valid only during the call. Used by calibration and activation profiling; nil costs nothing.
public protocol ActivationObserver: AnyObject {
    func observe(layer: Int, site: LinearSite, x: UnsafePointer<Float>, rows: Int, width: Int)
}
