import Foundation

/// RoPE with tables of cos/sin per (position, frequency), built once for a context length.
public final class RotaryEmbedding: @unchecked Sendable {
    public let headDim: Int
    public let style: RopeStyle
    public let contextLength: Int
    let cosTable: FloatBuffer  // (contextLength, headDim/2)
    let sinTable: FloatBuffer  // (contextLength, headDim/2)

    public init(config c: ModelConfig, contextLength: Int) {
        headDim = c.headDim
        style = c.ropeStyle
        self.contextLength = contextLength
        let half = c.headDim / 2
        cosTable = FloatBuffer(count: contextLength * half)
        sinTable = FloatBuffer(count: contextLength * half)
        for pos in 0..<contextLength {
            for i in 0..<half {
                let freq = pow(Double(c.ropeBase), -2.0 * Double(i) / Double(c.headDim))
                let angle = Double(pos) * freq
                cosTable[pos * half + i] = Float(cos(angle))
                sinTable[pos * half + i] = Float(sin(angle))
            }
        }
    }

    /// Rotates `heads` consecutive heads of one row in place for `position`.
    @inline(__always)
    public func apply(_ v: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        let half = headDim / 2
        let cs = cosTable.pointer + position * half, sn = sinTable.pointer + position * half
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
