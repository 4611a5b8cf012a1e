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
    /// Values of positions 0..<count of one layer as FP32, (count, kvDim); valid until the next call.
    func values(layer: Int, count: Int) -> UnsafePointer<Float>
    /// True when `store` takes keys before RoPE (the cache rotates what it reads back).
    var storesPreRoPEKeys: Bool { get }
    /// Gives the cache the model's RoPE (called once by the Transformer).
    func attach(rope: RotaryEmbedding)
}

public extension KVCache {
    var storesPreRoPEKeys: Bool { false }
    func attach(rope: RotaryEmbedding) {}
}

/// The reference cache: one flat FP32 (layers, contextLength, kvDim) array each for K and V.
public final class FP32KVCache: KVCache, @unchecked Sendable {
    public let layerCount: Int
    public let contextLength: Int
    public let kvDim: Int
    let k: FloatBuffer  // (layers, contextLength, kvDim)
    let v: FloatBuffer  // (layers, contextLength, kvDim)

    public init(layerCount: Int, contextLength: Int, kvDim: Int) {
        self.layerCount = layerCount
        self.contextLength = contextLength
        self.kvDim = kvDim
        k = FloatBuffer(count: layerCount * contextLength * kvDim)
        v = FloatBuffer(count: layerCount * contextLength * kvDim)
    }

    public var byteCount: Int { 2 * layerCount * contextLength * kvDim * MemoryLayout<Float>.size }

    public func store(layer: Int, position: Int, rows: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        let o = (layer * contextLength + position) * kvDim
        (k.pointer + o).update(from: keys, count: rows * kvDim)
        (v.pointer + o).update(from: values, count: rows * kvDim)
    }

    public func keys(layer: Int, count: Int) -> UnsafePointer<Float> {
        UnsafePointer(k.pointer + layer * contextLength * kvDim)
    }

    public func values(layer: Int, count: Int) -> UnsafePointer<Float> {
        UnsafePointer(v.pointer + layer * contextLength * kvDim)
    }
}
