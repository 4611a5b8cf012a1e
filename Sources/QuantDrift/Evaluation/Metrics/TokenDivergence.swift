import CKernels
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
    /// Top-k containment: the reference's top-1 is among the candidate's 5 most likely tokens
    /// (fewer than 5 candidate logits above it), and the reverse.
    public var referenceTopInCandidateTop5: Bool = true
    public var candidateTopInReferenceTop5: Bool = true
    /// The reference's top-1 − top-2 logit gap (nats: the same gap in log-probabilities), and how
    /// much the candidate moved that gap, |(q[a] − q[b]) − (p[a] − p[b])| for the reference's
    /// top two a, b. Over an FP32-vs-FP32 comparison the largest such move is the noise floor's
    /// tie margin: a flip at a smaller reference gap is one rounding alone could cause.
    public var referenceMargin: Double = .infinity
    public var marginChange: Double = 0

    /// ΔNLL = log P(y) − log Q(y).
    public var dNLL: Double { nllCandidate - nllReference }

    /// Compares two rows of logits (or log-probabilities); `target` is the token taken at this step.
    public static func compare(reference p: UnsafeBufferPointer<Float>, candidate q: UnsafeBufferPointer<Float>,
                               target: Int) -> TokenDivergence {
        var scratch = [Double](repeating: 0, count: 2 * p.count)
        return scratch.withUnsafeMutableBufferPointer { compare(reference: p, candidate: q, target: target, scratch: $0) }
    }

    /// As `compare(reference:candidate:target:)` with a caller's scratch of at least 2 × vocab
    /// doubles, so a hot loop allocates nothing. One exp per entry per distribution: exp(x − max)
    /// is kept and reused for the probability (e / Σe) instead of recomputing exp(x − logΣexp).
    public static func compare(reference p: UnsafeBufferPointer<Float>, candidate q: UnsafeBufferPointer<Float>,
                               target: Int, scratch: UnsafeMutableBufferPointer<Double>) -> TokenDivergence {
        let n = p.count
        precondition(q.count == n && target >= 0 && target < n && scratch.count >= 2 * n)
        var argP = 0, argQ = 0, secondP = -1
        var maxP = -Float.infinity, maxQ = -Float.infinity, nextP = -Float.infinity
        for i in 0..<n {
            if p[i] > maxP {
                (nextP, secondP) = (maxP, maxP == -Float.infinity ? -1 : argP)
                (maxP, argP) = (p[i], i)
            } else if p[i] > nextP {
                nextP = p[i]; secondP = i
            }
            if q[i] > maxQ { maxQ = q[i]; argQ = i }
        }
        let eP = scratch.baseAddress!, eQ = scratch.baseAddress! + n
        let mp = Double(maxP), mq = Double(maxQ)
        // exp(x − max) in float64 (vectorised in CKernels), kept for the probabilities below.
        let sumP = qd_exp_shifted(p.baseAddress, Int32(n), maxP, eP)
        let sumQ = qd_exp_shifted(q.baseAddress, Int32(n), maxQ, eQ)
        let lp = mp + Foundation.log(sumP), lq = mq + Foundation.log(sumQ)
        let invP = 1 / sumP, invQ = 1 / sumQ
        var kld = 0.0, rkld = 0.0, tv = 0.0, hp = 0.0, hq = 0.0
        for i in 0..<n {
            let a = Double(p[i]) - lp, b = Double(q[i]) - lq
            let pa = eP[i] * invP, qb = eQ[i] * invQ
            let d = a - b
            kld += pa * d
            rkld -= qb * d
            tv += abs(pa - qb)
            hp -= pa * a
            hq -= qb * b
        }
        let nllP = lp - Double(p[target]), nllQ = lq - Double(q[target])
        // Ranks of each top-1 in the other distribution: how many logits lie strictly above it.
        let qAtTopP = q[argP], pAtTopQ = p[argQ]
        var aboveInQ = 0, aboveInP = 0
        for i in 0..<n {
            if q[i] > qAtTopP { aboveInQ += 1 }
            if p[i] > pAtTopQ { aboveInP += 1 }
        }
        var margin = Double.infinity, change = 0.0
        if secondP >= 0 {
            margin = Double(p[argP]) - Double(p[secondP])
            change = abs((Double(q[argP]) - Double(q[secondP])) - margin)
        }
        return TokenDivergence(kld: kld, reverseKLD: rkld, tv: tv / 2, sameTop: argP == argQ,
                               dp: exp(-nllQ) - exp(-nllP), nllReference: nllP, nllCandidate: nllQ,
                               entropyReference: hp, entropyCandidate: hq,
                               referenceTopInCandidateTop5: aboveInQ < 5, candidateTopInReferenceTop5: aboveInP < 5,
                               referenceMargin: margin, marginChange: change)
    }
}
