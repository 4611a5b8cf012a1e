import CKernels
import COpenBLAS
import Foundation
import Testing
@testable import QuantDrift

/// A decode step's attention kernels (`qd_attention_scores`, `qd_attention_values`): the query
/// heads of one KV head against its cached rows, on awkward position counts.
@Suite("Decode attention kernels")
struct DecodeAttentionTests {
    static let positions = [1, 2, 3, 5, 7, 31, 33, 577]

    /// One KV head's cache rows (`ld` apart, wider than a head) and its group's queries and
    /// probabilities, with values of mixed magnitudes so that summation order shows.
    struct Case {
        let hd: Int, keys: Int, heads: Int, ld: Int
        let k: [Float], v: [Float], q: [Float], p: [Float]
        let scale: Float = 0.125

        init(hd: Int, keys: Int, heads: Int) {
            self.hd = hd
            self.keys = keys
            self.heads = heads
            ld = 3 * hd + 5
            k = KernelTests.random(keys * ld, seed: UInt64(keys * 31 + hd), scale: 4)
            v = KernelTests.random(keys * ld, seed: UInt64(keys * 37 + hd), scale: 3)
            q = KernelTests.random(heads * hd, seed: UInt64(hd + heads), scale: 2)
            p = KernelTests.random(heads * keys, seed: UInt64(keys + 5)).map { abs($0) / Float(keys) }
        }

        /// The kernels' scores and weighted values (outputs start as NaN: every one must be written).
        func kernels() -> (scores: [Float], out: [Float]) {
            var s = [Float](repeating: .nan, count: heads * keys)
            var out = [Float](repeating: .nan, count: heads * hd)
            let a = qd_attention_scores(k, Int32(ld), Int32(keys), Int32(hd), q, Int32(heads), scale, &s, Int32(keys))
            let b = qd_attention_values(v, Int32(ld), Int32(keys), Int32(hd), p, Int32(keys), Int32(heads), &out, 0)
            #expect(a == 1 && b == 1, "hd \(hd) is a multiple of 16: the kernels must run")
            return (s, out)
        }

        /// The per-head OpenBLAS calls the kernels replace.
        func sgemv() -> (scores: [Float], out: [Float]) {
            var s = [Float](repeating: .nan, count: heads * keys)
            var out = [Float](repeating: .nan, count: heads * hd)
            for h in 0..<heads {
                s.withUnsafeMutableBufferPointer { sp in
                    q.withUnsafeBufferPointer { qp in
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(keys), Int32(hd), scale, k, Int32(ld),
                                    qp.baseAddress! + h * hd, 1, 0, sp.baseAddress! + h * keys, 1)
                    }
                }
                out.withUnsafeMutableBufferPointer { op in
                    p.withUnsafeBufferPointer { pp in
                        cblas_sgemv(CblasRowMajor, CblasTrans, Int32(keys), Int32(hd), 1, v, Int32(ld),
                                    pp.baseAddress! + h * keys, 1, 0, op.baseAddress! + h * hd, 1)
                    }
                }
            }
            return (s, out)
        }
    }

    /// The AVX2 kernels and their portable twins give the same bits, every output written.
    @Test(arguments: [16, 64, 128], positions)
    func avx2MatchesThePortableTwin(hd: Int, keys: Int) {
        for heads in [1, 3, 4] {
            let c = Case(hd: hd, keys: keys, heads: heads)
            let fast = KernelPath.avx2.run { c.kernels() }
            let twin = KernelPath.portable.run { c.kernels() }
            #expect(fast.scores.map(\.bitPattern) == twin.scores.map(\.bitPattern), "scores, hd \(hd), \(heads) heads")
            #expect(fast.out.map(\.bitPattern) == twin.out.map(\.bitPattern), "values, hd \(hd), \(heads) heads")
            #expect(!fast.scores.contains { $0.isNaN } && !fast.out.contains { $0.isNaN })
        }
    }

    /// The reason the kernels exist without changing any result: they give the bits of the
    /// single-thread `cblas_sgemv` calls they replace (scores: no-transpose with the scale as
    /// alpha; values: transpose), on both paths. That holds for the OpenBLAS kernels this machine
    /// kind runs (Haswell/Zen). Elsewhere OpenBLAS sums in another order and only closeness holds:
    /// the test then asserts that, and says so.
    @Test(arguments: [16, 64, 128], positions)
    func kernelsGiveTheBitsOfTheSgemvCallsTheyReplace(hd: Int, keys: Int) {
        let core = String(cString: openblas_get_corename()).lowercased()
        let sameKernels = core == "haswell" || core == "zen"
        BLAS.setThreads(1)
        for heads in [1, 3] {
            let c = Case(hd: hd, keys: keys, heads: heads)
            let blas = c.sgemv()
            for path in KernelPath.allCases {
                let ours = path.run { c.kernels() }
                if sameKernels {
                    #expect(ours.scores.map(\.bitPattern) == blas.scores.map(\.bitPattern), "\(path) scores, hd \(hd), \(heads) heads")
                    #expect(ours.out.map(\.bitPattern) == blas.out.map(\.bitPattern), "\(path) values, hd \(hd), \(heads) heads")
                } else {
                    let worst = zip(ours.scores + ours.out, blas.scores + blas.out)
                        .map { abs($0 - $1) / max(abs($1), 1e-3) }.max() ?? 0
                    #expect(worst < 1e-4, "OpenBLAS core \(core): \(path) differs from sgemv by \(worst) (bits are only promised for Haswell/Zen)")
                }
            }
        }
    }

    /// Keys in runs, as a decode step reads a quantized cache (a run decoded at a time): scores of
    /// runs of whole blocks and values accumulated run after run (`accumulate`) give the bits of
    /// one call over all keys, on both paths; the last run may end in a part block.
    @Test(arguments: KernelPath.allCases, [1, 7, 8, 31, 33, 577])
    func keysInRunsGiveTheBitsOfOneCall(path: KernelPath, keys: Int) {
        for (hd, run) in [(64, 8), (16, 16), (128, 256), (64, 24)] {
            let c = Case(hd: hd, keys: keys, heads: 3)
            let whole = path.run { c.kernels() }
            var s = [Float](repeating: .nan, count: c.heads * keys)
            var out = [Float](repeating: .nan, count: c.heads * hd)
            path.run {
                var b0 = 0
                while b0 < keys {
                    let b1 = min(keys, b0 + run)
                    c.k.withUnsafeBufferPointer { k in
                        s.withUnsafeMutableBufferPointer { sp in
                            _ = qd_attention_scores(k.baseAddress! + b0 * c.ld, Int32(c.ld), Int32(b1 - b0), Int32(hd), c.q,
                                                    Int32(c.heads), c.scale, sp.baseAddress! + b0, Int32(keys))
                        }
                    }
                    c.v.withUnsafeBufferPointer { v in
                        c.p.withUnsafeBufferPointer { p in
                            _ = qd_attention_values(v.baseAddress! + b0 * c.ld, Int32(c.ld), Int32(b1 - b0), Int32(hd),
                                                    p.baseAddress! + b0, Int32(keys), Int32(c.heads), &out, b0 > 0 ? 1 : 0)
                        }
                    }
                    b0 = b1
                }
            }
            #expect(s.map(\.bitPattern) == whole.scores.map(\.bitPattern), "\(path): scores in runs of \(run), hd \(hd)")
            #expect(out.map(\.bitPattern) == whole.out.map(\.bitPattern), "\(path): values in runs of \(run), hd \(hd)")
        }
    }

    /// The group's softmax rows side by side (`qd_softmax_rows`, sums as parallel chains) give each
    /// row the bits of the scalar loop it replaced: max, exp(x - max), a left-to-right float sum,
    /// scale, zeros past the visible entries. Rows include ties of the maximum and of ±0.
    @Test(arguments: KernelPath.allCases, [1, 7, 31, 33, 577])
    func softmaxRowsMatchTheScalarLoop(path: KernelPath, keys: Int) {
        for rows in [1, 3, 4, 5, 9] {
            let ld = keys + 3
            var s = KernelTests.random(rows * ld, seed: UInt64(keys * 13 + rows), scale: 30)
            if keys > 4 {
                s[1] = s[3]  // a tie for the maximum in some row
                s[2] = -0.0
                s[ld - 1] = 0.0
            }
            var expected = s
            for r in 0..<rows {
                let visible = keys
                let base = r * ld
                var mx = -Float.infinity
                for j in 0..<visible where expected[base + j] > mx { mx = expected[base + j] }
                var sum: Float = 0
                for j in 0..<visible {
                    expected[base + j] = exp(expected[base + j] - mx)
                    sum += expected[base + j]
                }
                let inv = 1 / sum
                for j in 0..<visible { expected[base + j] *= inv }
            }
            path.run { qd_softmax_rows(&s, Int32(rows), Int32(ld), Int32(keys), Int32(keys)) }
            #expect(s.map(\.bitPattern) == expected.map(\.bitPattern), "\(path): \(rows) rows of \(keys)")
            // Fewer visible than keys: the rest become 0.
            var t = KernelTests.random(rows * ld, seed: UInt64(keys + rows), scale: 5)
            path.run { qd_softmax_rows(&t, Int32(rows), Int32(ld), Int32(max(1, keys / 2)), Int32(keys)) }
            for r in 0..<rows {
                #expect(t[(r * ld + max(1, keys / 2))..<(r * ld + keys)].allSatisfy { $0 == 0 }, "\(path): row \(r)")
            }
        }
    }

    /// A chunk's causal rows (`qd_softmax_causal`, four rows' sums side by side) against the loop
    /// it replaced: per row, zeros before a window's first key, then `qd_softmax_row` on the
    /// visible span; with and without a window, chunks starting at the cache's first key or later.
    @Test(arguments: KernelPath.allCases, [1, 2, 5, 7, 33])
    func causalSoftmaxMatchesTheRowByRowLoop(path: KernelPath, rows: Int) {
        for (pos0, window) in [(0, 0), (9, 0), (40, 0), (40, 16), (3, 16), (100, 7)] {
            let first0 = window > 0 ? max(0, pos0 - window + 1) : 0
            let keys = pos0 + rows - first0
            let original = KernelTests.random(rows * keys, seed: UInt64(pos0 * 7 + rows + window), scale: 20)
            var expected = original
            path.run {
                expected.withUnsafeMutableBufferPointer { e in
                    for r in 0..<rows {
                        let row = e.baseAddress! + r * keys
                        let last = pos0 + r - first0
                        let first = window > 0 ? max(0, pos0 + r - window + 1) - first0 : 0
                        if first > 0 { row.update(repeating: 0, count: first) }
                        qd_softmax_row(row + first, Int32(last + 1 - first), Int32(keys - first))
                    }
                }
            }
            var got = original
            path.run { qd_softmax_causal(&got, Int32(rows), Int32(keys), Int32(pos0), Int32(first0), Int32(window)) }
            #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(path): \(rows) rows from \(pos0), window \(window)")
        }
    }

    /// A head width the kernels do not take (not a multiple of 16) is refused, outputs untouched,
    /// and the transformer keeps the per-head sgemv path for it.
    @Test func otherHeadWidthsAreRefused() {
        for hd in [8, 24, 72] {
            let c = Case(hd: 16, keys: 9, heads: 2)
            var s = [Float](repeating: 7, count: 2 * 9)
            var out = [Float](repeating: 7, count: 2 * hd)
            #expect(qd_attention_scores(c.k, Int32(c.ld), 9, Int32(hd), c.q, 2, 1, &s, 9) == 0)
            #expect(qd_attention_values(c.v, Int32(c.ld), 9, Int32(hd), c.p, 9, 2, &out, 0) == 0)
            #expect(s.allSatisfy { $0 == 7 } && out.allSatisfy { $0 == 7 }, "hd \(hd)")
        }
    }
}
