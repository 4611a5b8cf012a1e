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

/// What a KV cache is made for: the model's layers and KV width, the context, each layer's
/// sliding window (nil: the layer sees the whole context) and the most rows one `store` brings
/// (the transformer's chunk size). A windowed layer needs only `window − 1 + maxBatch` rows.
public struct KVCacheShape: Sendable {
    public let layerCount: Int
    public let contextLength: Int
    public let kvDim: Int
    public let windows: [Int?]
    public let maxBatch: Int

    public init(layerCount: Int, contextLength: Int, kvDim: Int, windows: [Int?] = [], maxBatch: Int = 1) {
        self.layerCount = layerCount
        self.contextLength = contextLength
        self.kvDim = kvDim
        self.windows = windows
        self.maxBatch = maxBatch
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
    func attach(rope: RotaryEmbedding) {}
}

/// The reference cache: FP32 keys and values per layer. A sliding-window layer holds only what
/// its window can still see: `window − 1 + maxBatch` rows (the window of the oldest row of a
/// chunk plus the chunk), slid down when full, so a 32k-token Gemma context keeps 1,023 rows in
/// its local layers instead of 32,768. Global layers hold the whole context.
public final class FP32KVCache: KVCache, @unchecked Sendable {
    public let layerCount: Int
    public let contextLength: Int
    public let kvDim: Int
    let k: FloatBuffer  // every layer's rows, layer l from offset[l]
    let v: FloatBuffer
    /// Per layer: first row in `k`/`v`, rows held, the window (nil: global), first position held.
    private let offset: [Int]
    private let capacity: [Int]
    private let window: [Int?]
    private var base: [Int]

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

    public func store(layer: Int, position: Int, rows: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        if let w = window[layer] {
            // Keep what the oldest of these rows can see, [position − w + 1, position), then append.
            let keep = max(0, position - w + 1)
            if position == 0 { base[layer] = 0 }  // reset
            precondition(keep >= base[layer], "sliding-window cache: position \(position) needs keys already dropped (rewound too far)")
            if position + rows - base[layer] > capacity[layer] {
                let held = position - keep
                let from = (offset[layer] + keep - base[layer]) * kvDim, to = offset[layer] * kvDim
                (k.pointer + to).update(from: k.pointer + from, count: held * kvDim)
                (v.pointer + to).update(from: v.pointer + from, count: held * kvDim)
                base[layer] = keep
            }
            precondition(position + rows - base[layer] <= capacity[layer], "sliding-window cache: \(rows) rows exceed the chunk size it was made for")
        }
        let o = (offset[layer] + position - base[layer]) * kvDim
        (k.pointer + o).update(from: keys, count: rows * kvDim)
        (v.pointer + o).update(from: values, count: rows * kvDim)
    }

    public func keys(layer: Int, count: Int) -> UnsafePointer<Float> { keys(layer: layer, from: 0, count: count) }
    public func values(layer: Int, count: Int) -> UnsafePointer<Float> { values(layer: layer, from: 0, count: count) }

    public func keys(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> {
        precondition(from >= base[layer], "sliding-window cache: position \(from) was dropped")
        return UnsafePointer(k.pointer + (offset[layer] + from - base[layer]) * kvDim)
    }

    public func values(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> {
        precondition(from >= base[layer], "sliding-window cache: position \(from) was dropped")
        return UnsafePointer(v.pointer + (offset[layer] + from - base[layer]) * kvDim)
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
