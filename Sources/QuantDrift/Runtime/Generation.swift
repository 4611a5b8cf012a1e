import Foundation

/// The outcome of one generation.
public struct GenerationResult: Sendable {
    public var promptTokens: [Int]
    public var generated: [Int]
    /// True when an end-of-generation token ended it (the token is included in `generated`).
    public var stoppedAtEndOfGeneration: Bool
    public var prefillSeconds: Double
    public var decodeSeconds: Double

    /// Decode speed over the generated tokens after the first (which comes from the prefill).
    public var decodeTokensPerSecond: Double {
        generated.count > 1 && decodeSeconds > 0 ? Double(generated.count - 1) / decodeSeconds : 0
    }
}

public enum Generator {
    /// Prefills `prompt`, then samples up to `maxTokens` tokens (stopping after an
    /// end-of-generation token), calling `onToken` as each is chosen.
    public static func generate(transformer t: Transformer, tokenizer: Tokenizer, prompt: [Int], maxTokens: Int,
                                sampler: Sampler, stopAtEndOfGeneration: Bool = true,
                                onToken: (Int) -> Void = { _ in }) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw QuantDriftError.invalidInput("the prompt is empty (no tokens)") }
        guard maxTokens >= 0 else { throw QuantDriftError.invalidInput("max tokens must be ≥ 0") }
        guard t.position + prompt.count + max(maxTokens - 1, 0) <= t.contextLength else {
            throw QuantDriftError.invalidInput("prompt (\(prompt.count) tokens) + \(maxTokens) new tokens exceed the context length \(t.contextLength)")
        }
        var generated: [Int] = []
        generated.reserveCapacity(maxTokens)
        let t0 = monotonicSeconds()
        var logits = try t.forward(prompt, logits: .last)
        let t1 = monotonicSeconds()
        var stopped = false
        while generated.count < maxTokens {
            let next = sampler.sample(logits)
            generated.append(next)
            onToken(next)
            if stopAtEndOfGeneration && tokenizer.isEndOfGeneration(next) {
                stopped = true
                break
            }
            if generated.count == maxTokens { break }
            logits = try t.forward(CollectionOfOne(next), logits: .last)
        }
        let t2 = monotonicSeconds()
        return GenerationResult(promptTokens: prompt, generated: generated, stoppedAtEndOfGeneration: stopped,
                                prefillSeconds: t1 - t0, decodeSeconds: t2 - t1)
    }
}
