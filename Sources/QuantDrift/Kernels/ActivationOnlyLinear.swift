/// Linear layer that quantizes and dequantizes its input rows, then multiplies FP32 weights:
/// the "activations only" part of a scheme, used where the weights stay FP32.
public struct ActivationOnlyLinear: LinearLayer {
    public let base: DenseLinear
    public let activations: ActivationQuantizer

    public var inDim: Int { base.inDim }
    public var outDim: Int { base.outDim }
    public var storageBytes: Int { base.storageBytes }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        base.forward(activations.roundTrip(x, rows: rows, inDim: inDim, scratch: scratch), rows: rows, into: y, scratch: scratch)
    }
}
