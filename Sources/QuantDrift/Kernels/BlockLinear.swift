/// Weights stored as llama.cpp blocks (Q5_0, Q5_1, Q2_K…Q6_K): the bytes llama-quantize would
/// write, multiplied through `EncodedLinear` (tiles decoded to exactly ggml's dequantized values,
/// then the FP32 product). With an activation quantizer (q8_0 or q8_K, as ggml's CPU path pairs
/// them with these formats) the input rows are quantized and dequantized first: the values ggml
/// multiplies, summed in FP32 rather than in its integer blocks (the order of the sums differs).
public struct BlockLinear: LinearLayer {
    public let encoded: EncodedLinear
    public let activations: ActivationQuantizer?

    public init(_ matrix: WeightMatrix, outDim: Int, inDim: Int, activations: ActivationQuantizer? = nil) {
        encoded = EncodedLinear(matrix, outDim: outDim, inDim: inDim)
        self.activations = activations
    }

    public var inDim: Int { encoded.inDim }
    public var outDim: Int { encoded.outDim }
    public var storageBytes: Int { encoded.storageBytes }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        let input = activations.map { UnsafePointer($0.roundTrip(x, rows: rows, inDim: inDim, scratch: scratch)) } ?? x
        encoded.forward(input, rows: rows, into: y, scratch: scratch)
    }
}

extension BlockLinear: DequantizableLinear {
    public func dequantizedWeight() -> [Float] { encoded.matrix.values }
    public func dequantizeRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        encoded.matrix.decodeRows(range, cols: inDim, into: out)
    }
}
