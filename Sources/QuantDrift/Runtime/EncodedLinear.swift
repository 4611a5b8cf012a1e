import CKernels

/// FP32 weights that the model file stores in a smaller encoding (F16, Q4_1, …), multiplied a tile
/// of rows at a time: each tile is decoded into FP32 (exactly the dequantized values) and goes
/// through the product `DenseLinear` would run on it, so the FP32 reference needs no second copy
/// of the model. One row and a batched decode step (`rowStable`) get `qd_gemm_f32_rows` on tiles
/// of a few rows decoded inside the kernel (`qd_gemm_ggml_rows`; ~512 KB tiles for types without a
/// C decoder), bit for bit what `DenseLinear` computes. Several rows on OpenBLAS get sgemm on tiles of up to 4 MB: one call
/// for a layer's matrix, as `DenseLinear`'s; the head (vocabulary rows) takes several, which
/// may differ from one whole-matrix sgemm in the last bits. Tiles are divided between the cores; results do not
/// depend on how (OpenBLAS's threads aside, as for `DenseLinear`).
public struct EncodedLinear: LinearLayer {
    public let matrix: WeightMatrix
    public let inDim: Int
    public let outDim: Int

    public init(_ matrix: WeightMatrix, outDim: Int, inDim: Int) {
        precondition(matrix.count == outDim * inDim)
        self.matrix = matrix
        self.outDim = outDim
        self.inDim = inDim
    }

    public var storageBytes: Int { matrix.storageBytes }

    /// Rows per tile: about 512 KB of FP32 (it stays in L2 between decode and product), at least 64.
    static func tileRows(inDim: Int) -> Int { max(64, (1 << 17) / max(inDim, 1) / 64 * 64) }

    /// Rows per tile for sgemm: as many as the scratch holds (each call packs the activations
    /// again, so small tiles cost), which makes most layers' products one call, as `DenseLinear`'s.
    static func sgemmTileRows(inDim: Int, tileFloats: Int) -> Int { max(64, tileFloats / max(inDim, 1) / 64 * 64) }

    /// Floats of tile space a product over rows of `inDim` needs, for `parts` cores.
    static func tileFloats(inDim: Int, parts: Int) -> Int { tileRows(inDim: inDim) * inDim * parts }

    public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, scratch: LinearScratch) {
        let inDim = inDim, outDim = outDim, m = matrix
        // One row takes the batched step's kernel too (as `DenseLinear`): sgemv per tile woke
        // OpenBLAS's threads for every 512 KB (fp32 decode 18 tok/s on one thread, 7 on two).
        let stable = scratch.rowStable || rows == 1
        if stable, m.encoding == .f16, let bytes = m.encodedBytes {
            // F16 weights need no tile: the rows kernel converts them as it loads them (exactly).
            let w = bytes.baseAddress!.assumingMemoryBound(to: UInt16.self)
            splitOutputs(outDim, parts: scratch.cores, alignment: 4) { r in
                qd_gemm_f16_rows(w + r.lowerBound * inDim, Int32(r.count), Int32(inDim), x, Int32(rows), Int32(inDim),
                                 y + r.lowerBound, Int32(outDim), 0)
            }
            return
        }
        if stable, let type = m.encoding, let bytes = m.encodedBytes,
           case let src = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self),
           qd_decode_ggml(Int32(type.rawValue), src, 0, scratch.tile.pointer) != 0 {
            // Decoded a few rows at a time into a tile that stays in L1, inside the kernel: 512 KB
            // tiles wrote every weight out to L2 and back (fp32 decode of 16 sequences: the decode
            // took half as long as the product). Each core gets its share of the scratch.
            let rowBytes = bytes.count / outDim
            let span = scratch.tile.count / max(1, scratch.cores)
            splitOutputParts(outDim, parts: scratch.cores, alignment: 12) { part, r in
                let taken = qd_gemm_ggml_rows(Int32(type.rawValue), src + r.lowerBound * rowBytes, rowBytes, Int32(r.count), Int32(inDim),
                                              x, Int32(rows), Int32(inDim), y + r.lowerBound, Int32(outDim),
                                              scratch.tile.pointer + part * span, span)
                precondition(taken != 0, "qd_gemm_ggml_rows refused a type qd_decode_ggml takes")
            }
            return
        }
        let tileRows = stable ? Self.tileRows(inDim: inDim)
            : Self.sgemmTileRows(inDim: inDim, tileFloats: scratch.tile.count)
        let tiles = (outDim + tileRows - 1) / tileRows
        // OpenBLAS products stay on this thread (OpenBLAS threads them itself, and two threads
        // calling it at once contend for its pool); our own kernel's tiles divide between cores.
        let parts = stable ? min(scratch.cores, tiles, scratch.tile.count / (tileRows * inDim)) : 1
        splitOutputParts(tiles, parts: parts) { part, range in
            let tile = scratch.tile.pointer + part * tileRows * inDim
            for t in range {
                let r0 = t * tileRows, r1 = min(outDim, r0 + tileRows)
                m.decodeRows(r0..<r1, cols: inDim, into: tile)
                if stable {
                    qd_gemm_f32_rows(tile, Int32(r1 - r0), Int32(inDim), x, Int32(rows), Int32(inDim), y + r0, Int32(outDim), 0)
                } else {
                    BLAS.linearBlock(x, rows: rows, inDim: inDim, weight: tile, outRows: r1 - r0, into: y + r0, ldy: outDim)
                }
            }
        }
    }
}

/// Token embeddings looked up by id: a row of FP32 values per token.
public protocol EmbeddingTable: Sendable {
    /// Copies token `token`'s row (`dim` values) into `dst`.
    func copyRow(_ token: Int, dim: Int, into dst: UnsafeMutablePointer<Float>)
}

extension WeightMatrix: EmbeddingTable {
    public func copyRow(_ token: Int, dim: Int, into dst: UnsafeMutablePointer<Float>) {
        decodeRows(token..<(token + 1), cols: dim, into: dst)
    }
}

extension WeightMatrix {
    /// The linear layer of the FP32 reference for this matrix: BLAS on its values, or decoded tiles.
    public func fp32Linear(outDim: Int, inDim: Int) -> any LinearLayer {
        if let v = storedValues { return DenseLinear(weight: v, outDim: outDim, inDim: inDim) }
        return EncodedLinear(self, outDim: outDim, inDim: inDim)
    }
}
