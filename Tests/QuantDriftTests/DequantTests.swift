import Foundation
import QuantDrift
import Testing

/// Dequantization of every supported ggml type against blocks built by hand: each block is packed
/// here from chosen scales and quants following ggml's block layouts (`block_q4_K` etc. and the
/// packing of its `quantize_row_*_ref`), and every output must equal the value computed from those
/// scales and quants by the format's plain formula. Scales are short dyadic numbers, so every
/// product is exact and the comparisons are exact.
@Suite struct DequantTests {
    // MARK: - Helpers

    /// Dequantizes whole blocks of `type`.
    func dq(_ type: GGMLType, _ bytes: [UInt8]) throws -> [Float] {
        let count = bytes.count / type.typeSize * type.blockSize
        var out = [Float](repeating: .nan, count: count)
        try bytes.withUnsafeBytes { raw in
            try out.withUnsafeMutableBufferPointer { try dequantize(type, raw, count: count, into: $0.baseAddress!) }
        }
        return out
    }

    /// IEEE half → float from its fields, independent of `Float16`.
    func halfValue(_ h: UInt16) -> Float {
        let sign: Float = h & 0x8000 != 0 ? -1 : 1
        let e = Int((h >> 10) & 0x1F), m = Int(h & 0x3FF)
        if e == 0 { return sign * Float(m) * Float(sign: .plus, exponent: -24, significand: 1) }
        if e == 31 { return m == 0 ? sign * .infinity : .nan }
        return sign * (1 + Float(m) / 1024) * Float(sign: .plus, exponent: e - 15, significand: 1)
    }

    /// bfloat16 → float from its fields.
    func bf16Value(_ h: UInt16) -> Float {
        let sign: Float = h & 0x8000 != 0 ? -1 : 1
        let e = Int((h >> 7) & 0xFF), m = Int(h & 0x7F)
        if e == 0 { return sign * Float(m) * Float(sign: .plus, exponent: -133, significand: 1) }
        if e == 255 { return m == 0 ? sign * .infinity : .nan }
        return sign * (1 + Float(m) / 128) * Float(sign: .plus, exponent: e - 127, significand: 1)
    }

    /// Half bits of a value that F16 holds exactly.
    func half(_ x: Float) -> UInt16 {
        let h = Float16(x).bitPattern
        precondition(halfValue(h) == x, "\(x) is not exact in F16")
        return h
    }

    static let scales: [Float] = [0.5, 0.25, 0.375, 1.5, 0.0625, 2, 0.75]

    func randomQuants(_ n: Int, below: Int, _ rng: inout SplitMix64) -> [Int] {
        (0..<n).map { _ in Int(rng.next() % UInt64(below)) }
    }

    func expectExact(_ out: [Float], _ expected: [Float], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(out.count == expected.count, sourceLocation: sourceLocation)
        let bad = zip(out, expected).enumerated().filter { $0.element.0 != $0.element.1 }
        #expect(bad.isEmpty, "\(what): \(bad.count) mismatches, first \(bad.prefix(3).map { "[\($0.offset)] \($0.element.0) vs \($0.element.1)" })",
                sourceLocation: sourceLocation)
    }

    // MARK: - Float formats

    @Test func f32() throws {
        let values: [Float] = [0, -0.0, 1, -2.5, .pi, .infinity, -.infinity, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 1e-30]
        var bytes: [UInt8] = []
        for v in values { bytes.appendLE(v.bitPattern) }
        let out = try dq(.f32, bytes)
        #expect(out.map(\.bitPattern) == values.map(\.bitPattern))
        #expect(try dq(.f32, [0x00, 0x00, 0xC0, 0x3F]) == [1.5])
    }

    @Test func f16AllBitPatterns() throws {
        var bytes: [UInt8] = []
        for h in 0...UInt16.max { bytes.appendLE(h) }
        let out = try dq(.f16, bytes)
        var mismatches = 0
        for h in 0...Int(UInt16.max) {
            let want = halfValue(UInt16(h))
            if want.isNaN ? !out[h].isNaN : out[h].bitPattern != want.bitPattern { mismatches += 1 }
        }
        #expect(mismatches == 0)
        // Hand-computed values.
        #expect(try dq(.f16, [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00, 0x55, 0x35])
                == [1, -2, 65504, 5.9604645e-08, 0.333251953125])
    }

    @Test func bf16AllBitPatterns() throws {
        var bytes: [UInt8] = []
        for h in 0...UInt16.max { bytes.appendLE(h) }
        let out = try dq(.bf16, bytes)
        var mismatches = 0
        for h in 0...Int(UInt16.max) {
            let want = bf16Value(UInt16(h))
            if want.isNaN ? !out[h].isNaN : out[h].bitPattern != want.bitPattern { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #expect(try dq(.bf16, [0x80, 0x3F, 0xA0, 0xC0, 0x49, 0x40]) == [1, -5, 3.140625])
    }

    // MARK: - 32-element blocks

    @Test func q8_0() throws {
        var rng = SplitMix64(seed: 8)
        var bytes: [UInt8] = [], expected: [Float] = []
        for b in 0..<3 {
            let d = Self.scales[b], q = randomQuants(32, below: 256, &rng).map { Int8(truncatingIfNeeded: $0) }
            bytes.appendLE(half(d))
            bytes += q.map { UInt8(bitPattern: $0) }
            expected += q.map { Float($0) * d }
        }
        expectExact(try dq(.q8_0, bytes), expected, "Q8_0")

        // d = 0.5, q = [-128, 127, 3, 0, ...].
        let literal: [UInt8] = [0x00, 0x38, 0x80, 0x7F, 0x03] + [UInt8](repeating: 0, count: 29)
        let out = try dq(.q8_0, literal)
        #expect(Array(out[0..<4]) == [-64, 63.5, 1.5, 0])
    }

    @Test func q4_0() throws {
        var rng = SplitMix64(seed: 40)
        var bytes: [UInt8] = [], expected: [Float] = []
        for b in 0..<3 {
            let d = Self.scales[b], q = randomQuants(32, below: 16, &rng)
            bytes.appendLE(half(d))
            for j in 0..<16 { bytes.append(UInt8(q[j] | q[j + 16] << 4)) }
            expected += q.map { Float($0 - 8) * d }
        }
        expectExact(try dq(.q4_0, bytes), expected, "Q4_0")

        // d = 0.5, qs[0] = 0x3A: element 0 is (10 - 8) × 0.5, element 16 is (3 - 8) × 0.5.
        let out = try dq(.q4_0, [0x00, 0x38, 0x3A] + [UInt8](repeating: 0x88, count: 15))
        #expect(out[0] == 1.0 && out[16] == -2.5 && out[1] == 0 && out[31] == 0)
    }

    @Test func q4_1() throws {
        var rng = SplitMix64(seed: 41)
        var bytes: [UInt8] = [], expected: [Float] = []
        for b in 0..<3 {
            let d = Self.scales[b], m = -Self.scales[b + 2], q = randomQuants(32, below: 16, &rng)
            bytes.appendLE(half(d))
            bytes.appendLE(half(m))
            for j in 0..<16 { bytes.append(UInt8(q[j] | q[j + 16] << 4)) }
            expected += q.map { Float($0) * d + m }
        }
        expectExact(try dq(.q4_1, bytes), expected, "Q4_1")

        // d = 0.25, m = -1, qs[0] = 0xF0: element 0 is 0 × 0.25 - 1, element 16 is 15 × 0.25 - 1.
        let out = try dq(.q4_1, [0x00, 0x34, 0x00, 0xBC, 0xF0] + [UInt8](repeating: 0, count: 15))
        #expect(out[0] == -1 && out[16] == 2.75 && out[5] == -1)
    }

    /// Packs 32 five-bit quants as ggml's Q5 blocks do: low nibbles like Q4, bit 4 of element j in bit j of qh.
    func packQ5(_ q: [Int]) -> [UInt8] {
        var qh: UInt32 = 0
        for j in 0..<32 where q[j] & 16 != 0 { qh |= 1 << UInt32(j) }
        var b: [UInt8] = []
        b.appendLE(qh)
        for j in 0..<16 { b.append(UInt8((q[j] & 15) | (q[j + 16] & 15) << 4)) }
        return b
    }

    @Test func q5_0() throws {
        var rng = SplitMix64(seed: 50)
        var bytes: [UInt8] = [], expected: [Float] = []
        for b in 0..<3 {
            let d = Self.scales[b], q = randomQuants(32, below: 32, &rng)
            bytes.appendLE(half(d))
            bytes += packQ5(q)
            expected += q.map { Float($0 - 16) * d }
        }
        expectExact(try dq(.q5_0, bytes), expected, "Q5_0")

        // d = 1, qh bit 0 set, qs[0] = 0x21: element 0 is (1 + 16) - 16, element 16 is 2 - 16.
        let out = try dq(.q5_0, [0x00, 0x3C, 0x01, 0x00, 0x00, 0x00, 0x21] + [UInt8](repeating: 0, count: 15))
        #expect(out[0] == 1 && out[16] == -14 && out[1] == -16)
    }

    @Test func q5_1() throws {
        var rng = SplitMix64(seed: 51)
        var bytes: [UInt8] = [], expected: [Float] = []
        for b in 0..<3 {
            let d = Self.scales[b], m = Self.scales[b + 3], q = randomQuants(32, below: 32, &rng)
            bytes.appendLE(half(d))
            bytes.appendLE(half(m))
            bytes += packQ5(q)
            expected += q.map { Float($0) * d + m }
        }
        expectExact(try dq(.q5_1, bytes), expected, "Q5_1")

        // d = 0.5, m = 2, qh bit 16 set, qs[0] = 0x3F: element 0 is 15 × 0.5 + 2, element 16 is (3 + 16) × 0.5 + 2.
        let out = try dq(.q5_1, [0x00, 0x38, 0x00, 0x40, 0x00, 0x00, 0x01, 0x00, 0x3F] + [UInt8](repeating: 0, count: 15))
        #expect(out[0] == 9.5 && out[16] == 11.5 && out[1] == 2)
    }

    // MARK: - K-quants (256-element super-blocks)

    /// Packs eight 6-bit scales and mins into 12 bytes as `quantize_row_q4_K_ref` does.
    func packScaleMin(_ sc: [Int], _ mn: [Int]) -> [UInt8] {
        var s = [UInt8](repeating: 0, count: 12)
        for j in 0..<8 {
            if j < 4 {
                s[j] = UInt8(sc[j]); s[j + 4] = UInt8(mn[j])
            } else {
                s[j + 4] = UInt8((sc[j] & 0xF) | (mn[j] & 0xF) << 4)
                s[j - 4] |= UInt8((sc[j] >> 4) << 6)
                s[j] |= UInt8((mn[j] >> 4) << 6)
            }
        }
        return s
    }

    /// Low nibbles of 256 quants: in each 64-element group, elements 0..<32 in the low and
    /// 32..<64 in the high nibble of the group's 32 bytes.
    func packNibblesK(_ q: [Int]) -> [UInt8] {
        var b: [UInt8] = []
        for g in 0..<4 {
            for l in 0..<32 { b.append(UInt8((q[64 * g + l] & 15) | (q[64 * g + 32 + l] & 15) << 4)) }
        }
        return b
    }

    /// K-quant expected values: element i uses the scale and min of sub-block i / 32.
    func kExpected(_ d: Float, _ dmin: Float, _ sc: [Int], _ mn: [Int], _ q: [Int]) -> [Float] {
        (0..<256).map { i in d * Float(sc[i / 32]) * Float(q[i]) - dmin * Float(mn[i / 32]) }
    }

    @Test func q4_K() throws {
        var rng = SplitMix64(seed: 4)
        var bytes: [UInt8] = [], expected: [Float] = []
        for b in 0..<2 {
            let d = Self.scales[b], dmin = Self.scales[b + 4]
            let sc = randomQuants(8, below: 64, &rng), mn = randomQuants(8, below: 64, &rng)
            let q = randomQuants(256, below: 16, &rng)
            bytes.appendLE(half(d)); bytes.appendLE(half(dmin))
            bytes += packScaleMin(sc, mn)
            bytes += packNibblesK(q)
            expected += kExpected(d, dmin, sc, mn, q)
        }
        #expect(bytes.count == 2 * 144)
        expectExact(try dq(.q4_K, bytes), expected, "Q4_K")
        let out = try dq(.q4_K, q4KLiteral(fiveBit: false))
        // Sub-block 0: scale 3, min 2. Sub-block 5: scale 40, min 33 (6-bit values split over bytes).
        #expect(out[0] == 0.5 * 3 * 7 - 0.25 * 2)      // 10
        #expect(out[0] == 10 && out[1] == -0.5)
        #expect(out[161] == 171.75)                     // 0.5 × 40 × 9 - 0.25 × 33
        #expect(out[32] == 0 && out[160] == -8.25)
    }

    /// A Q4_K (or Q5_K) block written byte by byte: d = 0.5, dmin = 0.25; sub-block 0 has scale 3
    /// and min 2, sub-block 5 scale 40 = 0b10_1000 and min 33 = 0b10_0001, whose low nibbles sit in
    /// scales[9] and high bits in the top of scales[1] and scales[5]; quant 7 at element 0 and 9 at
    /// element 161 (group 2, high nibble of qs[65]); for Q5_K, qh[1] bit 5 adds 16 to element 161.
    func q4KLiteral(fiveBit: Bool) -> [UInt8] {
        var b: [UInt8] = [0x00, 0x38, 0x00, 0x34]
        b += [3, 0x80, 0, 0, 2, 0x80, 0, 0, 0, 0x18, 0, 0]
        if fiveBit {
            var qh = [UInt8](repeating: 0, count: 32)
            qh[1] = 0x20
            b += qh
        }
        var qs = [UInt8](repeating: 0, count: 128)
        qs[0] = 0x07
        qs[65] = 0x90
        return b + qs
    }

    @Test func q5_K() throws {
        var rng = SplitMix64(seed: 5)
        var bytes: [UInt8] = [], expected: [Float] = []
        for b in 0..<2 {
            let d = Self.scales[b + 1], dmin = Self.scales[b + 3]
            let sc = randomQuants(8, below: 64, &rng), mn = randomQuants(8, below: 64, &rng)
            let q = randomQuants(256, below: 32, &rng)
            bytes.appendLE(half(d)); bytes.appendLE(half(dmin))
            bytes += packScaleMin(sc, mn)
            // Bit 4 of element 64g + l goes to bit 2g of qh[l], of element 64g + 32 + l to bit 2g + 1.
            var qh = [UInt8](repeating: 0, count: 32)
            for g in 0..<4 {
                for l in 0..<32 {
                    if q[64 * g + l] & 16 != 0 { qh[l] |= UInt8(1 << (2 * g)) }
                    if q[64 * g + 32 + l] & 16 != 0 { qh[l] |= UInt8(2 << (2 * g)) }
                }
            }
            bytes += qh
            bytes += packNibblesK(q)
            expected += kExpected(d, dmin, sc, mn, q)
        }
        #expect(bytes.count == 2 * 176)
        expectExact(try dq(.q5_K, bytes), expected, "Q5_K")
        let out = try dq(.q5_K, q4KLiteral(fiveBit: true))
        #expect(out[0] == 10 && out[1] == -0.5)
        #expect(out[161] == 491.75)                     // 0.5 × 40 × (9 + 16) - 0.25 × 33
    }

    @Test func q6_K() throws {
        var rng = SplitMix64(seed: 6)
        var bytes: [UInt8] = [], expected: [Float] = []
        for b in 0..<2 {
            let d = Self.scales[b + 4]
            let sc = randomQuants(16, below: 256, &rng).map { Int8(truncatingIfNeeded: $0) }
            let q = randomQuants(256, below: 64, &rng)   // stored value; the weight is q - 32
            // quantize_row_q6_K_ref: per 128-element half, ql[l] = q[l] | q[l+64] << 4 (low nibbles),
            // ql[l+32] = q[l+32] | q[l+96] << 4, and qh[l] holds the top two bits of q[l], q[l+32],
            // q[l+64], q[l+96] at bits 0, 2, 4, 6.
            var ql = [UInt8](repeating: 0, count: 128), qh = [UInt8](repeating: 0, count: 64)
            for h in 0..<2 {
                let y = 128 * h
                for l in 0..<32 {
                    ql[64 * h + l] = UInt8((q[y + l] & 15) | (q[y + l + 64] & 15) << 4)
                    ql[64 * h + l + 32] = UInt8((q[y + l + 32] & 15) | (q[y + l + 96] & 15) << 4)
                    qh[32 * h + l] = UInt8((q[y + l] >> 4) | (q[y + l + 32] >> 4) << 2 | (q[y + l + 64] >> 4) << 4 | (q[y + l + 96] >> 4) << 6)
                }
            }
            bytes += ql + qh + sc.map { UInt8(bitPattern: $0) }
            bytes.appendLE(half(d))
            expected += (0..<256).map { i in d * Float(sc[i / 16]) * Float(q[i] - 32) }
        }
        #expect(bytes.count == 2 * 210)
        expectExact(try dq(.q6_K, bytes), expected, "Q6_K")

        // d = 0.25; scales[0] = -3, scales[9] = 5. Element 0: ql[0] = 0x0F, qh[0] = 3 → 63 - 32 = 31.
        // Element 150 (second half, l = 22): ql[86] = 0x05, qh[54] = 0b10 → 37 - 32 = 5.
        var lit = [UInt8](repeating: 0, count: 210)
        lit[0] = 0x0F; lit[128] = 0x03
        lit[86] = 0x05; lit[128 + 54] = 0x02
        lit[192] = UInt8(bitPattern: -3); lit[192 + 9] = 5
        lit[208] = 0x00; lit[209] = 0x34
        let out = try dq(.q6_K, lit)
        #expect(out[0] == -23.25)                       // 0.25 × -3 × 31
        #expect(out[1] == 24)                           // 0.25 × -3 × -32
        #expect(out[150] == 6.25)                       // 0.25 × 5 × 5
        #expect(out[16] == 0)                           // scales[1] = 0
    }

    // MARK: - Refusals

    @Test(arguments: [GGMLType.q8_K, .q8_1, .i8, .f64])
    func unsupportedTypesThrow(_ type: GGMLType) throws {
        let bytes = [UInt8](repeating: 0, count: type.typeSize)
        expectBadInput(type.name, kind: .unsupported) { _ = try dq(type, bytes) }
    }
}
