import Foundation

/// What report.json states besides the results: the model, the workload, the reference and how
/// long the run took. The run's options (sampling, mode, workers) come with the builder.
public struct ReportContext {
    /// `RunConditions.model(_:sha256:)`.
    public var model: JSON
    public var workload: Workload
    /// The tool's version, as the runtime section states it.
    public var version: String
    /// The saved reference trace read instead of running the reference (`--reference`), if any.
    public var referenceTrace: String?
    public var referenceSeconds: Double
    public var candidatesSeconds: Double

    public init(model: JSON, workload: Workload, version: String, referenceTrace: String? = nil,
                referenceSeconds: Double, candidatesSeconds: Double) {
        self.model = model
        self.workload = workload
        self.version = version
        self.referenceTrace = referenceTrace
        self.referenceSeconds = referenceSeconds
        self.candidatesSeconds = candidatesSeconds
    }
}

/// Turns the lockstep results into the whole `report.json` document (schema
/// `ReportKeys.schema`, see Report/report-schema.md) and `tokens.csv`, and writes the report
/// folder. `ReportDocument` reads what this writes, through the same keys (`ReportKeys`,
/// `SummaryKey`).
public struct ReportBuilder {
    public let candidates: [TrackerCandidate]
    public let references: [ReferenceRun]
    public let results: [[PromptResult]]
    public let options: TrackerOptions
    /// Per main candidate: its calibration ({method, data_sha256, tokens}) or null.
    public let calibration: [String: JSON]
    let stats: ClusteredStatistics
    let maxTokens: Int
    /// The reference's mean NLL of its own continuation, per prompt (the same for every scheme).
    let referenceNLLs: [Double]
    /// The noise floor's candidate (`TrackerCandidate.Role.noiseFloor`), when the run has one.
    let noiseFloor: Int?
    /// The tie margin (nats): the largest change the noise floor made to any reference top-1/top-2
    /// logit gap. A free-running flip at a reference gap no larger is a tie flip: rounding alone
    /// could have made it. Nil without a floor.
    let tieMargin: Double?

    public init(candidates: [TrackerCandidate], references: [ReferenceRun], results: [[PromptResult]],
                options: TrackerOptions, calibration: [String: JSON] = [:]) {
        self.candidates = candidates
        self.references = references
        self.results = results
        self.options = options
        self.calibration = calibration
        stats = ClusteredStatistics(clusters: references.count, seed: options.sampling.seed)
        maxTokens = references.map(\.maxTokens).max() ?? 0
        referenceNLLs = references.map { $0.textNLL() }
        noiseFloor = candidates.firstIndex { $0.role == .noiseFloor }
        tieMargin = noiseFloor.flatMap { f in results[f].flatMap(\.positions).map(\.marginChange).max() }
    }

    var mainIndices: [Int] { candidates.indices.filter { candidates[$0].role == .main } }

    // MARK: - Per-prompt sums

    /// Per-prompt sums and counts of a per-position value over positions passing `where`.
    func sums(_ c: Int, _ value: (TokenDivergence) -> Double,
              where include: (Int) -> Bool = { _ in true }) -> ([Double], [Int]) {
        var s = [Double](repeating: 0, count: references.count), n = [Int](repeating: 0, count: references.count)
        for (p, r) in results[c].enumerated() {
            for (t, d) in r.positions.enumerated() where include(t + 1) {
                s[p] += value(d)
                n[p] += 1
            }
        }
        return (s, n)
    }

    func mean(_ c: Int, _ value: (TokenDivergence) -> Double, where include: (Int) -> Bool = { _ in true }) -> Double {
        let (s, n) = sums(c, value, where: include)
        let total = n.reduce(0, +)
        return total > 0 ? s.reduce(0, +) / Double(total) : .nan
    }

    func interval(_ c: Int, _ value: (TokenDivergence) -> Double, where include: (Int) -> Bool = { _ in true }) -> JSON {
        let (s, n) = sums(c, value, where: include)
        let (lo, hi) = stats.interval(sums: s, counts: n)
        return .array([.double(lo), .double(hi)])
    }

    static func num(_ x: Double?) -> JSON { x.map { $0.isFinite ? .double($0) : .null } ?? .null }

    // MARK: - Summary

    /// The `summary` object: every `SummaryKey` in order, null where the run did not measure it
    /// (teacher-forced values in mode free, free-running ones in mode teacher).
    func summary(_ c: Int) -> JSON {
        var values: [SummaryKey: JSON] = [.positions: .int(results[c].map(\.positions.count).reduce(0, +))]
        let teacher = results[c].contains { !$0.positions.isEmpty }
        if teacher { values.merge(teacherSummary(c)) { a, _ in a } }
        if results[c].contains(where: { $0.freeTokens != nil }) { values.merge(freeSummary(c, teacher: teacher)) { a, _ in a } }
        return .object(SummaryKey.allCases.map { ($0.rawValue, values[$0] ?? .null) })
    }

    func teacherSummary(_ c: Int) -> [SummaryKey: JSON] {
        let (s, n) = sums(c, \.kld)
        let (m, se) = stats.mean(sums: s, counts: n)
        let sorted = results[c].flatMap(\.positions).map(\.kld).sorted()
        return [.meanKLD: Self.num(m), .meanKLDSE: Self.num(se), .meanKLDCI: interval(c, \.kld),
                .medianKLD: Self.num(LlamaCppStatistics.percentile(sorted, 0.5)),
                .p99KLD: Self.num(LlamaCppStatistics.percentile(sorted, 0.99)),
                .maxKLD: Self.num(sorted.last),
                .kldPercentiles: .object(ClusteredStatistics.percentiles(sorted: sorted).map { ($0.0, Self.num($0.1)) }),
                .kldTailShare: Self.num(Self.tailShare(sorted: sorted, fraction: 0.01)),
                .meanKLDLowEntropy: Self.num(meanOrNil(c, \.kld, reference: { $0 < 0.5 })),
                .meanKLDMidEntropy: Self.num(meanOrNil(c, \.kld, reference: { $0 >= 0.5 && $0 < 2 })),
                .meanKLDHighEntropy: Self.num(meanOrNil(c, \.kld, reference: { $0 >= 2 })),
                .referenceTop1InCandidateTop5: Self.num(mean(c, { $0.referenceTopInCandidateTop5 ? 1 : 0 })),
                .candidateTop1InReferenceTop5: Self.num(mean(c, { $0.candidateTopInReferenceTop5 ? 1 : 0 })),
                .meanReverseKLD: Self.num(mean(c, \.reverseKLD)), .meanTV: Self.num(mean(c, \.tv)),
                .top1Agreement: Self.num(mean(c, { $0.sameTop ? 1 : 0 })),
                .top1AgreementCI: interval(c, { $0.sameTop ? 1 : 0 }),
                .meanDp: Self.num(mean(c, \.dp)),
                .rmsDp: Self.num(mean(c, { $0.dp * $0.dp }).squareRoot()),
                .meanDNLL: Self.num(mean(c, \.dNLL)),
                .meanEntropyReference: Self.num(mean(c, \.entropyReference)),
                .meanEntropyCandidate: Self.num(mean(c, \.entropyCandidate)),
                .growthExponent: Self.num(growthExponent(c)),
                .kldOverNoiseFloor: Self.num(noiseFloor.flatMap { f in
                    let floor = mean(f, \.kld)
                    return floor > 0 && m.isFinite ? m / floor : nil }),
                .lateEarlyRatio: Self.num(lateEarlyRatio(c))]
    }

    /// Share of Σ KLD carried by the largest `fraction` of positions (at least one); nil when Σ is 0.
    static func tailShare(sorted: [Double], fraction: Double) -> Double? {
        let total = sorted.reduce(0, +)
        guard !sorted.isEmpty, total > 0 else { return nil }
        let k = max(1, Int((Double(sorted.count) * fraction).rounded(.up)))
        return sorted.suffix(k).reduce(0, +) / total
    }

    /// Mean of `value` over positions whose reference entropy passes `reference`; nil when none does.
    func meanOrNil(_ c: Int, _ value: (TokenDivergence) -> Double, reference: (Double) -> Bool) -> Double? {
        var s = 0.0, n = 0
        for r in results[c] {
            for d in r.positions where reference(d.entropyReference) {
                s += value(d)
                n += 1
            }
        }
        return n > 0 ? s / Double(n) : nil
    }

    func growthExponent(_ c: Int) -> Double? {
        var xs: [Double] = [], ys: [Double] = []
        for r in PositionBins.logSpaced(upTo: maxTokens).ranges {
            let m = mean(c, \.kld, where: { r.contains($0) })
            if m.isFinite && m > 0 {
                xs.append(log((Double(r.lowerBound) * Double(r.upperBound)).squareRoot()))
                ys.append(log(m))
            }
        }
        return leastSquaresSlope(xs, ys)
    }

    /// Mean KLD of positions in the last quarter of the continuation length over the first quarter.
    func lateEarlyRatio(_ c: Int) -> Double? {
        let quarter = maxTokens / 4
        guard quarter >= 1 else { return nil }
        let early = mean(c, \.kld, where: { $0 <= quarter })
        let late = mean(c, \.kld, where: { $0 > maxTokens - quarter })
        guard early.isFinite, late.isFinite, early > 0 else { return nil }
        return late / early
    }

    func freeSummary(_ c: Int, teacher: Bool) -> [SummaryKey: JSON] {
        let rs = results[c]
        // A prompt that never diverges counts as surviving past its whole length.
        let firsts = rs.enumerated().map { p, r in r.firstDivergence.map { Double($0 + 1) } ?? Double(references[p].maxTokens + 1) }
        let sortedFirsts = firsts.sorted()
        let survival = (0...maxTokens).map { t in
            Double(rs.filter { r in r.firstDivergence.map { $0 + 1 > t } ?? true }.count) / Double(rs.count)
        }
        var predicted: JSON = .null
        if teacher {
            predicted = .doubles((0...maxTokens).map { t in
                rs.map { r in
                    var s = 1.0
                    for tv in r.samplingTV.prefix(t) { s *= 1 - tv }
                    return s
                }.reduce(0, +) / Double(rs.count)
            })
        }
        var refNLL = 0.0, refCount = 0, candNLL = 0.0, candCount = 0
        for (p, r) in rs.enumerated() {
            let ref = references[p]
            refNLL += referenceNLLs[p] * Double(ref.continuation.count)
            refCount += ref.continuation.count
            if let nll = r.candidateTextNLL, let tokens = r.freeTokens {
                candNLL += nll * Double(tokens.count)
                candCount += tokens.count
            }
        }
        let repRef = references.map { repeatedNGramShare($0.continuation) }.reduce(0, +) / Double(references.count)
        let repCand = rs.map { repeatedNGramShare($0.freeTokens ?? []) }.reduce(0, +) / Double(rs.count)
        let median = LlamaCppStatistics.percentile(sortedFirsts, 0.5)
        // Tie flips: only greedy runs with a noise floor classify them (`tieFlip` is nil otherwise).
        var real: [SummaryKey: JSON] = [.tieFlips: .null, .medianFirstRealDivergence: .null, .survivalReal: .null]
        if tieMargin != nil && options.sampling.isGreedy {
            let tieCount = rs.filter { tieFlip($0) == true }.count
            let realSurvival = tieCount == 0 ? survival : Self.survivalExcludingTies(
                rs.map { r in (r.firstDivergence.map { $0 + 1 }, tieFlip(r) == true) }, maxTokens: maxTokens)
            let realMedian = tieCount == 0 ? median
                : Double(realSurvival.firstIndex { $0 <= 0.5 } ?? (maxTokens + 1))
            real = [.tieFlips: .int(tieCount), .medianFirstRealDivergence: Self.num(realMedian), .survivalReal: .doubles(realSurvival)]
        }
        return real.merging([.medianFirstDivergence: Self.num(median),
                .divergedPrompts: .int(rs.filter { $0.firstDivergence != nil }.count),
                .reconvergedPrompts: .int(rs.filter { $0.reconverged == true }.count),
                .survival: .doubles(survival), .survivalPredicted: predicted,
                .referenceTextNLL: Self.num(refCount > 0 ? refNLL / Double(refCount) : nil),
                .candidateTextNLL: Self.num(candCount > 0 ? candNLL / Double(candCount) : nil),
                .repetitionReference: .double(repRef), .repetitionCandidate: .double(repCand)]) { a, _ in a }
    }

    /// Whether a prompt's first divergence is a tie flip: the reference's gap between its token and
    /// the candidate's there is within the tie margin. False without a divergence; nil when it
    /// cannot be told (no margin: the texts parted by length, or sampled; or no noise floor).
    func tieFlip(_ r: PromptResult) -> Bool? {
        guard r.firstDivergence != nil else { return false }
        guard let tau = tieMargin, let m = r.firstDivergenceMargin else { return nil }
        return m <= tau
    }

    /// Kaplan–Meier survival to the first *real* flip, t = 0 … maxTokens: each prompt's first
    /// divergence is at token `time` (nil: never); a tie flip there is not an event but censors
    /// the prompt (its text left the reference's for a reason rounding alone could cause, so when
    /// it would have really diverged is unknown). A prompt censored at d is still at risk at d.
    static func survivalExcludingTies(_ prompts: [(time: Int?, tie: Bool)], maxTokens: Int) -> [Double] {
        var s = 1.0
        var out = [s]
        for t in stride(from: 1, through: maxTokens, by: 1) {
            let atRisk = prompts.filter { $0.time.map { $0 >= t } ?? true }.count
            let events = prompts.filter { $0.time == t && !$0.tie }.count
            if atRisk > 0 { s *= 1 - Double(events) / Double(atRisk) }
            out.append(s)
        }
        return out
    }

    // MARK: - Curves

    func curve(_ c: Int, _ bins: PositionBins) -> JSON {
        .array(bins.ranges.compactMap { r in
            let inBin: (Int) -> Bool = { r.contains($0) }
            let (_, n) = sums(c, \.kld, where: inBin)
            let count = n.reduce(0, +)
            guard count > 0 else { return nil }
            return .object([("start", .int(r.lowerBound)), ("end", .int(r.upperBound)), ("n", .int(count)),
                            ("mean_kld", Self.num(mean(c, \.kld, where: inBin))),
                            ("mean_kld_ci", interval(c, \.kld, where: inBin)),
                            ("top1_agreement", Self.num(mean(c, { $0.sameTop ? 1 : 0 }, where: inBin))),
                            ("mean_tv", Self.num(mean(c, \.tv, where: inBin)))])
        })
    }

    /// The bins the engine used for the KV cache's error and for clipping: log-spaced over
    /// position + 1 (or age + 1) up to the longest prompt + continuation.
    var sequenceBins: PositionBins {
        PositionBins.logSpaced(upTo: references.map { $0.promptTokens.count + $0.maxTokens }.max() ?? 1)
    }

    /// The KV cache's relative error binned by age (`byPosition` false) or by position in the sequence.
    func kvErrorCurve(_ c: Int, byPosition: Bool = false) -> JSON {
        let per = results[c].map { byPosition ? $0.kvErrorByPosition : $0.kvErrorByAge }
        guard let first = per.first ?? nil else { return .null }
        var sums = [Double](repeating: 0, count: first.count), counts = [Int](repeating: 0, count: first.count)
        for bins in per {
            for (i, b) in (bins ?? []).enumerated() where i < sums.count {
                sums[i] += b.sum
                counts[i] += b.count
            }
        }
        let bins = sequenceBins
        return .array(bins.ranges.indices.compactMap { i in
            guard i < counts.count, counts[i] > 0 else { return nil }
            let r = bins.ranges[i]
            // Ages count from 0 (the entry written this step), positions from 1.
            let shift = byPosition ? 0 : 1
            return .object([("start", .int(r.lowerBound - shift)), ("end", .int(r.upperBound - shift)), ("n", .int(counts[i])),
                            ("rel_error", .double(sums[i] / Double(counts[i])))])
        })
    }

    /// Static activation ranges along the sequence: per position bin, the share of values beyond
    /// their range, and max |x| ÷ range per row and site (mean and largest). Null without static ranges.
    func clippingCurve(_ c: Int) -> JSON {
        guard let first = results[c].first?.clipping else { return .null }
        var total = [ClippingBin](repeating: ClippingBin(), count: first.count)
        for r in results[c] {
            for (i, b) in (r.clipping ?? []).enumerated() where i < total.count { total[i].add(b) }
        }
        let bins = sequenceBins
        return .array(total.indices.compactMap { i in
            let t = total[i]
            guard t.values > 0, i < bins.ranges.count else { return nil }
            return .object([("start", .int(bins.ranges[i].lowerBound)), ("end", .int(bins.ranges[i].upperBound)),
                            ("values", .int(t.values)), ("clipped_share", .double(Double(t.clipped) / Double(t.values))),
                            ("mean_max_over_range", .double(t.ratioSum / Double(max(1, t.rowSites)))),
                            ("max_over_range", .double(t.maxRatio))])
        })
    }

    // MARK: - Attribution, layers, pairs

    func partEntry(_ c: Int, label: String) -> [(String, JSON)] {
        let (s, n) = sums(c, \.kld)
        return [("mean_kld", Self.num(stats.mean(sums: s, counts: n).mean)), ("mean_kld_ci", interval(c, \.kld)),
                ("top1_agreement", Self.num(mean(c, { $0.sameTop ? 1 : 0 })))]
    }

    func attribution(_ c: Int) -> JSON {
        let parts = candidates.indices.filter { if case .part(_, let parent) = candidates[$0].role { return parent == c }; return false }
        guard !parts.isEmpty else { return .null }
        var rows: [JSON] = parts.map { i in
            guard case .part(let label, _) = candidates[i].role else { return .null }
            return .object([("part", .string(label)), ("spec", .string(candidates[i].scheme.spec))] + partEntry(i, label: label))
        }
        rows.append(.object([("part", "all"), ("spec", .string(candidates[c].scheme.spec))] + partEntry(c, label: "all")))
        return .array(rows)
    }

    func perLayer(_ c: Int) -> JSON {
        let layers: [(Int, Int)] = candidates.indices.compactMap { i in
            if case .layer(let l, let parent) = candidates[i].role, parent == c { return (l, i) }
            return nil
        }
        guard !layers.isEmpty else { return .null }
        let rows = layers.map { (l, i) in (l, mean(i, \.kld), mean(i, { $0.sameTop ? 1 : 0 })) }
            .sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        return .array(rows.map { .object([("layer", .int($0.0)), ("mean_kld", Self.num($0.1)), ("top1_agreement", Self.num($0.2))]) })
    }

    func paired(_ c: Int) -> JSON {
        guard results[c].contains(where: { !$0.positions.isEmpty }) else { return .array([]) }
        return .array(mainIndices.filter { $0 != c }.map { o in
            let (a, n) = sums(c, \.kld)
            let (b, _) = sums(o, \.kld)
            let diff = zip(a, b).map { $0 - $1 }
            let (m, _) = stats.mean(sums: diff, counts: n)
            let (lo, hi) = stats.interval(sums: diff, counts: n)
            return .object([("other", .string(candidates[o].name)), ("mean_kld_diff", Self.num(m)),
                            ("mean_kld_diff_ci", .array([Self.num(lo), Self.num(hi)]))])
        })
    }

    func prompts(_ c: Int) -> JSON {
        .array(results[c].enumerated().map { p, r in
            let ref = references[p]
            let klds = r.positions.map(\.kld)
            let top1 = r.positions.isEmpty ? nil : Double(r.positions.filter(\.sameTop).count) / Double(r.positions.count)
            return .object([("id", .string(ref.id)), ("prompt_tokens", .int(ref.promptTokens.count)),
                            ("generated_tokens", .int(ref.continuation.count)),
                            ("mean_kld", Self.num(klds.isEmpty ? nil : klds.reduce(0, +) / Double(klds.count))),
                            ("max_kld", Self.num(klds.max())), ("top1_agreement", Self.num(top1)),
                            ("first_divergence", r.firstDivergence.map { .int($0 + 1) } ?? .null),
                            ("first_divergence_margin", Self.num(r.firstDivergenceMargin)),
                            ("tie_flip", r.firstDivergence == nil ? .null : tieFlip(r).map { .bool($0) } ?? .null),
                            ("reconverged", r.reconverged.map { .bool($0) } ?? .null)])
        })
    }

    // MARK: - Noise floor

    /// How the run's FP32 reference differs from itself when only the summation order changes: the
    /// KLD floor below which a scheme cannot be told from rounding, and the tie margin. Null when
    /// the run had no noise-floor candidate.
    func noiseFloorSection() -> JSON {
        guard let f = noiseFloor else { return .null }
        let teacher = results[f].flatMap(\.positions)
        let sortedKLD = teacher.map(\.kld).sorted()
        let (s, n) = sums(f, \.kld)
        let changes = teacher.map(\.marginChange).sorted()
        let free = results[f].contains { $0.freeTokens != nil }
        return .object([
            ("method", .string(Self.noiseFloorMethod)),
            ("positions", .int(teacher.count)),
            ("mean_kld", Self.num(stats.mean(sums: s, counts: n).mean)), ("mean_kld_ci", interval(f, \.kld)),
            ("median_kld", Self.num(LlamaCppStatistics.percentile(sortedKLD, 0.5))),
            ("max_kld", Self.num(sortedKLD.last)),
            ("top1_agreement", Self.num(mean(f, { $0.sameTop ? 1 : 0 }))),
            ("tie_margin", Self.num(tieMargin)),
            ("margin_change_median", Self.num(LlamaCppStatistics.percentile(changes, 0.5))),
            ("margin_change_p99", Self.num(LlamaCppStatistics.percentile(changes, 0.99))),
            ("diverged_prompts", free ? .int(results[f].filter { $0.firstDivergence != nil }.count) : .null),
            ("tie_flips", free && options.sampling.isGreedy ? .int(results[f].filter { tieFlip($0) == true }.count) : .null),
        ])
    }

    static let noiseFloorMethod = "the FP32 reference again with every matrix product on the row kernel (qd_gemm_f32_rows) instead of OpenBLAS: the same weights and arithmetic in another summation order"

    // MARK: - Documents

    /// The whole report.json document: schema, conditions, schemes and timing.
    public func document(_ context: ReportContext) throws -> JSON {
        let trace = context.referenceTrace
        let reference: JSON = .object([("scheme", "fp32"), ("trace_file", trace.map { .string($0) } ?? .null),
                                       ("trace_sha256", try trace.map { .string(try FileDigest.sha256(path: $0)) } ?? .null)])
        return .object([
            ("schema", .string(ReportKeys.schema)),
            ("conditions", .object([("model", context.model),
                                    ("workload", RunConditions.workload(context.workload, options: options)),
                                    ("runtime", RunConditions.runtime(version: context.version, threads: options.threads)),
                                    ("reference", reference)])),
            ("schemes", schemes()),
            ("noise_floor", noiseFloorSection()),
            ("timing", .object([("reference_seconds", .double(context.referenceSeconds)),
                                ("candidates_seconds", .double(context.candidatesSeconds))])),
        ])
    }

    /// Writes report.json, tokens.csv, summary.md and report.html into `dir`, each atomically,
    /// and returns report.json's bytes (for `ReportRenderer.consoleTable`).
    @discardableResult
    public func write(to dir: URL, context: ReportContext) throws -> Data {
        let json = try document(context)
        let data = Data((json.serialized(pretty: true) + "\n").utf8)
        try AtomicFile.write(data, to: dir.appendingPathComponent(ReportWriter.reportName))
        try AtomicFile.write(Data(tokensCSV().utf8), to: dir.appendingPathComponent(ReportWriter.tokensName))
        try ReportWriter.writeRenderings(report: json, to: dir)
        return data
    }

    /// The `schemes` array of report.json.
    public func schemes() -> JSON {
        .array(mainIndices.map { c in
            let teacherSeconds = results[c].map(\.teacherSeconds).reduce(0, +)
            let teacherTokens = results[c].map(\.positions.count).reduce(0, +)
            return .object([
                ("name", .string(candidates[c].name)), ("spec", .string(candidates[c].scheme.spec)),
                ("calibration", calibration[candidates[c].name] ?? .null),
                ("summary", summary(c)),
                ("curves", .object([("log_bins", curve(c, .logSpaced(upTo: maxTokens))),
                                    ("bins_64", curve(c, .fixed(64, upTo: maxTokens))),
                                    ("kv_error_by_age", kvErrorCurve(c)),
                                    ("kv_error_by_position", kvErrorCurve(c, byPosition: true)),
                                    ("activation_clipping_by_position", clippingCurve(c))])),
                ("attribution", attribution(c)), ("per_layer", perLayer(c)), ("paired", paired(c)),
                ("prompts", prompts(c)),
                ("timing", .object([("teacher_seconds", .double(teacherSeconds)),
                                    ("free_seconds", .double(results[c].map(\.freeSeconds).reduce(0, +))),
                                    ("teacher_tok_s", .double(teacherSeconds > 0 ? Double(teacherTokens) / teacherSeconds : 0))])),
            ])
        })
    }

    /// One row per scheme × prompt × position.
    public func tokensCSV() -> String {
        var out = "scheme,prompt,position,reference_token,kld,reverse_kld,tv,top1_agree,dp,dnll,entropy_reference,entropy_candidate,candidate_token\n"
        func field(_ s: String) -> String {
            s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
                ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        for c in mainIndices {
            let name = field(candidates[c].name)
            for (p, r) in results[c].enumerated() {
                let ref = references[p]
                let id = field(ref.id)
                let free = r.freeTokens ?? []
                let n = max(r.positions.count, free.count)
                for t in 0..<n {
                    var row = "\(name),\(id),\(t + 1),"
                    row += t < ref.continuation.count ? String(ref.continuation[t]) : ""
                    if t < r.positions.count {
                        let d = r.positions[t]
                        row += ",\(d.kld),\(d.reverseKLD),\(d.tv),\(d.sameTop ? 1 : 0),\(d.dp),\(d.dNLL),\(d.entropyReference),\(d.entropyCandidate)"
                    } else {
                        row += ",,,,,,,,"
                    }
                    row += "," + (t < free.count ? String(free[t]) : "") + "\n"
                    out += row
                }
            }
        }
        return out
    }
}
