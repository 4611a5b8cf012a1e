import Foundation

/// Speed of the forward pass against the machine's measured memory read bandwidth, all measured
/// in one process so that the ratios hold even when the absolute numbers move with load.
public struct BenchResult: Sendable, Codable {
    public var scheme: String
    public var threads: Int
    public var prefillTokens: Int
    public var prefillTokS: Double
    public var prefillGFlopS: Double
    public var decodeTokS: Double
    public var weightBytesPerToken: Int
    public var readBandwidthGBs: Double
    /// decode tok/s × weight bytes per token / read bandwidth: 1.0 is the bandwidth bound.
    public var boundFraction: Double
    public var runs: Int
}

public enum Bench {
    /// Median of a sample.
    public static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Single-thread streaming read bandwidth in GB/s over a buffer far larger than the caches
    /// (median of `runs`): the floor a weight-streaming decode is compared with.
    public static func readBandwidth(bytes: Int = 512 << 20, runs: Int = 5) -> Double {
        let n = bytes / MemoryLayout<SIMD8<Int32>>.stride
        let buf = UnsafeMutablePointer<SIMD8<Int32>>.allocate(capacity: n)
        defer { buf.deallocate() }
        for i in 0..<n { buf[i] = SIMD8(repeating: Int32(i & 7)) }
        var rates: [Double] = []
        var sink = SIMD8<Int32>()
        for _ in 0..<runs {
            let t0 = monotonicSeconds()
            var a0 = SIMD8<Int32>(), a1 = SIMD8<Int32>(), a2 = SIMD8<Int32>(), a3 = SIMD8<Int32>()
            var i = 0
            while i + 4 <= n {
                a0 &+= buf[i]; a1 &+= buf[i + 1]; a2 &+= buf[i + 2]; a3 &+= buf[i + 3]
                i += 4
            }
            sink &+= a0 &+ a1 &+ a2 &+ a3
            rates.append(Double(n * MemoryLayout<SIMD8<Int32>>.stride) / (monotonicSeconds() - t0) / 1e9)
        }
        if sink[0] == Int32.min { print("") }  // keeps the loop from being optimised away
        return median(rates)
    }

    /// FLOPs of a prefill of `n` tokens: 2 per weight per token for the layer matrices,
    /// attention's two products over the causal triangle, and the head for the last row.
    public static func prefillFlops(_ c: ModelConfig, tokens n: Int) -> Double {
        let perToken = Double(c.dim * c.qDim * 2 + c.dim * c.kvDim * 2 + c.dim * c.hiddenDim * 3) * Double(c.layerCount)
        let attention = Double(c.layerCount) * Double(c.headCount) * Double(c.headDim) * 2 * Double(n) * Double(n + 1)
        return 2 * perToken * Double(n) + attention + 2 * Double(c.vocabSize * c.dim)
    }

    /// Prefill of `prefillTokens`, decode of `decodeTokens`, each repeated `runs` times (medians).
    public static func run(model: Model, threads: Int, prefillTokens: Int = 512, decodeTokens: Int = 64,
                           runs: Int = 3, progress: (String) -> Void = { _ in }) throws -> BenchResult {
        let c = model.config
        guard prefillTokens >= 1, decodeTokens >= 1, runs >= 1 else {
            throw QuantDriftError.invalidInput("bench sizes must be positive")
        }
        guard prefillTokens + decodeTokens <= c.contextLength else {
            throw QuantDriftError.invalidInput("prefill + decode tokens exceed the context length \(c.contextLength)")
        }
        BLAS.setThreads(threads)
        progress("measuring read bandwidth")
        let bandwidth = readBandwidth()
        let t = try Transformer(model: model, contextLength: prefillTokens + decodeTokens, maxBatch: prefillTokens)
        // Deterministic pseudo-text: ids spread over the vocabulary.
        let tokens = (0..<prefillTokens).map { ($0 * 7919 + 13) % c.vocabSize }
        var prefill: [Double] = [], decode: [Double] = []
        for r in 0..<runs {
            progress("run \(r + 1)/\(runs): prefill \(prefillTokens) tokens")
            t.reset()
            let t0 = monotonicSeconds()
            var logits = try t.forward(tokens, logits: .last)
            prefill.append(monotonicSeconds() - t0)
            progress("run \(r + 1)/\(runs): decode \(decodeTokens) tokens")
            // Decode from a short context so that attention is a small part, as in a chat turn.
            t.reset()
            logits = try t.forward(tokens.prefix(8), logits: .last)
            let t1 = monotonicSeconds()
            for _ in 0..<decodeTokens {
                logits = try t.forward(CollectionOfOne(Sampler.argmax(logits)), logits: .last)
            }
            decode.append(monotonicSeconds() - t1)
        }
        let prefillSeconds = median(prefill), decodeSeconds = median(decode)
        let bytes = t.weights.bytesPerToken(dim: c.dim)
        let decodeRate = Double(decodeTokens) / decodeSeconds
        return BenchResult(
            scheme: "fp32", threads: threads, prefillTokens: prefillTokens,
            prefillTokS: Double(prefillTokens) / prefillSeconds,
            prefillGFlopS: prefillFlops(c, tokens: prefillTokens) / prefillSeconds / 1e9,
            decodeTokS: decodeRate, weightBytesPerToken: bytes, readBandwidthGBs: bandwidth,
            boundFraction: decodeRate * Double(bytes) / (bandwidth * 1e9), runs: runs)
    }
}
