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
    /// The weights repacked for the multi-row integer-activation kernel (nil without integer
    /// activations or when the row length is not a multiple of 32).
    let panels: IntPanels?

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
        panels = activations == nil ? nil : IntPanels(matrix, nibbleOffset: nibbleOffset)
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
            // Block sums are read only with weight mins (asymmetric formats) and by 4-bit panels with
            // an offset (their codes are multiplied unsigned, the offset added as offset·Σx).
            let needsSums = mins != nil || (panels.map { $0.nibbles && $0.offset != 0 } ?? false)
            act.quantize(x, rows: rows, inDim: m.cols, codes: codes, scales: scratch.floats.pointer,
                         blockSums: needsSums ? scratch.blockSums : nil)
            let xg = act.groupSize(inDim: m.cols)
            // Every row count goes through the panels when there are any (a row's value there does
            // not depend on the rows next to it, nor on the count, so one-token decode, a batched
            // step and prefill agree bit for bit).
            if let p = panels {
                p.multiply(codes, scales: scratch.floats.pointer, blockSums: scratch.blockSums, xgroup: xg, rows: rows, into: y,
                           cores: scratch.cores)
                return
            }
            if rows == 1 {
                // Decode: output rows divided between the cores (the same sums either way).
                let codes = UnsafePointer(codes), xs = UnsafePointer(scratch.floats.pointer), sums = UnsafePointer(scratch.blockSums)
                splitOutputs(m.rows, parts: scratch.cores, alignment: 8) { r in
                    m.withRows(r) { qd, s, mn, rowCount in
                        switch qd {
                        case .int8(let qp):
                            qd_gemm_i8_i8(qp, s, mn, Int32(m.groupSize), Int32(rowCount), Int32(m.cols), 1, codes, xs, sums,
                                          Int32(xg), y + r.lowerBound)
                        case .nibbles(let qp):
                            qd_gemm_u4_i8(qp, s, mn, Int32(m.groupSize), Int32(rowCount), Int32(m.cols), 1, codes, xs, sums,
                                          Int32(xg), y + r.lowerBound)
                        }
                    }
                }
                return
            }
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
        if rows == 1 || scratch.rowStable {
            // Decode: output rows divided between the cores (each computed as in one call). A
            // batched decode step reads the weights once for all its rows, each row getting the
            // one-row kernel's arithmetic, so a row's values do not depend on its batch.
            let offset = nibbleOffset
            splitOutputs(m.rows, parts: scratch.cores, alignment: 8) { r in
                m.withRows(r) { qd, s, mn, rowCount in
                    let y = y + r.lowerBound
                    switch qd {
                    case .int8(let qp):
                        if rows == 1 {
                            qd_gemv_i8_f32(qp, s, mn, Int32(m.groupSize), Int32(rowCount), Int32(m.cols), x, y)
                        } else {
                            qd_gemm_i8_f32_rows(qp, s, mn, Int32(m.groupSize), Int32(rowCount), Int32(m.cols), x, Int32(rows), y,
                                                Int32(m.rows))
                        }
                    case .nibbles(let qp):
                        if rows > 1 {
                            qd_gemm_u4_f32_rows(qp, s, offset == nil ? mn : nil, offset ?? 0, Int32(m.groupSize), Int32(rowCount),
                                                Int32(m.cols), x, Int32(rows), y, Int32(m.rows))
                        } else if let k = offset {
                            qd_gemv_u4_f32_offset(qp, s, k, Int32(m.groupSize), Int32(rowCount), Int32(m.cols), x, y)
                        } else {
                            qd_gemv_u4_f32(qp, s, mn, Int32(m.groupSize), Int32(rowCount), Int32(m.cols), x, y)
                        }
                    }
                }
            }
            return
        }
        // Several rows: decode tiles of weight rows and multiply with sgemm.
        multiplyByDecodedTiles(x, rows: rows, inDim: m.cols, outDim: m.rows, into: y, scratch: scratch, decode: m.dequantizeRows)
    }
}

/// y (rows, outDim) = x (rows, inDim) · Wᵀ with W decoded to FP32 a tile of weight rows at a time
/// (`decode(r0..<r1, into:)`), each tile multiplied by sgemm into its column block of y.
@inline(__always)
func multiplyByDecodedTiles(_ x: UnsafePointer<Float>, rows: Int, inDim: Int, outDim: Int, into y: UnsafeMutablePointer<Float>,
                            scratch: LinearScratch, decode: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
    let tileRows = max(1, LinearScratch.tileFloats / inDim)
    var r0 = 0
    while r0 < outDim {
        let r1 = min(outDim, r0 + tileRows)
        decode(r0..<r1, scratch.tile.pointer)
        if scratch.rowStable {
            qd_gemm_f32_rows(scratch.tile.pointer, Int32(r1 - r0), Int32(inDim), x, Int32(rows), Int32(inDim), y + r0,
                             Int32(outDim), 0)
        } else {
            BLAS.linearBlock(x, rows: rows, inDim: inDim, weight: scratch.tile.pointer, outRows: r1 - r0, into: y + r0, ldy: outDim)
        }
        r0 = r1
    }
}

@inline(__always)
func withOptionalPointer<R>(_ a: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let a else { return body(nil) }
    return a.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// A quantized matrix repacked for `qd_gemm_panels_i8`/`_u4`: 8 output rows interleaved per 4
/// input elements (int8 codes) or per 8 (4-bit codes, kept 4-bit; the symmetric offset is added as
/// they are widened, so their mins drop out), scales and mins in the same panel order. Costs the
/// codes' bytes again next to the codes.
struct IntPanels: Sendable {
    let out: Int, inDim: Int, groupSize: Int
    /// int8 panels, or 4-bit panels (two codes a byte) read as code + `offset`.
    let codes: [UInt8]
    let nibbles: Bool
    let offset: Int32
    let scales: [Float]
    let mins: [Float]?

    init?(_ m: QuantizedMatrix, nibbleOffset: Float?) {
        guard m.cols % 32 == 0, m.cols > 0, m.rows > 0 else { return nil }
        out = m.rows
        inDim = m.cols
        groupSize = m.groupSize
        let padded = (m.rows + 7) / 8 * 8
        let ng = m.groupsPerRow
        switch m.codes {
        case .int8(let q):
            var packed = [UInt8](repeating: 0, count: padded * m.cols)
            packed.withUnsafeMutableBufferPointer { dst in
                q.withUnsafeBufferPointer { src in
                    dst.withMemoryRebound(to: Int8.self) { qd_pack_panels_i8(src.baseAddress, Int32(m.rows), Int32(m.cols), $0.baseAddress) }
                }
            }
            codes = packed
            nibbles = false
            offset = 0
        case .nibbles(let q):
            var packed = [UInt8](repeating: 0, count: padded * m.cols / 2)
            packed.withUnsafeMutableBufferPointer { dst in
                q.withUnsafeBufferPointer { qd_pack_panels_u4($0.baseAddress, Int32(m.rows), Int32(m.cols), dst.baseAddress) }
            }
            codes = packed
            nibbles = true
            offset = Int32(nibbleOffset ?? 0)
        }
        scales = Self.pack(m.scales, rows: m.rows, groups: ng)
        // Symmetric nibbles carry their mins in the offset.
        if case .nibbles = m.codes, nibbleOffset != nil {
            mins = nil
        } else {
            mins = m.mins.map { Self.pack($0, rows: m.rows, groups: ng) }
        }
    }

    static func pack(_ v: [Float], rows: Int, groups: Int) -> [Float] {
        var out = [Float](repeating: 0, count: (rows + 7) / 8 * 8 * groups)
        out.withUnsafeMutableBufferPointer { dst in
            v.withUnsafeBufferPointer { qd_pack_panels_f32($0.baseAddress, Int32(rows), Int32(groups), dst.baseAddress) }
        }
        return out
    }

    /// With `cores` 2 the output panels are divided between the kernel pool's threads; each output
    /// is computed the same way either way, so the result does not depend on it.
    func multiply(_ xq: UnsafePointer<Int8>, scales xs: UnsafePointer<Float>, blockSums: UnsafePointer<Int32>, xgroup: Int,
                  rows: Int, into y: UnsafeMutablePointer<Float>, cores: Int = 1) {
        let panelCount = (out + 7) / 8
        codes.withUnsafeBufferPointer { c in
            scales.withUnsafeBufferPointer { s in
                withOptionalPointer(mins) { mn in
                    let c = c.baseAddress, s = s.baseAddress
                    splitOutputs(panelCount, parts: cores) { r in
                        let p0 = Int32(r.lowerBound), p1 = Int32(r.upperBound)
                        if nibbles {
                            qd_gemm_panels_u4(c, offset, s, mn, Int32(groupSize), Int32(out), Int32(inDim), Int32(rows), xq, xs,
                                              blockSums, Int32(xgroup), y, p0, p1)
                        } else {
                            qd_gemm_panels_i8(UnsafeRawPointer(c)?.assumingMemoryBound(to: Int8.self), s, mn, Int32(groupSize),
                                              Int32(out), Int32(inDim), Int32(rows), xq, xs, blockSums, Int32(xgroup), y, p0, p1)
                        }
                    }
                }
            }
        }
    }
}
