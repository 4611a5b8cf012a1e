import Foundation

/// What calibration and profiling know about the activations of one site: moments of x, max |x|
/// overall and per input channel, and (after a second pass) a histogram of |x|.
public struct SiteStatistics: Sendable {
    public var id: SiteID
    /// Input channels.
    public var width: Int
    /// Elements seen (rows × width).
    public var count: Int
    /// Σx, Σx², Σx³, Σx⁴ over all elements.
    public var sum: Double
    public var sumSquares: Double
    public var sumCubes: Double
    public var sumFourth: Double
    /// max |x| over the tensor.
    public var maxAbs: Float
    /// max |x| per input channel, (width).
    public var channelMaxAbs: [Float]
    /// |x| histograms from a histogram pass: one for the tensor, or one per group of
    /// `histogramGroupSize` channels; empty when no histogram pass ran.
    public var histograms: [AbsHistogram]
    public var histogramGroupSize: Int?

    /// The tensor's |x| histogram (nil without a histogram pass or when it was made per group).
    public var histogram: AbsHistogram? { histogramGroupSize == nil ? histograms.first : nil }

    public var mean: Double { count > 0 ? sum / Double(count) : 0 }
    public var variance: Double {
        guard count > 0 else { return 0 }
        let m = mean
        return max(0, sumSquares / Double(count) - m * m)
    }

    /// Pearson kurtosis E[(x−μ)⁴]/σ⁴ (3 for a Gaussian; large when a few values dominate).
    public var kurtosis: Double {
        guard count > 0 else { return 0 }
        let n = Double(count), m = mean
        let e2 = sumSquares / n, e3 = sumCubes / n, e4 = sumFourth / n
        let m4 = e4 - 4 * m * e3 + 6 * m * m * e2 - 3 * m * m * m * m
        let v = variance
        return v > 0 ? m4 / (v * v) : 0
    }

    /// Channels whose max |x| exceeds `factor` × the median channel max (ascending ids).
    public func outlierChannels(factor: Float = 6) -> [Int] {
        let sorted = channelMaxAbs.sorted()
        guard !sorted.isEmpty else { return [] }
        let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        return channelMaxAbs.indices.filter { channelMaxAbs[$0] > factor * median }
    }
}

/// Statistics of every site of a model over a calibration set.
public struct ActivationStatistics: Sendable {
    /// In forward order (`SiteID` order).
    public var sites: [SiteStatistics]
    /// Tokens run through the model.
    public var tokenCount: Int

    public subscript(id: SiteID) -> SiteStatistics? { sites.first { $0.id == id } }

    /// Per-channel max |x| by site.
    public var channelMaxAbs: [SiteID: [Float]] {
        Dictionary(uniqueKeysWithValues: sites.map { ($0.id, $0.channelMaxAbs) })
    }

    /// What a histogram pass covers at one site: the range [0, upper] (per group of channels when
    /// `groupSize` is set) and channels to leave out.
    public struct HistogramPlan: Sendable {
        /// One upper edge for the tensor, or one per group.
        public var uppers: [Float]
        /// Channels per group (the last group may be shorter), or nil for one histogram per tensor.
        public var groupSize: Int?
        /// Channels not counted (e.g. LLM.int8() outliers kept in FP32), or nil for all.
        public var excluded: [Bool]?

        public init(upper: Float, excluded: [Bool]? = nil) {
            uppers = [upper]
            groupSize = nil
            self.excluded = excluded
        }

        public init(groupUppers: [Float], groupSize: Int, excluded: [Bool]? = nil) {
            uppers = groupUppers
            self.groupSize = groupSize
            self.excluded = excluded
        }
    }

    /// Runs `weights` (default: the model's FP32 weights) over every sequence of `data` and gathers
    /// moments and per-channel maxima at every site; with `histograms`, also a histogram of |x|
    /// (`bins` bins over each plan's range) at the sites it names.
    public static func collect(model: Model, weights: RuntimeWeights? = nil, data: CalibrationSet,
                               histograms: [SiteID: HistogramPlan]? = nil, bins: Int = AbsHistogram.defaultBins,
                               progress: ((Int, Int) -> Void)? = nil) throws -> ActivationStatistics {
        let c = model.config
        guard let longest = data.sequences.map(\.count).max(), longest >= 1 else {
            throw QuantDriftError.invalidInput("\(data.source): calibration data has no tokens")
        }
        guard longest <= c.contextLength else {
            throw QuantDriftError.invalidInput("\(data.source): calibration sequences of \(longest) tokens exceed the context length \(c.contextLength)")
        }
        let collector = StatisticsCollector(config: c, histograms: histograms, bins: bins)
        let t = try Transformer(model: model, contextLength: longest, maxBatch: longest, weights: weights)
        t.observer = collector
        for (i, seq) in data.sequences.enumerated() {
            t.reset()
            // The head input at every position, without the head's product.
            try t.forward(seq, logits: .headInputOnly)
            progress?(i + 1, data.sequences.count)
        }
        t.observer = nil
        return ActivationStatistics(sites: collector.result(), tokenCount: data.tokenCount)
    }
}

/// The observer behind `ActivationStatistics.collect`: running sums in raw buffers per site.
final class StatisticsCollector: ActivationObserver {
    final class Accumulator {
        let id: SiteID
        let width: Int
        var count = 0
        var s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0
        let channelMax: UnsafeMutablePointer<Float>
        let plan: ActivationStatistics.HistogramPlan?
        /// (groups, bins) counts.
        let hist: UnsafeMutablePointer<Double>?
        let bins: Int
        /// Channels per histogram (the width when per tensor).
        let groupSize: Int
        let groups: Int
        let excluded: UnsafeMutablePointer<Bool>?

        init(id: SiteID, width: Int, plan: ActivationStatistics.HistogramPlan?, bins: Int) {
            self.id = id
            self.width = width
            self.plan = plan
            self.bins = bins
            groupSize = max(1, min(plan?.groupSize ?? width, width))
            groups = (width + groupSize - 1) / groupSize
            channelMax = .allocate(capacity: width)
            channelMax.initialize(repeating: 0, count: width)
            if let plan {
                precondition(plan.uppers.count == groups, "histogram plan of \(plan.uppers.count) ranges for \(groups) groups")
                hist = .allocate(capacity: groups * bins)
                hist!.initialize(repeating: 0, count: groups * bins)
                if let ex = plan.excluded {
                    precondition(ex.count == width)
                    excluded = .allocate(capacity: width)
                    for j in 0..<width { excluded![j] = ex[j] }
                } else {
                    excluded = nil
                }
            } else {
                hist = nil
                excluded = nil
            }
        }

        deinit {
            channelMax.deallocate()
            hist?.deallocate()
            excluded?.deallocate()
        }

        func add(_ x: UnsafePointer<Float>, rows: Int) {
            let w = width
            var a1 = 0.0, a2 = 0.0, a3 = 0.0, a4 = 0.0
            for r in 0..<rows {
                let xr = x + r * w
                // Per-row partial sums in Float pairs would lose x⁴ precision: stay in Double.
                for j in 0..<w {
                    let v = xr[j]
                    let a = abs(v)
                    if a > channelMax[j] || a.isNaN { channelMax[j] = a.isNaN ? .infinity : a }
                    let d = Double(v), d2 = d * d
                    a1 += d
                    a2 += d2
                    a3 += d2 * d
                    a4 += d2 * d2
                }
            }
            s1 += a1; s2 += a2; s3 += a3; s4 += a4
            count += rows * w
            guard let hist, let plan else { return }
            let n = bins, gs = groupSize
            for gi in 0..<groups {
                let upper = plan.uppers[gi]
                let inv = upper > 0 ? Float(n) / upper : 0
                let h = hist + gi * n
                let lo = gi * gs, hi = min(w, lo + gs)
                for r in 0..<rows {
                    let xr = x + r * w
                    if let excluded {
                        for j in lo..<hi where !excluded[j] {
                            h[Int(min(Float(n - 1), abs(xr[j]) * inv))] += 1
                        }
                    } else {
                        for j in lo..<hi {
                            h[Int(min(Float(n - 1), abs(xr[j]) * inv))] += 1
                        }
                    }
                }
            }
        }

        func statistics() -> SiteStatistics {
            let cm = Array(UnsafeBufferPointer(start: channelMax, count: width))
            var hs: [AbsHistogram] = []
            if let hist, let plan {
                for gi in 0..<groups {
                    var h = AbsHistogram(upper: plan.uppers[gi], bins: bins)
                    h.counts = Array(UnsafeBufferPointer(start: hist + gi * bins, count: bins))
                    hs.append(h)
                }
            }
            return SiteStatistics(id: id, width: width, count: count, sum: s1, sumSquares: s2, sumCubes: s3, sumFourth: s4,
                                  maxAbs: cm.max() ?? 0, channelMaxAbs: cm, histograms: hs,
                                  histogramGroupSize: plan?.groupSize)
        }
    }

    let config: ModelConfig
    private var accumulators: [SiteID: Accumulator] = [:]

    init(config: ModelConfig, histograms: [SiteID: ActivationStatistics.HistogramPlan]?, bins: Int) {
        self.config = config
        for (id, width) in SiteID.all(config) {
            accumulators[id] = Accumulator(id: id, width: width, plan: histograms?[id], bins: bins)
        }
    }

    func observe(layer: Int, site: LinearSite, x: UnsafePointer<Float>, rows: Int, width: Int) {
        guard let acc = accumulators[SiteID(layer, site)], acc.width == width else { return }
        acc.add(x, rows: rows)
    }

    func result() -> [SiteStatistics] {
        accumulators.values.map { $0.statistics() }.sorted { $0.id < $1.id }
    }
}
