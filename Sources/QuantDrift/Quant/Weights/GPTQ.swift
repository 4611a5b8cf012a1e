import COpenBLAS

/// GPTQ (Frantar et al. 2022): weights are rounded one input column at a time, and each column's
/// rounding error is fed back into the columns not yet rounded through the inverse Hessian of
/// the layer's inputs, H = 2XᵀX/n (from calibration). As in the reference implementation: damping
/// λ = 0.01·mean(diag H), the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), lazy batches of 128
/// columns (updates within a batch per column in sub-blocks of 16, the rest of the matrix once
/// per batch), and a group's
/// grid taken from its current (already updated) weights when the group starts. The grid is
/// `WeightQuantizer.uniform`'s, so the result is an ordinary `QuantizedMatrix`.
/// No act-order (columns in their natural order). Everything after XᵀX is in Double.
public enum GPTQ {
    /// The upper Cholesky factor U of the damped H⁻¹, row-major (n, n); only j ≥ i is used.
    /// - Parameters:
    ///   - gram: XᵀX, row-major (n, n), upper triangle valid (e.g. from ssyrk).
    ///   - count: rows of X.
    /// Dead inputs (H_ii = 0: the input was always zero) get H_ii = 1; their row and column are
    /// zero, so their weights are rounded plainly and exchange no error with the others.
    public static func inverseHessianFactor(gram: [Float], n: Int, count: Int, dampening: Double = 0.01) throws -> [Double] {
        precondition(gram.count == n * n && count > 0)
        var h = [Double](repeating: 0, count: n * n)
        let s = 2 / Double(count)
        for i in 0..<n {
            for j in i..<n {
                let v = Double(gram[i * n + j]) * s
                h[i * n + j] = v
                h[j * n + i] = v
            }
        }
        var meanDiag = 0.0
        for i in 0..<n {
            if h[i * n + i] == 0 { h[i * n + i] = 1 }
            meanDiag += h[i * n + i]
        }
        meanDiag /= Double(n)
        var damp = dampening * meanDiag
        // More damping if the factorization fails (a Hessian that is numerically not positive definite).
        for _ in 0..<6 {
            var a = h
            for i in 0..<n { a[i * n + i] += damp }
            if choleskyOfInverse(&a, n: n) { return a }
            damp *= 10
        }
        throw QuantDriftError.internalError("GPTQ: the calibration Hessian (\(n)×\(n)) is not positive definite even with damping")
    }

    /// In place: a (symmetric positive definite, n×n) → the upper factor U of a⁻¹ (row-major),
    /// false when the Cholesky factorization fails. With J the reversal permutation and
    /// JaJ = L̃L̃ᵀ, a = RRᵀ for the upper R = JL̃J, so a⁻¹ = (R⁻¹)ᵀR⁻¹ and U = R⁻¹ = JL̃⁻¹J:
    /// one Cholesky and one triangular inverse (half the work of potrf + potri + potrf).
    static func choleskyOfInverse(_ a: inout [Double], n: Int) -> Bool {
        // JaJ, symmetric, so row- and column-major read the same.
        var r = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { r[i * n + j] = a[(n - 1 - i) * n + (n - 1 - j)] } }
        var order = Int32(n), lda = Int32(n), info: Int32 = 0
        let lower: [CChar] = [76, 0], nonUnit: [CChar] = [78, 0]  // "L", "N"
        r.withUnsafeMutableBufferPointer { p in
            dpotrf_(lower, &order, p.baseAddress, &lda, &info)                          // L̃ (column-major lower)
            if info == 0 { dtrtri_(lower, nonUnit, &order, p.baseAddress, &lda, &info) } // L̃⁻¹
        }
        guard info == 0 else { return false }
        // U[i][j] = L̃⁻¹[n-1-i][n-1-j]; column-major element (row x, column y) is at x + y·n.
        for i in 0..<n {
            for j in 0..<n { a[i * n + j] = j >= i ? r[(n - 1 - i) + (n - 1 - j) * n] : 0 }
        }
        return true
    }

    /// Quantizes a row-major (rows, cols) weight with GPTQ on the uniform grid of `bits`, groups
    /// of `group` input columns (or the whole row), symmetric or not; `sharedAcrossRows` takes
    /// one grid for the whole tensor. `hinvU` is `inverseHessianFactor` of the layer's input.
    public static func quantize(_ w: [Float], rows: Int, cols: Int, bits: Int, group: Int, sharedAcrossRows: Bool,
                                symmetric: Bool, hinvU u: [Double], blockSize: Int = 128) -> QuantizedMatrix {
        precondition(w.count == rows * cols && u.count == cols * cols)
        let grid = UniformGrid(bits: bits, symmetric: symmetric)
        let ng = (cols + group - 1) / group
        // Wt: (cols, rows), so that a column of W is a contiguous row of Wt.
        var wt = [Double](repeating: 0, count: cols * rows)
        for r in 0..<rows { for c in 0..<cols { wt[c * rows + r] = Double(w[r * cols + c]) } }
        var cells = [UniformCell](repeating: UniformCell(scale: 0, inv: 0, zero: 0, min: 0), count: rows * ng)
        // Per channel or per tensor: the grid comes from the original weights, as in GPTQ.
        let upfront = group >= cols || sharedAcrossRows
        if sharedAcrossRows {
            var lo = Float.infinity, hi = -Float.infinity
            for v in w { lo = min(lo, v); hi = max(hi, v) }
            let cell = grid.cell(lo: lo, hi: hi)
            for i in cells.indices { cells[i] = cell }
        } else if upfront {
            w.withUnsafeBufferPointer { p in
                for r in 0..<rows { cells[r * ng] = grid.cell(of: p.baseAddress! + r * cols, count: cols) }
            }
        }
        // Group starts must be block starts or inside one block with the whole group, so that a
        // group's weights are up to date when its grid is taken.
        let block = upfront || group % blockSize == 0 || blockSize % group == 0 ? blockSize : group
        // Codes and cells are kept column-major ((cols, rows), (groups, rows)) while columns are
        // walked, and transposed at the end.
        var storedT = [Int](repeating: 0, count: cols * rows)
        var cellsT = [UniformCell](repeating: UniformCell(scale: 0, inv: 0, zero: 0, min: 0), count: ng * rows)
        for r in 0..<rows { for g in 0..<ng { cellsT[g * rows + r] = cells[r * ng + g] } }
        var err = [Double](repeating: 0, count: block * rows)     // (block, rows) scaled errors
        var loBuf = [Float](repeating: 0, count: rows), hiBuf = [Float](repeating: 0, count: rows)
        wt.withUnsafeMutableBufferPointer { wp in
        u.withUnsafeBufferPointer { up in
        err.withUnsafeMutableBufferPointer { ep in
        storedT.withUnsafeMutableBufferPointer { sp in
        cellsT.withUnsafeMutableBufferPointer { cp in
        loBuf.withUnsafeMutableBufferPointer { lo in
        hiBuf.withUnsafeMutableBufferPointer { hi in
            let W = wp.baseAddress!, U = up.baseAddress!, E = ep.baseAddress!, S = sp.baseAddress!, C = cp.baseAddress!
            var b0 = 0
            while b0 < cols {
                let b1 = min(cols, b0 + block)
                // Columns in sub-blocks of 16: the per-column update touches 16 columns (in cache),
                // the rest of the block is updated once per sub-block.
                var c0 = b0
                while c0 < b1 {
                let c1 = min(b1, c0 + 16)
                for i in c0..<c1 {
                    let g = i / group
                    if !upfront && i % group == 0 {
                        // Each row's range over the group's current weights (walked column by column).
                        let gEnd = min(cols, i + group)
                        for r in 0..<rows { lo[r] = .infinity; hi[r] = -.infinity }
                        for c in i..<gEnd {
                            let wc = W + c * rows
                            for r in 0..<rows { let v = Float(wc[r]); lo[r] = min(lo[r], v); hi[r] = max(hi[r], v) }
                        }
                        for r in 0..<rows { C[g * rows + r] = grid.cell(lo: lo[r], hi: hi[r]) }
                    }
                    let d = U[i * cols + i]
                    let wi = W + i * rows, ei = E + (i - b0) * rows, si = S + i * rows, ci = C + g * rows
                    for r in 0..<rows {
                        let cell = ci[r]
                        let code = grid.code(Float(wi[r]), cell)
                        si[r] = code
                        ei[r] = (wi[r] - Double(grid.value(code, cell))) / d
                    }
                    // In-sub-block update: W[i+1..<c1] -= U[i, i+1..<c1]ᵀ ⊗ err_i.
                    if i + 1 < c1 {
                        cblas_dger(CblasRowMajor, Int32(c1 - i - 1), Int32(rows), -1, U + i * cols + i + 1, 1, ei, 1,
                                   W + (i + 1) * rows, Int32(rows))
                    }
                }
                // The rest of the block: W[c1..<b1] -= U[c0..<c1, c1..<b1]ᵀ · E[c0..<c1].
                if c1 < b1 {
                    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(b1 - c1), Int32(rows), Int32(c1 - c0),
                                -1, U + c0 * cols + c1, Int32(cols), E + (c0 - b0) * rows, Int32(rows), 1,
                                W + c1 * rows, Int32(rows))
                }
                c0 = c1
                }
                // Lazy batch update of the rest: W[b1..<cols] -= U[b0..<b1, b1..<cols]ᵀ · E.
                if b1 < cols {
                    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(cols - b1), Int32(rows), Int32(b1 - b0),
                                -1, U + b0 * cols + b1, Int32(cols), E, Int32(rows), 1, W + b1 * rows, Int32(rows))
                }
                b0 = b1
            }
        }
        }
        }
        }
        }
        }
        }
        var stored = [Int](repeating: 0, count: rows * cols)
        for c in 0..<cols { for r in 0..<rows { stored[r * cols + c] = storedT[c * rows + r] } }
        for r in 0..<rows { for g in 0..<ng { cells[r * ng + g] = cellsT[g * rows + r] } }
        return grid.matrix(rows: rows, cols: cols, group: min(group, cols), codes: stored, cells: cells)
    }
}
