import CKernels
import Foundation
import Testing
@testable import QuantDrift

/// kld with a saved FP32 reference trace against the live reference (issue 4 item 7), and the
/// one-exp TokenDivergence against a direct float64 computation.
@Suite("KLD reference trace", .serialized)
struct KLDTraceTests {
    /// The first ~4 KB of eval.txt, cut at a line end.
    static func shortText() throws -> String {
        let text = try String(contentsOf: fixtureURL("eval.txt"), encoding: .utf8)
        let head = String(decoding: Array(text.utf8.prefix(4096)), as: UTF8.self)
        return String(head[..<(head.lastIndex(of: "\n") ?? head.endIndex)])
    }

    /// The short text written to `dir`/short.txt, for the command-line tests.
    static func shortTextFile(in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent("short.txt")
        try shortText().write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// The default model, the first `n` tokens of the short text, and a transformer for `scheme`
    /// ("fp32" or a scheme name) holding all-row logits of them; BLAS on one thread.
    static func transformer(_ scheme: String, tokens n: Int) throws -> (Model, [Int], Transformer) {
        BLAS.setThreads(1)
        let model = try Golden.defaultModel()
        let tokens = Array(model.tokenizer.encode(try shortText()).prefix(n))
        let t = scheme == "fp32"
            ? try Transformer(model: model, contextLength: n, maxBatch: n, allLogits: true)
            : try SchemeRuntime(model: model, scheme: try Scheme(parsing: scheme))
                .transformer(model: model, contextLength: n, maxBatch: n, allLogits: true)
        return (model, tokens, t)
    }

    /// kld and perplexity run the head on the scored half only (`.from`). With integer
    /// activations and two rows or more the rows are the `.all` rows bit for bit (rows of the panel
    /// kernel do not depend on the tiling). OpenBLAS's sgemm sums in another order for another row
    /// count, and one row takes the matrix-vector path: those are held to 1e-4 of max(|logit|, 1).
    @Test(arguments: ["fp32", "q8_0"])
    func headOnScoredRowsMatchesAllRows(scheme: String) throws {
        let (model, tokens, t) = try Self.transformer(scheme, tokens: 96)
        let all = Array(try t.forward(tokens, logits: .all))
        let vocab = model.config.vocabSize
        for first in [48, 95, 1] {
            t.reset()
            let part = Array(try t.forward(tokens, logits: .from(first)))
            #expect(part.count == (96 - first) * vocab)
            var differing = 0
            var worst: Float = 0
            for i in part.indices where part[i] != all[first * vocab + i] {
                differing += 1
                worst = max(worst, abs(part[i] - all[first * vocab + i]) / max(abs(all[first * vocab + i]), 1))
            }
            if scheme == "fp32" || first == 95 {
                #expect(worst <= 1e-4, "\(scheme): rows from \(first) differ by \(worst) relative")
            } else {
                #expect(differing == 0, "\(scheme): \(differing) logits from row \(first) differ (worst \(worst))")
            }
        }
        t.reset()
        #expect(throws: QuantDriftError.self) { try t.forward(tokens, logits: .from(96)) }
    }

    /// A lone kld chunk runs its forward on both cores (attention heads and integer panels
    /// divided): every logit must be what one core computes.
    @Test(arguments: ["fp32", "q8_0", "q4_0", "w8a8"])
    func twoCoresGiveTheSameLogits(scheme: String) throws {
        let (_, tokens, t) = try Self.transformer(scheme, tokens: 80)
        let one = Array(try t.forward(tokens, logits: .all))
        t.reset()
        t.cores = 2
        let two = Array(try t.forward(tokens, logits: .all))
        t.cores = 1
        var differing = 0
        for i in one.indices where one[i] != two[i] { differing += 1 }
        #expect(one.count == two.count && differing == 0, "\(scheme): \(differing) logits differ on two cores")
    }

    @Test func savedTraceChangesMeanKLDByLessThanOnePercent() throws {
        // As the CLI's default --threads, set before the lanes start: the count must not change
        // under running products (other suites in this process set it too).
        BLAS.setThreads(1)
        let model = try Golden.defaultModel()
        let runtime = try SchemeRuntime(model: model, scheme: try Scheme(parsing: "q8_0"))
        let tokens = model.tokenizer.encode(try Self.shortText())
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kld-trace-\(getpid()).qdtrace")
        defer { try? FileManager.default.removeItem(at: url) }
        let header = KLDMode.traceHeader(modelSHA256: "test-model", textSHA256: "test-text", runtime: "test",
                                         vocabSize: model.config.vocabSize, nCtx: 128)
        let writer = try ReferenceTraceWriter(url: url, header: header)
        let live = try KLDMode.run(model: model, candidate: runtime, tokens: tokens, nCtx: 128, reference: .save(writer))
        try writer.finish()
        let reader = try ReferenceTraceReader(url: url, expecting: header)
        #expect(reader.count == live.chunks)
        let traced = try KLDMode.run(model: model, candidate: runtime, tokens: tokens, nCtx: 128, reference: .load(reader))
        let rel = abs(traced.meanKLD - live.meanKLD) / live.meanKLD
        print("kld ctx 128 q8_0: live \(live.meanKLD), trace \(traced.meanKLD), relative \(rel), \(live.chunks) chunks")
        #expect(live.chunks >= 3 && live.tokensScored == live.chunks * 63)
        #expect(traced.tokensScored == live.tokensScored)
        #expect(live.meanKLD > 0 && rel < 0.01, "live \(live.meanKLD) trace \(traced.meanKLD)")
        #expect(abs(traced.pplBase - live.pplBase) / live.pplBase < 1e-3)
        #expect(traced.ppl == live.ppl, "the candidate ran the same way in both runs")
        #expect(abs(traced.sameTopP - live.sameTopP) <= 0.02)

        // A trace of other chunks is refused with one clear line.
        #expect(throws: QuantDriftError.self) {
            _ = try KLDMode.run(model: model, candidate: runtime, tokens: Array(tokens.dropFirst()), nCtx: 128, reference: .load(reader))
        }
    }

    @Test func cliSavesAndReadsATraceAndRefusesAnotherContext() throws {
        try withTemporaryDirectory { dir in try cliTrace(dir) }
    }

    private func cliTrace(_ dir: URL) throws {
        let text = try Self.shortTextFile(in: dir)
        let trace = dir.appendingPathComponent("ref.qdtrace").path
        let base = ["kld", "--file", text.path, "--scheme", "q8_0", "--json"]
        let saved = try CLIRunner.json(base + ["--ctx", "128", "--save-reference", trace])
        #expect(FileManager.default.fileExists(atPath: trace))
        let read = try CLIRunner.json(base + ["--ctx", "128", "--reference", trace])
        let a = saved["mean_kld"] as! Double, b = read["mean_kld"] as! Double
        #expect(a > 0 && abs(a - b) / a < 0.01, "live \(a) trace \(b)")
        // BLAS runs one thread per lane whatever --threads says: the same figures.
        let twoThreads = try CLIRunner.json(base + ["--ctx", "128", "--reference", trace, "--threads", "2"])
        #expect(twoThreads["mean_kld"] as! Double == b && twoThreads["ppl"] as! Double == read["ppl"] as! Double)
        let other = try CLIRunner.run(base + ["--ctx", "96", "--reference", trace])
        #expect(other.status == 2, "\(other.stderr)")
        #expect(other.stderr.contains("different n_ctx (trace: 128, this run: 96)"), "\(other.stderr)")
    }

    @Test func oneExpCompareMatchesDirectFloat64() {
        var g = SplitMix64(seed: 11)
        let n = 5000
        let p = (0..<n).map { _ in Float(g.nextDouble() * 16 - 8) }
        let q = p.map { $0 + Float(g.nextDouble() * 0.5 - 0.25) }
        let d = p.withUnsafeBufferPointer { pp in q.withUnsafeBufferPointer { qq in
            TokenDivergence.compare(reference: pp, candidate: qq, target: 17) } }
        // Direct: log-softmax in float64, then every sum.
        func logSoftmax(_ x: [Float]) -> [Double] {
            let m = Double(x.max()!)
            let lse = m + log(x.reduce(0.0) { $0 + exp(Double($1) - m) })
            return x.map { Double($0) - lse }
        }
        let a = logSoftmax(p), b = logSoftmax(q)
        var kld = 0.0, rkld = 0.0, tv = 0.0, hp = 0.0, hq = 0.0
        for i in 0..<n {
            kld += exp(a[i]) * (a[i] - b[i]); rkld += exp(b[i]) * (b[i] - a[i])
            tv += abs(exp(a[i]) - exp(b[i])); hp -= exp(a[i]) * a[i]; hq -= exp(b[i]) * b[i]
        }
        func close(_ x: Double, _ y: Double) -> Bool { abs(x - y) <= 1e-12 * max(1, abs(y)) }
        #expect(close(d.kld, kld) && close(d.reverseKLD, rkld) && close(d.tv, tv / 2), "\(d) vs \(kld) \(rkld) \(tv / 2)")
        #expect(close(d.entropyReference, hp) && close(d.entropyCandidate, hq))
        #expect(close(d.nllReference, -a[17]) && close(d.nllCandidate, -b[17]))
        #expect(close(d.dp, exp(b[17]) - exp(a[17])))
        #expect(d.sameTop == (p.indices.max { p[$0] < p[$1] } == q.indices.max { q[$0] < q[$1] }))
    }

    @Test func vectorisedExpIsWithinTwoUlpOfLibm() {
        var g = SplitMix64(seed: 5)
        var x = (0..<10001).map { _ in Float(-g.nextDouble() * 760) }
        x += [0, -1e-30, -708.1, -707.9, -.infinity, -745, -0.5]
        let shift: Float = 0.25
        var e = [Double](repeating: -1, count: x.count)
        let sum = qd_exp_shifted(x, Int32(x.count), shift, &e)
        var lanes = [0.0, 0.0, 0.0, 0.0]
        var worst = 0.0
        for i in x.indices {
            let v = Double(x[i]) - Double(shift)
            let want = v < -708 ? 0 : Foundation.exp(v)
            lanes[i & 3] += e[i]
            if want == 0 { #expect(e[i] == 0, "x=\(x[i])") } else { worst = max(worst, abs(e[i] - want) / want) }
        }
        #expect(worst <= 2 * Double.ulpOfOne, "worst relative error \(worst)")
        #expect(sum == (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
    }
}
