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
        let input = activations.map { UnsafePointer($0.roundTrip(x, rows: rows, inDim: m.cols, scratch: scratch)) } ?? x
        multiplyByDecodedTiles(input, rows: rows, inDim: m.cols, outDim: m.rows, into: y, scratch: scratch,
                               decode: m.dequantizeRows)
    }
}

/// A linear layer whose weights can be read back as FP32 (the values it computes with): used for
/// the embedding of a quantized scheme, whose rows are looked up from the quantized matrix.
public protocol DequantizableLinear: LinearLayer, EmbeddingTable {
    func dequantizedWeight() -> [Float]
    /// Rows `range` as FP32 into `out`, the same values as `dequantizedWeight()`'s.
    func dequantizeRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>)
}

extension DequantizableLinear {
    public func copyRow(_ token: Int, dim: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(dim == inDim)
        dequantizeRows(token..<(token + 1), into: dst)
    }
}

extension QuantizedLinear: DequantizableLinear {
    public func dequantizedWeight() -> [Float] { matrix.dequantized() }
    public func dequantizeRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) { matrix.dequantizeRows(range, into: out) }
}

extension TableLinear: DequantizableLinear {
    public func dequantizedWeight() -> [Float] { matrix.dequantized() }
    public func dequantizeRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) { matrix.dequantizeRows(range, into: out) }
}
