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

    /// The FP32 reference of eval.txt at n_ctx 512, saved once as a trace by q8_0's live run and
    /// shared by the cases below (mapped: the file is unlinked as soon as it is open).
    static let evalReference: Result<(q8_0: KLDResult, reader: ReferenceTraceReader, tokens: [Int]), Error> = Result {
        BLAS.setThreads(1)
        let model = try Golden.defaultModel()
        let tokens = model.tokenizer.encode(try String(contentsOf: fixtureURL("eval.txt"), encoding: .utf8))
        return try withTemporaryDirectory { dir in
            let url = dir.appendingPathComponent("eval-512.qdtrace")
            let header = KLDMode.traceHeader(modelSHA256: "test-model", textSHA256: "eval.txt", runtime: "test",
                                             vocabSize: model.config.vocabSize, nCtx: 512)
            let writer = try ReferenceTraceWriter(url: url, header: header)
            let q8 = try KLDMode.run(model: model, candidate: try SchemeRuntime(model: model, scheme: try Scheme(parsing: "q8_0")),
                                     tokens: tokens, nCtx: 512, reference: .save(writer))
            try writer.finish()
            return (q8, try ReferenceTraceReader(url: url, expecting: header), tokens)
        }
    }

    /// kld on eval.txt at n_ctx 512 against llama.cpp's `--kl-divergence` (same fixture): mean
    /// KLD and same-top-p of q8_0, q4_0 and q4_1 within 2% of llama.cpp's; of the k-quant mixes
    /// (llamacpp-kquants.json: files llama-quantize made from the F32 model) mean KLD within 3%
    /// and same-top within a point (issue 14 asks for 10%; measured within 0.7%); of every one of
    /// its KV-cache types with FP32 weights within 10% (measured −6% to +6%). One live FP32
    /// reference (q8_0's run) saves a trace the other runs read, so the reference runs once
    /// (each pass over the text costs 8-40 s here); three cases share it and run in parallel.
    @Test(arguments: [["q8_0", "q4_0", "q4_1", "q2_k"], ["q3_k_m", "q4_k_m", "q5_k_m", "q6_k"],
                      ["kv-q8_0", "kv-q5_1", "kv-q5_0", "kv-q4_1", "kv-iq4_nl", "kv-q4_0"]])
    func evalTextKLDMatchesLlamaCpp(schemes: [String]) throws {
        BLAS.setThreads(1)
        let model = try Golden.defaultModel()
        let ref = try Golden.json("llamacpp-kld.json") as! [String: Any]
        let kquants = try Golden.json("llamacpp-kquants.json") as! [String: Any]
        let kvRef = kquants["kv"] as! [String: Any]
        let shared = try Self.evalReference.get()
        let results = try schemes.map { scheme in
            if scheme == "q8_0" { return (scheme, shared.q8_0) }
            let rt = try SchemeRuntime(model: model, scheme: try Scheme(parsing: scheme))
            return (scheme, try KLDMode.run(model: model, candidate: rt, tokens: shared.tokens, nCtx: 512, reference: .load(shared.reader)))
        }
        for (scheme, r) in results {
            let cache = scheme.hasPrefix("kv-"), mix = cache || kquants[scheme] != nil
            let want = (cache ? kvRef[String(scheme.dropFirst(3))] : (mix ? kquants : ref)[scheme]) as! [String: Any]
            let kld = want["mean_kld"] as! Double, top = want["same_top_p"] as! Double
            print("kld eval.txt ctx 512 \(scheme): mean KLD \(r.meanKLD) (llama.cpp \(kld), \(r.meanKLD / kld - 1)), "
                  + "same top p \(r.sameTopP) (llama.cpp \(top), \(r.sameTopP / top - 1))")
            #expect(r.chunks == ref["chunks"] as! Int && r.tokensScored == ref["tokens_scored"] as! Int)
            let tolerance = cache ? 0.10 : (mix ? 0.03 : 0.02)
            #expect(abs(r.meanKLD - kld) <= tolerance * kld, "\(scheme): mean KLD \(r.meanKLD) vs llama.cpp \(kld)")
            if mix {
                #expect(abs(r.sameTopP - top) <= 0.01, "\(scheme): same top p \(r.sameTopP) vs llama.cpp \(top)")
            } else {
                #expect(abs(r.sameTopP - top) <= 0.02 * top, "\(scheme): same top p \(r.sameTopP) vs llama.cpp \(top)")
            }
        }
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
