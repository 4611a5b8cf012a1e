import CKernels
import Foundation
import Testing
@testable import QuantDrift

/// SIMD kernels against their scalar twins on awkward sizes.
///
/// Every test that reaches a dispatched C kernel runs on both paths (AVX2 and portable, see
/// `KernelPath`): as an argument where the test has one other argument list, in a loop where it
/// already has two (Swift Testing takes at most two lists); the failure messages name the path.
@Suite("Quantized kernels")
struct KernelTests {
    static let sizes = [1, 7, 31, 33, 64, 577]

    /// The integer-activation layer, or nil where the kernels cannot pair the weight and activation
    /// groups (spans of min(g, xg) must not cross the other's group boundary): such a pair must be
    /// refused with an error, and every other pair must be accepted, so no case passes by being skipped.
    static func layerOrRefusal(_ m: QuantizedMatrix, _ act: ActivationQuantizer) throws -> QuantizedLinear? {
        let g = m.groupSize, xg = act.groupSize(inDim: m.cols), cols = m.cols
        let pairs = (g == cols || g % 32 == 0) && (xg == cols || (xg % 32 == 0 && (g % xg == 0 || xg % g == 0)))
        guard pairs else {
            #expect(throws: QuantDriftError.self, "groups \(g)/\(xg) on \(cols) columns should be refused") {
                try QuantizedLinear(m, activations: act)
            }
            return nil
        }
        return try QuantizedLinear(m, activations: act)
    }

    static func random(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var r = RandomStream(seed: seed)
        return (0..<n).map { _ in Float(r.nextDouble() * 2 - 1) * scale }
    }

    @Test func avx2PathIsInUseOnThisMachine() {
        // The machine kind has AVX2+FMA; without it the tests would only check the portable path.
        #expect(qd_has_avx2() == 1)
    }

    /// The portable switch holds for the calling thread only: another thread keeps its path while
    /// this one is switched, and the switch is undone after `run`.
    @Test func portableSwitchOnlyAffectsTheCallingThread() {
        final class Seen: @unchecked Sendable { var value: Int32 = -1 }
        let before = qd_has_avx2()
        let seen = Seen(), done = DispatchSemaphore(value: 0)
        KernelPath.portable.run {
            #expect(qd_has_avx2() == 0)
            Thread.detachNewThread {
                seen.value = qd_has_avx2()
                done.signal()
            }
            done.wait()
        }
        #expect(seen.value == before)
        #expect(qd_has_avx2() == before)
    }

    /// bench's read loop sums every whole 32-bit word it streams (both paths, awkward lengths, an
    /// unaligned start), so what it times is a read of every byte.
    @Test(arguments: KernelPath.allCases, [1, 4, 7, 128, 131, 1029, 4099])
    func streamReadSumsEveryWord(path: KernelPath, bytes: Int) {
        var r = RandomStream(seed: UInt64(bytes))
        let buf = (0..<(bytes + 3)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
        var expected: UInt32 = 0
        for w in 0..<(bytes / 4) {
            expected &+= (0..<4).reduce(UInt32(0)) { $0 | UInt32(buf[3 + 4 * w + $1]) << (8 * UInt32($1)) }
        }
        let sum = path.run { buf.withUnsafeBufferPointer { qd_stream_sum($0.baseAddress! + 3, bytes) } }
        #expect(sum == expected, "\(path) \(bytes) bytes")
    }

    /// The 8-wide expf gives libm's bits: every 2^32 input was checked once by hand (0 differing);
    /// here 4M random bit patterns, a dense sweep of the softmax/SiLU range and the special values.
    @Test func vectorExpMatchesLibmBitForBit() {
        var r = RandomStream(seed: 2026)
        var x = (0..<(1 << 22)).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: r.next())) }
        x += stride(from: Float(-104), through: 89, by: 1.0 / 4096)
        x += [0, -0, .infinity, -.infinity, .nan, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .greatestFiniteMagnitude,
              -.greatestFiniteMagnitude, 88.0, -88.0, 88.72283, 88.72284, -103.97208, -103.97209, 0x1p-30, -0x1p-30]
        var y = [Float](repeating: 0, count: x.count)
        qd_expf(x, Int32(x.count), &y)
        var differing = 0
        for i in x.indices where y[i].bitPattern != exp(x[i]).bitPattern && !(y[i].isNaN && x[i].isNaN) { differing += 1 }
        #expect(differing == 0, "\(differing) of \(x.count) exponentials differ from libm")
    }

    /// q8_0 activation scales are rounded to fp16 in C (F16C, or the portable bit twiddling): the
    /// same bits as Swift's Float16.
    @Test(arguments: KernelPath.allCases)
    func halfRoundingMatchesSwiftFloat16(path: KernelPath) {
        var r = RandomStream(seed: 16)
        var x = (0..<(1 << 20)).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: r.next())) }.filter { !$0.isNaN }
        x += [0, -0, .infinity, -.infinity, 65504, 65519.996, 65520, -65520, 0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-26, 1.0009766, 1.00048828125]
        let differing = path.run { x.filter { qd_round_f16($0).bitPattern != Float(Float16($0)).bitPattern }.count }
        #expect(differing == 0, "\(path): \(differing) of \(x.count) fp16 roundings differ")
    }

    /// SwiGLU and the causal softmax row in C against the scalar loops they replaced, on awkward
    /// sizes. (The portable path calls libm's expf, as the loops do, so it checks the loop order.)
    @Test(arguments: KernelPath.allCases, sizes)
    func siluAndSoftmaxMatchTheScalarLoops(path: KernelPath, n: Int) {
        path.run { siluAndSoftmax(n: n, path: path) }
    }

    private func siluAndSoftmax(n: Int, path: KernelPath) {
        let gate = Self.random(n, seed: UInt64(n), scale: 12), up = Self.random(n, seed: UInt64(n) + 1, scale: 3)
        var out = gate
        qd_silu_mul(&out, up, Int32(n))
        let expected = (0..<n).map { i in gate[i] / (1 + exp(-gate[i])) * up[i] }
        #expect(out.map(\.bitPattern) == expected.map(\.bitPattern), "\(path) n \(n)")

        let keys = n + 3
        for visible in Set([1, n / 2 + 1, n]) {
            var row = Self.random(keys, seed: UInt64(n * 7 + visible), scale: 30)
            var ref = row
            qd_softmax_row(&row, Int32(visible), Int32(keys))
            var mx = -Float.infinity
            for j in 0..<visible where ref[j] > mx { mx = ref[j] }
            var sum: Float = 0
            for j in 0..<visible {
                ref[j] = exp(ref[j] - mx)
                sum += ref[j]
            }
            let inv = 1 / sum
            for j in 0..<visible { ref[j] *= inv }
            for j in visible..<keys { ref[j] = 0 }
            #expect(row.map(\.bitPattern) == ref.map(\.bitPattern), "\(path) n \(n), visible \(visible)")
        }
    }

    @Test(arguments: KernelPath.allCases, sizes)
    func integerDotProductsAreExact(path: KernelPath, n: Int) {
        var r = RandomStream(seed: UInt64(n))
        let a = (0..<n).map { _ in Int8(truncatingIfNeeded: Int(r.next() % 256) - 128) }
        let b = (0..<n).map { _ in Int8(Int(r.next() % 255) - 127) }
        let u4 = (0..<n).map { _ in UInt8(r.next() % 16) }
        let packed = QuantizedMatrix.packNibbles(u4, rows: 1, cols: n)
        let (d8, d4) = path.run { (qd_dot_i8_i8(a, b, Int32(n)), qd_dot_u4_i8(packed, b, Int32(n))) }
        #expect(d8 == ReferenceKernels.dot(a.map(Int.init), b), "\(path) n \(n)")
        #expect(d4 == ReferenceKernels.dot(u4.map(Int.init), b), "\(path) n \(n)")
    }

    struct Case: CustomStringConvertible, Sendable {
        let bits: Int, group: Int?, symmetric: Bool
        var description: String { "int\(bits) \(group.map { "g\($0)" } ?? "channel") \(symmetric ? "sym" : "asym")" }
    }

    static let cases: [Case] = [
        Case(bits: 8, group: nil, symmetric: true), Case(bits: 8, group: nil, symmetric: false),
        Case(bits: 8, group: 32, symmetric: true), Case(bits: 4, group: nil, symmetric: true),
        Case(bits: 4, group: 32, symmetric: true), Case(bits: 4, group: 64, symmetric: false),
        Case(bits: 3, group: 32, symmetric: false), Case(bits: 2, group: 32, symmetric: true),
        // Groups that do not divide the row: the partial last group runs in SIMD, then a scalar tail.
        Case(bits: 4, group: 128, symmetric: true), Case(bits: 8, group: 128, symmetric: false),
    ]

    @Test(arguments: cases, sizes)
    func floatActivationKernelMatchesDequantizeThenFP32(c: Case, cols: Int) throws {
        let rows = 5
        let w = Self.random(rows * cols, seed: 1)
        let m = WeightQuantizer.uniform(w, rows: rows, cols: cols, bits: c.bits, group: min(c.group ?? cols, cols),
                                        sharedAcrossRows: false, symmetric: c.symmetric)
        let layer = try QuantizedLinear(m)
        let x = Self.random(cols, seed: 2)
        let scratch = LinearScratch(maxRows: 4, maxInDim: cols)
        let want = ReferenceKernels.gemv(m, x)
        for path in KernelPath.allCases {
            var y = [Float](repeating: 0, count: rows)
            path.run { layer.forward(x, rows: 1, into: &y, scratch: scratch) }
            for i in 0..<rows {
                #expect(abs(y[i] - want[i]) <= 1e-5 * max(1, abs(want[i])), "\(path) \(c) cols \(cols) row \(i): \(y[i]) vs \(want[i])")
            }
        }
        // Several rows go through decoded tiles and sgemm: same values. (No dispatched kernel there:
        // the decoder has only a portable path and the product is OpenBLAS's.)
        let x3 = Self.random(3 * cols, seed: 3)
        var y3 = [Float](repeating: 0, count: 3 * rows)
        layer.forward(x3, rows: 3, into: &y3, scratch: scratch)
        for r in 0..<3 {
            let want = ReferenceKernels.gemv(m, Array(x3[(r * cols)..<((r + 1) * cols)]))
            for i in 0..<rows { #expect(abs(y3[r * rows + i] - want[i]) <= 1e-5 * max(1, abs(want[i]))) }
        }
    }

    /// Each output row is computed the same way whether it sits in a block of rows or alone, so
    /// any split of the rows (e.g. over threads) gives bitwise the same result.
    @Test(arguments: KernelPath.allCases, cases)
    func floatActivationRowsDoNotDependOnTheirBlock(path: KernelPath, c: Case) {
        path.run { rowsDoNotDependOnTheirBlock(c, path: path) }
    }

    private func rowsDoNotDependOnTheirBlock(_ c: Case, path: KernelPath) {
        let rows = 11, cols = 577
        let w = Self.random(rows * cols, seed: 8)
        let m = WeightQuantizer.uniform(w, rows: rows, cols: cols, bits: c.bits, group: min(c.group ?? cols, cols),
                                        sharedAcrossRows: false, symmetric: c.symmetric)
        let x = Self.random(cols, seed: 9)
        let ng = m.groupsPerRow
        var all = [Float](repeating: 0, count: rows)
        var one = [Float](repeating: 0, count: rows)
        m.scales.withUnsafeBufferPointer { s in
            withOptionalPointer(m.mins) { mn in
                switch m.codes {
                case .int8(let q):
                    q.withUnsafeBufferPointer { qp in
                        qd_gemv_i8_f32(qp.baseAddress, s.baseAddress, mn, Int32(m.groupSize), Int32(rows), Int32(cols), x, &all)
                        for r in 0..<rows {
                            qd_gemv_i8_f32(qp.baseAddress! + r * cols, s.baseAddress! + r * ng, mn.map { $0 + r * ng },
                                           Int32(m.groupSize), 1, Int32(cols), x, &one[r])
                        }
                    }
                case .nibbles(let q):
                    q.withUnsafeBufferPointer { qp in
                        qd_gemv_u4_f32(qp.baseAddress, s.baseAddress, mn, Int32(m.groupSize), Int32(rows), Int32(cols), x, &all)
                        for r in 0..<rows {
                            qd_gemv_u4_f32(qp.baseAddress! + r * m.nibbleRowBytes, s.baseAddress! + r * ng, mn.map { $0 + r * ng },
                                           Int32(m.groupSize), 1, Int32(cols), x, &one[r])
                        }
                    }
                }
            }
        }
        #expect(all.map(\.bitPattern) == one.map(\.bitPattern), "\(path) \(c)")
        // Symmetric nibbles also run with the offset instead of the mins: the same rule, and the
        // same values as the mins path up to rounding.
        if let k = QuantizedLinear.offset(of: m), case .nibbles(let q) = m.codes {
            var allK = [Float](repeating: 0, count: rows), oneK = [Float](repeating: 0, count: rows)
            q.withUnsafeBufferPointer { qp in
                m.scales.withUnsafeBufferPointer { s in
                    qd_gemv_u4_f32_offset(qp.baseAddress, s.baseAddress, k, Int32(m.groupSize), Int32(rows), Int32(cols), x, &allK)
                    for r in 0..<rows {
                        qd_gemv_u4_f32_offset(qp.baseAddress! + r * m.nibbleRowBytes, s.baseAddress! + r * ng, k,
                                              Int32(m.groupSize), 1, Int32(cols), x, &oneK[r])
                    }
                }
            }
            #expect(allK.map(\.bitPattern) == oneK.map(\.bitPattern), "\(path) \(c) offset")
            for i in 0..<rows { #expect(abs(allK[i] - all[i]) <= 1e-5 * max(1, abs(all[i])), "\(path) \(c) offset row \(i)") }
        }
    }

    /// Symmetric nibble matrices take the offset path (mins never read); asymmetric ones do not.
    @Test func symmetricNibblesUseTheOffsetKernel() throws {
        let w = Self.random(4 * 64, seed: 12)
        for (bits, symmetric, want) in [(4, true, Float(-8)), (2, true, -2), (4, false, nil), (8, true, nil)] as [(Int, Bool, Float?)] {
            let m = WeightQuantizer.uniform(w, rows: 4, cols: 64, bits: bits, group: 32, sharedAcrossRows: false, symmetric: symmetric)
            #expect(try QuantizedLinear(m).nibbleOffset == want, "int\(bits) \(symmetric ? "sym" : "asym")")
        }
    }

    /// The C row decoder (the multi-row path's tiles, a tied embedding) gives bitwise `value(r, c)`.
    @Test(arguments: cases, sizes)
    func rowDecoderMatchesValueBitwise(c: Case, cols: Int) {
        let rows = 6
        let m = WeightQuantizer.uniform(Self.random(rows * cols, seed: 13), rows: rows, cols: cols, bits: c.bits,
                                        group: min(c.group ?? cols, cols), sharedAcrossRows: false, symmetric: c.symmetric)
        let all = m.dequantized()
        var part = [Float](repeating: 0, count: 2 * cols)
        m.dequantizeRows(3..<5, into: &part)
        for r in 0..<rows {
            for i in 0..<cols { #expect(all[r * cols + i].bitPattern == m.value(r, i).bitPattern, "\(c) (\(r), \(i))") }
        }
        #expect(Array(all[(3 * cols)..<(5 * cols)]) == part)
    }

    @Test(arguments: cases, [1, 31, 64, 577])
    func integerActivationKernelMatchesScalarTwin(c: Case, cols: Int) throws {
        let rows = 4
        let w = Self.random(rows * cols, seed: 5)
        let m = WeightQuantizer.uniform(w, rows: rows, cols: cols, bits: c.bits, group: min(c.group ?? cols, cols),
                                        sharedAcrossRows: false, symmetric: c.symmetric)
        for act in [ActivationQuantizer(.dynamicPerRow), ActivationQuantizer(.dynamicPerGroup(32))] {
            guard let layer = try Self.layerOrRefusal(m, act) else { continue }
            let xs = Self.random(2 * cols, seed: 6, scale: 3)
            let scratch = LinearScratch(maxRows: 2, maxInDim: cols)
            let want = (0..<2).map { r in ReferenceKernels.gemvInt(m, activations: act, Array(xs[(r * cols)..<((r + 1) * cols)])) }
            for path in KernelPath.allCases {
                var y = [Float](repeating: 0, count: 2 * rows)
                path.run { layer.forward(xs, rows: 2, into: &y, scratch: scratch) }
                for r in 0..<2 {
                    for i in 0..<rows {
                        #expect(abs(y[r * rows + i] - want[r][i]) <= 1e-5 * max(1, abs(want[r][i])),
                                "\(path) \(c) \(act.mode) cols \(cols)")
                    }
                }
            }
        }
    }

    /// Decode (one activation row) split over two cores: output rows divided between the caller
    /// and the kernel pool's worker give the same bits as one call, for FP32 and int8 activations,
    /// on both paths (the worker takes the caller's path), on awkward output counts.
    @Test(arguments: cases, [1, 7, 31, 33, 577])
    func decodeSplitOverCoresIsBitwiseOneCall(c: Case, outRows: Int) throws {
        let cols = 96
        let m = WeightQuantizer.uniform(Self.random(outRows * cols, seed: UInt64(outRows) + 11), rows: outRows, cols: cols,
                                        bits: c.bits, group: min(c.group ?? cols, cols), sharedAcrossRows: false,
                                        symmetric: c.symmetric)
        let x = Self.random(cols, seed: 12, scale: 2)
        var layers = [try QuantizedLinear(m)]
        for act in [ActivationQuantizer(.dynamicPerRow), ActivationQuantizer(.dynamicPerGroup(32))] {
            if let layer = try Self.layerOrRefusal(m, act) { layers.append(layer) }
        }
        for layer in layers {
            for path in KernelPath.allCases {
                var one = [Float](repeating: 0, count: outRows), two = one
                let scratch = LinearScratch(maxRows: 1, maxInDim: cols)
                path.run {
                    layer.forward(x, rows: 1, into: &one, scratch: scratch)
                    scratch.cores = 2
                    layer.forward(x, rows: 1, into: &two, scratch: scratch)
                }
                #expect(one.map(\.bitPattern) == two.map(\.bitPattern), "\(path) \(c) \(layer.activations.map { "\($0.mode)" } ?? "fp32 act") out \(outRows)")
            }
        }
    }

    /// The multi-row integer kernel on packed panels: output rows not a multiple of 8 (padded
    /// panel), activation row counts that leave a remainder after the 4-row tiles, spans of 32,
    /// 64 and the whole row, with and without mins, against the scalar twin; and each output row
    /// is bitwise the same whatever the number of activation rows next to it (one row included). The two paths sum
    /// and scale in the same order, so they give the same bits (a prefill does not depend on the CPU).
    @Test(arguments: cases, [32, 96, 576])
    func packedPanelsMatchScalarTwin(c: Case, cols: Int) throws {
        for (outRows, actRows) in [(1, 2), (7, 5), (13, 9)] {
            let m = WeightQuantizer.uniform(Self.random(outRows * cols, seed: UInt64(outRows)), rows: outRows, cols: cols,
                                            bits: c.bits, group: min(c.group ?? cols, cols), sharedAcrossRows: false,
                                            symmetric: c.symmetric)
            for act in [ActivationQuantizer(.dynamicPerRow), ActivationQuantizer(.dynamicPerGroup(32)), ActivationQuantizer(.dynamicPerGroup(64))] {
                guard let layer = try Self.layerOrRefusal(m, act) else { continue }
                #expect(layer.panels != nil, "\(c) cols \(cols): no panels")
                let xs = Self.random(actRows * cols, seed: 7, scale: 3)
                let scratch = LinearScratch(maxRows: actRows, maxInDim: cols)
                let want = (0..<actRows).map { r in
                    ReferenceKernels.gemvInt(m, activations: act, Array(xs[(r * cols)..<((r + 1) * cols)]))
                }
                var outputs: [KernelPath: [Float]] = [:]
                for path in KernelPath.allCases {
                    var y = [Float](repeating: 0, count: actRows * outRows)
                    var pair = [Float](repeating: 0, count: 2 * outRows)
                    var one = [Float](repeating: 0, count: outRows)
                    path.run {
                        layer.forward(xs, rows: actRows, into: &y, scratch: scratch)
                        layer.forward(Array(xs[(cols * (actRows - 2))...]), rows: 2, into: &pair, scratch: scratch)
                        layer.forward(Array(xs[(cols * (actRows - 1))...]), rows: 1, into: &one, scratch: scratch)
                    }
                    #expect(Array(y[(outRows * (actRows - 2))...]).map(\.bitPattern) == pair.map(\.bitPattern),
                            "\(path) \(c) \(act.mode) cols \(cols)")
                    // One-token decode goes through the same panels: the same bits as in a prefill.
                    #expect(Array(y[(outRows * (actRows - 1))...]).map(\.bitPattern) == one.map(\.bitPattern),
                            "\(path) \(c) \(act.mode) cols \(cols): one row")
                    for r in 0..<actRows {
                        for i in 0..<outRows {
                            #expect(abs(y[r * outRows + i] - want[r][i]) <= 2e-5 * max(1, abs(want[r][i])),
                                    "\(path) \(c) \(act.mode) cols \(cols) out \(outRows) row \(r).\(i): \(y[r * outRows + i]) vs \(want[r][i])")
                        }
                    }
                    outputs[path] = y
                }
                #expect(outputs[.avx2]?.map(\.bitPattern) == outputs[.portable]?.map(\.bitPattern),
                        "\(c) \(act.mode) cols \(cols) out \(outRows): the paths differ")
            }
        }
    }

    /// The activation quantizer's C loops against the scalar rules on awkward sizes and values:
    /// exact ties (k + ½), values past ±127, NaN, ±∞, −0 and subnormals.
    @Test(arguments: KernelPath.allCases, sizes)
    func activationCodesMatchScalarRules(path: KernelPath, n: Int) {
        var r = RandomStream(seed: UInt64(n) &+ 77)
        let special: [Float] = [.nan, .infinity, -.infinity, -0.0, .leastNonzeroMagnitude, 126.5, -126.5, 127.5, -0.5, 0.5, 2.5, -3.5, 1e30]
        let inv: Float = 3.0
        let x: [Float] = (0..<n).map { i in
            switch r.next() % 4 {
            case 0: return special[i % special.count]
            case 1: return (Float(Int(r.next() % 400)) - 200 + 0.5) / inv  // ties after scaling (where exact)
            default: return Float(r.nextDouble() * 100 - 50)
            }
        }
        var q = [Int8](repeating: 99, count: n)
        var sums = [Int32](repeating: 0, count: (n + 31) / 32)
        let absMax = path.run {
            qd_quantize_i8(x, Int32(n), inv, &q)
            qd_block_sums_i8(q, Int32(n), &sums)
            return qd_absmax_f32(x, Int32(n))
        }
        #expect(q == x.map { ReferenceKernels.activationCode($0, inv: inv) }, "\(path) n \(n)")
        #expect(absMax.bitPattern == ReferenceKernels.absMax(x).bitPattern, "\(path) n \(n)")
        #expect(sums == (0..<((n + 31) / 32)).map { b in q[(b * 32)..<min(n, b * 32 + 32)].reduce(Int32(0)) { $0 + Int32($1) } })
    }
}
