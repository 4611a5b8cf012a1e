import CKernels
import Foundation

/// Speed of the forward pass against the machine's measured memory read bandwidth, all measured
/// in one process so that the ratios hold even when the absolute numbers move with load. With a
/// scheme, the FP32 reference is measured in the same run, interleaved, for the speed-up ratio.
public struct BenchResult: Sendable, Codable {
    public var scheme: String
    public var spec: String
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
    public var kvCacheBytes: Int
    /// The FP32 reference in the same run (equal to the above when the scheme is fp32).
    public var fp32PrefillTokS: Double
    public var fp32DecodeTokS: Double
    public var fp32KVCacheBytes: Int
    /// Sequences decoded together in the batched measurement (1: none made).
    public var batch: Int
    /// Generated tokens/s over all sequences of a batch, and that over single-sequence decode.
    public var batchDecodeTokS: Double
    public var fp32BatchDecodeTokS: Double
    public var batchSpeedup: Double { batchDecodeTokS / decodeTokS }
    public var fp32BatchSpeedup: Double { fp32BatchDecodeTokS / fp32DecodeTokS }
    public var decodeSpeedup: Double { decodeTokS / fp32DecodeTokS }
    public var prefillSpeedup: Double { prefillTokS / fp32PrefillTokS }
    public var kvCacheRatio: Double { Double(kvCacheBytes) / Double(fp32KVCacheBytes) }
}

public enum Bench {
    /// Median of a sample.
    public static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Streaming read bandwidth in GB/s with `threads` threads, each reading its part of a
    /// buffer far larger than the caches in one prefetched stream (`qd_stream_sum`, prefetching as
    /// the decode kernels do), median of `runs`: the floor a weight-streaming decode on that many
    /// cores is compared with. The threads come from the kernel pool, as in decode.
    public static func readBandwidth(bytes: Int = 512 << 20, runs: Int = 7, threads: Int = 1) -> Double {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { buf.deallocate() }
        buf.initializeMemory(as: UInt8.self, repeating: 1, count: bytes)  // every page really mapped
        let base = buf.assumingMemoryBound(to: UInt8.self)
        let lines = bytes / 64
        var rates: [Double] = []
        for _ in 0..<runs {
            let t0 = monotonicSeconds()
            // The sum keeps the C loop's reads; the call itself is opaque to Swift, so it stays.
            splitOutputs(lines, parts: max(1, min(threads, 8))) { r in
                _ = qd_stream_sum(base + r.lowerBound * 64, r.count * 64)
            }
            rates.append(Double(lines * 64) / (monotonicSeconds() - t0) / 1e9)
        }
        return median(rates)
    }

    /// FLOPs of a prefill of `n` tokens: 2 per weight per token for the layer matrices,
    /// attention's two products over the causal triangle, and the head for the last row.
    public static func prefillFlops(_ c: ModelConfig, tokens n: Int) -> Double {
        let perToken = Double(c.dim * c.qDim * 2 + c.dim * c.kvDim * 2 + c.dim * c.hiddenDim * 3) * Double(c.layerCount)
        let attention = Double(c.layerCount) * Double(c.headCount) * Double(c.headDim) * 2 * Double(n) * Double(n + 1)
        return 2 * perToken * Double(n) + attention + 2 * Double(c.vocabSize * c.dim)
    }

    /// Prefill of `prefillTokens` and decode of `decodeTokens` for the FP32 reference and (when
    /// given) a scheme, alternating, each `runs` times; medians are reported. With `batch` > 1,
    /// also `batch` sequences decoded together (`Transformer.step`), `decodeTokens` each.
    public static func run(model: Model, scheme: SchemeRuntime? = nil, threads: Int, prefillTokens: Int = 512,
                           decodeTokens: Int = 64, runs: Int = 3, batch: Int = 1,
                           progress: (String) -> Void = { _ in }) throws -> BenchResult {
        let c = model.config
        guard prefillTokens >= 1, decodeTokens >= 1, runs >= 1 else {
            throw QuantDriftError.invalidInput("bench sizes must be positive")
        }
        guard (1...256).contains(batch) else { throw QuantDriftError.invalidInput("--batch must be in 1…256 (got \(batch))") }
        guard prefillTokens + decodeTokens <= c.contextLength else {
            throw QuantDriftError.invalidInput("prefill + decode tokens exceed the context length \(c.contextLength)")
        }
        BLAS.setThreads(threads)
        progress("measuring read bandwidth")
        let bandwidth = readBandwidth(threads: threads)
        let ctx = prefillTokens + decodeTokens
        let reference = try Transformer(model: model, contextLength: ctx, maxBatch: prefillTokens)
        let candidate = try scheme?.transformer(model: model, contextLength: ctx, maxBatch: prefillTokens) ?? reference
        // The integer kernels split decode products (and attention heads) over `threads` cores.
        reference.cores = threads
        candidate.cores = threads
        // Deterministic pseudo-text: ids spread over the vocabulary.
        let tokens = (0..<prefillTokens).map { ($0 * 7919 + 13) % c.vocabSize }
        var prefill: [[Double]] = [[], []], decode: [[Double]] = [[], []], batched: [[Double]] = [[], []]
        let models = candidate === reference ? [reference] : [reference, candidate]
        // Batched decode: its own transformers with a slot per sequence, from a short context.
        let batchContext = decodeContext + decodeTokens
        let batchModels: [Transformer] = batch < 2 ? [] : try models.indices.map { i in
            let t = try i == 0
                ? Transformer(model: model, contextLength: batchContext, maxBatch: decodeContext, sequences: batch)
                : scheme!.transformer(model: model, contextLength: batchContext, maxBatch: decodeContext, sequences: batch)
            t.cores = threads
            return t
        }
        for r in 0..<runs {
            for (i, t) in models.enumerated() {
                let label = i == 0 ? "fp32" : scheme!.scheme.name
                progress("run \(r + 1)/\(runs) \(label): prefill \(prefillTokens), decode \(decodeTokens) tokens")
                t.reset()
                let t0 = monotonicSeconds()
                var logits = try t.forward(tokens, logits: .last)
                prefill[i].append(monotonicSeconds() - t0)
                // Decode from a short context so that attention is a small part, as in a chat turn.
                t.reset()
                logits = try t.forward(tokens.prefix(decodeContext), logits: .last)
                let t1 = monotonicSeconds()
                for _ in 0..<decodeTokens {
                    logits = try t.forward(CollectionOfOne(Sampler.argmax(logits)), logits: .last)
                }
                decode[i].append(monotonicSeconds() - t1)
                if batch > 1 {
                    progress("run \(r + 1)/\(runs) \(label): decode \(decodeTokens) tokens × \(batch) sequences")
                    batched[i].append(try decodeBatched(batchModels[i], prompt: tokens, tokens: decodeTokens))
                }
            }
        }
        let last = models.count - 1
        let fp32DecodeRate = Double(decodeTokens) / median(decode[0])
        let bytes = candidate.weights.bytesPerToken(dim: c.dim)
        let decodeRate = Double(decodeTokens) / median(decode[last])
        let prefillSeconds = median(prefill[last])
        return BenchResult(
            scheme: scheme?.scheme.name ?? "fp32", spec: scheme?.scheme.spec ?? "fp32", threads: threads,
            prefillTokens: prefillTokens,
            prefillTokS: Double(prefillTokens) / prefillSeconds,
            prefillGFlopS: prefillFlops(c, tokens: prefillTokens) / prefillSeconds / 1e9,
            decodeTokS: decodeRate, weightBytesPerToken: bytes, readBandwidthGBs: bandwidth,
            boundFraction: decodeRate * Double(bytes) / (bandwidth * 1e9), runs: runs,
            kvCacheBytes: candidate.cache.byteCount,
            fp32PrefillTokS: Double(prefillTokens) / median(prefill[0]),
            fp32DecodeTokS: fp32DecodeRate,
            fp32KVCacheBytes: reference.cache.byteCount,
            batch: batch,
            batchDecodeTokS: batch > 1 ? Double(batch * decodeTokens) / median(batched[last]) : decodeRate,
            fp32BatchDecodeTokS: batch > 1 ? Double(batch * decodeTokens) / median(batched[0]) : fp32DecodeRate)
    }

    /// Tokens of context before decode is timed.
    static let decodeContext = 8

    /// Seconds to decode `tokens` tokens in every slot of `t` together, each slot primed with its
    /// own `decodeContext` tokens of `prompt` (greedy, so the sequences differ).
    static func decodeBatched(_ t: Transformer, prompt: [Int], tokens: Int) throws -> Double {
        let b = t.sequences, vocab = t.config.vocabSize, n = decodeContext
        var next = [Int](repeating: 0, count: b)
        for s in 0..<b {
            t.reset(slot: s)
            let p = (0..<n).map { prompt[(s * n + $0) % prompt.count] }
            next[s] = Sampler.argmax(try t.forward(p, logits: .last, slot: s))
        }
        let slots = Array(0..<b)
        let t0 = monotonicSeconds()
        for _ in 0..<tokens {
            let logits = try t.step(next, slots: slots)
            for s in 0..<b { next[s] = Sampler.argmax(UnsafeBufferPointer(rebasing: logits[(s * vocab)..<((s + 1) * vocab)])) }
        }
        return monotonicSeconds() - t0
    }
}
