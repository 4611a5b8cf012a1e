/// One candidate's results on one prompt.
public struct PromptResult: Sendable {
    public var promptIndex: Int
    /// Teacher-forced divergences, one per continuation position.
    public var positions: [TokenDivergence] = []
    /// TV of the sampling distributions at each position (greedy: 1 when the argmax differs).
    public var samplingTV: [Double] = []
    /// Free-running: the candidate's own continuation.
    public var freeTokens: [Int]?
    /// 0-based index of the first token that differs from the reference's; nil = never.
    public var firstDivergence: Int?
    /// Greedy runs: the reference's logit of its own token minus that of the candidate's at the
    /// first divergence (nats; ≤ the noise floor's tie margin: a tie flip). Nil when the texts
    /// part by length or the run samples.
    public var firstDivergenceMargin: Double?
    public var reconverged: Bool?
    /// Mean −log P(y) of the candidate's free-running tokens under the reference.
    public var candidateTextNLL: Double?
    /// Mean relative error of cached keys/values by age (KV schemes), keyed by age bin.
    public var kvErrorByAge: [(sum: Double, count: Int)]?
    /// The same errors binned by the entry's position in the sequence (log-spaced bins of position + 1).
    public var kvErrorByPosition: [(sum: Double, count: Int)]?
    /// Static activation ranges: clipping per log-spaced bin of the sequence position, teacher-forced
    /// (`ClippingRecorder`; schemes with static ranges only).
    public var clipping: [ClippingBin]?
    /// Wall time of the teacher-forced and free-running parts.
    public var teacherSeconds = 0.0
    public var freeSeconds = 0.0
}
