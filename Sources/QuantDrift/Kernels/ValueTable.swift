/// The exact values of an emulated number format, indexed by code, and its encoder: a value is
/// encoded to the nearest value of the table; an exact tie between two table values goes to the
/// even code (for the floating-point formats the code's last bit is the mantissa's last bit, so
/// this is IEEE round-half-to-even); values beyond the largest finite value saturate to it (no
/// infinities are produced); NaN encodes to zero.
public struct ValueTable: Sendable {
    public let name: String
    /// Bits per code (4, 8 or 16).
    public let bits: Int
    /// Decoded value of every code; NaN for codes that are not numbers, ±infinity where the
    /// format has them.
    public let values: [Float]
    /// The largest finite value.
    public let maxFinite: Float
    /// Finite values in ascending order with their codes (one code per value: +0 for zero).
    let sorted: [(value: Float, code: Int)]
    /// Sign-magnitude formats (all but NF4): the sign bit, so magnitudes are encoded alone.
    let signBit: Int?

    init(name: String, bits: Int, values: [Float], signBit: Int?) {
        self.name = name
        self.bits = bits
        self.values = values
        self.signBit = signBit
        var seen = Set<Float>()
        var s: [(value: Float, code: Int)] = []
        // Lowest code first, so +0 (code 0) stands for zero rather than -0.
        for (c, v) in values.enumerated() where v.isFinite {
            if signBit != nil && v.sign == .minus { continue }  // magnitudes only
            if seen.insert(v).inserted { s.append((v, c)) }
        }
        sorted = s.sorted { $0.value < $1.value }
        maxFinite = values.filter(\.isFinite).map(abs).max() ?? 0
    }

    /// The code of the table value nearest to `x` (ties to the even code, saturating).
    @inline(__always)
    public func encode(_ x: Float) -> Int {
        if x.isNaN { return sorted.first { $0.value == 0 }?.code ?? 0 }
        if let sb = signBit {
            let c = nearest(abs(x))
            return x.sign == .minus ? c | (1 << sb) : c
        }
        return nearest(x)
    }

    /// Nearest entry of `sorted` by binary search.
    @inline(__always)
    func nearest(_ x: Float) -> Int {
        var lo = 0, hi = sorted.count - 1
        if x <= sorted[lo].value { return sorted[lo].code }
        if x >= sorted[hi].value { return sorted[hi].code }
        while hi - lo > 1 {  // sorted[lo].value < x < sorted[hi].value
            let mid = (lo + hi) / 2
            if sorted[mid].value <= x { lo = mid } else { hi = mid }
        }
        if sorted[lo].value == x { return sorted[lo].code }
        // Distances in Double: exact for these floats, so ties are found exactly.
        let dl = Double(x) - Double(sorted[lo].value), dh = Double(sorted[hi].value) - Double(x)
        if dl < dh { return sorted[lo].code }
        if dh < dl { return sorted[hi].code }
        return sorted[lo].code % 2 == 0 ? sorted[lo].code : sorted[hi].code
    }

    // MARK: - The tables

    /// QLoRA's NormalFloat4: the 16 values of bitsandbytes' `create_normal_map` (code 7 is 0).
    public static let nf4 = ValueTable(name: "nf4", bits: 4, values: [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ], signBit: nil)

    /// OCP FP8 E4M3: bias 7, no infinities, max 448, NaN only S.1111.111.
    public static let fp8e4m3 = ValueTable(name: "fp8e4m3", bits: 8, values: (0..<256).map { c in
        let e = (c >> 3) & 15, m = c & 7
        let sign: Float = c & 0x80 != 0 ? -1 : 1
        if e == 15 && m == 7 { return .nan }
        let mag = e == 0 ? Float(m) / 8 * pow2(-6) : (1 + Float(m) / 8) * pow2(e - 7)
        return sign * mag
    }, signBit: 7)

    /// FP8 E5M2: IEEE-like, bias 15, infinities and NaNs at exponent 31, max 57344.
    public static let fp8e5m2 = ValueTable(name: "fp8e5m2", bits: 8, values: (0..<256).map { c in
        let e = (c >> 2) & 31, m = c & 3
        let sign: Float = c & 0x80 != 0 ? -1 : 1
        if e == 31 { return m == 0 ? sign * .infinity : .nan }
        let mag = e == 0 ? Float(m) / 4 * pow2(-14) : (1 + Float(m) / 4) * pow2(e - 15)
        return sign * mag
    }, signBit: 7)

    /// OCP MX E2M1 (the MXFP4 element): ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}, bias 1, no inf/NaN.
    public static let e2m1 = ValueTable(name: "e2m1", bits: 4, values: (0..<16).map { c in
        let e = (c >> 1) & 3, m = c & 1
        let sign: Float = c & 8 != 0 ? -1 : 1
        let mag = e == 0 ? Float(m) / 2 : (1 + Float(m) / 2) * pow2(e - 1)
        return sign * mag
    }, signBit: 3)

    /// IEEE binary16 (every bit pattern).
    public static let fp16 = ValueTable(name: "fp16", bits: 16,
                                        values: (0..<65536).map { Float(Float16(bitPattern: UInt16($0))) }, signBit: 15)

    /// bfloat16: the upper half of an FP32.
    public static let bf16 = ValueTable(name: "bf16", bits: 16,
                                        values: (0..<65536).map { Float(bitPattern: UInt32($0) << 16) }, signBit: 15)
}

@inline(__always) func pow2(_ e: Int) -> Float { Float(sign: .plus, exponent: e, significand: 1) }

// MARK: - Fast encoders for the 16-bit formats (same results as the table search)

extension ValueTable {
    /// fp16 code of x: IEEE round-half-to-even, saturating at ±65504.
    @inline(__always)
    static func fp16Code(_ x: Float) -> UInt16 {
        if x.isNaN { return 0 }
        var h = Float16(x)
        if h.isInfinite { h = h < 0 ? -Float16.greatestFiniteMagnitude : .greatestFiniteMagnitude }
        return h.bitPattern
    }

    /// bf16 code of x: round-half-to-even on the upper 16 bits of the FP32, saturating at the
    /// largest finite bf16.
    @inline(__always)
    static func bf16Code(_ x: Float) -> UInt16 {
        if x.isNaN { return 0 }
        let b = x.bitPattern
        let rounded = b &+ 0x7FFF &+ ((b >> 16) & 1)
        var c = UInt16(truncatingIfNeeded: rounded >> 16)
        if c & 0x7F80 == 0x7F80 { c = (c & 0x8000) | 0x7F7F }  // rounded up to infinity
        return c
    }
}
