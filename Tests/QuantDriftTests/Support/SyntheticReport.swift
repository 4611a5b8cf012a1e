import Foundation
@testable import QuantDrift

/// A schema-conformant `quantdrift.report/1` document with made-up but plausible numbers, for the
/// renderer and gate tests and for looking at report.html without running a model.
/// Scheme 1 carries `per_layer`, scheme 2 `attribution` and `kv_error_by_age`.
enum SyntheticReport {
    struct Options {
        var schemes = ["w8", "w4g32", "w4a8-kv4"]
        var promptIDs = (1...12).map { ["story", "explain", "code", "dialogue"][($0 - 1) % 4] + "-\(($0 - 1) / 4 + 1)" }
        var maxTokens = 256
        /// "both" (free-running results present) or "teacher" (free-running values null).
        var mode = "both"
        /// Mean KLD of each scheme at position 16, and its growth exponent.
        var baseKLD = [0.004, 0.03, 0.12]
        var growth = [0.02, 0.12, 0.3]
        /// Multiplies every KLD (to make a "regressed" copy for the baseline gate).
        var kldScale = 1.0
    }

    /// Deterministic noise in [−1, 1].
    private struct Noise {
        var state: UInt64
        mutating func next() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 53) * 2 - 1
        }
    }

    static let logBins: [(Int, Int)] = [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 128), (129, 256)]

    static func make(_ o: Options = Options()) -> JSON {
        let free = o.mode != "teacher"
        var noise = Noise(state: 42)
        var schemes: [JSON] = []
        var means: [Double] = []
        for i in o.schemes.indices {
            means.append(o.baseKLD[i % o.baseKLD.count] * o.kldScale)
        }
        for (i, name) in o.schemes.enumerated() {
            let base = means[i], g = o.growth[i % o.growth.count]
            func kld(at p: Double) -> Double { base * pow(p / 16, g) }
            func top1(_ k: Double) -> Double { max(0.3, 1 - 0.8 * k.squareRoot()) }
            let bins = logBins.filter { $0.0 <= o.maxTokens }.map { b -> JSON in
                let mid = (Double(b.0) * Double(b.1)).squareRoot()
                let k = kld(at: mid) * (1 + 0.08 * noise.next())
                let spread = 0.25 * k / (Double(b.1 - b.0 + 1) * 12).squareRoot() + 0.05 * k
                let ci: JSON = .doubles([k - spread, k + spread])
                let fields: [(String, JSON)] = [("start", .int(b.0)), ("end", .int(b.1)), ("n", .int((b.1 - b.0 + 1) * 12)),
                                                ("mean_kld", .double(k)), ("mean_kld_ci", ci), ("top1_agreement", .double(top1(k))),
                                                ("mean_tv", .double(0.5 * k.squareRoot()))]
                return .object(fields)
            }
            let bins64 = stride(from: 1, through: o.maxTokens, by: 64).map { s -> JSON in
                let e = min(s + 63, o.maxTokens)
                let k = kld(at: Double(s + e) / 2)
                let ci: JSON = .doubles([k * 0.9, k * 1.1])
                let fields: [(String, JSON)] = [("start", .int(s)), ("end", .int(e)), ("n", .int((e - s + 1) * 12)),
                                                ("mean_kld", .double(k)), ("mean_kld_ci", ci), ("top1_agreement", .double(top1(k))),
                                                ("mean_tv", .double(0.5 * k.squareRoot()))]
                return .object(fields)
            }
            let mean = kld(at: Double(o.maxTokens) / 3)
            // Survival: per-token divergence hazard from the TV; observed in steps of 1/prompts.
            let hazard = min(0.5, 0.12 * mean.squareRoot())
            let n = Double(o.promptIDs.count)
            let predicted = (0...o.maxTokens).map { pow(1 - hazard * 0.85, Double($0)) }
            let observed = (0...o.maxTokens).map { t -> Double in (pow(1 - hazard, Double(t)) * n).rounded(.down) / n }
            let firstDivergences = o.promptIDs.indices.map { k -> Int? in
                guard hazard > 0 else { return nil }
                let t = Int((log(1 - (Double(k) + 0.5) / n) / log(1 - hazard)).rounded(.up))
                return t <= o.maxTokens ? max(t, 1) : nil
            }
            let sortedFD = firstDivergences.map { $0 ?? o.maxTokens + 1 }.sorted()
            let median = Double(sortedFD[(sortedFD.count - 1) / 2] + sortedFD[sortedFD.count / 2]) / 2
            let diverged = firstDivergences.compactMap { $0 }.count
            func orNull(_ v: JSON) -> JSON { free ? v : .null }
            let percentiles: JSON = .object(ReportKeys.percentiles.map { key, _ in
                (key, .double(mean * pow(Double(key)! / 50, 1.5)))
            })
            let t1: Double = top1(mean)
            var summaryEntries: [(String, JSON)] = [
                ("positions", .int(o.maxTokens * o.promptIDs.count)),
                ("mean_kld", .double(mean)), ("mean_kld_se", .double(mean * 0.06)),
                ("mean_kld_ci", .doubles([mean * 0.88, mean * 1.13])),
                ("median_kld", .double(mean * 0.4)), ("p99_kld", .double(mean * 8)), ("max_kld", .double(mean * 40)),
                ("kld_percentiles", percentiles),
                ("mean_reverse_kld", .double(mean * 1.05)), ("mean_tv", .double(0.5 * mean.squareRoot())),
            ]
            summaryEntries += [
                ("top1_agreement", .double(t1)), ("top1_agreement_ci", .doubles([t1 - 0.01, min(1, t1 + 0.01)])),
                ("mean_dp", .double(-0.001 * Double(i + 1))), ("rms_dp", .double(0.02 * Double(i + 1))),
                ("mean_dnll", .double(mean * 0.5)),
                ("mean_entropy_reference", .double(1.8)), ("mean_entropy_candidate", .double(1.8 + mean)),
                ("growth_exponent", .double(g)), ("late_early_ratio", .double(pow(7, g))),
            ]
            summaryEntries += [
                ("median_first_divergence", orNull(.double(median))),
                ("diverged_prompts", orNull(.int(diverged))), ("reconverged_prompts", orNull(.int(diverged / 4))),
                ("survival", orNull(.doubles(observed))), ("survival_predicted", orNull(.doubles(predicted))),
                ("reference_text_nll", orNull(.double(1.9))), ("candidate_text_nll", orNull(.double(1.9 + 2 * mean))),
                ("repetition_reference", orNull(.double(0.05))), ("repetition_candidate", orNull(.double(0.05 + mean))),
            ]
            let summary: JSON = .object(summaryEntries)
            var attribution: JSON = .null
            if i == 2 {
                let parts: [(String, String, Double)] = [("weights", "w=int4,g128", 0.6), ("activations", "a=int8,token", 0.15),
                                                         ("kv", "kv=int4,g32", 0.3), ("all", name, 1.0)]
                attribution = .array(parts.map { part -> JSON in
                    let m: Double = part.2 * mean
                    let ci: JSON = .doubles([m * 0.85, m * 1.15])
                    return .object([("part", .string(part.0)), ("spec", .string(part.1)), ("mean_kld", .double(m)),
                                    ("mean_kld_ci", ci), ("top1_agreement", .double(top1(m)))])
                })
            }
            var perLayer: JSON = .null
            if i == 1 {
                var layers: [(Int, Double)] = []
                for l in 0..<30 {
                    // Early and last layers most sensitive, as is typical.
                    let shape: Double = 0.02 + 0.3 * exp(-Double(l) / 2) + 0.2 * exp(-Double(29 - l) / 3)
                    layers.append((l, mean * (shape + 0.01 * (1 + noise.next()))))
                }
                layers.sort { $0.1 > $1.1 }
                perLayer = .array(layers.map { l -> JSON in
                    .object([("layer", .int(l.0)), ("mean_kld", .double(l.1)), ("top1_agreement", .double(top1(l.1)))])
                })
            }
            var kvAge: JSON = .null
            if i == 2 {
                let ages: [(Int, Int)] = [(0, 0), (1, 3), (4, 15), (16, 63), (64, 255)]
                kvAge = .array(ages.map { a -> JSON in
                    let rel: Double = 0.05 + 0.002 * Double(a.0)
                    return .object([("start", .int(a.0)), ("end", .int(a.1)), ("n", .int((a.1 - a.0 + 1) * 1000)), ("rel_error", .double(rel))])
                })
            }
            let paired: [JSON] = o.schemes.enumerated().filter { $0.offset != i }.map { k, other in
                let d: Double = mean - kldMean(means[k], o.growth[k % o.growth.count], o.maxTokens)
                let ci: JSON = .doubles([d - 0.2 * abs(d) - 1e-4, d + 0.2 * abs(d) + 1e-4])
                return .object([("other", .string(other)), ("mean_kld_diff", .double(d)), ("mean_kld_diff_ci", ci)])
            }
            let prompts: [JSON] = o.promptIDs.enumerated().map { k, id in
                let m: Double = mean * (0.7 + 0.6 * Double(k) / n)
                var fd: JSON = .null
                if free, let f = firstDivergences[k] { fd = .int(f) }
                let reconverged: JSON = free ? .bool(k % 4 == 0 && firstDivergences[k] != nil) : .null
                let fields: [(String, JSON)] = [("id", .string(id)), ("prompt_tokens", .int(30 + k)), ("generated_tokens", .int(o.maxTokens)),
                                                ("mean_kld", .double(m)), ("max_kld", .double(m * 30)), ("top1_agreement", .double(top1(m))),
                                                ("first_divergence", fd), ("reconverged", reconverged)]
                return .object(fields)
            }
            let calibration: JSON = i == 2 ? .object([("method", .string("percentile:99.99")), ("data_sha256", .string("ab12cd34")),
                                                      ("tokens", .int(8192))]) : .null
            let specs = ["w=int8/channel/sym", "w=int4/g32/sym", "w=int4/g128/sym;a=int8/token;kv=int4/g32/asym"]
            let curves: JSON = .object([("log_bins", .array(bins)), ("bins_64", .array(bins64)), ("kv_error_by_age", kvAge)])
            let timing: JSON = .object([("teacher_seconds", .double(1.25)), ("free_seconds", free ? .double(3.5) : .null),
                                        ("teacher_tok_s", .double(812.5))])
            let entries: [(String, JSON)] = [
                ("name", .string(name)), ("spec", .string(specs[i % 3])), ("calibration", calibration), ("summary", summary),
                ("curves", curves), ("attribution", attribution), ("per_layer", perLayer), ("paired", .array(paired)),
                ("prompts", .array(prompts)), ("timing", timing),
            ]
            schemes.append(.object(entries))
        }
        let model: JSON = .object([("name", .string("SmolLM2-135M-Instruct")), ("architecture", .string("llama")),
                                   ("sha256", .string("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")),
                                   ("file", .string("Weights/SmolLM2-135M-Instruct.Q4_1.gguf")), ("parameters", .int(134_515_008))])
        let sampling: JSON = .object([("temperature", .int(0)), ("top_k", .int(0)), ("top_p", .int(1))])
        let workload: JSON = .object([("prompts_file", .string("Prompts/default.jsonl")), ("prompts_sha256", .string("0123abcd")),
                                      ("prompts", .int(o.promptIDs.count)), ("max_tokens", .int(o.maxTokens)), ("mode", .string(o.mode)),
                                      ("sampling", sampling), ("seed", .int(1))])
        let runtime: JSON = .object([("version", .string("0.4.0")), ("cpu", .string("AMD EPYC (2 cores)")), ("threads", .int(2)),
                                     ("blas", .string("OpenBLAS 0.3.21")), ("kernels", .string("avx2"))])
        let reference: JSON = .object([("scheme", .string("fp32")), ("trace_file", .null), ("trace_sha256", .null)])
        let conditions: JSON = .object([("model", model), ("workload", workload), ("runtime", runtime), ("reference", reference)])
        return .object([("schema", .string("quantdrift.report/1")), ("conditions", conditions), ("schemes", .array(schemes))])
    }

    private static func kldMean(_ base: Double, _ g: Double, _ maxTokens: Int) -> Double {
        base * pow(Double(maxTokens) / 3 / 16, g)
    }

    static func data(_ o: Options = Options(), pretty: Bool = true) -> Data {
        Data(make(o).serialized(pretty: pretty).utf8)
    }
}
