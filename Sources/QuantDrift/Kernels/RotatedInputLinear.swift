/// A linear layer whose input is rotated online (x ← H·x) before `inner` multiplies it: QuaRot's
/// rotation of the FFN down projection's input, with Hᵀ folded into `inner`'s columns.
public struct RotatedInputLinear: LinearLayer {
    public let rotation: Rotation
    public let inner: any LinearLayer

    public init(rotation: Rotation, inner: any LinearLayer) {
        precondition(rotation.order == inner.inDim)
        self.rotation = rotation
        self.inner = inner
    }

    public var inDim: Int { inner.inDim }
    public var outDim: Int { inner.outDim }
    public var storageBytes: Int { inner.storageBytes }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        let n = inDim
        let rotated = scratch.rotated.pointer
        rotated.update(from: x, count: rows * n)
        rotation.apply(rotated, rows: rows, scratch: scratch.rotationScratch.pointer)
        inner.forward(rotated, rows: rows, into: y, scratch: scratch)
    }
}
