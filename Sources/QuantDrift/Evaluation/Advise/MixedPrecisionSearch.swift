import Foundation

/// `quantdrift advise`: which layers or tensor kinds to keep in a higher format so that a scheme
/// meets a budget, at the fewest extra bytes, verified by a run.
///
/// 1. **Sensitivity** (search data: the calibration texts, llama.cpp's KLD protocol): the mean
///    KLD (or top-1 agreement) of the scheme with each unit alone kept high: each layer, each
///    tensor kind across all layers, the head. A unit's gain is what keeping it high saves.
/// 2. **Greedy by gain per byte**: units in order of gain ÷ extra bytes, the shortest prefix whose
///    predicted value (the scheme's minus the gains, taken as additive) meets the budget mapped to
///    the search data by the scheme's own ratio between the two measures.
/// 3. **Verification** on the workload (teacher-forced, held out from the search): the budget is
///    judged there. Gains overlap and interact (a 4-bit model's errors compound), so the prediction
///    only gives the first guess; a bisection on the prefix length by verified runs (up to
///    `maxRounds`) finds the shortest prefix that meets the budget.
public struct MixedPrecisionSearch {
    public enum Budget: Sendable {
        /// Mean KLD (nats per token) at most this.
        case meanKLD(Double)
        /// Top-1 agreement at least this.
        case minTop1(Double)

        public var text: String {
            switch self {
            case .meanKLD(let b): "mean KLD ≤ \(String(format: "%.3g", b))"
            case .minTop1(let b): "top-1 agreement ≥ \(String(format: "%.2f%%", 100 * b))"
            }
        }

        /// The value to drive down: mean KLD, or 1 − top-1.
        func loss(kld: Double, top1: Double) -> Double {
            if case .meanKLD = self { return kld }
            return 1 - top1
        }

        var lossLimit: Double {
            switch self {
            case .meanKLD(let b): b
            case .minTop1(let b): 1 - b
            }
        }
    }

    /// One thing that can be kept high: a layer, a tensor kind in every layer, or the head.
    public struct Unit: Sendable {
        public var target: SkipItem
        public var name: String
        /// The search loss with this unit alone kept high, and what that saves.
        public var loss: Double
        public var gain: Double
        public var extraBytes: Int
    }

    /// A verified scheme: its spec, bytes and the measured values on the workload.
    public struct Verified: Sendable {
        public var scheme: Scheme
        public var bytes: Int
        public var meanKLD: Double
        public var meanKLDCI: (Double, Double)
        public var top1: Double
    }

    public struct Outcome: Sendable {
        public var budget: Budget
        public var base: Verified
        public var keepAll: Verified
        /// The search data's loss of the base scheme and of everything kept high.
        public var searchBaseLoss: Double
        public var searchKeepAllLoss: Double
        public var units: [Unit]
        /// Every verified candidate, in the order tried.
        public var tried: [(units: Int, verified: Verified)]
        /// The first verified candidate within the budget (nil: none found).
        public var advised: Verified?
        /// Why there is no advice, when there is none.
        public var reason: String?
    }

    public let model: Model
    public let base: Scheme
    /// The higher format: a weight format (`hi=`), or nil for FP32 (`skip=`).
    public let keep: WeightQuant?
    public let budget: Budget
    public var maxRounds = 8
    public var progress: @Sendable (String) -> Void = { _ in }

    public init(model: Model, base: Scheme, keep: WeightQuant?, budget: Budget) throws {
        guard base.weights != nil else { throw QuantDriftError.invalidInput("advise: scheme \(base.name) quantizes no weights: nothing to keep in a higher format") }
        guard base.upgrade == nil else { throw QuantDriftError.invalidInput("advise: scheme \(base.name) already has hi=; give the scheme without it") }
        switch budget {
        case .meanKLD(let b): guard b > 0, b.isFinite else { throw QuantDriftError.invalidInput("--budget must be a positive mean KLD") }
        case .minTop1(let b): guard b > 0, b < 1 else { throw QuantDriftError.invalidInput("--min-top1 must be in (0, 1)") }
        }
        self.model = model
        self.base = base
        self.keep = keep
        self.budget = budget
    }

    /// Every unit, in a fixed order: layers, tensor kinds, the head.
    func allUnits(layers: Bool, kinds: Bool) -> [SkipItem] {
        var out: [SkipItem] = []
        if layers { out += (0..<model.config.layerCount).map { .layer($0) } }
        if kinds { out += ["attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate", "ffn_up", "ffn_down"].map { .tensor($0) } }
        out.append(.tensor("lm_head"))
        return out
    }

    /// `base` with `targets` kept in the higher format.
    public func scheme(keeping targets: [SkipItem]) -> Scheme {
        var s = base
        s.preset = nil
        guard !targets.isEmpty else { return base }
        if let keep { s.upgrade = WeightUpgrade(weights: keep, targets: targets) } else { s.skip += targets }
        return s
    }

    /// The base weights with the matrices of `target` taken from `high` (the same model under the
    /// scheme with everything kept high): what `scheme(keeping: [target])` builds, without building it.
    static func swapping(_ target: SkipItem, base: RuntimeWeights, high: RuntimeWeights) -> RuntimeWeights {
        var w = base
        switch target {
        case .layer(let l):
            w.layers[l] = high.layers[l]
        case .tensor("lm_head"), .tensor("embed"):
            w.head = high.head
            w.tokenEmbedding = high.tokenEmbedding
        case .tensor(let kind):
            for l in w.layers.indices {
                switch kind {
                case "attn_q": w.layers[l].wq = high.layers[l].wq
                case "attn_k": w.layers[l].wk = high.layers[l].wk
                case "attn_v": w.layers[l].wv = high.layers[l].wv
                case "attn_o": w.layers[l].wo = high.layers[l].wo
                case "ffn_gate": w.layers[l].wGate = high.layers[l].wGate
                case "ffn_up": w.layers[l].wUp = high.layers[l].wUp
                default: w.layers[l].wDown = high.layers[l].wDown
                }
            }
        }
        return w
    }

    static func unitName(_ t: SkipItem) -> String {
        switch t {
        case .layer(let l): "layer \(l)"
        case .tensor("lm_head"): "lm_head"
        case .tensor(let k): "\(k) (all layers)"
        }
    }

    /// Runs the search: sensitivity on `searchTokens` (chunks of `nCtx`), verification on
    /// `workload` teacher-forced with `options`.
    public func run(searchTokens: [Int], nCtx: Int, calibration: CalibrationSet?, layers: Bool = true, kinds: Bool = true,
                    workload: Workload, options: TrackerOptions) throws -> Outcome {
        let targets = allUnits(layers: layers, kinds: kinds)
        progress("building \(base.name) and the all-high scheme")
        let baseRuntime = try SchemeRuntime(model: model, scheme: base, calibration: calibration)
        let allHigh = scheme(keeping: (0..<model.config.layerCount).map { .layer($0) } + [.tensor("lm_head")])
        let highRuntime = try SchemeRuntime(model: model, scheme: allHigh, calibration: calibration)

        // Verification on the workload (its reference run once): the base and the all-high scheme
        // first, so a budget that one already meets, or neither can, ends here.
        let engine = try LockstepEngine(model: model, options: options, calibration: calibration)
        let ctx = try engine.contextLength(for: workload)
        progress("verify: reference")
        var references = try engine.referenceRuns(workload, contextLength: ctx)
        defer { for i in references.indices { references[i].releaseRows() } }
        func verify(_ s: Scheme, runtime: SchemeRuntime? = nil) throws -> Verified {
            progress("verify: \(s.name)")
            let r = try runtime ?? SchemeRuntime(model: model, scheme: s, calibration: calibration)
            let cand = TrackerCandidate(name: s.name, scheme: s, runtime: r)
            let results = try engine.run([cand], references: references, contextLength: ctx)[0]
            // Clustered by prompt, as the reports compute them.
            let sums = results.map { $0.positions.reduce(0) { $0 + $1.kld } }, counts = results.map(\.positions.count)
            let agree = results.map { $0.positions.filter(\.sameTop).count }.reduce(0, +)
            let stats = ClusteredStatistics(clusters: references.count, seed: options.sampling.seed)
            return Verified(scheme: s, bytes: r.weightBytes, meanKLD: stats.mean(sums: sums, counts: counts).mean,
                            meanKLDCI: stats.interval(sums: sums, counts: counts),
                            top1: Double(agree) / Double(max(1, counts.reduce(0, +))))
        }
        let baseVerified = try verify(base, runtime: baseRuntime)
        let highVerified = try verify(allHigh, runtime: highRuntime)
        var outcome = Outcome(budget: budget, base: baseVerified, keepAll: highVerified, searchBaseLoss: .nan,
                              searchKeepAllLoss: .nan, units: [], tried: [], advised: nil, reason: nil)
        let limit = budget.lossLimit
        func verifiedLoss(_ v: Verified) -> Double { budget.loss(kld: v.meanKLD, top1: v.top1) }
        if verifiedLoss(baseVerified) <= limit {
            outcome.advised = baseVerified
            outcome.reason = "\(base.name) already meets the budget: nothing needs a higher format"
            return outcome
        }
        if verifiedLoss(highVerified) > limit {
            outcome.reason = "even with every layer and the head kept high the workload misses \(budget.text) (mean KLD \(String(format: "%.3g", highVerified.meanKLD)), top-1 \(String(format: "%.2f%%", 100 * highVerified.top1))): no scheme of this kind meets the budget"
            return outcome
        }
        // 1. Sensitivity on the search texts, the reference read back from a trace after the first run.
        let traceURL = FileManager.default.temporaryDirectory.appendingPathComponent("quantdrift-advise-\(getpid())-\(UInt64(monotonicSeconds() * 1e6)).trace")
        defer { try? FileManager.default.removeItem(at: traceURL) }
        let header = KLDMode.traceHeader(modelSHA256: "advise", textSHA256: SHA256.hex(searchTokens.map { UInt8(truncatingIfNeeded: $0) }),
                                         runtime: "advise", vocabSize: model.config.vocabSize, nCtx: nCtx)
        let writer = try ReferenceTraceWriter(url: traceURL, header: header)
        progress("search: \(base.name)")
        let baseResult = try KLDMode.run(model: model, candidate: baseRuntime, tokens: searchTokens, nCtx: nCtx, reference: .save(writer))
        try writer.finish()
        func searchLoss(_ r: SchemeRuntime) throws -> Double {
            let reader = try ReferenceTraceReader(url: traceURL, expecting: header)
            let k = try KLDMode.run(model: model, candidate: r, tokens: searchTokens, nCtx: nCtx, reference: .load(reader))
            return budget.loss(kld: k.meanKLD, top1: k.sameTopP)
        }
        let baseLoss = budget.loss(kld: baseResult.meanKLD, top1: baseResult.sameTopP)
        progress("search: everything high")
        let highLoss = try searchLoss(highRuntime)
        var units: [Unit] = []
        for (i, t) in targets.enumerated() {
            progress("search: \(Self.unitName(t)) (\(i + 1) of \(targets.count))")
            let w = Self.swapping(t, base: baseRuntime.weights, high: highRuntime.weights)
            let r = SchemeRuntime(scheme: scheme(keeping: [t]), weights: w)
            let loss = try searchLoss(r)
            units.append(Unit(target: t, name: Self.unitName(t), loss: loss, gain: baseLoss - loss,
                              extraBytes: max(1, r.weightBytes - baseRuntime.weightBytes)))
        }
        // Best gain per byte first; equal ratios in unit order (deterministic).
        let order = units.enumerated().filter { $0.element.gain > 0 }
            .sorted { a, b in
                let ra = a.element.gain / Double(a.element.extraBytes), rb = b.element.gain / Double(b.element.extraBytes)
                return ra != rb ? ra > rb : a.offset < b.offset
            }.map(\.element)

        outcome.searchBaseLoss = baseLoss
        outcome.searchKeepAllLoss = highLoss
        outcome.units = units
        guard !order.isEmpty else {
            outcome.reason = "no unit lowers the search loss when kept high"
            return outcome
        }
        // The budget in search units (the base scheme's ratio between the two measures) gives the
        // first guess; then a bisection on the prefix length by verified runs (units overlap and
        // interact, so the additive prediction only starts it): the shortest verified prefix wins.
        let target = limit * baseLoss / max(verifiedLoss(baseVerified), .leastNonzeroMagnitude)
        var predicted = baseLoss, guess = order.count
        for (i, u) in order.enumerated() {
            predicted -= u.gain
            if predicted <= target { guess = i + 1; break }
        }
        var lo = 0, hi: Int? = nil  // lo misses (k = 0 is the base scheme); hi meets
        var k = guess
        for _ in 0..<maxRounds {
            let v = try verify(scheme(keeping: order.prefix(k).map(\.target)))
            outcome.tried.append((k, v))
            if verifiedLoss(v) <= limit {
                hi = k
                outcome.advised = v
            } else {
                lo = k
            }
            if let h = hi {
                if h - lo <= 1 { break }
                k = (lo + h) / 2
            } else {
                if lo >= order.count { break }
                k = min(order.count, max(lo + 1, 2 * lo))
            }
        }
        if outcome.advised == nil {
            outcome.reason = lo >= order.count
                ? "keeping every unit that helps on the search texts (\(order.count)) still misses the budget on the workload; only keeping everything high (\(String(format: "%.2f", Double(highVerified.bytes) / 1e6)) MB) meets it"
                : "no candidate within \(maxRounds) verification rounds met the budget"
        } else if let h = hi, h - lo > 1 {
            outcome.reason = "the verification rounds ran out: a shorter prefix than \(h) units may also meet the budget"
        }
        return outcome
    }
}
