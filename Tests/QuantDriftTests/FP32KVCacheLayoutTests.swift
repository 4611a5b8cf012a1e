import Foundation
import Testing
@testable import QuantDrift

/// The FP32 cache keeps each KV head's rows together (head-major): what it reads back, as heads
/// in place or as rows, is what was stored, through chunks, single rows and a sliding window;
/// and attention over it gives the same logits, bit for bit, as over plain rows.
@Suite("FP32 KV cache layout")
struct FP32KVCacheLayoutTests {
    /// Layer 0 global, layer 1 a 5-position window; chunks of up to 7 rows then single rows.
    @Test(arguments: [nil, 4, 12] as [Int?])
    func readsBackWhatWasStored(headDim: Int?) throws {
        let kvDim = 12, ctx = 40
        let shape = KVCacheShape(layerCount: 2, contextLength: ctx, kvDim: kvDim, windows: [nil, 5], maxBatch: 7, headDim: headDim)
        let cache = FP32KVCache(shape: shape)
        var rng = SplitMix64(seed: 7)
        var written = [[Float]](repeating: [], count: 2)  // keys; values are their negatives
        var position = 0
        for rows in [7, 3, 1, 7, 1, 1, 5, 1, 1, 1, 7, 1] {
            let keys = (0..<(rows * kvDim)).map { _ in Float(rng.next() % 1000) / 7 }
            let values = keys.map { -$0 }
            for l in 0..<2 { cache.store(layer: l, position: position, rows: rows, keys: keys, values: values) }
            for l in 0..<2 { written[l] += keys }
            position += rows
            for l in 0..<2 {
                // A windowed layer still holds the 4 positions before this chunk's first.
                let from = l == 0 ? 0 : max(0, position - rows - 4)
                let want = Array(written[l][(from * kvDim)..<(position * kvDim)])
                let k = Array(UnsafeBufferPointer(start: cache.keys(layer: l, from: from, count: position), count: want.count))
                let v = Array(UnsafeBufferPointer(start: cache.values(layer: l, from: from, count: position), count: want.count))
                #expect(k == want && v == want.map { -$0 }, "layer \(l) at \(position): rows")
                let hd = headDim ?? 4
                let kh = cache.keyHeads(layer: l, from: from, count: position, headDim: hd)
                let vh = cache.valueHeads(layer: l, from: from, count: position, headDim: hd)
                var same = true
                for r in 0..<(position - from) {
                    for c in 0..<kvDim {
                        let i = r * kh.rowStride + c % hd, j = r * vh.rowStride + c % hd
                        same = same && kh.head(c / hd)[i] == want[r * kvDim + c] && vh.head(c / hd)[j] == -want[r * kvDim + c]
                    }
                }
                #expect(same, "layer \(l) at \(position): heads")
            }
        }
        #expect(cache.byteCount == 2 * (40 + 5 - 1 + 7) * kvDim * 4)
    }

    /// The default model over a head-major cache (the transformer's) and over plain rows: a
    /// prefill of 40 tokens and 16 decode steps give the same logits bit for bit.
    @Test func headMajorAttentionEqualsPlainRows() throws {
        let model = try Golden.defaultModel()
        let tokens = Array(try Golden.evalTokens(model).prefix(56))
        let heads = try Transformer(model: model, contextLength: 64, maxBatch: 16)
        let rows = try Transformer(model: model, contextLength: 64, maxBatch: 16) { shape in
            FP32KVCache(layerCount: shape.layerCount, contextLength: shape.contextLength, kvDim: shape.kvDim, maxBatch: shape.maxBatch)
        }
        #expect((heads.cache as! FP32KVCache).blockWidth == model.config.headDim)
        #expect((rows.cache as! FP32KVCache).blockWidth == model.config.kvDim)
        try ModelFamilyTests.expectSameLogits(heads, rows, tokens: tokens)
    }
}
