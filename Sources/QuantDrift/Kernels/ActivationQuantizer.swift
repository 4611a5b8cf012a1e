import CKernels

/// How the input rows of a linear layer are turned into int8 codes before an integer product.
public struct ActivationQuantizer: Sendable, Hashable {
    public enum Mode: Sendable, Hashable {
        /// One scale per row from its own max |x|.
        case dynamicPerRow
        /// One scale per group of `n` elements of each row, from the group's max |x|.
        case dynamicPerGroup(Int)
        /// ggml's q8_0: groups of 32, scale fp16-rounded (codes use the unrounded scale).
        case q8_0
        /// ggml's q8_K (the k-quants' activations): groups of 256, FP32 scale max/-127 from the
        /// signed value of largest magnitude, codes rounded half to even and capped at 127.
        case q8_K
        /// One fixed scale for the whole tensor, from calibration.
        case staticPerTensor(Float)
        /// Fixed scales per group of `n` input channels (the last group may be shorter), from calibration.
        case staticPerGroup(Int, [Float])
    }

    public let mode: Mode
    /// Largest code magnitude of the dynamic modes: 127 (int8), or 7 for 4-bit activations
    /// (int4 codes in −7…7 ride in the int8 containers, so the integer kernels multiply them
    /// exactly as they are: W4A4 is Int4×Int4 products summed in Int32).
    public let maxCode: Int

    public init(_ mode: Mode, maxCode: Int = 127) {
        self.mode = mode
        self.maxCode = maxCode
    }

    /// Elements sharing one scale in a row of `inDim`.
    public func groupSize(inDim: Int) -> Int {
        switch mode {
        case .dynamicPerRow, .staticPerTensor: inDim
        case .dynamicPerGroup(let n), .staticPerGroup(let n, _): min(n, inDim)
        case .q8_0: 32
        case .q8_K: min(256, inDim)
        }
    }

    /// Quantizes `rows` rows of `inDim` into codes (rows, inDim), scales (rows, groups) and, when
    /// `blockSums` is given (products with weight mins read them), 32-block code sums
    /// (rows, ceil(inDim/32)). Codes are in [-maxCode, maxCode].
    public func quantize(_ x: UnsafePointer<Float>, rows: Int, inDim: Int, codes: UnsafeMutablePointer<Int8>,
                         scales: UnsafeMutablePointer<Float>, blockSums: UnsafeMutablePointer<Int32>?) {
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
                case .q8_K:
                    scale = Self.quantizeQ8K(xr + lo, count: hi - lo, into: qr + lo)
                    scales[r * ng + gi] = scale
                    continue
                default:
                    let d = qd_absmax_f32(xr + lo, Int32(hi - lo)) / Float(maxCode)
                    inv = d > 0 ? 1 / d : 0
                    if case .q8_0 = mode { scale = qd_round_f16(d) } else { scale = d }
                }
                scales[r * ng + gi] = scale
                qd_quantize_i8(xr + lo, Int32(hi - lo), inv, qr + lo)
            }
            if let blockSums { qd_block_sums_i8(qr, Int32(inDim), blockSums + r * nb) }
        }
    }
}

extension ActivationQuantizer {
    /// One q8_K group as ggml's quantize_row_q8_K_ref: returns the scale (0 for an all-zero group).
    static func quantizeQ8K(_ x: UnsafePointer<Float>, count: Int, into q: UnsafeMutablePointer<Int8>) -> Float {
        var amax: Float = 0, max: Float = 0
        for i in 0..<count where abs(x[i]) > amax {
            amax = abs(x[i])
            max = x[i]
        }
        guard amax > 0 else {
            q.update(repeating: 0, count: count)
            return 0
        }
        let iscale = -127 / max
        for i in 0..<count {
            // Round half to even, as ggml's nearest_int (|iscale·x| ≤ 127 here).
            let v = Int((iscale * x[i]).rounded(.toNearestOrEven))
            q[i] = Int8(Swift.min(127, v))
        }
        return 1 / iscale
    }

    /// Quantizes `rows` rows of `inDim` and decodes them back to FP32 in `scratch.input`: what an
    /// FP32 product sees of quantized activations. Returns that buffer.
    func roundTrip(_ x: UnsafePointer<Float>, rows: Int, inDim n: Int, scratch: LinearScratch) -> UnsafeMutablePointer<Float> {
        let codes = scratch.bytes.bindMemory(to: Int8.self, capacity: rows * n)
        quantize(x, rows: rows, inDim: n, codes: codes, scales: scratch.floats.pointer, blockSums: scratch.blockSums)
        let g = groupSize(inDim: n)
        let ng = (n + g - 1) / g
        let xin = scratch.input.pointer
        for r in 0..<rows {
            for i in 0..<n { xin[r * n + i] = Float(codes[r * n + i]) * scratch.floats[r * ng + i / g] }
        }
        return xin
    }
}
