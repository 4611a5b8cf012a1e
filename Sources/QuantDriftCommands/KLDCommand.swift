import ArgumentParser
import Foundation
import QuantDrift

struct KLDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kld",
        abstract: "llama.cpp's --kl-divergence protocol: a scheme against the FP32 reference on a text file.")

    @OptionGroup var setup: SchemeModelOptions
    @OptionGroup var input: ChunkedTextOptions
    @OptionGroup var trace: ReferenceTraceOptions
    @OptionGroup var output: OutputOptions

    /// The trace header this run writes or expects.
    func traceHeader(model: Model, text: String) throws -> ReferenceTraceHeader {
        KLDMode.traceHeader(
            modelSHA256: try FileDigest.sha256(path: setup.modelOptions.path()), textSHA256: SHA256.hex(Array(text.utf8)),
            runtime: RuntimeIdentity.string(toolVersion: QuantDriftVersion.string), vocabSize: model.config.vocabSize,
            nCtx: input.ctx)
    }

    func run() throws {
        let text = try CLI.readText(input.file)
        let (model, runtime) = try setup.load()
        let tokens = Perplexity.textTokens(text, tokenizer: model.tokenizer)
        let progress = ProgressBar(label: "kld \(runtime.scheme.name)")
        var source = KLDReference.live
        var writer: ReferenceTraceWriter?
        if let path = trace.reference {
            source = .load(try ReferenceTraceReader(url: URL(fileURLWithPath: path), expecting: traceHeader(model: model, text: text)))
        } else if let path = trace.saveReference {
            writer = try ReferenceTraceWriter(url: URL(fileURLWithPath: path), header: traceHeader(model: model, text: text))
            source = .save(writer!)
        }
        let r = try KLDMode.run(model: model, candidate: runtime, tokens: tokens, nCtx: input.ctx, reference: source) { progress.update($0, of: $1) }
        try writer?.finish()
        progress.finish()
        if output.json {
            CLI.printJSON([
                "scheme": .string(runtime.scheme.name), "spec": .string(runtime.scheme.spec),
                "n_ctx": .int(r.nCtx), "chunks": .int(r.chunks), "tokens_scored": .int(r.tokensScored),
                "ppl_base": .double(r.pplBase), "ppl": .double(r.ppl),
                "mean_kld": .double(r.meanKLD), "mean_kld_se": .double(r.meanKLDSE), "max_kld": .double(r.maxKLD),
                "kld_percentiles": .object(r.kldPercentiles.map { ($0.0, .double($0.1)) }),
                "same_top_p": .double(r.sameTopP), "rms_dp": .double(r.rmsDp), "mean_dp": .double(r.meanDp),
                "mean_tv": .double(r.meanTV), "seconds": .double(r.seconds), "tokens_per_s": .double(r.tokensPerSecond),
                "phase_seconds": .object(r.phaseSeconds.map { ($0.0, .double($0.1)) }),
            ])
            return
        }
        print("scheme \(runtime.scheme.name) (\(runtime.scheme.spec)) vs FP32, \(r.chunks) chunks of \(r.nCtx), \(r.tokensScored) tokens scored")
        print(String(format: "Mean PPL(Q)     : %10.6f ± %10.6f", r.ppl, r.pplSE))
        print(String(format: "Mean PPL(base)  : %10.6f ± %10.6f", r.pplBase, r.pplBaseSE))
        print(String(format: "Mean    KLD: %10.6f ± %10.6f", r.meanKLD, r.meanKLDSE))
        print(String(format: "Maximum KLD: %10.6f", r.maxKLD))
        for (k, v) in r.kldPercentiles { print(String(format: "%-7@ KLD: %10.6f", k == "50" ? "Median" : k + "%", v)) }
        print(String(format: "Minimum KLD: %10.6f", r.minKLD))
        print(String(format: "Mean    Δp: %6.3f %%   RMS Δp: %6.3f %%", 100 * r.meanDp, 100 * r.rmsDp))
        print(String(format: "Same top p: %6.3f ± %5.3f %%", 100 * r.sameTopP, 100 * r.sameTopPSE))
        print(String(format: "%.1f s, %.1f tokens/s (each token through %@)", r.seconds, r.tokensPerSecond,
                     trace.reference == nil ? "the reference and the candidate" : "the candidate; reference from the trace"))
    }
}
