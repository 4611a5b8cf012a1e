// MARK: - Type traits

/// ggml tensor types, with the block traits the reader needs. Only the types in
/// `GGMLType.dequantizable` can be turned into FP32; the others parse but are refused at load.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15, iq4_nl = 20
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, bf16 = 30

    public var name: String {
        switch self {
        case .f32: "F32"; case .f16: "F16"; case .bf16: "BF16"; case .f64: "F64"
        case .q4_0: "Q4_0"; case .q4_1: "Q4_1"; case .q5_0: "Q5_0"; case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"; case .q8_1: "Q8_1"; case .q2_K: "Q2_K"; case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"; case .q5_K: "Q5_K"; case .q6_K: "Q6_K"; case .q8_K: "Q8_K"; case .iq4_nl: "IQ4_NL"
        case .i8: "I8"; case .i16: "I16"; case .i32: "I32"; case .i64: "I64"
        }
    }

    /// Elements per block.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64: 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_nl: 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K: 256
        }
    }

    /// Bytes per block.
    public var typeSize: Int {
        switch self {
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .f64, .i64: 8
        case .i8: 1
        case .q4_0, .iq4_nl: 18
        case .q4_1: 20
        case .q5_0: 22
        case .q5_1: 24
        case .q8_0: 34
        case .q8_1: 36
        case .q2_K: 84
        case .q3_K: 110
        case .q4_K: 144
        case .q5_K: 176
        case .q6_K: 210
        case .q8_K: 292
        }
    }

    public static let dequantizable: Set<GGMLType> = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]

    /// IQ4_NL's 16 non-uniform values (ggml's kvalues_iq4nl), scaled by the block's fp16 scale.
    public static let iq4nlValues: [Int8] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
}

// MARK: - Dequantization to FP32

@inline(__always)
func halfToFloat(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

@inline(__always)
private func u16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 { UInt16(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
@inline(__always)
private func u8(_ p: UnsafeRawPointer, _ o: Int) -> UInt8 { p.load(fromByteOffset: o, as: UInt8.self) }
@inline(__always)
private func i8(_ p: UnsafeRawPointer, _ o: Int) -> Int8 { p.load(fromByteOffset: o, as: Int8.self) }

/// The K-quant 6-bit scale and min of sub-block `j` (0..<8) from the 12 packed bytes at `q`.
@inline(__always)
private func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (Float, Float) {
    if j < 4 {
        return (Float(u8(q, j) & 63), Float(u8(q, j + 4) & 63))
    }
    let d = (u8(q, j + 4) & 0xF) | ((u8(q, j - 4) >> 6) << 4)
    let m = (u8(q, j + 4) >> 4) | ((u8(q, j) >> 6) << 4)
    return (Float(d), Float(m))
}

/// Dequantizes `count` elements of `type` from `src` (which must hold `count / blockSize` blocks)
/// into `dst`, following ggml's `dequantize_row_*` definitions.
public func dequantize(_ type: GGMLType, _ src: UnsafeRawBufferPointer, count: Int, into dst: UnsafeMutablePointer<Float>) throws {
    guard GGMLType.dequantizable.contains(type) else {
        throw QuantDriftError.unsupported("tensor type \(type.name) is not supported (supported: \(GGMLType.dequantizable.map(\.name).sorted().joined(separator: ", ")))")
    }
    precondition(count % type.blockSize == 0 && src.count >= count / type.blockSize * type.typeSize)
    guard count > 0, let base = src.baseAddress else { return }
    let blocks = count / type.blockSize
    let bs = type.typeSize
    switch type {
    case .f32:
        for i in 0..<count { dst[i] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
    case .f16:
        for i in 0..<count { dst[i] = halfToFloat(u16(base, 2 * i)) }
    case .bf16:
        for i in 0..<count { dst[i] = Float(bitPattern: UInt32(u16(base, 2 * i)) << 16) }
    case .q8_0:
        for b in 0..<blocks {
            let p = base + b * bs, y = dst + b * 32
            let d = halfToFloat(u16(p, 0))
            for j in 0..<32 { y[j] = Float(i8(p, 2 + j)) * d }
        }
    case .q4_0:
        for b in 0..<blocks {
            let p = base + b * bs, y = dst + b * 32
            let d = halfToFloat(u16(p, 0))
            for j in 0..<16 {
                let q = u8(p, 2 + j)
                y[j] = Float(Int(q & 0xF) - 8) * d
                y[j + 16] = Float(Int(q >> 4) - 8) * d
            }
        }
    case .q4_1:
        for b in 0..<blocks {
            let p = base + b * bs, y = dst + b * 32
            let d = halfToFloat(u16(p, 0)), m = halfToFloat(u16(p, 2))
            for j in 0..<16 {
                let q = u8(p, 4 + j)
                y[j] = Float(q & 0xF) * d + m
                y[j + 16] = Float(q >> 4) * d + m
            }
        }
    case .q5_0, .q5_1:
        let hasMin = type == .q5_1
        for b in 0..<blocks {
            let p = base + b * bs, y = dst + b * 32
            let d = halfToFloat(u16(p, 0))
            let m: Float = hasMin ? halfToFloat(u16(p, 2)) : 0
            let o = hasMin ? 4 : 2
            let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self))
            for j in 0..<16 {
                let q = u8(p, o + 4 + j)
                let h0 = UInt8(truncatingIfNeeded: ((qh >> UInt32(j)) << 4) & 0x10)
                let h1 = UInt8(truncatingIfNeeded: (qh >> UInt32(j + 12)) & 0x10)
                let x0 = Int((q & 0xF) | h0), x1 = Int((q >> 4) | h1)
                if hasMin {
                    y[j] = Float(x0) * d + m
                    y[j + 16] = Float(x1) * d + m
                } else {
                    y[j] = Float(x0 - 16) * d
                    y[j + 16] = Float(x1 - 16) * d
                }
            }
        }
    case .iq4_nl:
        let v = GGMLType.iq4nlValues
        for b in 0..<blocks {
            let p = base + b * bs, y = dst + b * 32
            let d = halfToFloat(u16(p, 0))
            for j in 0..<16 {
                let q = u8(p, 2 + j)
                y[j] = d * Float(v[Int(q & 0xF)])
                y[j + 16] = d * Float(v[Int(q >> 4)])
            }
        }
    case .q2_K:
        // 16 sub-blocks of 16: 4-bit scale and min per sub-block, 2-bit codes four to a byte.
        for b in 0..<blocks {
            let p = base + b * bs
            var y = dst + b * 256
            let d = halfToFloat(u16(p, 80)), dmin = halfToFloat(u16(p, 82))
            var sub = 0
            for half in 0..<2 {
                let q = p + 16 + 32 * half
                for shift in stride(from: 0, to: 8, by: 2) {
                    for part in 0..<2 {
                        let sc = u8(p, sub)
                        let dl = d * Float(sc & 0xF), ml = dmin * Float(sc >> 4)
                        for l in 0..<16 { y[l] = dl * Float((u8(q, l + 16 * part) >> UInt8(shift)) & 3) - ml }
                        y += 16; sub += 1
                    }
                }
            }
        }
    case .q3_K:
        // 16 sub-blocks of 16: 6-bit scales (offset 32), 2-bit codes plus a high bit in hmask
        // (bit clear: the code is 4 lower).
        for b in 0..<blocks {
            let p = base + b * bs
            var y = dst + b * 256
            let d = halfToFloat(u16(p, 108))
            let s = p + 96
            var sub = 0
            var m: UInt8 = 1
            for half in 0..<2 {
                let q = p + 32 + 32 * half
                for shift in stride(from: 0, to: 8, by: 2) {
                    for part in 0..<2 {
                        let low = sub < 8 ? u8(s, sub) & 15 : u8(s, sub - 8) >> 4
                        let high = (u8(s, 8 + sub % 4) >> UInt8(2 * (sub / 4))) & 3
                        let dl = d * Float(Int(low | (high << 4)) - 32)
                        for l in 0..<16 {
                            let i = l + 16 * part
                            let code = Int((u8(q, i) >> UInt8(shift)) & 3) - (u8(p, i) & m != 0 ? 0 : 4)
                            y[l] = dl * Float(code)
                        }
                        y += 16; sub += 1
                    }
                    m <<= 1
                }
            }
        }
    case .q4_K, .q5_K:
        let five = type == .q5_K
        for b in 0..<blocks {
            let p = base + b * bs
            var y = dst + b * 256
            let d = halfToFloat(u16(p, 0)), dmin = halfToFloat(u16(p, 2))
            let scales = p + 4
            let qh = p + 16                       // Q5_K only: 32 bytes of high bits
            var ql = p + (five ? 48 : 16)         // 128 bytes of low nibbles
            var sub = 0
            var u1: UInt8 = 1, u2: UInt8 = 2
            for _ in 0..<4 {
                let (sc1, m1) = scaleMinK4(sub, scales), (sc2, m2) = scaleMinK4(sub + 1, scales)
                let d1 = d * sc1, mm1 = dmin * m1, d2 = d * sc2, mm2 = dmin * m2
                for l in 0..<32 {
                    let h: UInt8 = five && (u8(qh, l) & u1) != 0 ? 16 : 0
                    y[l] = d1 * Float((u8(ql, l) & 0xF) + h) - mm1
                }
                for l in 0..<32 {
                    let h: UInt8 = five && (u8(qh, l) & u2) != 0 ? 16 : 0
                    y[32 + l] = d2 * Float((u8(ql, l) >> 4) + h) - mm2
                }
                y += 64; ql += 32; sub += 2
                u1 <<= 2; u2 <<= 2
            }
        }
    case .q6_K:
        for b in 0..<blocks {
            let p = base + b * bs
            var y = dst + b * 256
            var ql = p, qh = p + 128, sc = p + 192
            let d = halfToFloat(u16(p, 208))
            for _ in 0..<2 {
                for l in 0..<32 {
                    let i = l / 16
                    let h = u8(qh, l)
                    let q1 = Int((u8(ql, l) & 0xF) | ((h & 3) << 4)) - 32
                    let q2 = Int((u8(ql, l + 32) & 0xF) | (((h >> 2) & 3) << 4)) - 32
                    let q3 = Int((u8(ql, l) >> 4) | (((h >> 4) & 3) << 4)) - 32
                    let q4 = Int((u8(ql, l + 32) >> 4) | (((h >> 6) & 3) << 4)) - 32
                    y[l] = d * Float(i8(sc, i)) * Float(q1)
                    y[l + 32] = d * Float(i8(sc, i + 2)) * Float(q2)
                    y[l + 64] = d * Float(i8(sc, i + 4)) * Float(q3)
                    y[l + 96] = d * Float(i8(sc, i + 6)) * Float(q4)
                }
                y += 128; ql += 64; qh += 32; sc += 8
            }
        }
    default:
        throw QuantDriftError.unsupported("tensor type \(type.name) is not supported")
    }
}
