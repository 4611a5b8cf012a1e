import CKernels

/// A linear layer on integer codes: FP32 activations through the int8/int4 × float kernels, or
/// int8 activations (W8A8, W4A8, ggml-style q8 blocks) through the integer kernels. Several rows
/// without activation quantization decode weight tiles and use sgemm (same values, BLAS speed).
public struct QuantizedLinear: LinearLayer {
    public let matrix: QuantizedMatrix
    public let activations: ActivationQuantizer?
    /// Symmetric nibble codes: their mins are exactly `offset·scale` (offset −2^(b−1)), so the
    /// FP32-activation product takes the offset and never reads the mins.
    public let nibbleOffset: Float?

    public init(_ matrix: QuantizedMatrix, activations: ActivationQuantizer? = nil) throws {
        let g = matrix.groupSize
        guard g == matrix.cols || g % 32 == 0 else {
            throw QuantDriftError.invalidInput("weight group size \(g) must be a multiple of 32 or the row length \(matrix.cols)")
        }
        if let a = activations {
            let xg = a.groupSize(inDim: matrix.cols)
            // Spans of min(g, xg) elements must not cross a group boundary of the other.
            guard xg == matrix.cols || xg % 32 == 0, xg == matrix.cols || g % xg == 0 || xg % g == 0 else {
                throw QuantDriftError.invalidInput("activation group \(xg) and weight group \(g) must divide one another (multiples of 32)")
            }
        }
        self.matrix = matrix
        self.activations = activations
        nibbleOffset = Self.offset(of: matrix)
    }

    /// The offset k with mins[i] == k·scales[i] for every group, if the matrix has nibble codes
    /// whose mins are all of that form (k = −2^(bits−1), as symmetric codes are stored).
    static func offset(of m: QuantizedMatrix) -> Float? {
        guard case .nibbles = m.codes, let mins = m.mins, m.bits < 8, mins.count == m.scales.count else { return nil }
        let k = -Float(1 << (m.bits - 1))
        for i in mins.indices where mins[i] != k * m.scales[i] { return nil }
        return k
    }

    public var inDim: Int { matrix.cols }
    public var outDim: Int { matrix.rows }
    public var storageBytes: Int { matrix.storageBytes }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        let m = matrix
        let mins = m.mins
        if let act = activations {
            let codes = scratch.bytes.bindMemory(to: Int8.self, capacity: rows * m.cols)
            act.quantize(x, rows: rows, inDim: m.cols, codes: codes, scales: scratch.floats.pointer, blockSums: scratch.blockSums)
            let xg = act.groupSize(inDim: m.cols)
            m.scales.withUnsafeBufferPointer { s in
                withOptionalPointer(mins) { mn in
                    switch m.codes {
                    case .int8(let q):
                        q.withUnsafeBufferPointer { qp in
                            qd_gemm_i8_i8(qp.baseAddress, s.baseAddress, mn, Int32(m.groupSize), Int32(m.rows), Int32(m.cols),
                                          Int32(rows), codes, scratch.floats.pointer, scratch.blockSums, Int32(xg), y)
                        }
                    case .nibbles(let q):
                        q.withUnsafeBufferPointer { qp in
                            qd_gemm_u4_i8(qp.baseAddress, s.baseAddress, mn, Int32(m.groupSize), Int32(m.rows), Int32(m.cols),
                                          Int32(rows), codes, scratch.floats.pointer, scratch.blockSums, Int32(xg), y)
                        }
                    }
                }
            }
            return
        }
        if rows == 1 {
            m.scales.withUnsafeBufferPointer { s in
                withOptionalPointer(mins) { mn in
                    switch m.codes {
                    case .int8(let q):
                        q.withUnsafeBufferPointer { qp in
                            qd_gemv_i8_f32(qp.baseAddress, s.baseAddress, mn, Int32(m.groupSize), Int32(m.rows), Int32(m.cols), x, y)
                        }
                    case .nibbles(let q):
                        q.withUnsafeBufferPointer { qp in
                            if let k = nibbleOffset {
                                qd_gemv_u4_f32_offset(qp.baseAddress, s.baseAddress, k, Int32(m.groupSize), Int32(m.rows), Int32(m.cols), x, y)
                            } else {
                                qd_gemv_u4_f32(qp.baseAddress, s.baseAddress, mn, Int32(m.groupSize), Int32(m.rows), Int32(m.cols), x, y)
                            }
                        }
                    }
                }
            }
            return
        }
        // Several rows: decode tiles of weight rows and multiply with sgemm into a column block of y.
        let tileRows = max(1, LinearScratch.tileFloats / m.cols)
        var r0 = 0
        while r0 < m.rows {
            let r1 = min(m.rows, r0 + tileRows)
            m.dequantizeRows(r0..<r1, into: scratch.tile.pointer)
            BLAS.linearBlock(x, rows: rows, inDim: m.cols, weight: scratch.tile.pointer, outRows: r1 - r0,
                             into: y + r0, ldy: m.rows)
            r0 = r1
        }
    }
}

@inline(__always)
func withOptionalPointer<R>(_ a: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let a else { return body(nil) }
    return a.withUnsafeBufferPointer { body($0.baseAddress) }
}
