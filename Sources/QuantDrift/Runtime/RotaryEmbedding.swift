import Foundation

/// RoPE with tables of cos/sin per (position, frequency), built once for a context length. A
/// model whose local layers use another base (Gemma 3) gets a second table; `apply` picks the
/// layer's. Angles are computed in Double: position · base^(−2i/d) / divisor_i.
public final class RotaryEmbedding: @unchecked Sendable {
    public let headDim: Int
    public let style: RopeStyle
    public let contextLength: Int
    /// (contextLength, headDim/2) cos and sin, one pair per distinct base.
    private let tables: [(cos: FloatBuffer, sin: FloatBuffer)]
    /// Index into `tables` per layer.
    private let tableOfLayer: [Int]

    public init(config c: ModelConfig, contextLength: Int) {
        headDim = c.headDim
        style = c.ropeStyle
        self.contextLength = contextLength
        let half = c.headDim / 2
        func divisors(_ scaling: RopeScaling) -> [Double] {
            switch scaling {
            case .none: return Array(repeating: 1, count: half)
            case .linear(let f): return Array(repeating: Double(f), count: half)
            case .perPairDivisors(let d): return d.map(Double.init)
            }
        }
        func table(base: Float, scaling: RopeScaling) -> (cos: FloatBuffer, sin: FloatBuffer) {
            let cosTable = FloatBuffer(count: contextLength * half)
            let sinTable = FloatBuffer(count: contextLength * half)
            let div = divisors(scaling)
            let freqs = (0..<half).map { pow(Double(base), -2.0 * Double($0) / Double(c.headDim)) / div[$0] }
            for pos in 0..<contextLength {
                for i in 0..<half {
                    let angle = Double(pos) * freqs[i]
                    cosTable[pos * half + i] = Float(cos(angle))
                    sinTable[pos * half + i] = Float(sin(angle))
                }
            }
            return (cosTable, sinTable)
        }
        var tables = [table(base: c.ropeBase, scaling: c.ropeScaling)]
        var tableOfLayer = Array(repeating: 0, count: c.layerCount)
        // Local layers with their own base use plain RoPE (HF Gemma 3's local rotary embedding;
        // llama.cpp's freq_scale_swa is 1).
        if let local = c.localRopeBase, c.slidingWindow != nil {
            tables.append(table(base: local, scaling: .none))
            for l in 0..<c.layerCount where c.isLocal(l) { tableOfLayer[l] = 1 }
        }
        self.tables = tables
        self.tableOfLayer = tableOfLayer
    }

    /// Rotates `heads` consecutive heads of one row in place for `position`, with layer `layer`'s table.
    @inline(__always)
    public func apply(_ v: UnsafeMutablePointer<Float>, heads: Int, position: Int, layer: Int) {
        let half = headDim / 2
        let t = tables[tableOfLayer[layer]]
        let cs = t.cos.pointer + position * half, sn = t.sin.pointer + position * half
        for h in 0..<heads {
            let p = v + h * headDim
            switch style {
            case .adjacentPairs:
                for i in 0..<half {
                    let a = p[2 * i], b = p[2 * i + 1]
                    p[2 * i] = a * cs[i] - b * sn[i]
                    p[2 * i + 1] = a * sn[i] + b * cs[i]
                }
            case .rotateHalf:
                for i in 0..<half {
                    let a = p[i], b = p[i + half]
                    p[i] = a * cs[i] - b * sn[i]
                    p[i + half] = a * sn[i] + b * cs[i]
                }
            }
        }
    }
}
