import Foundation

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

extension PromptResult {
    /// This teacher-forced result with the free-running results of `free` (the same prompt, run as a separate job).
    func merged(freeRunning free: PromptResult) -> PromptResult {
        precondition(free.promptIndex == promptIndex)
        var r = self
        r.freeTokens = free.freeTokens
        r.firstDivergence = free.firstDivergence
        r.firstDivergenceMargin = free.firstDivergenceMargin
        r.reconverged = free.reconverged
        r.candidateTextNLL = free.candidateTextNLL
        r.kvErrorByAge = free.kvErrorByAge
        r.kvErrorByPosition = free.kvErrorByPosition
        r.freeSeconds = free.freeSeconds
        return r
    }
}

/// The results of a candidate's first finished part on a group, until its other part finishes.
final class HalfResults: @unchecked Sendable {
    private var waiting: [[Int]: [PromptResult]] = [:]
    private let lock = NSLock()

    /// The other part's results when it finished first (and forgets them); nil after keeping
    /// `results` for the other part.
    func exchange(candidate: Int, group: Int, _ results: [PromptResult]) -> [PromptResult]? {
        lock.lock()
        defer { lock.unlock() }
        if let other = waiting.removeValue(forKey: [candidate, group]) { return other }
        waiting[[candidate, group]] = results
        return nil
    }
}
