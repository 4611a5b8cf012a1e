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

/// The encoder of one KV part: uniform integer codes or FP8 table codes.
struct KVVectorEncoder {
    let uniform: UniformVectorQuantizer
    let table: TableVectorQuantizer?

    init(q: KVPartQuant, table: ValueTable?) {
        uniform = UniformVectorQuantizer(bits: q.format.bits, symmetric: q.symmetric)
        self.table = table.map(TableVectorQuantizer.init)
    }

    @inline(__always)
    func encode(_ x: UnsafePointer<Float>, count: Int, stride: Int, put: (Int, UInt8) -> Void) -> (scale: Float, min: Float) {
        if let table { return table.encode(x, count: count, stride: stride, put: put) }
        return uniform.encode(x, count: count, stride: stride, put: put)
    }
}

/// A KV cache that stores keys and values as packed integer codes or FP8 bytes, dequantizing what attention
/// reads on every step. Per-token groups along the head dimension (`axis: .token`), or per
/// channel over groups of tokens (KIVI keys, `axis: .channel`); the first `sinks` positions and
/// the most recent `residual` positions stay FP32, and so does every layer in `fp32Layers` (a
/// scheme's `skip=layerN`, and `--per-layer`, which quantizes one layer's cache at a time).
///
/// Within one prefill chunk every query sees the cache as it stands after the chunk was stored
/// (quantized entries included), as llama.cpp's quantized caches do; with a residual window, the
/// window is measured from the end of the chunk.
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
        /// Decoded value of every code before scaling: the table's values, or the integer itself.
        let levels: [Float]
        let group: Int              // elements (token axis) or tokens (channel axis) per scale
        let codes: UnsafeMutablePointer<UInt8>   // (layers, ctx, kvDim·bits/8)
        let scales: FloatBuffer     // (layers, ctx, kvDim/group) or (layers, ctx/group, kvDim)
        let mins: FloatBuffer
        let fp: FloatBuffer         // FP32 copies: (layers, ctx, kvDim) of the not yet quantized positions
        let view: FloatBuffer       // (ctx, kvDim) dequantized read buffer
        var quantizedUpTo: [Int]    // per layer: positions [sinks, quantizedUpTo) are quantized

        init(q: KVPartQuant?, layers: Int, ctx: Int, kvDim: Int, headDim: Int) {
            self.q = q
            bits = q?.format.traits.kv?.containerBits ?? 32
            let g = q.map { $0.groupSize == 0 ? headDim : $0.groupSize } ?? 1
            group = g
            table = q.flatMap { ValueTable.of($0.format) }
            // NaN codes are never written (the encoder saturates), so they decode to 0 here.
            levels = table.map { t in (0..<256).map { t.values[$0].isFinite ? t.values[$0] : 0 } } ?? (0..<256).map(Float.init)
            let entryBytes = q == nil ? 0 : kvDim * bits / 8
            codes = .allocate(capacity: max(1, layers * ctx * entryBytes))
            codes.initialize(repeating: 0, count: max(1, layers * ctx * entryBytes))
            let nScales: Int
            if let q, q.axis == .channel { nScales = layers * ((ctx + g - 1) / g) * kvDim }
            else if q != nil { nScales = layers * ctx * ((kvDim + g - 1) / g) }
            else { nScales = 0 }
            scales = FloatBuffer(count: nScales)
            mins = FloatBuffer(count: table == nil ? nScales : 0)
            fp = FloatBuffer(count: layers * ctx * kvDim)
            view = FloatBuffer(count: ctx * kvDim)
            quantizedUpTo = Array(repeating: 0, count: layers)
        }

        deinit { codes.deallocate() }
    }

    let k: Part
    let v: Part
    var rope: RotaryEmbedding?

    public var storesPreRoPEKeys: Bool { spec.preRoPE }
    public func attach(rope: RotaryEmbedding) { self.rope = rope }

    public init(spec: KVQuant, layerCount: Int, contextLength: Int, kvDim: Int, headDim: Int, fp32Layers: Set<Int> = []) throws {
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
        self.spec = spec
        self.fp32Layers = fp32Layers
        self.layerCount = layerCount
        self.contextLength = contextLength
        self.kvDim = kvDim
        self.headDim = headDim
        k = Part(q: spec.key, layers: layerCount, ctx: contextLength, kvDim: kvDim, headDim: headDim)
        v = Part(q: spec.value, layers: layerCount, ctx: contextLength, kvDim: kvDim, headDim: headDim)
    }

    /// Bytes of storage needed at full context: packed codes, scales and mins, plus FP32 for the
    /// sinks and the residual window (and the not-yet-complete token group of per-channel keys).
    public var byteCount: Int {
        let fp32Count = fp32Layers.filter { $0 >= 0 && $0 < layerCount }.count
        let quantized = layerCount - fp32Count
        let fp32Bytes = fp32Count * contextLength * kvDim * 4
        func part(_ p: Part) -> Int {
            guard let q = p.q else { return layerCount * contextLength * kvDim * 4 }
            let codeBytes = quantized * contextLength * kvDim * p.bits / 8
            let scaleCount = q.axis == .channel ? ((contextLength + p.group - 1) / p.group) * kvDim : contextLength * (kvDim / p.group)
            let fpPositions = min(contextLength, spec.sinks + spec.residual + (q.axis == .channel ? p.group : 0))
            let bytesPerScale = p.table == nil ? 8 : 4   // FP8 parts store no mins
            return codeBytes + quantized * scaleCount * bytesPerScale + quantized * fpPositions * kvDim * 4 + fp32Bytes
        }
        return part(k) + part(v)
    }

    public func store(layer: Int, position: Int, rows: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        for (p, src) in [(k, keys), (v, values)] {
            // Writing below what was quantized (after a reset or truncate) makes those codes stale:
            // roll back to the start of the overwritten position's token group.
            if position < p.quantizedUpTo[layer] {
                let start = position < spec.sinks || p.q?.axis == .token
                    ? position : spec.sinks + (position - spec.sinks) / p.group * p.group
                p.quantizedUpTo[layer] = min(p.quantizedUpTo[layer], start)
            }
            (p.fp.pointer + (layer * contextLength + position) * kvDim).update(from: src, count: rows * kvDim)
            if p.q != nil, !fp32Layers.contains(layer) { flush(p, layer: layer, end: position + rows) }
        }
    }

    /// Quantizes every position that has left the residual window (in whole token groups for
    /// per-channel parts).
    private func flush(_ p: Part, layer: Int, end: Int) {
        guard let q = p.q else { return }
        var from = max(p.quantizedUpTo[layer], spec.sinks)
        let quantizer = KVVectorEncoder(q: q, table: p.table)
        let fp = p.fp.pointer + layer * contextLength * kvDim
        let entryBytes = kvDim * p.bits / 8
        let codes = p.codes + layer * contextLength * entryBytes
        if q.axis == .token {
            let ng = kvDim / p.group
            while from < end - spec.residual {
                let row = fp + from * kvDim
                for g in 0..<ng {
                    let (s, m) = quantizer.encode(row + g * p.group, count: p.group, stride: 1) { i, u in
                        Self.put(codes, entryBytes: entryBytes, bits: p.bits, pos: from, index: g * p.group + i, u)
                    }
                    p.scales[(layer * contextLength + from) * ng + g] = s
                    if p.table == nil { p.mins[(layer * contextLength + from) * ng + g] = m }
                }
                from += 1
            }
        } else {
            // Token groups are aligned to the first non-sink position.
            let tg = p.group
            let groupsPerLayer = (contextLength + tg - 1) / tg
            while from + tg <= end - spec.residual {
                let gi = (from - spec.sinks) / tg
                for c in 0..<kvDim {
                    let (s, m) = quantizer.encode(fp + from * kvDim + c, count: tg, stride: kvDim) { i, u in
                        Self.put(codes, entryBytes: entryBytes, bits: p.bits, pos: from + i, index: c, u)
                    }
                    p.scales[(layer * groupsPerLayer + gi) * kvDim + c] = s
                    if p.table == nil { p.mins[(layer * groupsPerLayer + gi) * kvDim + c] = m }
                }
                from += tg
            }
        }
        p.quantizedUpTo[layer] = max(p.quantizedUpTo[layer], from)
    }

    @inline(__always)
    private static func put(_ codes: UnsafeMutablePointer<UInt8>, entryBytes: Int, bits: Int, pos: Int, index: Int, _ u: UInt8) {
        let base = codes + pos * entryBytes
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
    private static func get(_ codes: UnsafePointer<UInt8>, entryBytes: Int, bits: Int, pos: Int, index: Int) -> UInt8 {
        let base = codes + pos * entryBytes
        switch bits {
        case 8: return base[index]
        case 4: return (base[index >> 1] >> UInt8((index & 1) * 4)) & 0xF
        default: return (base[index >> 2] >> UInt8((index & 3) * 2)) & 0x3
        }
    }

    func read(_ p: Part, layer: Int, count: Int) -> UnsafePointer<Float> {
        let fp = p.fp.pointer + layer * contextLength * kvDim
        guard let q = p.q else { return UnsafePointer(fp) }
        let out = p.view.pointer
        let sinks = min(spec.sinks, count)
        out.update(from: fp, count: sinks * kvDim)
        let qEnd = min(max(p.quantizedUpTo[layer], sinks), count)
        let entryBytes = kvDim * p.bits / 8
        let codes = p.codes + layer * contextLength * entryBytes
        let hasMins = p.table == nil
        p.levels.withUnsafeBufferPointer { levels in
            if q.axis == .token {
                let ng = kvDim / p.group
                for pos in sinks..<max(sinks, qEnd) {
                    let sBase = (layer * contextLength + pos) * ng
                    for c in 0..<kvDim {
                        let g = sBase + c / p.group
                        let u = Self.get(codes, entryBytes: entryBytes, bits: p.bits, pos: pos, index: c)
                        out[pos * kvDim + c] = p.scales[g] * levels[Int(u)] + (hasMins ? p.mins[g] : 0)
                    }
                }
            } else {
                let groupsPerLayer = (contextLength + p.group - 1) / p.group
                for pos in sinks..<max(sinks, qEnd) {
                    let sBase = (layer * groupsPerLayer + (pos - spec.sinks) / p.group) * kvDim
                    for c in 0..<kvDim {
                        let u = Self.get(codes, entryBytes: entryBytes, bits: p.bits, pos: pos, index: c)
                        out[pos * kvDim + c] = p.scales[sBase + c] * levels[Int(u)] + (hasMins ? p.mins[sBase + c] : 0)
                    }
                }
            }
        }
        if qEnd < count { (out + qEnd * kvDim).update(from: fp + qEnd * kvDim, count: (count - qEnd) * kvDim) }
        return UnsafePointer(out)
    }

    public func keys(layer: Int, count: Int) -> UnsafePointer<Float> {
        let keys = read(k, layer: layer, count: count)
        guard spec.preRoPE, let rope else { return keys }
        // Pre-RoPE keys: rotate what was read (the view buffer, or an FP32-only part's copy).
        let out = k.view.pointer
        if keys != UnsafePointer(out) { out.update(from: keys, count: count * kvDim) }
        for pos in 0..<count { rope.apply(out + pos * kvDim, heads: kvDim / headDim, position: pos) }
        return UnsafePointer(out)
    }
    public func values(layer: Int, count: Int) -> UnsafePointer<Float> { read(v, layer: layer, count: count) }

    /// Positions of `layer` held as codes, for K and for V (a cache that quantized nothing shows 0).
    public func quantizedPositions(layer: Int) -> (keys: Int, values: Int) {
        (k.q == nil ? 0 : max(0, k.quantizedUpTo[layer] - spec.sinks), v.q == nil ? 0 : max(0, v.quantizedUpTo[layer] - spec.sinks))
    }
}
