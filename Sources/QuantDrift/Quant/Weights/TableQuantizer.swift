extension WeightQuantizer {
    /// Quantizes a row-major (rows, cols) matrix into an emulated format:
    /// - nf4: absmax scale per group (default g64), values / absmax to the nearest NF4 value;
    /// - fp8e4m3, fp8e5m2: scale amax / max-finite (448, 57344) per channel, group or tensor;
    /// - mxfp4: blocks of 32 along the row (fixed), shared scale 2^(⌊log2 amax⌋ − 2) as an E8M0
    ///   exponent (OCP MX: 2 is the exponent of E2M1's largest power of two), elements to the
    ///   nearest E2M1 value, saturating at ±6;
    /// - fp16, bf16: each value rounded half to even, no scale (granularity is ignored).
    /// Rounding is to the nearest table value with ties to the even code (see `ValueTable`).
    public static func quantizeTable(_ w: [Float], rows: Int, cols: Int, spec: WeightQuant) throws -> TableMatrix {
        precondition(w.count == rows * cols)
        guard let table = ValueTable.of(spec.format) else {
            throw QuantDriftError.invalidInput("scheme: \(spec.format.rawValue) is not an emulated table format")
        }
        let f = spec.format
        guard spec.method == .rtn || (spec.method == .mse && f == .nvfp4) else {
            throw QuantDriftError.invalidInput("scheme: \(spec.method.rawValue) does not apply to \(spec.format.rawValue) weights")
        }
        if f == .fp16 || f == .bf16 {
            var codes = [UInt16](repeating: 0, count: rows * cols)
            for i in 0..<(rows * cols) { codes[i] = f == .fp16 ? ValueTable.fp16Code(w[i]) : ValueTable.bf16Code(w[i]) }
            return TableMatrix(table: table, rows: rows, cols: cols, groupSize: cols, codes: .halves(codes), scales: .none)
        }
        guard spec.symmetric else {
            throw QuantDriftError.invalidInput("scheme: \(f.rawValue) weights are scaled by their absolute maximum (symmetric); asym is not supported")
        }
        var group: Int
        switch spec.granularity {
        case .tensor, .channel: group = cols
        case .group(let n):
            guard n >= 1 else { throw QuantDriftError.invalidInput("scheme: weight group size must be ≥ 1") }
            group = min(n, cols)
        case .token: throw QuantDriftError.invalidInput("scheme: weights cannot be quantized per token")
        }
        if f == .mxfp4 {
            guard spec.granularity == .group(32) else {
                throw QuantDriftError.invalidInput("scheme: mxfp4 has fixed blocks of 32 (got \(spec.granularity))")
            }
            group = 32
        }
        if f == .nvfp4 {
            guard spec.granularity == .group(16) else {
                throw QuantDriftError.invalidInput("scheme: nvfp4 has fixed blocks of 16 (got \(spec.granularity))")
            }
            return nvfp4(w, rows: rows, cols: cols, searched: spec.method == .mse)
        }
        let ng = (cols + group - 1) / group
        let perTensor = spec.granularity == .tensor
        // The scale of each (row, group): what the group's values are divided by before encoding.
        var floatScales = [Float](repeating: 0, count: perTensor ? 1 : rows * ng)
        var exponents = [Int8](repeating: 0, count: f == .mxfp4 ? rows * ng : 0)
        let maxRep = table.maxFinite
        func amax(_ r: Int, _ g: Int) -> Float {
            var m: Float = 0
            for c in (g * group)..<min(g * group + group, cols) { m = max(m, abs(w[r * cols + c])) }
            return m
        }
        if perTensor {
            var m: Float = 0
            for v in w { m = max(m, abs(v)) }
            floatScales[0] = m / maxRep
        } else {
            for r in 0..<rows {
                for g in 0..<ng {
                    let a = amax(r, g)
                    if f == .mxfp4 {
                        // ⌊log2 amax⌋ − emax(E2M1) = exponent − 2, clamped to E8M0's range.
                        let e = a > 0 ? Int(a.exponent) - 2 : -127
                        exponents[r * ng + g] = Int8(max(-127, min(127, e)))
                    } else {
                        floatScales[r * ng + g] = a / maxRep  // nf4: maxRep = 1, the absmax itself
                    }
                }
            }
        }
        // Encode value / scale (a zero scale encodes everything as zero).
        let n = rows * cols
        var raw = [Int](repeating: 0, count: n)
        for r in 0..<rows {
            for g in 0..<ng {
                let s: Float = f == .mxfp4 ? pow2(Int(exponents[r * ng + g])) : floatScales[perTensor ? 0 : r * ng + g]
                let inv: Float = s > 0 ? 1 / s : 0
                for c in (g * group)..<min(g * group + group, cols) {
                    // MXFP4's scale is a power of two: x·2^-e is exact; others divide.
                    let v = s > 0 ? (f == .mxfp4 ? w[r * cols + c] * inv : w[r * cols + c] / s) : 0
                    raw[r * cols + c] = table.encode(v)
                }
            }
        }
        let codes: TableMatrix.Codes = table.bits == 4
            ? .nibbles(QuantizedMatrix.packNibbles(raw.map { UInt8($0) }, rows: rows, cols: cols))
            : .bytes(raw.map { UInt8($0) })
        let scales: TableMatrix.Scales = f == .mxfp4 ? .e8m0(exponents) : .float(floatScales)
        return TableMatrix(table: table, rows: rows, cols: cols, groupSize: group, codes: codes, scales: scales)
    }

    /// NVFP4 (NVIDIA's recipe): tensor scale S = max|W| / (6·448); per block of 16 an E4M3 scale
    /// code for max|block| / 6 / S (round to nearest, saturating), block scale s = e4m3·S; values
    /// encoded to the nearest E2M1 of x / s. `searched`: each block also tries the eleven E4M3
    /// codes from 8 below to 2 above that one and keeps the scale of least squared error
    /// (a smaller scale clips the block's largest value but refines the rest).
    static func nvfp4(_ w: [Float], rows: Int, cols: Int, searched: Bool) -> TableMatrix {
        let table = ValueTable.e2m1, fp8 = ValueTable.fp8e4m3
        let group = 16, ng = (cols + group - 1) / group
        var amax: Float = 0
        for v in w where v.isFinite { amax = max(amax, abs(v)) }
        let tensor = amax / (6 * 448)
        var scaleCodes = [UInt8](repeating: 0, count: rows * ng)
        var raw = [UInt8](repeating: 0, count: rows * cols)
        w.withUnsafeBufferPointer { x in
            for r in 0..<rows {
                for g in 0..<ng {
                    let c0 = r * cols + g * group, c1 = r * cols + min(cols, g * group + group)
                    guard tensor > 0 else { continue }
                    var blockMax: Float = 0
                    for i in c0..<c1 { blockMax = max(blockMax, abs(x[i])) }
                    let first = fp8.encode(blockMax / 6 / tensor)
                    // Code of the scale, its error and the codes it gives.
                    func error(_ code: Int) -> Float {
                        let s = fp8.values[code] * tensor
                        guard s > 0, s.isFinite else { return .infinity }
                        var e: Float = 0
                        for i in c0..<c1 {
                            let d = x[i] - table.values[table.encode(x[i] / s)] * s
                            e += d * d
                        }
                        return e
                    }
                    var best = first, bestError = error(first)
                    if searched {
                        // E4M3 codes 0…126 are the non-negative finite values in increasing order.
                        for code in max(1, first - 8)...min(126, first + 2) where code != first {
                            let e = error(code)
                            if e < bestError { best = code; bestError = e }
                        }
                    }
                    scaleCodes[r * ng + g] = UInt8(best)
                    let s = fp8.values[best] * tensor
                    for i in c0..<c1 { raw[i] = s > 0 ? UInt8(table.encode(x[i] / s)) : 0 }
                }
            }
        }
        return TableMatrix(table: table, rows: rows, cols: cols, groupSize: group,
                           codes: .nibbles(QuantizedMatrix.packNibbles(raw, rows: rows, cols: cols)),
                           scales: .e4m3(scaleCodes, tensor: tensor))
    }
}
