/// How the input rows of a linear layer are turned into int8 codes before an integer product.
public struct ActivationQuantizer: Sendable, Hashable {
    public enum Mode: Sendable, Hashable {
        /// One scale per row from its own max |x|.
        case dynamicPerRow
        /// One scale per group of `n` elements of each row, from the group's max |x|.
        case dynamicPerGroup(Int)
        /// ggml's q8_0: groups of 32, scale fp16-rounded (codes use the unrounded scale).
        case q8_0
        /// One fixed scale for the whole tensor, from calibration.
        case staticPerTensor(Float)
        /// Fixed scales per group of `n` input channels (the last group may be shorter), from calibration.
        case staticPerGroup(Int, [Float])
    }

    public let mode: Mode

    public init(_ mode: Mode) { self.mode = mode }

    /// Elements sharing one scale in a row of `inDim`.
    public func groupSize(inDim: Int) -> Int {
        switch mode {
        case .dynamicPerRow, .staticPerTensor: inDim
        case .dynamicPerGroup(let n), .staticPerGroup(let n, _): min(n, inDim)
        case .q8_0: 32
        }
    }

    /// Quantizes `rows` rows of `inDim` into codes (rows, inDim), scales (rows, groups) and
    /// 32-block code sums (rows, ceil(inDim/32)). Codes are in [-127, 127].
    public func quantize(_ x: UnsafePointer<Float>, rows: Int, inDim: Int, codes: UnsafeMutablePointer<Int8>,
                         scales: UnsafeMutablePointer<Float>, blockSums: UnsafeMutablePointer<Int32>) {
        let g = groupSize(inDim: inDim)
        let ng = (inDim + g - 1) / g
        let nb = (inDim + 31) / 32
        for r in 0..<rows {
            let xr = x + r * inDim, qr = codes + r * inDim
            for gi in 0..<ng {
                let lo = gi * g, hi = min(lo + g, inDim)
                let scale: Float, inv: Float
                switch mode {
                case .staticPerTensor(let s):
                    scale = s
                    inv = s > 0 ? 1 / s : 0
                case .staticPerGroup(_, let ss):
                    let s = gi < ss.count ? ss[gi] : 0
                    scale = s
                    inv = s > 0 ? 1 / s : 0
                default:
                    var amax: Float = 0
                    for i in lo..<hi { amax = max(amax, abs(xr[i])) }
                    let d = amax / 127
                    inv = d > 0 ? 1 / d : 0
                    if case .q8_0 = mode { scale = Float(Float16(d)) } else { scale = d }
                }
                scales[r * ng + gi] = scale
                for i in lo..<hi {
                    let q = (xr[i] * inv).rounded(.toNearestOrAwayFromZero)
                    qr[i] = Int8(max(-127, min(127, q.isNaN ? 0 : q)))
                }
            }
            for b in 0..<nb {
                var s: Int32 = 0
                for i in (b * 32)..<min(b * 32 + 32, inDim) { s += Int32(qr[i]) }
                blockSums[r * nb + b] = s
            }
        }
    }
}
