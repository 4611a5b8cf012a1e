import Foundation
import Testing
@testable import QuantDrift

@Suite("Perplexity protocol")
struct PerplexityTests {
    /// llama.cpp's llama-perplexity on eval.txt at n_ctx 512 (FP32, its own FP32 KV cache).
    @Test func evalTextMatchesLlamaCppBase() throws {
        let model = try Golden.defaultModel()
        let ref = try Golden.json("llamacpp-kld.json") as! [String: Any]
        let base = ref["base"] as! [String: Double]
        let text = try String(contentsOf: fixtureURL("eval.txt"), encoding: .utf8)
        let tokens = model.tokenizer.encode(text)
        let r = try Perplexity.run(model: model, tokens: tokens, nCtx: 512)
        #expect(r.chunks == ref["chunks"] as! Int)
        #expect(r.tokensScored == ref["tokens_scored"] as! Int)
        #expect(abs(r.ppl - base["ppl"]!) <= 0.01, "PPL \(r.ppl) vs llama.cpp \(base["ppl"]!)")
        #expect(abs(r.pplSE - base["ppl_se"]!) <= 0.01, "PPL SE \(r.pplSE) vs \(base["ppl_se"]!)")
    }

    /// Chunks run two at a time with BLAS on one thread each: `--threads` must not change the
    /// figure. With integer activations it did (q8_0 on eval.txt: 22.7696 on one BLAS thread,
    /// 22.7200 on two) before perplexity took kld's rule.
    @Test func threadSettingDoesNotChangeAnIntegerSchemesPerplexity() throws {
        let (one, two) = try withTemporaryDirectory { dir in
            let base = ["perplexity", "--file", try KLDTraceTests.shortTextFile(in: dir).path, "--scheme", "q8_0", "--ctx", "128", "--json"]
            return (try CLIRunner.json(base + ["--threads", "1"]), try CLIRunner.json(base + ["--threads", "2"]))
        }
        let a = one["ppl"] as! Double, b = two["ppl"] as! Double
        #expect(a > 1 && a == b, "--threads 1: \(a), --threads 2: \(b)")
        #expect(one["chunks"] as! Int >= 3)
    }

    @Test func tooShortTextAndBadContextAreClearErrors() throws {
        let model = try Golden.defaultModel()
        #expect(throws: QuantDriftError.self) { try Perplexity.run(model: model, tokens: [1, 2, 3], nCtx: 512) }
        #expect(throws: QuantDriftError.self) { try Perplexity.run(model: model, tokens: Array(repeating: 5, count: 20), nCtx: 2) }
        #expect(throws: QuantDriftError.self) { try Perplexity.run(model: model, tokens: [1], nCtx: 100_000) }
    }
}
