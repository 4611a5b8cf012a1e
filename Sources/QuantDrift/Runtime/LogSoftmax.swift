import Foundation

/// Numerically careful log-softmax helpers over one row of logits.
public enum LogSoftmax {
    /// log Σ exp(x) in Double.
    public static func logSumExp(_ row: UnsafeBufferPointer<Float>) -> Double {
        var mx = -Float.infinity
        for v in row where v > mx { mx = v }
        var sum = 0.0
        let m = Double(mx)
        for v in row { sum += Foundation.exp(Double(v) - m) }
        return m + Foundation.log(sum)
    }
}
