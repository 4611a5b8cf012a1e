import Dispatch
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
            // Block sums are read only with weight mins (asymmetric formats).
            act.quantize(x, rows: rows, inDim: m.cols, codes: codes, scales: scratch.floats.pointer,
                         blockSums: mins == nil ? nil : scratch.blockSums)
            let xg = act.groupSize(inDim: m.cols)
            // A batched decode step keeps to the panels for any row count (a row's value there
            // does not depend on the rows next to it, nor on the count).
            if let p = panels, rows >= IntPanels.minRows || scratch.rowStable {
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

/// A quantized matrix repacked for `qd_gemm_panels_i8`: 8 output rows interleaved per 4 input
/// elements as int8 codes (nibbles widened, the symmetric offset folded in so their mins drop out),
/// scales and mins in the same panel order. Costs one byte per weight next to the codes.
struct IntPanels: Sendable {
    /// Below this many activation rows the per-row kernel on the original codes is used.
    static let minRows = 2

    let out: Int, inDim: Int, groupSize: Int
    let codes: [Int8]
    let scales: [Float]
    let mins: [Float]?

    init?(_ m: QuantizedMatrix, nibbleOffset: Float?) {
        guard m.cols % 32 == 0, m.cols > 0, m.rows > 0 else { return nil }
        out = m.rows
        inDim = m.cols
        groupSize = m.groupSize
        let padded = (m.rows + 7) / 8 * 8
        let ng = m.groupsPerRow
        var packed = [Int8](repeating: 0, count: padded * m.cols)
        packed.withUnsafeMutableBufferPointer { dst in
            switch m.codes {
            case .int8(let q):
                q.withUnsafeBufferPointer { qd_pack_panels_i8($0.baseAddress, Int32(m.rows), Int32(m.cols), dst.baseAddress) }
            case .nibbles(let q):
                q.withUnsafeBufferPointer {
                    qd_pack_panels_u4($0.baseAddress, Int32(m.rows), Int32(m.cols), Int32(nibbleOffset ?? 0), dst.baseAddress)
                }
            }
        }
        codes = packed
        scales = Self.pack(m.scales, rows: m.rows, groups: ng)
        // Symmetric nibbles carry their mins in the folded offset.
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

    /// With `cores` 2 the output panels are divided between two threads; each output is computed
    /// the same way either way, so the result does not depend on it.
    func multiply(_ xq: UnsafePointer<Int8>, scales xs: UnsafePointer<Float>, blockSums: UnsafePointer<Int32>, xgroup: Int,
                  rows: Int, into y: UnsafeMutablePointer<Float>, cores: Int = 1) {
        let panelCount = (out + 7) / 8
        let args = PanelCall(codes: codes, scales: scales, mins: mins, group: groupSize, out: out, inDim: inDim, rows: rows,
                             xq: xq, xs: xs, blockSums: blockSums, xgroup: xgroup, y: y)
        if cores < 2 || panelCount < 2 {
            args.run(panels: 0..<panelCount)
            return
        }
        let half = panelCount / 2
        DispatchQueue.concurrentPerform(iterations: 2) { k in
            args.run(panels: k == 0 ? 0..<half : half..<panelCount)
        }
    }
}

/// One panel product's arguments, shared by the threads that each take a range of output panels.
private struct PanelCall: @unchecked Sendable {
    let codes: [Int8], scales: [Float], mins: [Float]?
    let group: Int, out: Int, inDim: Int, rows: Int
    let xq: UnsafePointer<Int8>, xs: UnsafePointer<Float>, blockSums: UnsafePointer<Int32>, xgroup: Int
    let y: UnsafeMutablePointer<Float>

    func run(panels: Range<Int>) {
        codes.withUnsafeBufferPointer { c in
            scales.withUnsafeBufferPointer { s in
                withOptionalPointer(mins) { mn in
                    qd_gemm_panels_i8(c.baseAddress, s.baseAddress, mn, Int32(group), Int32(out), Int32(inDim), Int32(rows),
                                      xq, xs, blockSums, Int32(xgroup), y, Int32(panels.lowerBound), Int32(panels.upperBound))
                }
            }
        }
    }
}
