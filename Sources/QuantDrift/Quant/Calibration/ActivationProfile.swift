/// Activation outlier profile of a model (`quantdrift inspect --activations`): per (layer, site)
/// the max |x|, the 99.9th percentile of |x|, the kurtosis of x, and the outlier channels.
public struct ActivationProfile: Sendable {
    /// An outlier channel has max |x| above this many times the median channel max of its site.
    public static let outlierFactor: Float = 6
    public static let outlierRule = "channel max |x| > 6 × the median channel max |x| of the site"

    public struct Site: Sendable {
        public var id: SiteID
        public var width: Int
        public var maxAbs: Float
        public var p999: Float
        /// Pearson kurtosis (3 for a Gaussian).
        public var kurtosis: Double
        public var medianChannelMax: Float
        /// Outlier channel ids, ascending.
        public var outliers: [Int]
    }

    public var sites: [Site]
    public var tokenCount: Int

    /// Two FP32 passes over `data`: maxima and moments, then |x| histograms over [0, max].
    public static func measure(model: Model, data: CalibrationSet, bins: Int = AbsHistogram.defaultBins,
                               progress: ((String, Int, Int) -> Void)? = nil) throws -> ActivationProfile {
        let first = try ActivationStatistics.collect(model: model, data: data) { progress?("maxima", $0, $1) }
        let plans = Dictionary(uniqueKeysWithValues: first.sites.map { ($0.id, ActivationStatistics.HistogramPlan(upper: $0.maxAbs)) })
        let second = try ActivationStatistics.collect(model: model, data: data, histograms: plans, bins: bins) { progress?("histograms", $0, $1) }
        return ActivationProfile(statistics: second)
    }

    public init(statistics: ActivationStatistics) {
        tokenCount = statistics.tokenCount
        sites = statistics.sites.map { s in
            let sorted = s.channelMaxAbs.sorted()
            let n = sorted.count
            let median = n == 0 ? 0 : n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
            return Site(id: s.id, width: s.width, maxAbs: s.maxAbs, p999: min(s.maxAbs, s.histogram?.percentile(99.9) ?? s.maxAbs),
                        kurtosis: s.kurtosis, medianChannelMax: median, outliers: s.outlierChannels(factor: Self.outlierFactor))
        }
    }
}
