extension QuantizedKVCache {
    /// Relative error of what attention reads against what was written, per position 0..<count,
    /// pooled over layers, keys and values: Σ‖x̂ − x‖² / Σ‖x‖² (x̂ dequantized; 0 for positions
    /// held in FP32: sinks, the residual window).
    public func relativeErrors(count: Int) -> [Double] {
        var err = [Double](repeating: 0, count: count), norm = [Double](repeating: 0, count: count)
        for part in [k, v] where part.q != nil {
            for layer in 0..<layerCount {
                let read = self.read(part, layer: layer, count: count)
                let written = part.fp.pointer + layer * contextLength * kvDim
                for pos in 0..<count {
                    var e = 0.0, n = 0.0
                    for c in 0..<kvDim {
                        let x = Double(written[pos * kvDim + c]), d = Double(read[pos * kvDim + c]) - x
                        e += d * d
                        n += x * x
                    }
                    err[pos] += e
                    norm[pos] += n
                }
            }
        }
        return zip(err, norm).map { $1 > 0 ? $0 / $1 : 0 }
    }
}
