import CKernels

/// Where static activation ranges stop covering the activations: watching a candidate with static
/// ranges during its teacher-forced pass, per log-spaced bin of the position in the sequence
/// (prompt and continuation, 1-based), the share of values beyond their site's range (which the
/// quantizer clips) and max |x| ÷ range of each row at each site. The head's input is left out
/// (which of its rows run depends on the logits asked for), as are outlier channels' schemes.
final class ClippingRecorder: ActivationObserver {
    let ranges: [SiteID: SiteCalibration]
    let bins: PositionBins
    private(set) var totals: [ClippingBin]
    /// The position (0-based) of the first row of the pass being observed.
    var firstPosition: () -> Int = { 0 }

    init(ranges: [SiteID: SiteCalibration], contextLength: Int) {
        self.ranges = ranges
        bins = PositionBins.logSpaced(upTo: max(1, contextLength))
        totals = Array(repeating: ClippingBin(), count: bins.ranges.count)
    }

    /// Starts a new prompt.
    func reset() { totals = Array(repeating: ClippingBin(), count: bins.ranges.count) }

    func observe(layer: Int, site: LinearSite, x: UnsafePointer<Float>, rows: Int, width: Int) {
        guard site != .headInput, let cal = ranges[SiteID(layer, site)] else { return }
        let start = firstPosition()
        for r in 0..<rows {
            guard let b = bins.index(of: start + r + 1) else { continue }
            let row = x + r * width
            var clipped = 0
            var ratio: Float = 0
            if let g = cal.groupSize, let groupRanges = cal.groupRanges, g > 0 {
                var lo = 0, gi = 0
                while lo < width {
                    let hi = min(lo + g, width)
                    let t = gi < groupRanges.count ? groupRanges[gi] : 0
                    let m = qd_absmax_f32(row + lo, Int32(hi - lo))
                    if t > 0 {
                        ratio = max(ratio, m / t)
                        if m > t { for i in lo..<hi where abs(row[i]) > t { clipped += 1 } }
                    }
                    lo = hi
                    gi += 1
                }
            } else if cal.range > 0 {
                let m = qd_absmax_f32(row, Int32(width))
                ratio = m / cal.range
                if m > cal.range { for i in 0..<width where abs(row[i]) > cal.range { clipped += 1 } }
            }
            totals[b].values += width
            totals[b].clipped += clipped
            totals[b].rowSites += 1
            totals[b].ratioSum += Double(ratio)
            totals[b].maxRatio = max(totals[b].maxRatio, Double(ratio))
        }
    }
}

/// One position bin's clipping counts (summed over sites and rows; `ClippingRecorder`).
public struct ClippingBin: Sendable, Equatable {
    /// Activation values seen, and how many lay beyond their range.
    public var values = 0
    public var clipped = 0
    /// Rows × sites seen, the sum of their max |x| ÷ range, and the largest.
    public var rowSites = 0
    public var ratioSum = 0.0
    public var maxRatio = 0.0

    public init() {}

    mutating func add(_ o: ClippingBin) {
        values += o.values
        clipped += o.clipped
        rowSites += o.rowSites
        ratioSum += o.ratioSum
        maxRatio = max(maxRatio, o.maxRatio)
    }
}
