import ArgumentParser
import Foundation
import QuantDrift

// MARK: - generate

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Generate a continuation, streaming text to stdout (tokens/s on stderr).")

    @OptionGroup var setup: SchemeModelOptions
    @OptionGroup var promptOptions: PromptOptions
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var output: OutputOptions

    @Option(name: [.short, .long], help: "Prompt text.")
    var prompt: String

    @Option(name: [.short, .customLong("max-tokens")], help: "Most tokens to generate.")
    var n: Int = 256

    func validate() throws {
        guard n >= 1 && n <= 1 << 20 else { throw ValidationError("-n must be in 1...1048576, got \(n)") }
    }

    func run() throws {
        let params = sampling.parameters(defaultSeed: 0)
        let (model, runtime) = try setup.load()
        let ids = try promptOptions.tokens(prompt, model: model)
        let needed = ids.count + n
        guard needed <= model.config.contextLength else {
            throw QuantDriftError.invalidInput("prompt (\(ids.count) tokens) + \(n) new tokens exceed the model's context length \(model.config.contextLength)")
        }
        let t = try runtime.transformer(model: model, contextLength: needed, maxBatch: min(512, ids.count))
        let sampler = try Sampler(params, vocabSize: model.config.vocabSize)
        var decoder = StreamingDecoder(tokenizer: model.tokenizer)
        let json = output.json
        let stream = !json
        let result = try Generator.generate(transformer: t, tokenizer: model.tokenizer, prompt: ids, maxTokens: n,
                                            sampler: sampler) { id in
            let piece = decoder.append(id)
            if stream && !piece.isEmpty {
                print(piece, terminator: "")
                fflush(nil)
            }
        }
        let tail = decoder.finish()
        let rate = result.decodeTokensPerSecond
        if json {
            CLI.printJSON([
                "scheme": .string(runtime.scheme.name), "spec": .string(runtime.scheme.spec),
                "prompt_tokens": .ints(ids),
                "generated": .ints(result.generated),
                "text": .string(model.tokenizer.decode(result.generated)),
                "stopped_at_end_of_generation": .bool(result.stoppedAtEndOfGeneration),
                "prefill_seconds": .double(result.prefillSeconds),
                "decode_seconds": .double(result.decodeSeconds),
                "tokens_per_s": .double(rate),
            ])
        } else {
            print(tail)
            fflush(nil)
            CLI.note(String(format: "[%d prompt tokens, %d generated, prefill %.1f tok/s, decode %.1f tok/s]",
                            ids.count, result.generated.count, Double(ids.count) / max(result.prefillSeconds, 1e-9), rate))
        }
    }
}

// MARK: - tokenize

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "Print token ids and pieces.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "Text to tokenize.")
    var text: String?

    @Option(name: .long, help: "Read the text from a file.")
    var file: String?

    @Flag(name: .long, help: "Parse control tokens such as <|im_start|> written in the text.")
    var special = false

    func validate() throws {
        guard (text == nil) != (file == nil) else { throw ValidationError("give either TEXT or --file, not both or neither") }
    }

    func run() throws {
        let input = try file.map(CLI.readText) ?? text!
        let model = try modelOptions.load()
        let tok = model.tokenizer
        let ids = tok.encode(input, parseSpecial: special)
        let pieces = ids.map { String(decoding: tok.bytes(of: $0), as: UTF8.self) }
        if output.json {
            CLI.printJSON(["ids": .ints(ids), "pieces": .array(pieces.map { .string($0) })])
        } else {
            for (id, piece) in zip(ids, pieces) {
                print(String(format: "%6d -> '", id) + piece + "'")
            }
        }
    }
}

// MARK: - logits

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logits", abstract: "Top logits at every position of a text.")

    @OptionGroup var setup: SchemeModelOptions
    @OptionGroup var promptOptions: PromptOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "Text whose positions to score.")
    var text: String

    @Option(name: .long, help: "How many of the largest logits to print per position.")
    var top: Int = 10

    func validate() throws {
        guard top >= 1 && top <= 1 << 20 else { throw ValidationError("--top must be ≥ 1, got \(top)") }
    }

    func run() throws {
        let json = output.json
        let (model, runtime) = try setup.load()
        let ids = try promptOptions.tokens(text, model: model)
        guard ids.count <= model.config.contextLength else {
            throw QuantDriftError.invalidInput("the text has \(ids.count) tokens, more than the context length \(model.config.contextLength)")
        }
        let vocab = model.config.vocabSize
        let k = min(top, vocab)
        let t = try runtime.transformer(model: model, contextLength: ids.count, maxBatch: 1)
        var positions: [JSON] = []
        for (p, id) in ids.enumerated() {
            let row = try t.forward(CollectionOfOne(id), logits: .last)
            let best = (0..<vocab).sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(k)
            let lse = LogSoftmax.logSumExp(row)
            if json {
                positions.append([
                    "top": .array(best.map { [.int($0), .double(Double(row[$0]))] }),
                    "logsumexp": .double(lse),
                ])
            } else {
                let piece = String(decoding: model.tokenizer.bytes(of: id), as: UTF8.self)
                print("[\(p)] \(id) '\(piece)' → " + best.map { String(format: "%d:%.4f", $0, row[$0]) }.joined(separator: " "))
            }
        }
        if json {
            CLI.printJSON(["scheme": .string(runtime.scheme.name), "tokens": .ints(ids), "positions": .array(positions)])
        }
    }
}

// MARK: - perplexity

struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity", abstract: "llama.cpp's perplexity protocol on a text file (chunks of --ctx, second half scored).")

    @OptionGroup var setup: SchemeModelOptions
    @OptionGroup var input: ChunkedTextOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let text = try CLI.readText(input.file)
        let (model, runtime) = try setup.load()
        let tokens = Perplexity.textTokens(text, tokenizer: model.tokenizer)
        let progress = ProgressBar(label: "perplexity")
        let r = try Perplexity.run(model: model, scheme: runtime, tokens: tokens, nCtx: input.ctx) { done, total in progress.update(done, of: total) }
        progress.finish()
        if output.json {
            CLI.printJSON([
                "scheme": .string(runtime.scheme.name), "n_ctx": .int(r.nCtx), "chunks": .int(r.chunks), "tokens_scored": .int(r.tokensScored),
                "ppl": .double(r.ppl), "ppl_se": .double(r.pplSE),
                "seconds": .double(r.seconds), "tokens_per_s": .double(r.tokensPerSecond),
            ])
        } else {
            print(String(format: "PPL = %.4f +/- %.5f  (%d chunks of %d tokens, %d scored, %.1f tok/s)",
                         r.ppl, r.pplSE, r.chunks, r.nCtx, r.tokensScored, r.tokensPerSecond))
        }
    }
}

// MARK: - bench

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Prefill and decode tokens/s against the memory read bandwidth measured in the same run.")

    @OptionGroup var setup: SchemeModelOptions
    @OptionGroup var output: OutputOptions

    @Option(name: .long, help: "Prefill length in tokens.")
    var prefill: Int = 512

    @Option(name: .long, help: "Decode steps per run.")
    var decode: Int = 64

    @Option(name: .long, help: "Repetitions (medians are reported).")
    var runs: Int = 3

    @Option(name: .long, help: "Also decode this many sequences together (generated tokens/s over all of them).")
    var batch: Int = 1

    func validate() throws {
        guard prefill >= 1, decode >= 1, (1...100).contains(runs) else {
            throw ValidationError("--prefill and --decode must be ≥ 1 and --runs in 1...100")
        }
        guard (1...256).contains(batch) else { throw ValidationError("--batch must be in 1...256") }
    }

    func run() throws {
        let model = try setup.modelOptions.load(setup.blas)
        let runtime = setup.scheme.isReference ? nil : try setup.schemeOptions.runtime(for: model)
        let r = try Bench.run(model: model, scheme: runtime, threads: setup.blas.threads, prefillTokens: prefill,
                              decodeTokens: decode, runs: runs, batch: batch) { CLI.note("bench: " + $0) }
        if output.json {
            CLI.printJSON([
                "scheme": .string(r.scheme), "spec": .string(r.spec), "threads": .int(r.threads),
                "prefill_tokens": .int(r.prefillTokens), "prefill_tok_s": .double(r.prefillTokS),
                "prefill_gflop_s": .double(r.prefillGFlopS), "decode_tok_s": .double(r.decodeTokS),
                "weight_bytes_per_token": .int(r.weightBytesPerToken), "read_bandwidth_gb_s": .double(r.readBandwidthGBs),
                "bound_fraction": .double(r.boundFraction),
                "fp32_prefill_tok_s": .double(r.fp32PrefillTokS), "fp32_decode_tok_s": .double(r.fp32DecodeTokS),
                "decode_speedup": .double(r.decodeSpeedup), "prefill_speedup": .double(r.prefillSpeedup),
                "kv_cache_bytes": .int(r.kvCacheBytes), "fp32_kv_cache_bytes": .int(r.fp32KVCacheBytes),
                "kv_cache_ratio": .double(r.kvCacheRatio), "runs": .int(r.runs),
                "batch": .int(r.batch), "batch_decode_tok_s": .double(r.batchDecodeTokS),
                "batch_speedup": .double(r.batchSpeedup), "fp32_batch_decode_tok_s": .double(r.fp32BatchDecodeTokS),
                "fp32_batch_speedup": .double(r.fp32BatchSpeedup),
            ])
        } else {
            print("scheme \(r.scheme) (\(r.spec)), \(r.threads) thread(s), medians of \(r.runs) runs")
            print(String(format: "prefill %d tokens: %.1f tok/s, %.1f GFLOP/s effective", r.prefillTokens, r.prefillTokS, r.prefillGFlopS))
            print(String(format: "decode: %.1f tok/s, %.1f MB of weights per token", r.decodeTokS, Double(r.weightBytesPerToken) / 1e6))
            print(String(format: "read bandwidth (same run): %.1f GB/s; decode reaches %.2f of the bandwidth bound", r.readBandwidthGBs, r.boundFraction))
            if r.scheme != "fp32" {
                print(String(format: "vs FP32 in the same run: decode %.2f× (%.1f tok/s), prefill %.2f×, KV cache %.3f× of FP32 bytes",
                             r.decodeSpeedup, r.fp32DecodeTokS, r.prefillSpeedup, r.kvCacheRatio))
            }
            if r.batch > 1 {
                print(String(format: "decode of %d sequences together: %.1f tok/s over all, %.2f× single-sequence decode", r.batch,
                             r.batchDecodeTokS, r.batchSpeedup) + (r.scheme == "fp32" ? "" :
                             String(format: " (FP32: %.1f tok/s, %.2f×)", r.fp32BatchDecodeTokS, r.fp32BatchSpeedup)))
            }
        }
    }
}

// MARK: - Progress

/// A one-line progress bar with ETA on stderr (only when stderr is a terminal or CI wants it).
final class ProgressBar {
    let label: String
    let start = monotonicSeconds()
    let enabled = isatty(2) != 0

    init(label: String) { self.label = label }

    func update(_ done: Int, of total: Int) {
        guard enabled, total > 0 else { return }
        let elapsed = monotonicSeconds() - start
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let width = 30
        let filled = width * done / total
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        FileHandle.standardError.write(Data(String(format: "\r%@ %@ %d/%d  %.0fs elapsed, ETA %.0fs ", label, bar, done, total, elapsed, eta).utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
