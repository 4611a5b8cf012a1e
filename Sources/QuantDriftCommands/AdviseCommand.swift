import ArgumentParser
import Foundation
import QuantDrift

/// `quantdrift advise`: the cheapest layers / tensor kinds to keep in a higher format so that a
/// scheme meets a budget, searched on the calibration texts and verified on a workload.
struct AdviseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "advise",
        abstract: "Search which layers or tensors to keep in a higher format so a scheme meets a KLD or top-1 budget, then verify it.",
        discussion: """
        Sensitivity: on the calibration texts (llama.cpp's KLD protocol, chunks of --ctx), the scheme
        with each layer, each tensor kind (in every layer) and the head alone kept in the --keep
        format. Units are taken by gain per extra byte until the predicted value meets the budget;
        the scheme string that results is then verified on --prompts (teacher-forced, -n tokens),
        where the budget is judged; a bisection on the number of units by verified runs (up to 8)
        finds the shortest prefix that meets it.
        Prints the scheme string (hi=FORMAT@TARGETS, or skip= for --keep fp32), its weight bytes
        against the scheme's and the all-high scheme's, and the verified value against the budget.
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: "The scheme to advise on (it must quantize weights), e.g. w4g32.")
    var scheme: String

    @Option(name: .long, help: "Budget: the verified mean KLD must be at most this.")
    var budget: Double?

    @Option(name: .customLong("min-top1"), help: "Budget: the verified top-1 agreement must be at least this (instead of --budget).")
    var minTop1: Double?

    @Option(name: .long, help: "The higher format: fp32, a preset whose weights to use (w8, w4g128, q8_0, …) or a weight format (int8,channel,sym).")
    var keep: String = "w8"

    @Option(name: .long, help: "Units to search: layers, tensors (tensor kinds across layers, and the head) or both.")
    var units: UnitChoice = .both

    @Option(name: .long, help: "Search texts (a folder of .txt files or one file).")
    var calibration: String = CalibrationOptions.defaultPath

    @Option(name: .long, help: "Search chunk length in tokens (each chunk's second half scored).")
    var ctx: Int = 512

    @Option(name: .customLong("search-tokens"), help: "Use at most this many tokens of the search texts (0 = all).")
    var searchTokens: Int = 2048

    @Option(name: .long, help: "Verification workload (JSONL).")
    var prompts: String = Tracking.defaultPrompts

    @Option(name: .short, help: "Verification continuation length per prompt.")
    var n: Int = 64

    @Option(name: .long, help: "Workers for the verification runs.")
    var workers: Int = 2

    @Flag(name: .long, help: "Print the outcome as JSON.")
    var json = false

    enum UnitChoice: String, ExpressibleByArgument, CaseIterable { case layers, tensors, both }

    func validate() throws {
        guard (budget == nil) != (minTop1 == nil) else { throw ValidationError("give one budget: --budget MEAN_KLD or --min-top1 SHARE") }
        guard n >= 1 else { throw ValidationError("-n must be ≥ 1") }
        guard ctx >= 8 else { throw ValidationError("--ctx must be ≥ 8") }
        guard searchTokens >= 0 else { throw ValidationError("--search-tokens must be ≥ 0") }
    }

    /// The --keep format: nil for FP32.
    static func keepFormat(_ text: String) throws -> WeightQuant? {
        if text == "fp32" { return nil }
        let s = try Scheme(parsing: Scheme.presets.contains { $0.name == text } ? text : "w=" + text)
        guard let w = s.weights, s.activations == nil, s.kv == nil, s.rotation == nil, s.upgrade == nil, s.skip.isEmpty,
              w.mix == nil, !w.method.needsCalibration else {
            throw QuantDriftError.invalidInput("--keep \(text): expected fp32, a weight-only preset (w8, w4g128, q8_0, …) or a weight format like int8,channel,sym")
        }
        return w
    }

    func run() throws {
        let base = try Scheme(parsing: scheme)
        let keepFormat = try Self.keepFormat(keep)
        let model = try modelOptions.load()
        let data = try CalibrationOptions.load(calibration, tokenizer: model.tokenizer)
        var tokens = data.sequences.flatMap { $0 }
        if searchTokens > 0 { tokens = Array(tokens.prefix(searchTokens)) }
        let workload = try Workload.load(path: CalibrationOptions.resolveBundled(prompts))
        var options = TrackerOptions(forcedMaxTokens: n, mode: .teacher, threads: workers)
        options.decodeBatch = 16
        var search = try MixedPrecisionSearch(model: model, base: base, keep: keepFormat,
                                              budget: budget.map { .meanKLD($0) } ?? .minTop1(minTop1!))
        search.progress = { CLI.note($0) }
        let t0 = monotonicSeconds()
        let o = try search.run(searchTokens: tokens, nCtx: ctx, calibration: base.needsCalibrationSet ? data : nil,
                               layers: units != .tensors, kinds: units != .layers, workload: workload, options: options)
        let seconds = monotonicSeconds() - t0
        if json {
            CLI.printJSON(Self.json(o, keep: keep, searchTokens: tokens.count, workload: workload, n: n, seconds: seconds))
        } else {
            print(Self.text(o, keep: keep, searchTokens: tokens.count, calibration: calibration, workload: workload, n: n, seconds: seconds),
                  terminator: "")
        }
    }

    static func sig(_ x: Double) -> String { String(format: "%.3g", x) }
    static func percent(_ x: Double, _ decimals: Int = 1) -> String { String(format: "%.\(decimals)f%%", 100 * x) }
    static func mb(_ bytes: Int) -> String { String(format: "%.2f MB", Double(bytes) / 1e6) }

    static func verifiedText(_ v: MixedPrecisionSearch.Verified) -> String {
        "mean KLD \(sig(v.meanKLD)) [\(sig(v.meanKLDCI.0)), \(sig(v.meanKLDCI.1))], top-1 \(percent(v.top1)), \(mb(v.bytes))"
    }

    static func text(_ o: MixedPrecisionSearch.Outcome, keep: String, searchTokens: Int, calibration: String,
                     workload: Workload, n: Int, seconds: Double) -> String {
        var t = "advise \(o.base.scheme.name) (\(o.base.scheme.spec)) for \(o.budget.text), keeping in \(keep)\n"
        t += "search: \(searchTokens) tokens of \(calibration); verification: \(workload.file), \(workload.prompts.count) prompts × \(n) tokens, teacher-forced\n"
        t += "  \(o.base.scheme.name): \(verifiedText(o.base))\n"
        t += "  all high: \(verifiedText(o.keepAll))\n"
        let ranked = o.units.sorted { ($0.gain / Double($0.extraBytes)) > ($1.gain / Double($1.extraBytes)) }
        t += "most sensitive units (search loss saved per extra MB):\n"
        for u in ranked.prefix(8) {
            t += String(format: "  %-22@ gain %@  +%@  (%@ per MB)\n", u.name, sig(u.gain), mb(u.extraBytes),
                        sig(u.gain / (Double(u.extraBytes) / 1e6)))
        }
        for (k, v) in o.tried {
            t += "tried \(k) unit\(k == 1 ? "" : "s"): \(verifiedText(v))\n"
        }
        if let a = o.advised {
            t += "advice: \(a.scheme.spec)\n"
            t += "  \(verifiedText(a)): meets \(o.budget.text)"
            if case .meanKLD(let b) = o.budget { t += a.meanKLDCI.1 <= b ? " (the whole 95% interval is within it)" : " (the point estimate; the interval reaches \(sig(a.meanKLDCI.1)))" }
            t += "\n  bytes: \(mb(a.bytes)) = \(o.base.scheme.name) + \(mb(a.bytes - o.base.bytes)); all high \(mb(o.keepAll.bytes)) (\(percent(Double(a.bytes) / Double(o.keepAll.bytes), 0)) of it)\n"
        } else {
            t += "no advice: \(o.reason ?? "none met the budget")\n"
        }
        if let r = o.reason, o.advised != nil { t += "  (\(r))\n" }
        t += String(format: "%.0f s\n", seconds)
        return t
    }

    static func json(_ o: MixedPrecisionSearch.Outcome, keep: String, searchTokens: Int, workload: Workload, n: Int,
                     seconds: Double) -> JSON {
        func v(_ x: MixedPrecisionSearch.Verified) -> JSON {
            .object([("spec", .string(x.scheme.spec)), ("bytes", .int(x.bytes)), ("mean_kld", .double(x.meanKLD)),
                     ("mean_kld_ci", .doubles([x.meanKLDCI.0, x.meanKLDCI.1])), ("top1_agreement", .double(x.top1))])
        }
        let budget: JSON
        switch o.budget {
        case .meanKLD(let b): budget = .object([("max_mean_kld", .double(b))])
        case .minTop1(let b): budget = .object([("min_top1", .double(b))])
        }
        return .object([
            ("scheme", .string(o.base.scheme.name)), ("keep", .string(keep)), ("budget", budget),
            ("search_tokens", .int(searchTokens)), ("workload", .string(workload.file)), ("max_tokens", .int(n)),
            ("base", v(o.base)), ("all_high", v(o.keepAll)),
            ("search_base_loss", .double(o.searchBaseLoss)), ("search_all_high_loss", .double(o.searchKeepAllLoss)),
            ("units", .array(o.units.map { u in
                .object([("unit", .string(u.name)), ("loss", .double(u.loss)), ("gain", .double(u.gain)), ("extra_bytes", .int(u.extraBytes))])
            })),
            ("tried", .array(o.tried.map { .object([("units", .int($0.units)), ("verified", v($0.verified))]) })),
            ("advised", o.advised.map(v) ?? .null), ("reason", o.reason.map { .string($0) } ?? .null),
            ("seconds", .double(seconds)),
        ])
    }
}
