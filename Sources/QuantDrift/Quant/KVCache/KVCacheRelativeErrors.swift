extension QuantizedKVCache {
    /// Relative error of what attention reads against what was written, per position 0..<count,
    /// pooled over layers, keys and values: Σ‖x̂ − x‖² / Σ‖x‖² (x̂ dequantized; 0 for positions
    /// held in FP32: sinks, the residual window). Each position's sums were taken when it was
    /// stored and when it was quantized; they add up here in the order of a pass over the cache
    /// (keys then values, layer by layer).
    public func relativeErrors(count: Int) -> [Double] {
        var err = [Double](repeating: 0, count: count), norm = [Double](repeating: 0, count: count)
        for part in [k, v] where part.q != nil {
            for layer in 0..<layerCount {
                let e = part.errorSums + layer * contextLength, n = part.normSums + layer * contextLength
                for pos in 0..<count {
                    err[pos] += e[pos]
                    norm[pos] += n[pos]
                }
            }
        }
        return zip(err, norm).map { $1 > 0 ? $0 / $1 : 0 }
    }
}
