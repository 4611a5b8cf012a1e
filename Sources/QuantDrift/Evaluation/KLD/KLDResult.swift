/// The statistics block of llama.cpp's `llama-perplexity --kl-divergence`, computed the same way
/// (mean ± uncertainty from running sums, interpolated percentiles) from exact float64
/// divergences: llama.cpp stores the base log-probabilities in 16 bits over a 16-nat window and
/// skips tokens with P < e⁻¹⁶, which is why its near-zero KLDs can be slightly negative.
public struct KLDResult: Sendable {
    public var nCtx: Int
    public var chunks: Int
    public var tokensScored: Int
    public var pplBase: Double
    public var pplBaseSE: Double
    public var ppl: Double
    public var pplSE: Double
    public var meanKLD: Double
    public var meanKLDSE: Double
    public var maxKLD: Double
    public var minKLD: Double
    /// Keys "99.9", "99", "95", "90", "50", "10", "5", "1", "0.1".
    public var kldPercentiles: [(String, Double)]
    public var sameTopP: Double
    public var sameTopPSE: Double
    public var meanDp: Double
    public var rmsDp: Double
    public var meanTV: Double
    public var seconds: Double
    /// Every token processed (chunks × n_ctx) per second; each is run by the reference and the candidate.
    public var tokensPerSecond: Double
    /// Seconds spent in each phase, summed over the two lanes ("reference_forward",
    /// "candidate_forward", "trace_read", "log_softmax", "compare", "trace_write"), to show where the time goes.
    public var phaseSeconds: [(String, Double)] = []
}
