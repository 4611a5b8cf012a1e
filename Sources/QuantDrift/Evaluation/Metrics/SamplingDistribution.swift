import Foundation

/// The distribution a sampler draws from, in float64 over the full vocabulary: greedy is a point
/// mass on the argmax (lowest id on ties); otherwise softmax(logits / T), cut to the top-k, then
/// to the smallest set reaching top-p (ties by id), renormalised. Scratch is allocated once.
final class SamplingDistribution: @unchecked Sendable {
    let parameters: SamplingParameters
    let vocab: Int
    private let order: UnsafeMutablePointer<Int32>

    init(_ parameters: SamplingParameters, vocab: Int) {
        self.parameters = parameters
        self.vocab = vocab
        order = .allocate(capacity: vocab)
    }

    deinit { order.deallocate() }

    /// Fills `probs` (vocab entries) from one row of logits.
    func compute(_ logits: UnsafeBufferPointer<Float>, into probs: UnsafeMutableBufferPointer<Double>) {
        precondition(logits.count == vocab && probs.count == vocab)
        if parameters.isGreedy {
            let best = Sampler.argmax(logits)
            for i in 0..<vocab { probs[i] = 0 }
            probs[best] = 1
            return
        }
        let invT = 1 / Double(parameters.temperature)
        var mx = -Float.infinity
        for i in 0..<vocab where logits[i] > mx { mx = logits[i] }
        var sum = 0.0
        for i in 0..<vocab {
            let e = exp((Double(logits[i]) - Double(mx)) * invT)
            probs[i] = e
            sum += e
        }
        let norm = 1 / sum
        for i in 0..<vocab { probs[i] *= norm }
        guard parameters.topK > 0 || parameters.topP < 1 else { return }
        for i in 0..<vocab { order[i] = Int32(i) }
        var ids = UnsafeMutableBufferPointer(start: order, count: vocab)
        ids.sort { a, b in
            let pa = probs[Int(a)], pb = probs[Int(b)]
            return pa != pb ? pa > pb : a < b
        }
        var keep = parameters.topK > 0 ? min(parameters.topK, vocab) : vocab
        if parameters.topP < 1 {
            var acc = 0.0
            for j in 0..<keep {
                acc += probs[Int(order[j])]
                if acc >= Double(parameters.topP) { keep = j + 1; break }
            }
        }
        var kept = 0.0
        for j in 0..<keep { kept += probs[Int(order[j])] }
        for j in keep..<vocab { probs[Int(order[j])] = 0 }
        let renorm = 1 / kept
        for j in 0..<keep { probs[Int(order[j])] *= renorm }
    }

    /// Inverse-CDF draw over ids in order with u ∈ [0, 1).
    static func draw(_ probs: UnsafeBufferPointer<Double>, _ u: Double) -> Int {
        var acc = 0.0
        var lastNonZero = 0
        for i in 0..<probs.count where probs[i] > 0 {
            acc += probs[i]
            lastNonZero = i
            if u < acc { return i }
        }
        return lastNonZero
    }

    /// Total variation ½Σ|p − q|.
    static func totalVariation(_ p: UnsafeBufferPointer<Double>, _ q: UnsafeBufferPointer<Double>) -> Double {
        var s = 0.0
        for i in 0..<p.count { s += abs(p[i] - q[i]) }
        return s / 2
    }

    /// Maximal coupling (as in speculative sampling): given the reference's token x ~ P, the
    /// candidate keeps x with probability min(1, Q(x)/P(x)), otherwise draws from the residual
    /// max(0, Q − P) normalised. The candidate's token is then distributed as Q, and it differs
    /// from x with probability exactly TV(P, Q). `u` and `v` are two independent uniforms.
    static func coupled(reference x: Int, p: UnsafeBufferPointer<Double>, q: UnsafeBufferPointer<Double>,
                        u: Double, v: Double) -> Int {
        if q[x] >= p[x] || u * p[x] < q[x] { return x }
        var mass = 0.0
        for i in 0..<p.count where q[i] > p[i] { mass += q[i] - p[i] }
        guard mass > 0 else { return x }
        let target = v * mass
        var acc = 0.0
        var last = x
        for i in 0..<p.count where q[i] > p[i] {
            acc += q[i] - p[i]
            last = i
            if target < acc { return i }
        }
        return last
    }
}

/// The shared random stream of a run: uniforms for (prompt, step, draw) that do not depend on
/// which model asks or in which order, so the reference and every candidate see the same numbers.
struct SharedUniforms: Sendable {
    let seed: UInt64

    func uniform(prompt: Int, step: Int, draw: Int) -> Double {
        var s = RandomStream(seed: seed ^ (UInt64(prompt) &* 0x9E37_79B9_7F4A_7C15)
                                  ^ (UInt64(step) &* 0xC2B2_AE3D_27D4_EB4F) ^ (UInt64(draw) &* 0x1656_67B1_9E37_79F9))
        _ = s.next()
        return s.nextDouble()
    }
}
