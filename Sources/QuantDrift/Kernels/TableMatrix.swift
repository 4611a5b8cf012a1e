/// A weight matrix in an emulated format: codes into an exact value table, and a scale per
/// (row, group) (NF4, FP8), a power-of-two E8M0 scale per block of 32 (MXFP4), an E4M3 scale per
/// block of 16 times an FP32 tensor scale (NVFP4), or no scale (fp16, bf16). Element (r, c) decodes to `table.values[code] * scale(r, c / groupSize)`.
public struct TableMatrix: Sendable {
    public enum Codes: Sendable {
        /// 4-bit codes packed as `QuantizedMatrix` packs them: per 32-element block 16 bytes,
        /// byte j holding element j (low nibble) and element j+16 (high nibble).
        case nibbles([UInt8])   // (rows, ceil(cols/32)*16)
        case bytes([UInt8])     // (rows, cols)
        case halves([UInt16])   // (rows, cols)
    }

    public enum Scales: Sendable {
        case none
        /// FP32 scale per (row, group), or one for the whole tensor (`count == 1`).
        case float([Float])
        /// E8M0 shared exponents per (row, block): scale = 2^e.
        case e8m0([Int8])
        /// NVFP4: an FP8 E4M3 code per (row, block of 16) and one FP32 scale for the tensor:
        /// scale = e4m3(code) · tensor.
        case e4m3([UInt8], tensor: Float)
    }

    public let table: ValueTable
    public let rows: Int
    public let cols: Int
    public let groupSize: Int
    public let codes: Codes
    public let scales: Scales

    public var groupsPerRow: Int { (cols + groupSize - 1) / groupSize }
    public var nibbleRowBytes: Int { (cols + 31) / 32 * 16 }

    /// Bytes as stored in the real format: codes at their width (4, 8, 16 bits) plus FP32 scales
    /// (NF4, FP8) or one byte per E8M0 exponent (MXFP4).
    public var storageBytes: Int {
        let codeBytes: Int
        switch codes {
        case .nibbles(let c): codeBytes = c.count
        case .bytes(let c): codeBytes = c.count
        case .halves(let c): codeBytes = 2 * c.count
        }
        switch scales {
        case .none: return codeBytes
        case .float(let s): return codeBytes + 4 * s.count
        case .e8m0(let e): return codeBytes + e.count
        case .e4m3(let e, _): return codeBytes + e.count + 4
        }
    }

    /// Code of element (r, c).
    @inline(__always)
    public func code(_ r: Int, _ c: Int) -> Int {
        switch codes {
        case .nibbles(let q):
            let b = q[r * nibbleRowBytes + (c >> 5) * 16 + (c & 15)]
            return Int((c & 16) != 0 ? b >> 4 : b & 15)
        case .bytes(let q): return Int(q[r * cols + c])
        case .halves(let q): return Int(q[r * cols + c])
        }
    }

    /// Scale of (row r, group g).
    @inline(__always)
    public func scale(_ r: Int, _ g: Int) -> Float {
        switch scales {
        case .none: return 1
        case .float(let s): return s.count == 1 ? s[0] : s[r * groupsPerRow + g]
        case .e8m0(let e): return pow2(Int(e[r * groupsPerRow + g]))
        case .e4m3(let e, let tensor): return ValueTable.fp8e4m3.values[Int(e[r * groupsPerRow + g])] * tensor
        }
    }

    /// Decoded value of element (r, c).
    @inline(__always)
    public func value(_ r: Int, _ c: Int) -> Float {
        table.values[code(r, c)] * scale(r, c / groupSize)
    }

    /// Decodes rows `range` into `out` ((range.count, cols) floats) through the value table.
    public func dequantizeRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let ng = groupsPerRow, g = groupSize, n = cols
        table.values.withUnsafeBufferPointer { t in
            var rowScales = [Float](repeating: 1, count: ng)
            for r in range {
                for gi in 0..<ng { rowScales[gi] = scale(r, gi) }
                let o = out + (r - range.lowerBound) * n
                switch codes {
                case .nibbles(let q):
                    q.withUnsafeBufferPointer { qp in
                        let row = qp.baseAddress! + r * nibbleRowBytes
                        for b in 0..<((n + 31) / 32) {
                            let base = b * 32
                            for j in 0..<16 {
                                let byte = row[b * 16 + j]
                                let c0 = base + j, c1 = base + j + 16
                                if c0 < n { o[c0] = t[Int(byte & 15)] * rowScales[c0 / g] }
                                if c1 < n { o[c1] = t[Int(byte >> 4)] * rowScales[c1 / g] }
                            }
                        }
                    }
                case .bytes(let q):
                    q.withUnsafeBufferPointer { qp in
                        let row = qp.baseAddress! + r * n
                        for c in 0..<n { o[c] = t[Int(row[c])] * rowScales[c / g] }
                    }
                case .halves(let q):
                    q.withUnsafeBufferPointer { qp in
                        let row = qp.baseAddress! + r * n
                        for c in 0..<n { o[c] = t[Int(row[c])] * rowScales[c / g] }
                    }
                }
            }
        }
    }

    /// The whole matrix decoded, row-major.
    public func dequantized() -> [Float] {
        [Float](unsafeUninitializedCapacity: rows * cols) { buf, count in
            dequantizeRows(0..<rows, into: buf.baseAddress!)
            count = rows * cols
        }
    }
}
