import CKernels
/// Scratch memory a linear layer may use during one call (e.g. quantized activations),
/// allocated once per Transformer.
public final class LinearScratch: @unchecked Sendable {
    /// (maxRows, maxInDim) bytes for quantized activations.
    public let bytes: UnsafeMutableRawPointer
    public let byteCount: Int
    /// (maxRows × groups) floats for activation scales.
    public let floats: FloatBuffer
    /// (maxRows, maxInDim) floats for a transformed copy of the input.
    public let input: FloatBuffer
    /// (maxRows, maxInDim/32 + 1) code sums of 32-element activation blocks.
    public let blockSums: UnsafeMutablePointer<Int32>
    /// Dequantized weight tiles for multi-row products of quantized weights.
    public let tile: FloatBuffer
    /// (maxRows, maxInDim) an online-rotated copy of the input (`RotatedInputLinear`), and one
    /// row of working space for the rotation; made on first use (from the calling thread, before
    /// any split over the cores), so schemes without rotations do not hold them.
    public private(set) lazy var rotated = FloatBuffer(count: maxRows * maxInDim)
    public private(set) lazy var rotationScratch = FloatBuffer(count: maxInDim)
    let maxRows: Int
    let maxInDim: Int
    public static let tileFloats = 1 << 20
    /// Cores a product may spread over. Only kernels whose every output is the same however the
    /// outputs are divided use more than one (the packed integer panels, split by output panels).
    public var cores = 1
    /// The rows are separate sequences of a batched decode step (`Transformer.step`): every
    /// product must give a row the same value whatever rows come with it, so FP32 products run on
    /// `qd_gemm_f32_rows` instead of OpenBLAS (whose sgemm result for a row depends on the others),
    /// int weights on the decode kernels' multi-row twins and integer activations on the panels.
    public var rowStable = false

    public init(maxRows: Int, maxInDim: Int) {
        byteCount = maxRows * maxInDim + 64
        bytes = .allocate(byteCount: byteCount, alignment: 64)
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        floats = FloatBuffer(count: maxRows * (maxInDim / 8 + 8))
        input = FloatBuffer(count: maxRows * maxInDim)
        self.maxRows = maxRows
        self.maxInDim = maxInDim
        let sums = maxRows * (maxInDim / 32 + 1)
        blockSums = .allocate(capacity: sums)
        blockSums.initialize(repeating: 0, count: sums)
        // Enough for one tile of decoded quantized rows, or an encoded FP32 product's tile per core.
        tile = FloatBuffer(count: max(Self.tileFloats, EncodedLinear.tileFloats(inDim: maxInDim, parts: 2)))
    }

    deinit {
        bytes.deallocate()
        blockSums.deallocate()
    }
}

/// A weight matrix y = x · Wᵀ (+ b) in some storage: FP32 on BLAS, or a quantized format with
/// its own kernel. The forward pass only talks to this protocol.
public protocol LinearLayer: Sendable {
    var inDim: Int { get }
    var outDim: Int { get }
    /// Bytes of weight storage read by one matrix-vector product (scales included).
    var storageBytes: Int { get }
    /// y(rows, outDim) = x(rows, inDim) · Wᵀ.
    func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch)
}

/// FP32 weights through OpenBLAS sgemm for several rows, or for one row and in a batched decode
/// step through `qd_gemm_f32_rows` (rows independent of one another, outputs split over the cores).
public struct DenseLinear: LinearLayer {
    public let weight: [Float]  // (outDim, inDim)
    public let inDim: Int
    public let outDim: Int

    public init(weight: [Float], outDim: Int, inDim: Int) {
        precondition(weight.count == outDim * inDim)
        self.weight = weight
        self.outDim = outDim
        self.inDim = inDim
    }

    public var storageBytes: Int { weight.count * MemoryLayout<Float>.size }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        let inDim = inDim, outDim = outDim
        weight.withUnsafeBufferPointer { w in
            // One row also takes the rows kernel: split over the kernel pool it uses both cores with
            // no OpenBLAS thread wake-ups, and a decoded token gets the bits a batched step gives it.
            guard scratch.rowStable || rows == 1 else {
                return BLAS.linear(x, rows: rows, inDim: inDim, weight: w.baseAddress!, outDim: outDim, into: y)
            }
            let wp = w.baseAddress!
            splitOutputs(outDim, parts: scratch.cores, alignment: 4) { r in
                qd_gemm_f32_rows(wp + r.lowerBound * inDim, Int32(r.count), Int32(inDim), x, Int32(rows), Int32(inDim),
                                 y + r.lowerBound, Int32(outDim), 0)
            }
        }
    }
}
