/// Turns FP32 weight matrices into quantized ones (round to nearest; GPTQ and AWQ build on it).
public enum WeightQuantizer {
    /// Quantizes a row-major (rows, cols) matrix.
    public static func quantize(_ w: [Float], rows: Int, cols: Int, spec: WeightQuant) throws -> QuantizedMatrix {
        guard case .integer(let m) = try spec.format.traits.weights.quantize(w, rows, cols, spec) else {
            throw QuantDriftError.unsupported("scheme: \(spec.format.rawValue) weights have no integer kernel (value tables or llama.cpp blocks decoded for the FP32 product)")
        }
        return m
    }

    /// A weight layer of any format: integer formats on their kernels (`QuantizedLinear`),
    /// emulated formats through their value tables (`TableLinear`).
    public static func layer(_ w: [Float], rows: Int, cols: Int, spec: WeightQuant,
                             activations: ActivationQuantizer? = nil) throws -> any DequantizableLinear {
        switch try spec.format.traits.weights.quantize(w, rows, cols, spec) {
        case .integer(let m): return try QuantizedLinear(m, activations: activations)
        case .table(let t): return TableLinear(t, activations: activations)
        case .blocks(let m): return BlockLinear(m, outDim: rows, inDim: cols, activations: activations)
        }
    }

    /// The group size of a uniform integer weight spec on rows of `cols` (the whole row for
    /// tensor and channel granularity).
    static func uniformGroup(_ spec: WeightQuant, cols: Int) throws -> Int {
        let group: Int
        switch spec.granularity {
        case .tensor, .channel: group = cols
        case .group(let n): group = min(n, cols)
        case .token: throw QuantDriftError.invalidInput("scheme: weights cannot be quantized per token")
        }
        guard group == cols || group % 32 == 0 else {
            throw QuantDriftError.invalidInput("scheme: weight group size \(group) must be a multiple of 32 (or the whole row, \(cols))")
        }
        return group
    }

    // MARK: Uniform integer, round to nearest

    /// Symmetric: codes in [-(2^(b-1)-1), 2^(b-1)-1] with scale amax/qmax. Asymmetric: codes in
    /// [0, 2^b-1] over [min, max]. Codes of 4 bits or fewer are stored as nibbles (symmetric ones
    /// offset by 2^(b-1) with the offset folded into `mins`).
    public static func uniform(_ w: [Float], rows: Int, cols: Int, bits: Int, group: Int,
                               sharedAcrossRows: Bool, symmetric: Bool) -> QuantizedMatrix {
        precondition(w.count == rows * cols && bits >= 2 && bits <= 8)
        let grid = UniformGrid(bits: bits, symmetric: symmetric)
        let ng = (cols + group - 1) / group
        var cells = [UniformCell](repeating: UniformCell(scale: 0, inv: 0, zero: 0, min: 0), count: rows * ng)
        var global: (lo: Float, hi: Float)? = nil
        if sharedAcrossRows {
            var lo = Float.infinity, hi = -Float.infinity
            for v in w { lo = min(lo, v); hi = max(hi, v) }
            global = (lo, hi)
        }
        var stored = [Int](repeating: 0, count: rows * cols)
        w.withUnsafeBufferPointer { wp in
            for r in 0..<rows {
                for g in 0..<ng {
                    let c0 = g * group, c1 = min(c0 + group, cols)
                    let cell: UniformCell
                    if let (lo, hi) = global {
                        cell = grid.cell(lo: lo, hi: hi)
                    } else {
                        cell = grid.cell(of: wp.baseAddress! + r * cols + c0, count: c1 - c0)
                    }
                    cells[r * ng + g] = cell
                    for c in c0..<c1 { stored[r * cols + c] = grid.code(wp[r * cols + c], cell) }
                }
            }
        }
        return grid.matrix(rows: rows, cols: cols, group: group, codes: stored, cells: cells)
    }

    // MARK: llama.cpp block formats (ggml's reference quantizers)

    @inline(__always) static func fp16(_ x: Float) -> Float { Float(Float16(x)) }

    /// Q8_0: blocks of 32, d = amax/127 stored as fp16, q = round(x/d).
    public static func blockQ8_0(_ w: [Float], rows: Int, cols: Int) -> QuantizedMatrix {
        precondition(cols % 32 == 0)
        let nb = cols / 32
        var codes = [Int8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: rows * nb)
        w.withUnsafeBufferPointer { wp in
            codes.withUnsafeMutableBufferPointer { cp in
                for r in 0..<rows {
                    for b in 0..<nb {
                        let o = r * cols + b * 32
                        scales[r * nb + b] = ggmlBlockQ8_0(wp.baseAddress! + o, cp.baseAddress! + o)
                    }
                }
            }
        }
        return QuantizedMatrix(rows: rows, cols: cols, groupSize: 32, codes: .int8(codes), scales: scales, mins: nil,
                               bits: 8, scaleBytes: 2)
    }

    /// Q4_0: blocks of 32, d = (signed value of largest magnitude) / -8, q = min(15, ⌊x/d + 8.5⌋),
    /// x ≈ d·(q − 8).
    public static func blockQ4_0(_ w: [Float], rows: Int, cols: Int) -> QuantizedMatrix {
        nibbleBlocks(w, rows: rows, cols: cols) { x, q in
            let dh = ggmlSymmetricBlock(x, q, half: 8)
            return (dh, -8 * dh)
        }
    }

    /// Q4_1: blocks of 32 over [min, max], d = (max − min)/15, q = min(15, ⌊(x − min)/d + 0.5⌋),
    /// x ≈ d·q + min, d and min stored as fp16.
    public static func blockQ4_1(_ w: [Float], rows: Int, cols: Int) -> QuantizedMatrix {
        nibbleBlocks(w, rows: rows, cols: cols) { x, q in ggmlRangeBlock(x, q, top: 15) }
    }

    // One ggml block of 32 values as its reference quantizers code it (the weights above and
    // llama.cpp's KV-cache types share these).

    /// Q8_0's block: codes round(x/d) in -127…127; returns fp16(d), d = max|x|/127.
    static func ggmlBlockQ8_0(_ x: UnsafePointer<Float>, _ q: UnsafeMutablePointer<Int8>) -> Float {
        var amax: Float = 0
        for j in 0..<32 { amax = max(amax, abs(x[j])) }
        let d = amax / 127
        let id: Float = d != 0 ? 1 / d : 0
        for j in 0..<32 { q[j] = Int8((x[j] * id).rounded(.toNearestOrAwayFromZero)) }
        return fp16(d)
    }

    /// Q4_0's (half 8) and Q5_0's (half 16) block: d = (signed value of largest magnitude)/−half,
    /// codes min(2·half − 1, ⌊x/d + half + 0.5⌋), x ≈ d·(q − half); returns fp16(d).
    static func ggmlSymmetricBlock(_ x: UnsafePointer<Float>, _ q: UnsafeMutablePointer<UInt8>, half: Int) -> Float {
        var amax: Float = 0, mx: Float = 0
        for j in 0..<32 where abs(x[j]) > amax { amax = abs(x[j]); mx = x[j] }
        let d = mx / -Float(half)
        let id: Float = d != 0 ? 1 / d : 0
        for j in 0..<32 { q[j] = ggmlCode(x[j] * id + (Float(half) + 0.5), top: 2 * half - 1) }
        return fp16(d)
    }

    /// Q4_1's (top 15) and Q5_1's (top 31) block over [min, max]: d = (max − min)/top, codes
    /// min(top, ⌊(x − min)/d + 0.5⌋), x ≈ d·q + min; returns fp16(d) and fp16(min).
    static func ggmlRangeBlock(_ x: UnsafePointer<Float>, _ q: UnsafeMutablePointer<UInt8>, top: Int) -> (scale: Float, min: Float) {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for j in 0..<32 { lo = min(lo, x[j]); hi = max(hi, x[j]) }
        let d = (hi - lo) / Float(top)
        let id: Float = d != 0 ? 1 / d : 0
        for j in 0..<32 { q[j] = ggmlCode((x[j] - lo) * id + 0.5, top: top) }
        return (fp16(d), fp16(lo))
    }

    /// A code from ggml's float expression: truncated toward zero, within 0…top (NaN: 0).
    @inline(__always)
    static func ggmlCode(_ f: Float, top: Int) -> UInt8 {
        f.isFinite ? UInt8(max(0, min(top, Int(max(-1, min(f, 256)))))) : 0
    }

    /// A 4-bit block format: `block` codes one block of 32 values and returns its scale and min.
    static func nibbleBlocks(_ w: [Float], rows: Int, cols: Int,
                             _ block: (UnsafePointer<Float>, UnsafeMutablePointer<UInt8>) -> (scale: Float, min: Float)) -> QuantizedMatrix {
        precondition(cols % 32 == 0 && w.count == rows * cols)
        let nb = cols / 32
        var codes = [UInt8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: rows * nb)
        var mins = [Float](repeating: 0, count: rows * nb)
        w.withUnsafeBufferPointer { wp in
            codes.withUnsafeMutableBufferPointer { cp in
                for r in 0..<rows {
                    for b in 0..<nb {
                        let o = r * cols + b * 32
                        (scales[r * nb + b], mins[r * nb + b]) = block(wp.baseAddress! + o, cp.baseAddress! + o)
                    }
                }
            }
        }
        return QuantizedMatrix(rows: rows, cols: cols, groupSize: 32,
                               codes: .nibbles(QuantizedMatrix.packNibbles(codes, rows: rows, cols: cols)),
                               scales: scales, mins: mins, bits: 4, scaleBytes: 2)
    }
}

// MARK: - The uniform grid, shared by RTN, GPTQ and AWQ

/// The round-to-nearest integer grid of `WeightQuantizer.uniform`, split so that GPTQ and AWQ
/// produce codes on exactly the same grid: a cell (one row's group) has a scale and a min, and a
/// stored code c decodes to `scale * c + min` (as `QuantizedMatrix` decodes it).
struct UniformGrid: Sendable {
    let bits: Int
    let symmetric: Bool
    let qmaxSym: Float
    let levels: Float
    /// Symmetric nibble codes are stored offset by 2^(b-1); the offset is folded into the min.
    let offset: Int

    init(bits: Int, symmetric: Bool) {
        precondition(bits >= 2 && bits <= 8)
        self.bits = bits
        self.symmetric = symmetric
        qmaxSym = Float((1 << (bits - 1)) - 1)
        levels = Float((1 << bits) - 1)
        offset = symmetric && bits < 8 ? 1 << (bits - 1) : 0
    }

    /// The cell of a group whose values span [lo, hi].
    @inline(__always)
    func cell(lo: Float, hi: Float) -> UniformCell {
        if symmetric {
            let amax = max(abs(lo), abs(hi))
            let scale = amax > 0 ? amax / qmaxSym : 0
            return UniformCell(scale: scale, inv: scale > 0 ? 1 / scale : 0, zero: 0, min: -Float(offset) * scale)
        }
        let lo0 = min(lo, 0), hi0 = max(hi, 0)  // keep 0 representable exactly
        let scale = hi0 > lo0 ? (hi0 - lo0) / levels : 0
        let inv: Float = scale > 0 ? 1 / scale : 0
        let zero = (-lo0 * inv).rounded(.toNearestOrAwayFromZero)
        var mn = -zero * scale
        // int8 stores code - 128 so it fits Int8; the offset moves into the min.
        if bits == 8 { mn += 128 * scale }
        return UniformCell(scale: scale, inv: inv, zero: zero, min: mn)
    }

    /// The cell of `count` values at `p`.
    @inline(__always)
    func cell(of p: UnsafePointer<Float>, count: Int) -> UniformCell {
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<count { lo = min(lo, p[i]); hi = max(hi, p[i]) }
        return cell(lo: lo, hi: hi)
    }

    /// The stored code of w in a cell (Int8 range for 8 bits, 0...2^b-1 for nibbles).
    @inline(__always)
    func code(_ w: Float, _ c: UniformCell) -> Int {
        if symmetric {
            let q = (w * c.inv).rounded(.toNearestOrAwayFromZero)
            return Int(max(-qmaxSym, min(qmaxSym, q))) + offset
        }
        let q = (w * c.inv).rounded(.toNearestOrAwayFromZero) + c.zero
        let u = Int(max(0, min(levels, q)))
        return bits == 8 ? u - 128 : u
    }

    /// The value a stored code decodes to (exactly as `QuantizedMatrix.value` computes it).
    @inline(__always)
    func value(_ stored: Int, _ c: UniformCell) -> Float {
        c.scale * Float(stored) + (bits == 8 && symmetric ? 0 : c.min)
    }

    /// Assembles stored codes (rows, cols) and cells (rows, groups) into a matrix.
    func matrix(rows: Int, cols: Int, group: Int, codes stored: [Int], cells: [UniformCell]) -> QuantizedMatrix {
        let scales = cells.map(\.scale)
        if bits == 8 {
            return QuantizedMatrix(rows: rows, cols: cols, groupSize: group, codes: .int8(stored.map { Int8($0) }),
                                   scales: scales, mins: symmetric ? nil : cells.map(\.min), bits: 8)
        }
        return QuantizedMatrix(rows: rows, cols: cols, groupSize: group,
                               codes: .nibbles(QuantizedMatrix.packNibbles(stored.map { UInt8($0) }, rows: rows, cols: cols)),
                               scales: scales, mins: cells.map(\.min), bits: bits)
    }
}

/// One group's grid: scale, its inverse, zero point (asymmetric) and the min stored with it.
struct UniformCell: Sendable {
    var scale: Float
    var inv: Float
    var zero: Float
    var min: Float
}
