/// Turns FP32 weight matrices into quantized ones (round to nearest; GPTQ and AWQ build on it).
public enum WeightQuantizer {
    /// Quantizes a row-major (rows, cols) matrix.
    public static func quantize(_ w: [Float], rows: Int, cols: Int, spec: WeightQuant) throws -> QuantizedMatrix {
        switch spec.format {
        case .int8, .int4, .int3, .int2:
            let group: Int
            switch spec.granularity {
            case .tensor, .channel: group = cols
            case .group(let n): group = min(n, cols)
            case .token: throw QuantDriftError.invalidInput("scheme: weights cannot be quantized per token")
            }
            guard group == cols || group % 32 == 0 else {
                throw QuantDriftError.invalidInput("scheme: weight group size \(group) must be a multiple of 32 (or the whole row, \(cols))")
            }
            return uniform(w, rows: rows, cols: cols, bits: spec.format.bits, group: group,
                           sharedAcrossRows: spec.granularity == .tensor, symmetric: spec.symmetric)
        case .q8_0: return blockQ8_0(w, rows: rows, cols: cols)
        case .q4_0: return blockQ4_0(w, rows: rows, cols: cols)
        case .q4_1: return blockQ4_1(w, rows: rows, cols: cols)
        default:
            throw QuantDriftError.unsupported("scheme: \(spec.format.rawValue) weights have no integer kernel; they are emulated through value tables")
        }
    }

    // MARK: Uniform integer, round to nearest

    /// Symmetric: codes in [-(2^(b-1)-1), 2^(b-1)-1] with scale amax/qmax. Asymmetric: codes in
    /// [0, 2^b-1] over [min, max]. Codes of 4 bits or fewer are stored as nibbles (symmetric ones
    /// offset by 2^(b-1) with the offset folded into `mins`).
    public static func uniform(_ w: [Float], rows: Int, cols: Int, bits: Int, group: Int,
                               sharedAcrossRows: Bool, symmetric: Bool) -> QuantizedMatrix {
        precondition(w.count == rows * cols && bits >= 2 && bits <= 8)
        let ng = (cols + group - 1) / group
        var scales = [Float](repeating: 0, count: rows * ng)
        var mins = [Float](repeating: 0, count: rows * ng)
        let qmaxSym = Float((1 << (bits - 1)) - 1)
        let levels = Float((1 << bits) - 1)
        // Range of every (row, group), or of the whole tensor.
        func stats(_ r: Int, _ g: Int) -> (lo: Float, hi: Float) {
            var lo = Float.infinity, hi = -Float.infinity
            let c0 = g * group, c1 = min(c0 + group, cols)
            for c in c0..<c1 { lo = min(lo, w[r * cols + c]); hi = max(hi, w[r * cols + c]) }
            return (lo, hi)
        }
        var global: (lo: Float, hi: Float)? = nil
        if sharedAcrossRows {
            var lo = Float.infinity, hi = -Float.infinity
            for v in w { lo = min(lo, v); hi = max(hi, v) }
            global = (lo, hi)
        }
        var codes = [Int8](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for g in 0..<ng {
                let (lo, hi) = global ?? stats(r, g)
                let c0 = g * group, c1 = min(c0 + group, cols)
                let i = r * ng + g
                if symmetric {
                    let amax = max(abs(lo), abs(hi))
                    let scale = amax > 0 ? amax / qmaxSym : 0
                    let inv: Float = scale > 0 ? 1 / scale : 0
                    scales[i] = scale
                    for c in c0..<c1 {
                        let q = (w[r * cols + c] * inv).rounded(.toNearestOrAwayFromZero)
                        codes[r * cols + c] = Int8(max(-qmaxSym, min(qmaxSym, q)))
                    }
                } else {
                    let lo0 = min(lo, 0), hi0 = max(hi, 0)  // keep 0 representable exactly
                    let scale = hi0 > lo0 ? (hi0 - lo0) / levels : 0
                    let inv: Float = scale > 0 ? 1 / scale : 0
                    let zero = (-lo0 * inv).rounded(.toNearestOrAwayFromZero)
                    scales[i] = scale
                    mins[i] = -zero * scale
                    for c in c0..<c1 {
                        let q = (w[r * cols + c] * inv).rounded(.toNearestOrAwayFromZero) + zero
                        let u = max(0, min(levels, q))
                        // int8 stores code - 128 so it fits Int8; the offset moves into the min.
                        codes[r * cols + c] = bits == 8 ? Int8(Int(u) - 128) : Int8(Int(u))
                    }
                    if bits == 8 { mins[i] += 128 * scale }
                }
            }
        }
        if bits == 8 {
            return QuantizedMatrix(rows: rows, cols: cols, groupSize: group, codes: .int8(codes), scales: scales,
                                   mins: symmetric ? nil : mins, bits: 8)
        }
        // Nibble container: symmetric codes shift by 2^(b-1) to be non-negative.
        let offset = symmetric ? (1 << (bits - 1)) : 0
        let unsigned = codes.map { UInt8(Int($0) + offset) }
        if symmetric { for i in 0..<mins.count { mins[i] = -Float(offset) * scales[i] } }
        return QuantizedMatrix(rows: rows, cols: cols, groupSize: group,
                               codes: .nibbles(QuantizedMatrix.packNibbles(unsigned, rows: rows, cols: cols)),
                               scales: scales, mins: mins, bits: bits)
    }

    // MARK: llama.cpp block formats (ggml's reference quantizers)

    @inline(__always) static func fp16(_ x: Float) -> Float { Float(Float16(x)) }

    /// Q8_0: blocks of 32, d = amax/127 stored as fp16, q = round(x/d).
    public static func blockQ8_0(_ w: [Float], rows: Int, cols: Int) -> QuantizedMatrix {
        precondition(cols % 32 == 0)
        let nb = cols / 32
        var codes = [Int8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: rows * nb)
        for r in 0..<rows {
            for b in 0..<nb {
                let o = r * cols + b * 32
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(w[o + j])) }
                let d = amax / 127
                let id: Float = d != 0 ? 1 / d : 0
                for j in 0..<32 { codes[o + j] = Int8((w[o + j] * id).rounded(.toNearestOrAwayFromZero)) }
                scales[r * nb + b] = fp16(d)
            }
        }
        return QuantizedMatrix(rows: rows, cols: cols, groupSize: 32, codes: .int8(codes), scales: scales, mins: nil,
                               bits: 8, scaleBytes: 2)
    }

    /// Q4_0: blocks of 32, d = (signed value of largest magnitude) / -8, q = min(15, ⌊x/d + 8.5⌋),
    /// x ≈ d·(q − 8).
    public static func blockQ4_0(_ w: [Float], rows: Int, cols: Int) -> QuantizedMatrix {
        precondition(cols % 32 == 0)
        let nb = cols / 32
        var codes = [UInt8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: rows * nb)
        var mins = [Float](repeating: 0, count: rows * nb)
        for r in 0..<rows {
            for b in 0..<nb {
                let o = r * cols + b * 32
                var amax: Float = 0, mx: Float = 0
                for j in 0..<32 where abs(w[o + j]) > amax { amax = abs(w[o + j]); mx = w[o + j] }
                let d = mx / -8
                let id: Float = d != 0 ? 1 / d : 0
                for j in 0..<32 { codes[o + j] = UInt8(min(15, Int8(truncatingIfNeeded: Int(w[o + j] * id + 8.5)))) }
                let dh = fp16(d)
                scales[r * nb + b] = dh
                mins[r * nb + b] = -8 * dh
            }
        }
        return QuantizedMatrix(rows: rows, cols: cols, groupSize: 32,
                               codes: .nibbles(QuantizedMatrix.packNibbles(codes, rows: rows, cols: cols)),
                               scales: scales, mins: mins, bits: 4, scaleBytes: 2)
    }

    /// Q4_1: blocks of 32 over [min, max], d = (max − min)/15, q = min(15, ⌊(x − min)/d + 0.5⌋),
    /// x ≈ d·q + min, d and min stored as fp16.
    public static func blockQ4_1(_ w: [Float], rows: Int, cols: Int) -> QuantizedMatrix {
        precondition(cols % 32 == 0)
        let nb = cols / 32
        var codes = [UInt8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: rows * nb)
        var mins = [Float](repeating: 0, count: rows * nb)
        for r in 0..<rows {
            for b in 0..<nb {
                let o = r * cols + b * 32
                var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
                for j in 0..<32 { lo = min(lo, w[o + j]); hi = max(hi, w[o + j]) }
                let d = (hi - lo) / 15
                let id: Float = d != 0 ? 1 / d : 0
                for j in 0..<32 { codes[o + j] = UInt8(min(15, Int8(truncatingIfNeeded: Int((w[o + j] - lo) * id + 0.5)))) }
                scales[r * nb + b] = fp16(d)
                mins[r * nb + b] = fp16(lo)
            }
        }
        return QuantizedMatrix(rows: rows, cols: cols, groupSize: 32,
                               codes: .nibbles(QuantizedMatrix.packNibbles(codes, rows: rows, cols: cols)),
                               scales: scales, mins: mins, bits: 4, scaleBytes: 2)
    }
}
