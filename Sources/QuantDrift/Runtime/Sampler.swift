import Foundation

/// How the next token is chosen. Temperature 0 is greedy (argmax, ties to the lowest id).
/// Otherwise: logits / temperature → keep the top-k (0 = all) → keep the smallest set whose
/// probability reaches top-p → draw from the renormalised rest with a seeded random stream.
public struct SamplingParameters: Sendable, Codable, Hashable {
    public var temperature: Float
    public var topK: Int
    public var topP: Float
    public var seed: UInt64

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }

    public var isGreedy: Bool { temperature <= 0 }

    public func validate() throws {
        guard temperature.isFinite, temperature >= 0 else { throw QuantDriftError.invalidInput("temperature must be ≥ 0, got \(temperature)") }
        guard topK >= 0 else { throw QuantDriftError.invalidInput("top-k must be ≥ 0, got \(topK)") }
        guard topP.isFinite, topP > 0, topP <= 1 else { throw QuantDriftError.invalidInput("top-p must be in (0, 1], got \(topP)") }
    }
}

/// A small, fast, seedable PRNG (SplitMix64): the same seed gives the same stream everywhere.
public struct RandomStream: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextDouble() -> Double {
        Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }
}

/// Picks tokens from logits. Scratch space is allocated once, so sampling allocates nothing.
public final class Sampler: @unchecked Sendable {
    public let parameters: SamplingParameters
    private var random: RandomStream
    private let vocab: Int
    private let probs: FloatBuffer
    private let order: UnsafeMutablePointer<Int32>

    public init(_ parameters: SamplingParameters, vocabSize: Int) throws {
        try parameters.validate()
        self.parameters = parameters
        self.vocab = vocabSize
        random = RandomStream(seed: parameters.seed)
        probs = FloatBuffer(count: vocabSize)
        order = .allocate(capacity: vocabSize)
    }

    deinit { order.deallocate() }

    /// Index of the largest logit (lowest id on ties).
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        for i in 0..<logits.count where logits[i] > bestValue {
            bestValue = logits[i]
            best = i
        }
        return best
    }

    public func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        precondition(logits.count == vocab)
        if parameters.isGreedy { return Self.argmax(logits) }
        let invT = 1 / parameters.temperature
        var mx = -Float.infinity
        for i in 0..<vocab where logits[i] > mx { mx = logits[i] }
        // Candidates sorted by logit (desc, ties by id). With top-k only k are selected; with
        // top-p only tokens that could be in the nucleus, as llama2.c does: p ≥ (1 - top_p)/(n - 1).
        var sum: Double = 0
        for i in 0..<vocab {
            let e = exp((logits[i] - mx) * invT)
            probs[i] = e
            sum += Double(e)
        }
        let norm = Float(1 / sum)
        let p = probs.pointer
        for i in 0..<vocab { p[i] *= norm }
        if parameters.topK == 0 && parameters.topP >= 1 {
            // Plain temperature sampling: draw over the ids in order.
            let r = Float(random.nextDouble())
            var acc: Float = 0
            for i in 0..<vocab {
                acc += p[i]
                if r < acc { return i }
            }
            return Self.argmax(UnsafeBufferPointer(start: p, count: vocab))
        }
        // Candidates sorted by probability (desc, ties by id). Under top-p alone only tokens that
        // could be in the nucleus are sorted, as llama2.c does: p ≥ (1 - top_p) / (n - 1).
        let cutoff: Float = parameters.topK == 0 ? (1 - parameters.topP) / Float(max(vocab - 1, 1)) : 0
        var n = 0
        for i in 0..<vocab where p[i] >= cutoff {
            order[n] = Int32(i)
            n += 1
        }
        var candidates = UnsafeMutableBufferPointer(start: order, count: n)
        candidates.sort { a, b in
            let pa = p[Int(a)], pb = p[Int(b)]
            if pa != pb { return pa > pb }
            return a < b
        }
        if parameters.topK > 0 { n = min(n, parameters.topK) }
        var kept: Double = 0
        var last = n
        for j in 0..<n {
            kept += Double(p[Int(order[j])])
            if parameters.topP < 1 && kept >= Double(parameters.topP) {
                last = j + 1
                break
            }
        }
        n = last
        kept = 0
        for j in 0..<n { kept += Double(p[Int(order[j])]) }
        let r = random.nextDouble() * kept
        var acc: Double = 0
        for j in 0..<n {
            acc += Double(p[Int(order[j])])
            if r < acc { return Int(order[j]) }
        }
        return Int(order[n - 1])
    }
}
