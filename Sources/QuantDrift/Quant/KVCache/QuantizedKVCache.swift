import CKernels

/// Uniform b-bit quantization of a small vector: x ≈ scale·u + min with u in [0, 2^b − 1].
/// Symmetric: scale = max|x| / (2^(b−1) − 1) and min = −2^(b−1)·scale (zero exact);
/// asymmetric: scale = (max − min) / (2^b − 1) over the vector's own range.
struct UniformVectorQuantizer {
    let bits: Int
    let symmetric: Bool

    /// Encodes `count` values read with `stride`, writing codes through `put(i, u)`.
    @inline(__always)
    func encode(_ x: UnsafePointer<Float>, count: Int, stride: Int, put: (Int, UInt8) -> Void) -> (scale: Float, min: Float) {
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<count { lo = Swift.min(lo, x[i * stride]); hi = Swift.max(hi, x[i * stride]) }
        let levels = Float((1 << bits) - 1)
        let scale: Float, mn: Float
        if symmetric {
            let offset = Float(1 << (bits - 1))
            scale = Swift.max(abs(lo), abs(hi)) / (offset - 1)
            mn = -offset * scale
        } else {
            scale = (hi - lo) / levels
            mn = lo
        }
        let inv: Float = scale > 0 ? 1 / scale : 0
        for i in 0..<count {
            let u = ((x[i * stride] - mn) * inv).rounded(.toNearestOrAwayFromZero)
            put(i, UInt8(Swift.max(0, Swift.min(levels, u.isNaN ? 0 : u))))
        }
        return (scale, mn)
    }
}

/// FP8 coding of a small vector: one scale per vector maps its max |x| to the format's largest
/// finite value, and each x/scale is encoded to the nearest value of the format's table (ties
/// to even, saturating). The code is the format's own byte; the decoded value is scale·value.
struct TableVectorQuantizer {
    let table: ValueTable

    @inline(__always)
    func encode(_ x: UnsafePointer<Float>, count: Int, stride: Int, put: (Int, UInt8) -> Void) -> (scale: Float, min: Float) {
        var amax: Float = 0
        for i in 0..<count where x[i * stride].isFinite { amax = Swift.max(amax, abs(x[i * stride])) }
        let scale = amax / table.maxFinite
        let inv: Float = scale > 0 ? 1 / scale : 0
        for i in 0..<count { put(i, UInt8(table.encode(x[i * stride] * inv))) }
        return (scale, 0)
    }
}

/// llama.cpp's cache blocks (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl) of one group of 32 along a
/// token, coded by the weight quantizers' ggml blocks (`WeightQuantizer.ggml*Block`, and ggml's
/// quantize_row_iq4_nl_ref for iq4_nl): the code u, the fp16-rounded scale and, for the
/// asymmetric types, the fp16 min; decoded as scale·level(u) + min.
struct GGMLVectorQuantizer {
    let type: GGMLType

    /// The level of every code: u less an offset, or iq4_nl's table entry.
    static func levels(_ t: GGMLType) -> [Float] {
        if t == .iq4_nl { return GGMLType.iq4nlValues.map(Float.init) }
        let offset = switch t {
        case .q8_0: 128
        case .q4_0: 8
        case .q5_0: 16
        default: 0
        }
        return (0..<256).map { Float($0 - offset) }
    }

    @inline(__always)
    func encode(_ x: UnsafePointer<Float>, count: Int, stride: Int, put: (Int, UInt8) -> Void) -> (scale: Float, min: Float) {
        precondition(count == 32 && stride == 1, "llama.cpp cache blocks are 32 values along a token")
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buf in
            let q = buf.baseAddress!
            let r: (scale: Float, min: Float)
            switch type {
            case .q8_0:
                let d = q.withMemoryRebound(to: Int8.self, capacity: 32) { WeightQuantizer.ggmlBlockQ8_0(x, $0) }
                // Signed codes -127…127 stored offset by 128.
                for i in 0..<32 { q[i] = q[i] &+ 128 }
                r = (d, 0)
            case .q4_0: r = (WeightQuantizer.ggmlSymmetricBlock(x, q, half: 8), 0)
            case .q5_0: r = (WeightQuantizer.ggmlSymmetricBlock(x, q, half: 16), 0)
            case .q4_1: r = WeightQuantizer.ggmlRangeBlock(x, q, top: 15)
            case .iq4_nl:
                r = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: GGMLType.iq4_nl.typeSize) { block in
                    let p = block.baseAddress!
                    _ = qd_quantize_iq4_nl_row_ref(x, 32, p)
                    for j in 0..<16 { q[j] = p[2 + j] & 15; q[16 + j] = p[2 + j] >> 4 }
                    return (halfToFloat(UInt16(p[0]) | UInt16(p[1]) << 8), 0)
                }
            default: r = WeightQuantizer.ggmlRangeBlock(x, q, top: 31)  // q5_1
            }
            for i in 0..<32 { put(i, q[i]) }
            return r
        }
    }
}

/// The encoder of one KV part: uniform integer codes, FP8 table codes or llama.cpp blocks.
struct KVVectorEncoder {
    let uniform: UniformVectorQuantizer
    let table: TableVectorQuantizer?
    let ggml: GGMLVectorQuantizer?

    init(q: KVPartQuant, table: ValueTable?) {
        uniform = UniformVectorQuantizer(bits: q.format.bits, symmetric: q.symmetric)
        self.table = table.map(TableVectorQuantizer.init)
        ggml = q.format.traits.kv?.ggml.map(GGMLVectorQuantizer.init)
    }

    @inline(__always)
    func encode(_ x: UnsafePointer<Float>, count: Int, stride: Int, put: (Int, UInt8) -> Void) -> (scale: Float, min: Float) {
        if let table { return table.encode(x, count: count, stride: stride, put: put) }
        if let ggml { return ggml.encode(x, count: count, stride: stride, put: put) }
        return uniform.encode(x, count: count, stride: stride, put: put)
    }
}

/// A KV cache that stores keys and values as packed integer codes or FP8 bytes, dequantizing what attention
/// reads on every step. Per-token groups along the head dimension (`axis: .token`), or per
/// channel over groups of tokens (KIVI keys, `axis: .channel`); the first `sinks` positions and
/// the most recent `residual` positions stay FP32, and so does every layer in `fp32Layers` (a
/// scheme's `skip=layerN`, and `--per-layer`, which quantizes one layer's cache at a time).
///
/// FP32 is held only for what is not quantized: the sinks, a ring of the positions not yet
/// quantized (the residual window, and for per-channel keys the token group still filling up),
/// and the FP32 layers. Each entry's reconstruction error is measured when it is quantized
/// (`relativeErrors`). A cache that could not quantize a single position within its context is
/// refused when it is made.
///
/// A sliding-window layer holds codes only for the positions its window can still see (as the
/// FP32 cache does): `window − 1 + maxBatch` rows, reused in a ring (per-channel keys one token
/// group more), with the scales of those rows. FP32 layers (`fp32Layers`) and a part with no
/// format hold the whole context.
///
/// Within one prefill chunk every query sees the cache as it stands after the chunk was stored
/// (quantized entries included), as llama.cpp's quantized caches do; with a residual window, the
/// window is measured from the end of the chunk.
///
/// Storing at a position below the end (after a reset or a truncate) rewrites from there; what
/// was stored beyond it is dropped. Rewriting inside a quantized token group of per-channel keys
/// quantizes the group again from its earlier positions as they read back (their FP32 values are
/// no longer held).
public final class QuantizedKVCache: KVCache, @unchecked Sendable {
    public let layerCount: Int
    public let contextLength: Int
    public let kvDim: Int
    public let spec: KVQuant
    /// Layers whose cache is kept in FP32 (never quantized).
    public let fp32Layers: Set<Int>
    let headDim: Int

    /// One of K or V.
    final class Part {
        let q: KVPartQuant?
        let bits: Int               // container bits: 8, 4 or 2
        /// FP8 parts: the format's value table (codes are one byte, decoded as scale·value; no mins).
        let table: ValueTable?
        /// Decoded value of every code before scaling: the table's values, or the integer itself
        /// (less the offset of a llama.cpp block type).
        let levels: [Float]
        let identityLevels: Bool    // levels[u] == u (uniform codes), so the decoder converts instead of looking up
        /// Decoding adds a min: integer parts other than llama.cpp's symmetric blocks, which
        /// decode as ggml does, scale·level alone (so a zero keeps its sign).
        let addsMins: Bool
        let group: Int              // elements (token axis) or tokens (channel axis) per scale
        let entryBytes: Int         // code bytes of one position: kvDim·bits/8
        /// Per layer: its index in the quantized storage, or −1 for a layer held whole in FP32.
        let slot: [Int]
        /// Per quantized slot: first storage row, rows held (the context, or a window's rows:
        /// position p lives in row p mod rowsHeld), and the same for per-channel token groups.
        let rowOffset: [Int]
        let rowsHeld: [Int]
        let groupOffset: [Int]
        let groupsHeld: [Int]
        /// Per layer: its index in `full`, or −1 for a quantized layer.
        let fullSlot: [Int]
        let sinkCount: Int          // sink positions held: min(sinks, ctx)
        let window: Int             // positions the ring holds
        let codeCount: Int
        let codes: UnsafeMutablePointer<UInt8>   // (Σ rowsHeld, entryBytes)
        let scales: FloatBuffer     // (Σ rowsHeld, kvDim/group) per token, or (Σ groupsHeld, kvDim) per channel
        let mins: FloatBuffer       // as scales; empty for FP8 parts
        let sinkRows: FloatBuffer   // (quantized layers, sinkCount, kvDim) the FP32 sinks
        let ring: FloatBuffer       // (quantized layers, window, kvDim) positions not yet quantized: p at (p − sinks) mod window
        let full: FloatBuffer       // (FP32 layers, ctx, kvDim): every layer when the part has no format
        let view: FloatBuffer       // (ctx, kvDim) read buffer (pre-RoPE keys are rotated in it); also gathers a key group to quantize
        let row: FloatBuffer        // (kvDim) one position read back, for its error
        let errorSums: UnsafeMutablePointer<Double>  // (layers, ctx) Σ(x̂ − x)² per position, 0 until quantized
        let normSums: UnsafeMutablePointer<Double>   // (layers, ctx) Σx² per position as written
        var quantizedUpTo: [Int]    // per layer: positions [sinks, quantizedUpTo) are quantized
        var storedEnd: [Int]        // per layer: the furthest end of a store since the last reset

        init(q: KVPartQuant?, shape: KVCacheShape, headDim: Int, sinks: Int, residual: Int, fp32Layers: Set<Int>) {
            let layers = shape.layerCount, ctx = shape.contextLength, kvDim = shape.kvDim
            self.q = q
            bits = q?.format.traits.kv?.containerBits ?? 32
            let g = q.map { $0.groupSize == 0 ? headDim : $0.groupSize } ?? 1
            group = g
            table = q.flatMap { ValueTable.of($0.format) }
            // NaN codes are never written (the encoder saturates), so they decode to 0 here.
            let ggml = q.flatMap { $0.format.traits.kv?.ggml }
            addsMins = table == nil && !(ggml != nil && q!.symmetric)
            levels = table.map { t in (0..<256).map { t.values[$0].isFinite ? t.values[$0] : 0 } }
                ?? ggml.map(GGMLVectorQuantizer.levels) ?? (0..<256).map(Float.init)
            identityLevels = table == nil && ggml == nil
            entryBytes = q == nil ? 0 : kvDim * bits / 8
            var slot = [Int](repeating: -1, count: layers), fullSlot = [Int](repeating: -1, count: layers)
            var quantized = 0, fp32 = 0
            for l in 0..<layers {
                if q != nil && !fp32Layers.contains(l) { slot[l] = quantized; quantized += 1 } else { fullSlot[l] = fp32; fp32 += 1 }
            }
            self.slot = slot
            self.fullSlot = fullSlot
            // A windowed layer's rows; per-channel keys may re-read the start of a token group.
            var rowOffset: [Int] = [], rowsHeld: [Int] = [], groupOffset: [Int] = [], groupsHeld: [Int] = []
            let groupsInContext = (ctx + g - 1) / g
            for l in 0..<layers where slot[l] >= 0 {
                let rows = min(ctx, shape.rows(layer: l) + (q?.axis == .channel ? g - 1 : 0))
                rowOffset.append(rowsHeld.reduce(0, +))
                rowsHeld.append(rows)
                groupOffset.append(groupsHeld.reduce(0, +))
                groupsHeld.append(rows == ctx ? groupsInContext : min(groupsInContext, (rows + g - 1) / g + 1))
            }
            self.rowOffset = rowOffset
            self.rowsHeld = rowsHeld
            self.groupOffset = groupOffset
            self.groupsHeld = groupsHeld
            let totalRows = rowsHeld.reduce(0, +)
            sinkCount = q == nil ? 0 : min(sinks, ctx)
            // After a store, what waits is at most the window (per token) or the window and an unfinished group (per channel).
            window = q == nil ? 0 : max(0, min(ctx - sinkCount, residual + (q!.axis == .channel ? g - 1 : 0)))
            codeCount = totalRows * entryBytes
            codes = .allocate(capacity: max(1, codeCount))
            codes.initialize(repeating: 0, count: max(1, codeCount))
            let nScales: Int
            if let q, q.axis == .channel { nScales = groupsHeld.reduce(0, +) * kvDim }
            else if q != nil { nScales = totalRows * ((kvDim + g - 1) / g) }
            else { nScales = 0 }
            scales = FloatBuffer(count: nScales)
            mins = FloatBuffer(count: table == nil ? nScales : 0)
            sinkRows = FloatBuffer(count: quantized * sinkCount * kvDim)
            ring = FloatBuffer(count: quantized * window * kvDim)
            full = FloatBuffer(count: fp32 * ctx * kvDim)
            view = FloatBuffer(count: ctx * kvDim)
            row = FloatBuffer(count: kvDim)
            let stats = q == nil ? 1 : max(1, layers * ctx)
            errorSums = .allocate(capacity: stats)
            errorSums.initialize(repeating: 0, count: stats)
            normSums = .allocate(capacity: stats)
            normSums.initialize(repeating: 0, count: stats)
            quantizedUpTo = Array(repeating: 0, count: layers)
            storedEnd = Array(repeating: 0, count: layers)
        }

        /// The storage row of a position of quantized slot `s`.
        @inline(__always) func row(_ s: Int, _ pos: Int) -> Int { rowOffset[s] + pos % rowsHeld[s] }
        /// The storage index of per-channel token group `gi` of quantized slot `s`.
        @inline(__always) func groupRow(_ s: Int, _ gi: Int) -> Int { groupOffset[s] + gi % groupsHeld[s] }
        /// The oldest position whose codes `layer` still holds (0 for a layer holding its context).
        func oldestHeld(layer: Int) -> Int { max(0, storedEnd[layer] - rowsHeld[slot[layer]]) }

        deinit {
            codes.deallocate()
            errorSums.deallocate()
            normSums.deallocate()
        }

        /// Bytes held for this part's entries: codes, scales, mins and every FP32 row.
        var byteCount: Int {
            codeCount + MemoryLayout<Float>.size * (scales.count + mins.count + sinkRows.count + ring.count + full.count)
        }
    }

    let k: Part
    let v: Part
    var rope: RotaryEmbedding?

    public var storesPreRoPEKeys: Bool { spec.preRoPE }
    public let keyRotation: Int
    public let valueRotation: Int
    public var roundsQueries: Bool { spec.roundQueries == true }

    /// llama.cpp's orders: for keys the largest power of 2 (at least 64) dividing the head size,
    /// for values 64; 0 without `rot` or for a part left in FP32.
    static func rotations(_ spec: KVQuant, headDim: Int) throws -> (keys: Int, values: Int) {
        guard spec.rotate == true else { return (0, 0) }
        guard headDim % 64 == 0 else {
            throw QuantDriftError.invalidInput("scheme: rot needs a head size that is a multiple of 64 (this model's is \(headDim)), as llama.cpp's rotation")
        }
        var k = 64
        while headDim % (2 * k) == 0 { k *= 2 }
        return (spec.key != nil ? k : 0, spec.value != nil ? 64 : 0)
    }
    public func attach(rope: RotaryEmbedding) { self.rope = rope }

    /// Throws when the cache cannot hold `spec` (a format it does not build, a group that does
    /// not divide the KV width), or when it would quantize nothing: every layer in FP32, or sinks
    /// and a residual window that leave no position of `contextLength` to quantize.
    public convenience init(spec: KVQuant, layerCount: Int, contextLength: Int, kvDim: Int, headDim: Int, fp32Layers: Set<Int> = []) throws {
        try self.init(spec: spec, shape: KVCacheShape(layerCount: layerCount, contextLength: contextLength, kvDim: kvDim),
                      headDim: headDim, fp32Layers: fp32Layers)
    }

    public init(spec: KVQuant, shape: KVCacheShape, headDim: Int, fp32Layers: Set<Int> = []) throws {
        try Self.validate(spec, kvDim: shape.kvDim, headDim: headDim)
        try Self.requireQuantizedPositions(spec, layerCount: shape.layerCount, contextLength: shape.contextLength, headDim: headDim,
                                           fp32Layers: fp32Layers)
        (keyRotation, valueRotation) = try Self.rotations(spec, headDim: headDim)
        self.spec = spec
        self.fp32Layers = fp32Layers
        layerCount = shape.layerCount
        contextLength = shape.contextLength
        kvDim = shape.kvDim
        self.headDim = headDim
        k = Part(q: spec.key, shape: shape, headDim: headDim, sinks: spec.sinks, residual: spec.residual, fp32Layers: fp32Layers)
        v = Part(q: spec.value, shape: shape, headDim: headDim, sinks: spec.sinks, residual: spec.residual, fp32Layers: fp32Layers)
    }

    /// Checks that a cache can hold `spec`'s formats and groups, whatever its context.
    public static func validate(_ spec: KVQuant, kvDim: Int, headDim: Int) throws {
        guard spec.key != nil || spec.value != nil else {
            throw QuantDriftError.invalidInput("scheme: a quantized KV cache needs a format for K or V")
        }
        for p in [spec.key, spec.value].compactMap({ $0 }) {
            _ = try FormatTraits.kv(p.format)
            let g = p.groupSize == 0 ? headDim : p.groupSize
            if p.axis == .token {
                guard kvDim % g == 0 else { throw QuantDriftError.invalidInput("scheme: KV group \(g) must divide the KV width \(kvDim)") }
            }
        }
    }

    /// A compression request must not silently become a no-op: throws unless some layer of K or
    /// V can quantize a position within `contextLength`. A position is quantized once it is past
    /// the sinks and out of the residual window; per-channel keys wait for a whole token group.
    public static func requireQuantizedPositions(_ spec: KVQuant, layerCount: Int, contextLength: Int, headDim: Int,
                                                 fp32Layers: Set<Int> = []) throws {
        guard (0..<layerCount).contains(where: { !fp32Layers.contains($0) }) else {
            throw QuantDriftError.invalidInput("scheme: the KV cache would quantize nothing: every one of the \(layerCount) layers is kept in FP32 (skip)")
        }
        let parts = [spec.key, spec.value].compactMap { $0 }
        let needs = parts.map { spec.sinks + spec.residual + ($0.axis == .channel ? ($0.groupSize == 0 ? headDim : $0.groupSize) : 1) }
        guard let least = needs.min(), least > contextLength else { return }
        let channel = parts.contains { $0.axis == .channel } ? " (per-channel keys also a whole token group)" : ""
        throw QuantDriftError.invalidInput("scheme: the KV cache would quantize nothing: \(spec.sinks) sink(s) and a residual window of \(spec.residual) keep every position of a \(contextLength)-token context in FP32; it needs at least \(least) positions\(channel)")
    }

    /// Bytes of storage held for keys and values: packed codes, scales and mins for the rows the
    /// quantized layers hold (the context, or a sliding window's rows), plus FP32 for what is not quantized: the sinks, the ring of
    /// positions not yet quantized (the residual window; per-channel keys also hold up to one
    /// token group less one), the layers kept in FP32 and a part with no format. Not counted:
    /// the read buffer every read of a layer fills (contextLength × kvDim floats per part) and the
    /// error statistics behind `relativeErrors` (two Doubles per layer and position per part).
    public var byteCount: Int { k.byteCount + v.byteCount }

    public func store(layer: Int, position: Int, rows: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        for (p, src) in [(k, keys), (v, values)] {
            if p.q != nil { measureNorms(p, layer: layer, position: position, rows: rows, src) }
            if p.slot[layer] < 0 {
                (p.full.pointer + (p.fullSlot[layer] * contextLength + position) * kvDim).update(from: src, count: rows * kvDim)
            } else {
                storeQuantized(p, layer: layer, position: position, rows: rows, src)
            }
        }
    }

    /// Σx² of every stored position (its error is 0 until it is quantized).
    private func measureNorms(_ p: Part, layer: Int, position: Int, rows: Int, _ src: UnsafePointer<Float>) {
        let base = layer * contextLength + position
        for r in 0..<rows {
            let x = src + r * kvDim
            var n = 0.0
            for c in 0..<kvDim {
                let d = Double(x[c])
                n += d * d
            }
            p.normSums[base + r] = n
            p.errorSums[base + r] = 0
        }
    }

    /// The ring row of a position past the sinks.
    @inline(__always)
    private func ringRow(_ p: Part, slot: Int, _ pos: Int) -> UnsafeMutablePointer<Float> {
        p.ring.pointer + (slot * p.window + (pos - spec.sinks) % p.window) * kvDim
    }

    /// Stores positions of a quantized layer: sinks as FP32, then quantizes every position that
    /// has left the residual window (in whole token groups for per-channel parts), reading earlier
    /// positions from the ring and this call's from `src`; what is left waits in the ring.
    private func storeQuantized(_ p: Part, layer: Int, position: Int, rows: Int, _ src: UnsafePointer<Float>) {
        guard let q = p.q else { return }
        let s = p.slot[layer]
        let sinks = spec.sinks
        if position == 0 { p.storedEnd[layer] = 0 }  // a reset: nothing older is needed
        // Writing below what was quantized (after a reset or truncate) makes those codes stale:
        // roll back to the start of the overwritten position's token group, whose earlier
        // positions go back to the ring as they read back.
        if position < p.quantizedUpTo[layer] {
            let start = position < sinks || q.axis == .token ? position : sinks + (position - sinks) / p.group * p.group
            precondition(start == position || start >= p.oldestHeld(layer: layer),
                         "sliding-window KV cache: position \(start) was dropped (rewound too far)")
            for pos in start..<position {
                dequantize(p, slot: s, position: pos, into: ringRow(p, slot: s, pos))
                p.errorSums[layer * contextLength + pos] = 0
            }
            p.quantizedUpTo[layer] = min(p.quantizedUpTo[layer], start)
        }
        let end = position + rows
        if position < p.sinkCount {
            (p.sinkRows.pointer + (s * p.sinkCount + position) * kvDim).update(from: src, count: (min(end, p.sinkCount) - position) * kvDim)
        }
        func written(_ pos: Int) -> UnsafePointer<Float> {
            pos < position ? UnsafePointer(ringRow(p, slot: s, pos)) : src + (pos - position) * kvDim
        }
        p.storedEnd[layer] = max(p.storedEnd[layer], end)
        var from = max(p.quantizedUpTo[layer], sinks)
        let quantizer = KVVectorEncoder(q: q, table: p.table)
        let entryBytes = p.entryBytes
        let codes = p.codes
        if q.axis == .token {
            let ng = kvDim / p.group
            while from < end - spec.residual {
                let row = written(from)
                let r = p.row(s, from)
                for g in 0..<ng {
                    let (sc, m) = quantizer.encode(row + g * p.group, count: p.group, stride: 1) { i, u in
                        Self.put(codes, entryBytes: entryBytes, bits: p.bits, row: r, index: g * p.group + i, u)
                    }
                    p.scales[r * ng + g] = sc
                    if p.table == nil { p.mins[r * ng + g] = m }
                }
                recordError(p, layer: layer, position: from, written: row)
                from += 1
            }
        } else {
            // Token groups are aligned to the first non-sink position.
            let tg = p.group
            let staged = p.view.pointer
            while from + tg <= end - spec.residual {
                let gr = p.groupRow(s, (from - sinks) / tg)
                for i in 0..<tg { (staged + i * kvDim).update(from: written(from + i), count: kvDim) }
                for c in 0..<kvDim {
                    let (sc, m) = quantizer.encode(staged + c, count: tg, stride: kvDim) { i, u in
                        Self.put(codes, entryBytes: entryBytes, bits: p.bits, row: p.row(s, from + i), index: c, u)
                    }
                    p.scales[gr * kvDim + c] = sc
                    if p.table == nil { p.mins[gr * kvDim + c] = m }
                }
                for i in 0..<tg { recordError(p, layer: layer, position: from + i, written: staged + i * kvDim) }
                from += tg
            }
        }
        p.quantizedUpTo[layer] = max(p.quantizedUpTo[layer], from)
        let waiting = max(position, from)
        if waiting < end {
            for pos in waiting..<end { ringRow(p, slot: s, pos).update(from: src + (pos - position) * kvDim, count: kvDim) }
        }
    }

    /// Σ(x̂ − x)² of a position just quantized, x̂ as attention reads it back.
    private func recordError(_ p: Part, layer: Int, position pos: Int, written: UnsafePointer<Float>) {
        let read = p.row.pointer
        dequantize(p, slot: p.slot[layer], position: pos, into: read)
        var e = 0.0
        for c in 0..<kvDim {
            let x = Double(written[c]), d = Double(read[c]) - x
            e += d * d
        }
        p.errorSums[layer * contextLength + pos] = e
    }

    @inline(__always)
    private static func put(_ codes: UnsafeMutablePointer<UInt8>, entryBytes: Int, bits: Int, row: Int, index: Int, _ u: UInt8) {
        let base = codes + row * entryBytes
        switch bits {
        case 8: base[index] = u
        case 4:
            let b = index >> 1, shift = UInt8((index & 1) * 4)
            base[b] = (base[b] & ~(0xF << shift)) | (u << shift)
        default:
            let b = index >> 2, shift = UInt8((index & 3) * 2)
            base[b] = (base[b] & ~(0x3 << shift)) | (u << shift)
        }
    }

    @inline(__always)
    private static func get(_ codes: UnsafePointer<UInt8>, entryBytes: Int, bits: Int, row: Int, index: Int) -> UInt8 {
        let base = codes + row * entryBytes
        switch bits {
        case 8: return base[index]
        case 4: return (base[index >> 1] >> UInt8((index & 1) * 4)) & 0xF
        default: return (base[index >> 2] >> UInt8((index & 3) * 2)) & 0x3
        }
    }

    /// One quantized position of a layer (its storage `slot`) decoded to FP32, as attention reads it.
    @inline(__always)
    private func dequantize(_ p: Part, slot s: Int, position pos: Int, into out: UnsafeMutablePointer<Float>) {
        let r = p.row(s, pos)
        guard p.q?.axis != .token else { return dequantizeTokens(p, firstRow: r, rows: 1, into: out) }
        let sBase = p.groupRow(s, (pos - spec.sinks) / p.group) * kvDim
        let mn: UnsafePointer<Float>? = p.addsMins ? UnsafePointer(p.mins.pointer + sBase) : nil
        p.levels.withUnsafeBufferPointer { levels in
            qd_kv_decode(UnsafePointer(p.codes) + r * p.entryBytes, Int32(p.bits), levels.baseAddress, p.identityLevels ? 1 : 0,
                         p.scales.pointer + sBase, mn, 0, Int32(kvDim), out)
        }
    }

    /// Storage rows firstRow..<firstRow+rows of a per-token part decoded to FP32, (rows, kvDim):
    /// what `dequantize` gives row by row, in one call.
    @inline(__always)
    private func dequantizeTokens(_ p: Part, firstRow r: Int, rows: Int, into out: UnsafeMutablePointer<Float>) {
        let ng = kvDim / p.group
        let mn: UnsafePointer<Float>? = p.addsMins ? UnsafePointer(p.mins.pointer + r * ng) : nil
        p.levels.withUnsafeBufferPointer { levels in
            qd_kv_decode(UnsafePointer(p.codes) + r * p.entryBytes, Int32(p.bits), levels.baseAddress, p.identityLevels ? 1 : 0,
                         p.scales.pointer + r * ng, mn, Int32(p.group), Int32(rows * kvDim), out)
        }
    }

    /// Positions `from`..<count of one layer as FP32, (count − from, kvDim).
    func read(_ p: Part, layer: Int, from: Int, count: Int) -> UnsafePointer<Float> {
        let s = p.slot[layer]
        guard s >= 0 else { return UnsafePointer(p.full.pointer + (p.fullSlot[layer] * contextLength + from) * kvDim) }
        let out = p.view.pointer
        @inline(__always) func dst(_ pos: Int) -> UnsafeMutablePointer<Float> { out + (pos - from) * kvDim }
        let sinks = min(spec.sinks, count)
        if from < sinks {
            dst(from).update(from: p.sinkRows.pointer + (s * p.sinkCount + from) * kvDim, count: (sinks - from) * kvDim)
        }
        let qStart = max(from, sinks)
        let qEnd = min(max(p.quantizedUpTo[layer], sinks), count)
        if qStart < qEnd {
            precondition(qStart >= p.oldestHeld(layer: layer), "sliding-window KV cache: position \(qStart) was dropped")
            if p.q?.axis == .token && p.entryBytes * 8 == kvDim * p.bits {
                // Per-token codes, scales and mins of consecutive rows lie back to back: one call
                // decodes every row up to the ring's wrap (the same values, without a call per position).
                var pos = qStart
                while pos < qEnd {
                    let r = p.row(s, pos)
                    let span = min(qEnd - pos, p.rowOffset[s] + p.rowsHeld[s] - r)
                    dequantizeTokens(p, firstRow: r, rows: span, into: dst(pos))
                    pos += span
                }
            } else {
                for pos in qStart..<qEnd { dequantize(p, slot: s, position: pos, into: dst(pos)) }
            }
        }
        // The rest waits in the ring (past the sinks).
        for pos in max(qStart, qEnd)..<max(qStart, qEnd, count) {
            dst(pos).update(from: ringRow(p, slot: s, pos), count: kvDim)
        }
        return UnsafePointer(out)
    }

    public func keys(layer: Int, count: Int) -> UnsafePointer<Float> { keys(layer: layer, from: 0, count: count) }
    public func values(layer: Int, count: Int) -> UnsafePointer<Float> { read(v, layer: layer, from: 0, count: count) }
    public func values(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> { read(v, layer: layer, from: from, count: count) }

    public func keys(layer: Int, from: Int, count: Int) -> UnsafePointer<Float> {
        let keys = read(k, layer: layer, from: from, count: count)
        guard spec.preRoPE, let rope else { return keys }
        // Pre-RoPE keys: rotate what was read (the view buffer, or an FP32-only part's copy).
        let out = k.view.pointer
        if keys != UnsafePointer(out) { out.update(from: keys, count: (count - from) * kvDim) }
        for pos in from..<count { rope.apply(out + (pos - from) * kvDim, heads: kvDim / headDim, position: pos, layer: layer) }
        return UnsafePointer(out)
    }

    /// Positions of `layer` held as codes, for K and for V (a cache that quantized nothing shows 0).
    public func quantizedPositions(layer: Int) -> (keys: Int, values: Int) {
        (k.q == nil ? 0 : max(0, k.quantizedUpTo[layer] - spec.sinks), v.q == nil ? 0 : max(0, v.quantizedUpTo[layer] - spec.sinks))
    }
}
