import Foundation

/// The divergence of a candidate's next-token distribution Q from the reference's P at one
/// position, all in float64 over the full vocabulary (DESIGN §4).
public struct TokenDivergence: Sendable, Equatable {
    /// KL(P‖Q) in nats.
    public var kld: Double
    /// KL(Q‖P).
    public var reverseKLD: Double
    /// Total variation ½Σ|P − Q|.
    public var tv: Double
    /// argmax P == argmax Q.
    public var sameTop: Bool
    /// Q(y) − P(y) for the token y taken at this step.
    public var dp: Double
    /// −log P(y) and −log Q(y).
    public var nllReference: Double
    public var nllCandidate: Double
    /// Entropies H(P), H(Q).
    public var entropyReference: Double
    public var entropyCandidate: Double

    /// ΔNLL = log P(y) − log Q(y).
    public var dNLL: Double { nllCandidate - nllReference }

    /// Compares two rows of logits; `target` is the token taken at this step.
    public static func compare(reference p: UnsafeBufferPointer<Float>, candidate q: UnsafeBufferPointer<Float>,
                               target: Int) -> TokenDivergence {
        precondition(p.count == q.count && target >= 0 && target < p.count)
        let lp = LogSoftmax.logSumExp(p), lq = LogSoftmax.logSumExp(q)
        var kld = 0.0, rkld = 0.0, tv = 0.0, hp = 0.0, hq = 0.0
        var argP = 0, argQ = 0
        var maxP = -Float.infinity, maxQ = -Float.infinity
        for i in 0..<p.count {
            let a = Double(p[i]) - lp, b = Double(q[i]) - lq
            let pa = exp(a), qb = exp(b)
            kld += pa * (a - b)
            rkld += qb * (b - a)
            tv += abs(pa - qb)
            hp -= pa * a
            hq -= qb * b
            if p[i] > maxP { maxP = p[i]; argP = i }
            if q[i] > maxQ { maxQ = q[i]; argQ = i }
        }
        let nllP = lp - Double(p[target]), nllQ = lq - Double(q[target])
        return TokenDivergence(kld: kld, reverseKLD: rkld, tv: tv / 2, sameTop: argP == argQ,
                               dp: exp(-nllQ) - exp(-nllP), nllReference: nllP, nllCandidate: nllQ,
                               entropyReference: hp, entropyCandidate: hq)
    }
}
