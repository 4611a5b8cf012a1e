import Foundation

/// Turns the lockstep results into `report.json` (schema quantdrift.report/1, see
/// Report/report-schema.md) and `tokens.csv`.
public struct TrackerReport {
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

    func summary(_ c: Int) -> JSON {
        let teacher = results[c].contains { !$0.positions.isEmpty }
        var o: [(String, JSON)] = []
        let all = results[c].flatMap(\.positions)
        o.append(("positions", .int(all.count)))
        if teacher {
            let (s, n) = sums(c, \.kld)
            let (m, se) = stats.mean(sums: s, counts: n)
            let sorted = all.map(\.kld).sorted()
            let median = LlamaCppStatistics.percentile(sorted, 0.5)
            o += [("mean_kld", Self.num(m)), ("mean_kld_se", Self.num(se)), ("mean_kld_ci", interval(c, \.kld)),
                  ("median_kld", Self.num(median)), ("p99_kld", Self.num(LlamaCppStatistics.percentile(sorted, 0.99))),
                  ("max_kld", Self.num(sorted.last)),
                  ("kld_percentiles", .object(ClusteredStatistics.percentiles(sorted: sorted).map { ($0.0, Self.num($0.1)) })),
                  ("mean_reverse_kld", Self.num(mean(c, \.reverseKLD))), ("mean_tv", Self.num(mean(c, \.tv))),
                  ("top1_agreement", Self.num(mean(c, { $0.sameTop ? 1 : 0 }))),
                  ("top1_agreement_ci", interval(c, { $0.sameTop ? 1 : 0 })),
                  ("mean_dp", Self.num(mean(c, \.dp))),
                  ("rms_dp", Self.num(mean(c, { $0.dp * $0.dp }).squareRoot())),
                  ("mean_dnll", Self.num(mean(c, \.dNLL))),
                  ("mean_entropy_reference", Self.num(mean(c, \.entropyReference))),
                  ("mean_entropy_candidate", Self.num(mean(c, \.entropyCandidate))),
                  ("growth_exponent", Self.num(growthExponent(c))),
                  ("late_early_ratio", Self.num(lateEarlyRatio(c)))]
        } else {
            for k in ["mean_kld", "mean_kld_se", "mean_kld_ci", "median_kld", "p99_kld", "max_kld", "kld_percentiles",
                      "mean_reverse_kld", "mean_tv", "top1_agreement", "top1_agreement_ci", "mean_dp", "rms_dp",
                      "mean_dnll", "mean_entropy_reference", "mean_entropy_candidate", "growth_exponent", "late_early_ratio"] {
                o.append((k, .null))
            }
        }
        o += freeSummary(c, teacher: teacher)
        return .object(o)
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

    func freeSummary(_ c: Int, teacher: Bool) -> [(String, JSON)] {
        let rs = results[c]
        guard rs.contains(where: { $0.freeTokens != nil }) else {
            return ["median_first_divergence", "diverged_prompts", "reconverged_prompts", "survival", "survival_predicted",
                    "reference_text_nll", "candidate_text_nll", "repetition_reference", "repetition_candidate"].map { ($0, .null) }
        }
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
        return [("median_first_divergence", Self.num(LlamaCppStatistics.percentile(sortedFirsts, 0.5))),
                ("diverged_prompts", .int(rs.filter { $0.firstDivergence != nil }.count)),
                ("reconverged_prompts", .int(rs.filter { $0.reconverged == true }.count)),
                ("survival", .doubles(survival)), ("survival_predicted", predicted),
                ("reference_text_nll", Self.num(refCount > 0 ? refNLL / Double(refCount) : nil)),
                ("candidate_text_nll", Self.num(candCount > 0 ? candNLL / Double(candCount) : nil)),
                ("repetition_reference", .double(repRef)), ("repetition_candidate", .double(repCand))]
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

    func kvErrorCurve(_ c: Int) -> JSON {
        guard let first = results[c].first?.kvErrorByAge else { return .null }
        var sums = [Double](repeating: 0, count: first.count), counts = [Int](repeating: 0, count: first.count)
        for r in results[c] {
            for (i, b) in (r.kvErrorByAge ?? []).enumerated() where i < sums.count {
                sums[i] += b.sum
                counts[i] += b.count
            }
        }
        // The same bins the engine used: log-spaced over age + 1 up to the cache's length.
        let bins = PositionBins.logSpaced(upTo: references.map { $0.promptTokens.count + $0.maxTokens }.max() ?? 1)
        return .array(bins.ranges.indices.compactMap { i in
            guard i < counts.count, counts[i] > 0 else { return nil }
            let r = bins.ranges[i]
            return .object([("start", .int(r.lowerBound - 1)), ("end", .int(r.upperBound - 1)), ("n", .int(counts[i])),
                            ("rel_error", .double(sums[i] / Double(counts[i])))])
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
                            ("reconverged", r.reconverged.map { .bool($0) } ?? .null)])
        })
    }

    // MARK: - Documents

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
                                    ("kv_error_by_age", kvErrorCurve(c))])),
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
