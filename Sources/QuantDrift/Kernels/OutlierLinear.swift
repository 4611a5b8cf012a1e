import CKernels
import COpenBLAS

/// LLM.int8()-style mixed precision (Dettmers et al. 2022): a few input channels (those whose
/// calibration max |x| exceeds a threshold) stay in FP32. The quantized layer `inner` holds the
/// weights with those columns zeroed and sees the input with those channels zeroed (so they do not
/// inflate the activation scales); a small dense FP32 matrix of the outlier columns adds their
/// exact product: y = Q(x without outliers) · Q(W without outlier columns)ᵀ + x_out · W_outᵀ.
public struct OutlierLinear: LinearLayer {
    /// The int8 (or activation-quantized) part, on the weights with the outlier columns zeroed.
    public let inner: any LinearLayer
    /// Input channels kept in FP32, ascending.
    public let channels: [Int]
    /// (outDim, channels.count) FP32 columns of the outlier channels.
    public let outlierWeight: [Float]

    /// - Parameters:
    ///   - weight: the full FP32 weight (outDim, inDim); its outlier columns are copied out.
    ///   - makeInner: builds the quantized layer from the weight with the outlier columns zeroed.
    public init(weight: [Float], outDim: Int, inDim: Int, channels: [Int],
                makeInner: ([Float]) throws -> any LinearLayer) throws {
        guard channels == channels.sorted(), Set(channels).count == channels.count,
              channels.allSatisfy({ $0 >= 0 && $0 < inDim }) else {
            throw QuantDriftError.invalidInput("outlier channels must be distinct and within 0..<\(inDim)")
        }
        precondition(weight.count == outDim * inDim)
        var zeroed = weight
        var cols = [Float](repeating: 0, count: outDim * channels.count)
        for o in 0..<outDim {
            for (k, j) in channels.enumerated() {
                cols[o * channels.count + k] = weight[o * inDim + j]
                zeroed[o * inDim + j] = 0
            }
        }
        inner = try makeInner(zeroed)
        guard inner.inDim == inDim, inner.outDim == outDim else {
            throw QuantDriftError.internalError("outlier layer: inner layer has shape (\(inner.outDim), \(inner.inDim)), expected (\(outDim), \(inDim))")
        }
        self.channels = channels
        outlierWeight = cols
    }

    public var inDim: Int { inner.inDim }
    public var outDim: Int { inner.outDim }
    public var storageBytes: Int { inner.storageBytes + outlierWeight.count * 4 + channels.count * 4 }

    /// Uses `scratch.input` for the zeroed copy of x and `scratch.tile` for the gathered outlier
    /// channels (the inner layer reads its input before it writes `scratch.input`, if at all).
    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        let n = inDim, k = channels.count
        guard k > 0 else { return inner.forward(x, rows: rows, into: y, scratch: scratch) }
        let xin = scratch.input.pointer
        xin.update(from: x, count: rows * n)
        channels.withUnsafeBufferPointer { ch in
            for r in 0..<rows {
                for j in ch { xin[r * n + j] = 0 }
            }
        }
        inner.forward(xin, rows: rows, into: y, scratch: scratch)
        // y += x[:, channels] · W_outᵀ, in row chunks that fit the tile.
        let chunk = max(1, LinearScratch.tileFloats / k)
        let xo = scratch.tile.pointer
        let m = outDim
        channels.withUnsafeBufferPointer { ch in
            outlierWeight.withUnsafeBufferPointer { w in
                var r0 = 0
                while r0 < rows {
                    let r1 = min(rows, r0 + chunk)
                    for r in r0..<r1 {
                        for (i, j) in ch.enumerated() { xo[(r - r0) * k + i] = x[r * n + j] }
                    }
                    if scratch.rowStable {
                        qd_gemm_f32_rows(w.baseAddress, Int32(m), Int32(k), xo, Int32(r1 - r0), Int32(k), y + r0 * m, Int32(m), 1)
                    } else if r1 - r0 == 1 {
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(k), 1, w.baseAddress, Int32(k), xo, 1, 1, y + r0 * m, 1)
                    } else {
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(r1 - r0), Int32(m), Int32(k),
                                    1, xo, Int32(k), w.baseAddress, Int32(k), 1, y + r0 * m, Int32(m))
                    }
                    r0 = r1
                }
            }
        }
    }
}
