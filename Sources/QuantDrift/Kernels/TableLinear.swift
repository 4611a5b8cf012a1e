/// A linear layer whose weights are in an emulated format (NF4, FP8, MXFP4, fp16, bf16): tiles
/// of weight rows are decoded through the exact value table into FP32 and multiplied with BLAS.
/// The values are exactly the format's; the speed is not a target. With an activation quantizer
/// the input rows are quantized and dequantized first (the "activations" part of a scheme).
public struct TableLinear: LinearLayer {
    public let matrix: TableMatrix
    public let activations: ActivationQuantizer?

    public init(_ matrix: TableMatrix, activations: ActivationQuantizer? = nil) {
        self.matrix = matrix
        self.activations = activations
    }

    public var inDim: Int { matrix.cols }
    public var outDim: Int { matrix.rows }
    public var storageBytes: Int { matrix.storageBytes }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        let m = matrix
        var input = x
        if let act = activations {
            let n = m.cols
            let codes = scratch.bytes.bindMemory(to: Int8.self, capacity: rows * n)
            act.quantize(x, rows: rows, inDim: n, codes: codes, scales: scratch.floats.pointer, blockSums: scratch.blockSums)
            let g = act.groupSize(inDim: n)
            let ng = (n + g - 1) / g
            let xin = scratch.input.pointer
            for r in 0..<rows {
                for i in 0..<n { xin[r * n + i] = Float(codes[r * n + i]) * scratch.floats[r * ng + i / g] }
            }
            input = UnsafePointer(xin)
        }
        let tileRows = max(1, LinearScratch.tileFloats / m.cols)
        var r0 = 0
        while r0 < m.rows {
            let r1 = min(m.rows, r0 + tileRows)
            m.dequantizeRows(r0..<r1, into: scratch.tile.pointer)
            BLAS.linearBlock(input, rows: rows, inDim: m.cols, weight: scratch.tile.pointer, outRows: r1 - r0,
                             into: y + r0, ldy: m.rows)
            r0 = r1
        }
    }
}

/// A linear layer whose weights can be read back as FP32 (the values it computes with): used for
/// a tied embedding, which looks its rows up from the quantized head.
public protocol DequantizableLinear: LinearLayer {
    func dequantizedWeight() -> [Float]
}

extension QuantizedLinear: DequantizableLinear {
    public func dequantizedWeight() -> [Float] { matrix.dequantized() }
}

extension TableLinear: DequantizableLinear {
    public func dequantizedWeight() -> [Float] { matrix.dequantized() }
}
