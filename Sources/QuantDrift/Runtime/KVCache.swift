import CKernels
/// Where attention keeps the keys and values of past positions. The FP32 cache hands out its
/// storage directly; a quantized cache stores packed codes and dequantizes what attention reads.
public protocol KVCache: AnyObject {
    var layerCount: Int { get }
    var contextLength: Int { get }
    var kvDim: Int { get }
    /// Bytes of storage actually held for keys and values at full context.
    var byteCount: Int { get }
    /// Stores `rows` positions starting at `position` of one layer: keys after RoPE, (rows, kvDim) each.
    func store(layer: Int, position: Int, rows: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>)
    /// Keys of positions 0..<count of one layer as FP32, (count, kvDim); valid until the next call.
    func keys(layer: Int, count: Int) -> UnsafePointer<Float>
    /// Keys of positions `from`..<count, (count − from, kvDim): all a sliding-window layer may hold.
    func keys(layer: Int, from: Int, count: Int) -> UnsafePointer<Float>
    /// Values of positions `from`..<count, (count − from, kvDim).
    func values(layer: Int, from: Int, count: Int) -> UnsafePointer<Float>
    /// Values of positions 0..<count of one layer as FP32, (count, kvDim); valid until the next call.
    func values(layer: Int, count: Int) -> UnsafePointer<Float>
    /// Keys (or values) of positions `from`..<count of one layer, KV head by KV head, for attention
    /// to read in place; valid until the next call.
    func keyHeads(layer: Int, from: Int, count: Int, headDim: Int) -> KVHeads
    func valueHeads(layer: Int, from: Int, count: Int, headDim: Int) -> KVHeads
    /// True when `store` takes keys before RoPE (the cache rotates what it reads back).
    var storesPreRoPEKeys: Bool { get }
    /// Orders of the Hadamard rotations the cache wants (0: none): queries and keys in chunks of
    /// `keyRotation` after RoPE, before the keys are stored (it cancels in Q·Kᵀ); values in chunks
    /// of `valueRotation` before they are stored, and the attention output rotated back.
    var keyRotation: Int { get }
    var valueRotation: Int { get }
    /// Queries are rounded to q8_0 blocks before the key product (ggml's flash attention on a
    /// quantized K cache multiplies them in its vec_dot type).
    var roundsQueries: Bool { get }
    /// Gives the cache the model's RoPE (called once by the Transformer).
    func attach(rope: RotaryEmbedding)
}

/// Where one layer's keys or values of a run of positions are: KV head h's first row at
/// `base + h · headStride`, its rows `rowStride` floats apart. Row-major (count, kvDim) rows are
/// heads `headDim` apart with rows `kvDim` apart; the FP32 cache keeps each head's rows together.
public struct KVHeads {
    public let base: UnsafePointer<Float>
    public let headStride: Int
    public let rowStride: Int

    public init(base: UnsafePointer<Float>, headStride: Int, rowStride: Int) {
        self.base = base
        self.headStride = headStride
        self.rowStride = rowStride
    }

    /// The first row of KV head `h`.
    @inline(__always)
    public func head(_ h: Int) -> UnsafePointer<Float> { base + h * headStride }
}

/// What a KV cache is made for: the model's layers and KV width, the context, each layer's
/// sliding window (nil: the layer sees the whole context) and the most rows one `store` brings
/// (the transformer's chunk size). A windowed layer needs only `window − 1 + maxBatch` rows.
public struct KVCacheShape: Sendable {
    public let layerCount: Int
    public let contextLength: Int
    public let kvDim: Int
    public let windows: [Int?]
    public let maxBatch: Int
    /// Width of one KV head (kvDim: the rows are one head).
    public let headDim: Int

    public init(layerCount: Int, contextLength: Int, kvDim: Int, windows: [Int?] = [], maxBatch: Int = 1, headDim: Int? = nil) {
        precondition(headDim.map { $0 > 0 && kvDim % $0 == 0 } ?? true, "head width must divide kvDim")
        self.layerCount = layerCount
        self.contextLength = contextLength
        self.kvDim = kvDim
        self.windows = windows
        self.maxBatch = maxBatch
        self.headDim = headDim ?? kvDim
    }

    /// Rows a layer must hold: the whole context, or what its window still sees plus a chunk.
    public func rows(layer: Int) -> Int {
        guard layer < windows.count, let w = windows[layer] else { return contextLength }
        return min(contextLength, w - 1 + max(1, maxBatch))
    }
}

public extension KVCache {
    var storesPreRoPEKeys: Bool { false }
    var keyRotation: Int { 0 }
    var valueRotation: Int { 0 }
    var roundsQueries: Bool { false }
    func keys(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> { keys(layer: layer, count: count) + from * kvDim }
    func values(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> { values(layer: layer, count: count) + from * kvDim }
    func keyHeads(layer: Int, from: Int, count: Int, headDim: Int) -> KVHeads {
        KVHeads(base: keys(layer: layer, from: from, count: count), headStride: headDim, rowStride: kvDim)
    }
    func valueHeads(layer: Int, from: Int, count: Int, headDim: Int) -> KVHeads {
        KVHeads(base: values(layer: layer, from: from, count: count), headStride: headDim, rowStride: kvDim)
    }
    func attach(rope: RotaryEmbedding) {}
}

/// The reference cache: FP32 keys and values per layer. A sliding-window layer holds only what
/// its window can still see: `window − 1 + maxBatch` rows (the window of the oldest row of a
/// chunk plus the chunk), slid down when full, so a 32k-token Gemma context keeps 1,023 rows in
/// its local layers instead of 32,768. Global layers hold the whole context.
///
/// Each layer keeps a KV head's rows together (head-major, `shape.headDim` wide): a decode step's
/// attention then reads each head as one forward stream instead of a `headDim` slice of every
/// `kvDim` row, ~1.5× faster from memory at 2k positions; the products and their values are the
/// same (BLAS reads rows at any stride).
public final class FP32KVCache: KVCache, @unchecked Sendable {
    public let layerCount: Int
    public let contextLength: Int
    public let kvDim: Int
    /// Width of the column blocks a layer is stored in: a KV head (kvDim: plain rows).
    let blockWidth: Int
    let k: FloatBuffer  // every layer's rows, layer l from offset[l] · kvDim
    let v: FloatBuffer
    /// Per layer: first row in `k`/`v`, rows held, the window (nil: global), first position held.
    private let offset: [Int]
    private let capacity: [Int]
    private let window: [Int?]
    private var base: [Int]
    /// Plain-row copies handed out by `keys`/`values` of head-major storage, made when first asked
    /// (attention reads the heads in place).
    private lazy var keyRows = FloatBuffer(count: capacity.max()! * kvDim)
    private lazy var valueRows = FloatBuffer(count: capacity.max()! * kvDim)

    /// - Parameters:
    ///   - windows: per layer, the sliding window (nil or absent: the layer sees the whole context).
    ///   - maxBatch: most rows one `store` brings (the transformer's chunk size).
    public convenience init(layerCount: Int, contextLength: Int, kvDim: Int, windows: [Int?] = [], maxBatch: Int = 1) {
        self.init(shape: KVCacheShape(layerCount: layerCount, contextLength: contextLength, kvDim: kvDim, windows: windows, maxBatch: maxBatch))
    }

    public init(shape: KVCacheShape) {
        layerCount = shape.layerCount
        contextLength = shape.contextLength
        kvDim = shape.kvDim
        blockWidth = shape.headDim
        var offset: [Int] = [], capacity: [Int] = [], window: [Int?] = []
        var rows = 0
        for l in 0..<layerCount {
            let w = l < shape.windows.count ? shape.windows[l] : nil
            let cap = shape.rows(layer: l)
            offset.append(rows)
            capacity.append(cap)
            window.append(cap < contextLength ? w : nil)
            rows += cap
        }
        self.offset = offset
        self.capacity = capacity
        self.window = window
        base = Array(repeating: 0, count: layerCount)
        k = FloatBuffer(count: rows * kvDim)
        v = FloatBuffer(count: rows * kvDim)
    }

    public var byteCount: Int { 2 * capacity.reduce(0, +) * kvDim * MemoryLayout<Float>.size }

    /// Column block `b`'s row `row` (held-row index) of layer `l`.
    @inline(__always)
    private func at(_ l: Int, block b: Int, row: Int) -> Int {
        offset[l] * kvDim + b * capacity[l] * blockWidth + row * blockWidth
    }

    public func store(layer: Int, position: Int, rows: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        if let w = window[layer] {
            // Keep what the oldest of these rows can see, [position − w + 1, position), then append.
            let keep = max(0, position - w + 1)
            if position == 0 { base[layer] = 0 }  // reset
            precondition(keep >= base[layer], "sliding-window cache: position \(position) needs keys already dropped (rewound too far)")
            if position + rows - base[layer] > capacity[layer] {
                let held = position - keep
                for b in 0..<(kvDim / blockWidth) {
                    let from = at(layer, block: b, row: keep - base[layer]), to = at(layer, block: b, row: 0)
                    (k.pointer + to).update(from: k.pointer + from, count: held * blockWidth)
                    (v.pointer + to).update(from: v.pointer + from, count: held * blockWidth)
                }
                base[layer] = keep
            }
            precondition(position + rows - base[layer] <= capacity[layer], "sliding-window cache: \(rows) rows exceed the chunk size it was made for")
        }
        pieces(layer, rows: (position - base[layer])..<(position - base[layer] + rows)) { o, i in
            (k.pointer + o).update(from: keys + i, count: blockWidth)
            (v.pointer + o).update(from: values + i, count: blockWidth)
        }
    }

    /// Every head-wide piece of held rows `rows` of layer `l`: `body(index in storage, index in
    /// (rows.count, kvDim) plain rows)`. Stores scatter rows with it; `keys`/`values` gather them.
    @inline(__always)
    private func pieces(_ l: Int, rows: Range<Int>, _ body: (Int, Int) -> Void) {
        for r in rows {
            for b in 0..<(kvDim / blockWidth) { body(at(l, block: b, row: r), (r - rows.lowerBound) * kvDim + b * blockWidth) }
        }
    }

    /// The held row of position `from` of layer `l`.
    private func heldRow(_ l: Int, _ from: Int) -> Int {
        precondition(from >= base[l], "sliding-window cache: position \(from) was dropped")
        return from - base[l]
    }

    /// Where position `from` of layer `l` starts in `x` (its first head's row).
    private func start(_ x: FloatBuffer, layer l: Int, from: Int) -> UnsafePointer<Float> {
        UnsafePointer(x.pointer + at(l, block: 0, row: heldRow(l, from)))
    }

    public func keyHeads(layer: Int, from: Int, count: Int, headDim: Int) -> KVHeads {
        heads(k, layer: layer, from: from, headDim: headDim)
    }

    public func valueHeads(layer: Int, from: Int, count: Int, headDim: Int) -> KVHeads {
        heads(v, layer: layer, from: from, headDim: headDim)
    }

    private func heads(_ x: FloatBuffer, layer l: Int, from: Int, headDim: Int) -> KVHeads {
        if blockWidth == kvDim {  // plain rows
            return KVHeads(base: start(x, layer: l, from: from), headStride: headDim, rowStride: kvDim)
        }
        precondition(headDim == blockWidth, "FP32 cache stored in \(blockWidth)-wide heads, read as \(headDim)")
        return KVHeads(base: start(x, layer: l, from: from), headStride: capacity[l] * blockWidth, rowStride: blockWidth)
    }

    public func keys(layer: Int, count: Int) -> UnsafePointer<Float> { keys(layer: layer, from: 0, count: count) }
    public func values(layer: Int, count: Int) -> UnsafePointer<Float> { values(layer: layer, from: 0, count: count) }

    public func keys(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> {
        blockWidth == kvDim ? start(k, layer: layer, from: from) : gather(k, into: keyRows, layer: layer, from: from, count: count)
    }

    public func values(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> {
        blockWidth == kvDim ? start(v, layer: layer, from: from) : gather(v, into: valueRows, layer: layer, from: from, count: count)
    }

    /// Positions from..<count of head-major storage copied out as (count − from, kvDim) rows.
    private func gather(_ x: FloatBuffer, into out: FloatBuffer, layer l: Int, from: Int, count: Int) -> UnsafePointer<Float> {
        let row = heldRow(l, from)
        pieces(l, rows: row..<(row + count - from)) { o, i in
            (out.pointer + i).update(from: x.pointer + o, count: blockWidth)
        }
        return UnsafePointer(out.pointer)
    }
}

/// The orthonormal Walsh–Hadamard transform of `x` in place, in chunks of `n` (a power of 2):
/// Sylvester's H_n / √n, its own inverse, as llama.cpp's cache rotation.
public func hadamardInPlace(_ x: UnsafeMutablePointer<Float>, count: Int, order n: Int) {
    precondition(n > 0 && n & (n - 1) == 0 && count % n == 0)
    let scale = 1 / Float(n).squareRoot()
    var base = 0
    while base < count {
        let v = x + base
        Rotation.walshHadamard(v, n)
        for j in 0..<n { v[j] *= scale }
        base += n
    }
}

/// `x` rounded through ggml's q8_0 blocks of 32 in place (`count` a multiple of 32): d = max|x|/127
/// stored as fp16, codes round(x/d), values d·code; with the C routines `ActivationQuantizer`'s
/// q8_0 mode codes with.
public func q8_0RoundTripInPlace(_ x: UnsafeMutablePointer<Float>, count: Int) {
    precondition(count % 32 == 0)
    withUnsafeTemporaryAllocation(of: Int8.self, capacity: 32) { codes in
        let q = codes.baseAddress!
        for b in stride(from: 0, to: count, by: 32) {
            let d = qd_absmax_f32(x + b, 32) / 127, dh = qd_round_f16(d)
            qd_quantize_i8(x + b, 32, d != 0 ? 1 / d : 0, q)
            for i in 0..<32 { x[b + i] = dh * Float(q[i]) }
        }
    }
}
