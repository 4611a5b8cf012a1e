import COpenBLAS

/// Statistics of the inputs of every linear site of every layer, gathered by running the FP32
/// model over calibration text with an `ActivationObserver`: XᵀX (for GPTQ's Hessian), per-channel
/// mean |x| and a sample of input rows (for AWQ). The four sites of a layer feed q/k/v, o,
/// gate/up and down; the head's input is not collected (the head is quantized by RTN).
final class LinearInputStats: ActivationObserver {
    struct Options {
        /// Accumulate XᵀX (FP32 ssyrk per forward chunk; upper triangle).
        var gram = false
        /// Accumulate Σ|x| per channel (Double).
        var absSum = false
        /// Keep up to this many input rows per site, spread evenly over the calibration tokens.
        var sampleRows = 0
    }

    static let sites: [LinearSite] = [.attentionInput, .attentionOutput, .feedForwardInput, .feedForwardDownInput]

    let options: Options
    let layers: Int
    let widths: [Int]                   // per site
    private(set) var gram: [[Float]]    // [layer*4 + site]: (width, width), upper triangle valid
    private(set) var absSum: [[Double]] // [layer*4 + site]: (width)
    private(set) var samples: [[Float]] // [layer*4 + site]: (sampled rows, width)
    private(set) var counts: [Int]      // rows seen per [layer*4 + site]
    private var sampleStride = 1

    init(config c: ModelConfig, options: Options) {
        self.options = options
        layers = c.layerCount
        widths = [c.dim, c.qDim, c.dim, c.hiddenDim]
        let n = layers * 4
        gram = (0..<n).map { options.gram ? [Float](repeating: 0, count: $0 % 4 == 3 ? c.hiddenDim * c.hiddenDim : ($0 % 4 == 1 ? c.qDim * c.qDim : c.dim * c.dim)) : [] }
        absSum = (0..<n).map { options.absSum ? [Double](repeating: 0, count: [c.dim, c.qDim, c.dim, c.hiddenDim][$0 % 4]) : [] }
        samples = Array(repeating: [], count: n)
        counts = Array(repeating: 0, count: n)
    }

    static func siteIndex(_ s: LinearSite) -> Int? { sites.firstIndex(of: s) }

    func index(layer: Int, site: LinearSite) -> Int? {
        guard let s = Self.siteIndex(site), layer < layers else { return nil }
        return layer * 4 + s
    }

    func observe(layer: Int, site: LinearSite, x: UnsafePointer<Float>, rows: Int, width: Int) {
        guard let i = index(layer: layer, site: site) else { return }
        precondition(width == widths[i % 4])
        if options.gram {
            gram[i].withUnsafeMutableBufferPointer { g in
                cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(width), Int32(rows), 1, x, Int32(width), 1,
                            g.baseAddress, Int32(width))
            }
        }
        if options.absSum {
            absSum[i].withUnsafeMutableBufferPointer { a in
                for r in 0..<rows {
                    let xr = x + r * width
                    for c in 0..<width { a[c] += Double(abs(xr[c])) }
                }
            }
        }
        if options.sampleRows > 0 {
            for r in 0..<rows where (counts[i] + r) % sampleStride == 0 && samples[i].count < options.sampleRows * width {
                samples[i].append(contentsOf: UnsafeBufferPointer(start: x + r * width, count: width))
            }
        }
        counts[i] += rows
    }

    /// Mean |x| per channel of a site.
    func meanAbs(layer: Int, site: LinearSite) -> [Double] {
        let i = index(layer: layer, site: site)!
        let n = Double(max(1, counts[i]))
        return absSum[i].map { $0 / n }
    }

    // MARK: - Running the calibration

    /// Default cap on calibration data: 16 sequences of 256 tokens.
    static let maxSequences = 16
    static let sequenceLength = 256

    /// The calibration sequences actually run: every sequence cut into pieces of at most
    /// `length` tokens, then at most `count` pieces spread evenly over the set (deterministic).
    static func pieces(of set: CalibrationSet, count: Int = maxSequences, length: Int = sequenceLength) -> [[Int]] {
        var all: [[Int]] = []
        for s in set.sequences {
            var i = 0
            while i < s.count {
                let p = Array(s[i..<min(s.count, i + length)])
                if p.count >= 2 { all.append(p) }
                i += length
            }
        }
        guard all.count > count else { return all }
        return (0..<count).map { all[$0 * all.count / count] }
    }

    /// Runs the FP32 model over the calibration pieces and returns the statistics.
    static func collect(model: Model, calibration: CalibrationSet, options: Options) throws -> LinearInputStats {
        let seqs = pieces(of: calibration)
        guard !seqs.isEmpty else { throw QuantDriftError.invalidInput("calibration data \(calibration.source) has no sequence of 2 or more tokens") }
        let stats = LinearInputStats(config: model.config, options: options)
        let total = seqs.reduce(0) { $0 + $1.count }
        if options.sampleRows > 0 { stats.sampleStride = max(1, total / options.sampleRows) }
        let longest = seqs.map(\.count).max()!
        let t = try Transformer(model: model, contextLength: min(longest, model.config.contextLength), maxBatch: longest)
        t.observer = stats
        for s in seqs {
            t.reset()
            try t.forward(s.prefix(model.config.contextLength), logits: .none)
        }
        return stats
    }
}
