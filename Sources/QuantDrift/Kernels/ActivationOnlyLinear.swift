/// Linear layer that quantizes and dequantizes its input rows, then multiplies FP32 weights:
/// the "activations only" part of a scheme, used where the weights stay FP32.
public struct ActivationOnlyLinear: LinearLayer {
    public let base: DenseLinear
    public let activations: ActivationQuantizer

    public var inDim: Int { base.inDim }
    public var outDim: Int { base.outDim }
    public var storageBytes: Int { base.storageBytes }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        let n = inDim
        let codes = scratch.bytes.bindMemory(to: Int8.self, capacity: rows * n)
        activations.quantize(x, rows: rows, inDim: n, codes: codes, scales: scratch.floats.pointer, blockSums: scratch.blockSums)
        let g = activations.groupSize(inDim: n)
        let ng = (n + g - 1) / g
        let xin = scratch.input.pointer
        for r in 0..<rows {
            for i in 0..<n { xin[r * n + i] = Float(codes[r * n + i]) * scratch.floats[r * ng + i / g] }
        }
        base.forward(xin, rows: rows, into: y, scratch: scratch)
    }
}
