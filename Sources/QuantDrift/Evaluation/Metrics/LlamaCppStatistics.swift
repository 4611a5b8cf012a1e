import Foundation

/// The statistics llama.cpp's perplexity tool prints, computed the way it computes them.
public enum LlamaCppStatistics {
    /// llama.cpp's mean and its uncertainty from a sum and a sum of squares.
    public static func meanAndUncertainty(_ sum: Double, _ sum2: Double, _ count: Int) -> (Double, Double) {
        guard count >= 1 else { return (0, 0) }
        let f = sum / Double(count)
        let df = sum2 / Double(count) - f * f
        return (f, df > 0 && count > 10 ? (df / Double(count - 1)).squareRoot() : 0)
    }

    /// Linear interpolation between sorted values, as llama.cpp's `percentile`.
    public static func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        if fraction <= 0 { return sorted.first! }
        if fraction >= 1 { return sorted.last! }
        let p = fraction * Double(sorted.count - 1)
        let ip = Int(p)
        let f = p - Double(ip)
        return (1 - f) * sorted[ip] + f * sorted[min(ip + 1, sorted.count - 1)]
    }

    /// The percentiles llama.cpp prints, highest first: (report key, fraction).
    public static let percentileKeys: [(String, Double)] = [("99.9", 0.999), ("99", 0.99), ("95", 0.95), ("90", 0.90), ("50", 0.5),
                                                            ("10", 0.10), ("5", 0.05), ("1", 0.01), ("0.1", 0.001)]
}
