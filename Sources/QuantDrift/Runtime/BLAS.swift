import COpenBLAS
import Foundation

/// Thin wrappers over OpenBLAS for the row-major products of the forward pass.
public enum BLAS {
    /// Sets OpenBLAS's thread count (1 is often fastest on a loaded 2-core machine). OpenBLAS is
    /// only told when the count changes: resizing its pool while another thread is inside a
    /// product is not safe, and callers (tracker workers, kld lanes) set the same count often.
    public static func setThreads(_ n: Int) {
        let n = max(1, n)
        threadsLock.lock()
        defer { threadsLock.unlock() }
        guard n != threadsSet else { return }
        openblas_set_num_threads(Int32(n))
        threadsSet = n
    }

    private static let threadsLock = NSLock()
    nonisolated(unsafe) private static var threadsSet = 0

    /// Called before products (and by `Transformer.init`): one thread unless `setThreads` chose a
    /// count first. OpenBLAS starts with one thread per core, and a first `setThreads(1)` arriving
    /// while another thread is inside a product resized the pool under it (garbage logits, seen
    /// once in a parallel test run). After this, only a changed count resizes.
    public static func ensureConfigured() { _ = configured }
    private static let configured: Void = {
        threadsLock.lock()
        defer { threadsLock.unlock() }
        if threadsSet == 0 {
            openblas_set_num_threads(1)
            threadsSet = 1
        }
    }()

    /// OpenBLAS's build description, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64".
    public static var configuration: String {
        guard let c = openblas_get_config() else { return "OpenBLAS" }
        return String(cString: c).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// y(rows, outDim) = x(rows, inDim) · Wᵀ where W is row-major (outDim, inDim).
    /// One row uses sgemv, several use sgemm.
    @inline(__always)
    public static func linear(_ x: UnsafePointer<Float>, rows: Int, inDim: Int,
                              weight w: UnsafePointer<Float>, outDim: Int, into y: UnsafeMutablePointer<Float>) {
        ensureConfigured()
        if rows == 1 {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(outDim), Int32(inDim), 1, w, Int32(inDim), x, 1, 0, y, 1)
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outDim), Int32(inDim),
                        1, x, Int32(inDim), w, Int32(inDim), 0, y, Int32(outDim))
        }
    }

    /// y[:, 0..<outRows] (leading dimension ldy) = x(rows, inDim) · Wᵀ for a block of weight rows.
    public static func linearBlock(_ x: UnsafePointer<Float>, rows: Int, inDim: Int, weight w: UnsafePointer<Float>,
                                   outRows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int) {
        ensureConfigured()
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outRows), Int32(inDim),
                    1, x, Int32(inDim), w, Int32(inDim), 0, y, Int32(ldy))
    }
}
