import CKernels

/// A weight matrix in integer codes with a scale (and optional min) per (row, group):
/// element i of row o decodes to `scales[o*ng + g] * code + mins[o*ng + g]`, g = i / groupSize.
/// 8-bit codes are Int8 row-major; 4-bit (and 3-, 2-bit) codes are unsigned nibbles packed per
/// 32-element block (byte j: element j low nibble, element j+16 high nibble).
public struct QuantizedMatrix: Sendable {
    public enum Codes: Sendable {
        case int8([Int8])       // (rows, cols)
        case nibbles([UInt8])   // (rows, ceil(cols/32)*16)
    }

    public let rows: Int
    public let cols: Int
    public let groupSize: Int
    public let codes: Codes
    public let scales: [Float]      // (rows, groups)
    public let mins: [Float]?       // (rows, groups), nil when symmetric around 0
    /// Bits of information per stored code (e.g. 3 for int3 held in a nibble).
    public let bits: Int
    /// Bytes one scale or min takes in the format (4 for FP32, 2 for fp16 block scales).
    public let scaleBytes: Int

    public var groupsPerRow: Int { (cols + groupSize - 1) / groupSize }
    public var nibbleRowBytes: Int { (cols + 31) / 32 * 16 }

    /// Bytes as stored: codes at their container width plus scales and mins.
    public var storageBytes: Int {
        let codeBytes: Int
        switch codes {
        case .int8(let c): codeBytes = c.count
        case .nibbles(let c): codeBytes = c.count
        }
        return codeBytes + (scales.count + (mins?.count ?? 0)) * scaleBytes
    }

    public init(rows: Int, cols: Int, groupSize: Int, codes: Codes, scales: [Float], mins: [Float]?, bits: Int, scaleBytes: Int = 4) {
        self.rows = rows
        self.cols = cols
        self.groupSize = groupSize
        self.codes = codes
        self.scales = scales
        self.mins = mins
        self.bits = bits
        self.scaleBytes = scaleBytes
    }

    /// Code of element (r, c) as an Int.
    @inline(__always)
    public func code(_ r: Int, _ c: Int) -> Int {
        switch codes {
        case .int8(let q): return Int(q[r * cols + c])
        case .nibbles(let q):
            let b = q[r * nibbleRowBytes + (c >> 5) * 16 + (c & 15)]
            return Int((c & 16) != 0 ? b >> 4 : b & 15)
        }
    }

    /// Decoded value of element (r, c).
    @inline(__always)
    public func value(_ r: Int, _ c: Int) -> Float {
        let g = r * groupsPerRow + c / groupSize
        return scales[g] * Float(code(r, c)) + (mins?[g] ?? 0)
    }

    /// Decodes rows `range` into `out` ((range.count, cols) floats), as `value` does (C kernels).
    public func dequantizeRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        guard !range.isEmpty else { return }
        let ng = groupsPerRow, n = Int32(range.count)
        scales.withUnsafeBufferPointer { s in
            withOptionalPointer(mins) { mn in
                let sp = s.baseAddress! + range.lowerBound * ng
                let mp = mn.map { $0 + range.lowerBound * ng }
                switch codes {
                case .int8(let q):
                    q.withUnsafeBufferPointer { qp in
                        qd_decode_i8(qp.baseAddress! + range.lowerBound * cols, sp, mp, Int32(groupSize), n, Int32(cols), out)
                    }
                case .nibbles(let q):
                    q.withUnsafeBufferPointer { qp in
                        qd_decode_u4(qp.baseAddress! + range.lowerBound * nibbleRowBytes, sp, mp, Int32(groupSize), n,
                                     Int32(cols), out)
                    }
                }
            }
        }
    }

    /// Pointers to the codes of rows `range` and their scales and mins, for a kernel call on
    /// those rows alone (`body(codes, scales, mins, range.count)`).
    public enum RowCodes {
        case int8(UnsafePointer<Int8>)
        case nibbles(UnsafePointer<UInt8>)
    }

    @inline(__always)
    public func withRows<R>(_ range: Range<Int>, _ body: (RowCodes, UnsafePointer<Float>, UnsafePointer<Float>?, Int) -> R) -> R {
        let ng = groupsPerRow
        return scales.withUnsafeBufferPointer { s in
            withOptionalPointer(mins) { mn in
                let sp = s.baseAddress! + range.lowerBound * ng
                let mp = mn.map { $0 + range.lowerBound * ng }
                switch codes {
                case .int8(let q):
                    return q.withUnsafeBufferPointer { body(.int8($0.baseAddress! + range.lowerBound * cols), sp, mp, range.count) }
                case .nibbles(let q):
                    return q.withUnsafeBufferPointer {
                        body(.nibbles($0.baseAddress! + range.lowerBound * nibbleRowBytes), sp, mp, range.count)
                    }
                }
            }
        }
    }

    /// The whole matrix decoded, row-major.
    public func dequantized() -> [Float] {
        [Float](unsafeUninitializedCapacity: rows * cols) { buf, n in
            dequantizeRows(0..<rows, into: buf.baseAddress!)
            n = rows * cols
        }
    }

    /// Packs 4-bit codes (0...15), row-major (rows, cols), into the nibble layout.
    public static func packNibbles(_ codes: [UInt8], rows: Int, cols: Int) -> [UInt8] {
        let rowBytes = (cols + 31) / 32 * 16
        var out = [UInt8](repeating: 0, count: rows * rowBytes)
        for r in 0..<rows {
            for c in 0..<cols {
                let v = codes[r * cols + c] & 15
                let i = r * rowBytes + (c >> 5) * 16 + (c & 15)
                out[i] |= (c & 16) != 0 ? v << 4 : v
            }
        }
        return out
    }
}
