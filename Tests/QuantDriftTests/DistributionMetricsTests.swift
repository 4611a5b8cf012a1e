import Foundation
import Testing
@testable import QuantDrift

/// The distribution beyond the mean (issue 15, item 4): top-k containment per token, the tail
/// share of the total KLD, KLD by reference entropy (report.json, summary.md and report.html are
/// checked in `CompareCLITests.compareWritesTheContractAndIsByteIdenticalAcrossRunsAndThreads`).
@Suite("KLD distribution metrics")
struct DistributionMetricsTests {
    /// The reference's top-1 ranked k-th by the candidate (k − 1 logits strictly above it).
    static func rows(rankOfReferenceTop k: Int, vocab: Int = 50) -> ([Float], [Float]) {
        var p = [Float](repeating: 0, count: vocab), q = [Float](repeating: 0, count: vocab)
        p[7] = 5  // reference top-1
        for i in 0..<(k - 1) { q[10 + i] = 3 + Float(i) }  // k − 1 candidate logits above q[7]
        q[7] = 2
        return (p, q)
    }

    @Test(arguments: [1, 2, 5, 6, 9])
    func topFiveContainment(rank: Int) {
        let (p, q) = Self.rows(rankOfReferenceTop: rank)
        let d = p.withUnsafeBufferPointer { pp in
            q.withUnsafeBufferPointer { TokenDivergence.compare(reference: pp, candidate: $0, target: 7) }
        }
        #expect(d.referenceTopInCandidateTop5 == (rank <= 5), "rank \(rank)")
        #expect(d.sameTop == (rank == 1))
        // The candidate's top-1 (index 10 + rank − 2, or 7) sits at a 0 logit in the reference: 49 of 50
        // reference logits are 0 and none is strictly above it but p[7], so it is inside the reference's top 5.
        #expect(d.candidateTopInReferenceTop5)
        // And swapped roles.
        let r = q.withUnsafeBufferPointer { qq in
            p.withUnsafeBufferPointer { TokenDivergence.compare(reference: qq, candidate: $0, target: 7) }
        }
        #expect(r.candidateTopInReferenceTop5 == (rank <= 5))
    }

    @Test func tailShareIsTheLargestPercentsShare() {
        // 200 positions: 198 of KLD 1, two of KLD 101: the top 1% (2 positions) carry 202 of 400.
        let sorted = ([Double](repeating: 1, count: 198) + [101, 101]).sorted()
        #expect(ReportBuilder.tailShare(sorted: sorted, fraction: 0.01) == 0.505)
        #expect(ReportBuilder.tailShare(sorted: [0, 0], fraction: 0.01) == nil)
        #expect(ReportBuilder.tailShare(sorted: [2], fraction: 0.01) == 1)
    }
}
