import Foundation
import Testing
@testable import QuantDrift

/// Emulated weight formats (NF4, FP8 E4M3/E5M2, MXFP4, fp16, bf16): exact value tables, nearest
/// encoding, error bounds, storage and the schemes end to end.
@Suite("Emulated weight formats")
struct EmulatedFormatTests {
    static let formats: [NumberFormat] = [.nf4, .fp8e4m3, .fp8e5m2, .mxfp4, .fp16, .bf16]

    static func spec(_ f: NumberFormat) throws -> WeightQuant {
        try Scheme(parsing: "w=\(f.rawValue)").weights!
    }

    /// Gaussian-like values (sum of four uniforms), with a few large ones.
    static func gaussian(_ n: Int, seed: UInt64, scale: Float = 0.05) -> [Float] {
        var r = RandomStream(seed: seed)
        return (0..<n).map { i in
            let g = Float((0..<4).map { _ in r.nextDouble() - 0.5 }.reduce(0, +)) * scale
            return i % 97 == 5 ? g * 12 : g
        }
    }

    // MARK: Tables

    @Test func tablesHoldTheSpecValues() {
        let nf4 = ValueTable.nf4.values
        #expect(nf4.count == 16 && nf4[0] == -1 && nf4[7] == 0 && nf4[15] == 1)
        #expect(nf4 == nf4.sorted())
        #expect(abs(nf4[8] - 0.07958029955625534) < 1e-8 && abs(nf4[1] + 0.6961928009986877) < 1e-8)

        let e4 = ValueTable.fp8e4m3
        #expect(e4.values[0x7E] == 448 && e4.values[0xFE] == -448 && e4.maxFinite == 448)
        #expect(e4.values[0x7F].isNaN && e4.values[0xFF].isNaN)
        #expect(e4.values.filter(\.isNaN).count == 2 && !e4.values.contains(.infinity))
        #expect(e4.values[0x38] == 1 && e4.values[0x08] == pow2(-6) && e4.values[0x01] == pow2(-9))
        #expect(e4.values[0x07] == 7 * pow2(-9))  // largest subnormal

        let e5 = ValueTable.fp8e5m2
        #expect(e5.values[0x7B] == 57344 && e5.maxFinite == 57344)
        #expect(e5.values[0x7C] == .infinity && e5.values[0xFC] == -.infinity)
        #expect(e5.values[0x7D].isNaN && e5.values[0x7E].isNaN && e5.values[0x7F].isNaN)
        #expect(e5.values[0x3C] == 1 && e5.values[0x04] == pow2(-14) && e5.values[0x01] == pow2(-16))

        #expect(ValueTable.e2m1.values == [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6])
        #expect(ValueTable.fp16.values[0x3C00] == 1 && ValueTable.fp16.maxFinite == 65504)
        #expect(ValueTable.bf16.values[0x3F80] == 1 && ValueTable.bf16.values[0x7F80] == .infinity)
    }

    /// A matrix holding every code once decodes each to its table value (through the packing).
    @Test(arguments: formats)
    func everyCodeDecodesToItsTableValue(format: NumberFormat) {
        let table = ValueTable.of(format)!
        let n = 1 << table.bits
        let cols = min(n, 256), rows = n / cols
        let codes = (0..<n).map { $0 }
        let packed: TableMatrix.Codes
        switch table.bits {
        case 4: packed = .nibbles(QuantizedMatrix.packNibbles(codes.map { UInt8($0) }, rows: rows, cols: cols))
        case 8: packed = .bytes(codes.map { UInt8($0) })
        default: packed = .halves(codes.map { UInt16($0) })
        }
        let scales: TableMatrix.Scales = format == .mxfp4 ? .e8m0([Int8](repeating: 0, count: rows * ((cols + 31) / 32)))
            : format == .fp16 || format == .bf16 ? .none : .float([1])
        let m = TableMatrix(table: table, rows: rows, cols: cols, groupSize: format == .mxfp4 ? 32 : cols,
                            codes: packed, scales: scales)
        let back = m.dequantized()
        for c in 0..<n {
            let want = table.values[c]
            let ok = want.isNaN ? back[c].isNaN : back[c].bitPattern == want.bitPattern
            #expect(ok, "\(format) code \(c): \(back[c]) vs \(want)")
            #expect(m.code(c / cols, c % cols) == c)
        }
    }

    /// Ties between two neighbours go to the even code (IEEE round half to even for the float
    /// formats); values past the largest finite saturate.
    @Test(arguments: formats)
    func tiesGoToTheEvenCodeAndLargeValuesSaturate(format: NumberFormat) {
        let t = ValueTable.of(format)!
        let s = t.sorted
        var checked = 0
        for k in stride(from: 0, to: s.count - 1, by: max(1, s.count / 300)) {
            let a = Double(s[k].value), b = Double(s[k + 1].value)
            let mid = Float((a + b) / 2)
            guard Double(mid) == (a + b) / 2 else { continue }  // midpoint not representable in FP32
            let c = t.encode(mid)
            let want = s[k].code % 2 == 0 ? s[k].code : s[k + 1].code
            #expect(c == want, "\(format): tie \(mid) between codes \(s[k].code) and \(s[k + 1].code) gave \(c)")
            // The fast 16-bit encoders agree with the table search.
            if format == .fp16 { #expect(Int(ValueTable.fp16Code(mid)) == want) }
            if format == .bf16 { #expect(Int(ValueTable.bf16Code(mid)) == want) }
            checked += 1
        }
        #expect(checked > 5)
        let huge = Float.greatestFiniteMagnitude
        #expect(t.values[t.encode(huge)] == t.maxFinite)
        #expect(t.values[t.encode(-huge)] == (t.signBit == nil ? t.values.filter(\.isFinite).min()! : -t.maxFinite))
        if format == .fp16 { #expect(ValueTable.fp16Code(huge) == 0x7BFF && ValueTable.fp16Code(-huge) == 0xFBFF) }
        if format == .bf16 { #expect(ValueTable.bf16Code(huge) == 0x7F7F && ValueTable.bf16Code(-huge) == 0xFF7F) }
        #expect(t.values[t.encode(.nan)] == 0)
    }

    /// Brute force: each quantized value is a nearest table value of (value / scale).
    @Test(arguments: formats, [1, 7, 31, 33, 577])
    func encodingPicksTheNearestTableValue(format: NumberFormat, cols: Int) throws {
        let rows = 3
        let w = Self.gaussian(rows * cols, seed: UInt64(cols) &* 31 &+ UInt64(format.bits))
        let m = try WeightQuantizer.quantizeTable(w, rows: rows, cols: cols, spec: try Self.spec(format))
        let finite = m.table.values.enumerated().filter { $0.element.isFinite }
        for r in 0..<rows {
            for c in 0..<cols {
                let s = m.scale(r, c / m.groupSize)
                let x = s > 0 ? Double(w[r * cols + c]) / Double(s) : 0
                var best = Double.infinity
                for (_, v) in finite { best = min(best, abs(Double(v) - x)) }
                let got = abs(Double(m.table.values[m.code(r, c)]) - x)
                // Nearest in the scaled space (division by the scale is FP32: allow its rounding).
                #expect(got <= best + abs(x) * 1e-6 + 1e-30, "\(format) (\(r), \(c)): x=\(x) got \(m.table.values[m.code(r, c)])")
                if got > best + abs(x) * 1e-6 + 1e-30 { return }
            }
        }
    }

    @Test func mxfp4SharedScaleIsTheOCPPowerOfTwo() throws {
        // amax 5.0 → ⌊log2 5⌋ − 2 = 0 → scale 1; amax 0.3 → −2 − 2 = −4.
        var w = [Float](repeating: 0.01, count: 64)
        w[3] = -5.0
        w[40] = 0.3
        let m = try WeightQuantizer.quantizeTable(w, rows: 1, cols: 64, spec: try Self.spec(.mxfp4))
        #expect(m.scale(0, 0) == 1 && m.scale(0, 1) == pow2(-4))
        #expect(m.value(0, 3) == -4)      // 5 is a tie between 4 (code 6) and 6 (code 7): the even code
        #expect(m.value(0, 40) == 0.25)   // 0.3·16 = 4.8 → 4, times 2^-4
        let zeros = try WeightQuantizer.quantizeTable([Float](repeating: 0, count: 32), rows: 1, cols: 32, spec: try Self.spec(.mxfp4))
        #expect(zeros.dequantized().allSatisfy { $0 == 0 })
    }

    // MARK: Error and storage

    /// Named SQNR bounds on Gaussian-like weights (measured values in the comments, dB).
    @Test(arguments: [
        ("w=nf4", 18.0),            // g64 absmax: measured ~20.5
        ("w=nf4,g32", 19.0),
        ("w=fp8e4m3", 28.0),        // per channel: ~31
        ("w=fp8e4m3,g32", 29.0),
        ("w=fp8e5m2", 22.0),        // ~25
        ("w=mxfp4", 15.0),          // ~17.5
        ("w=fp16", 60.0),           // ~74
        ("w=bf16", 45.0),           // ~51
    ])
    func roundTripErrorIsWithinItsBound(spec: String, minDB: Double) throws {
        let w = WeightQuantizerTests.weights
        let m = try WeightQuantizer.quantizeTable(w, rows: 64, cols: 576, spec: try Scheme(parsing: spec).weights!)
        let db = WeightQuantizerTests.sqnr(w, m.dequantized())
        print("SQNR \(spec): \(String(format: "%.2f", db)) dB")
        #expect(db >= minDB, "\(spec): SQNR \(db) dB")
        #expect(db < 100, "\(spec): no quantization happened")
    }

    @Test func storageBytesCountTheRealFormat() throws {
        let w = WeightQuantizerTests.weights  // (64, 576)
        func bytes(_ s: String) throws -> Int {
            try WeightQuantizer.quantizeTable(w, rows: 64, cols: 576, spec: try Scheme(parsing: s).weights!).storageBytes
        }
        #expect(try bytes("w=nf4") == 64 * 576 / 2 + 64 * 9 * 4)          // 4.5 bits per weight
        #expect(try bytes("w=fp8e4m3") == 64 * 576 + 64 * 4)              // a scale per channel
        #expect(try bytes("w=fp8e5m2,g64") == 64 * 576 + 64 * 9 * 4)
        #expect(try bytes("w=fp8e4m3,tensor") == 64 * 576 + 4)
        #expect(try bytes("w=mxfp4") == 64 * 576 / 2 + 64 * 18)          // 4.25 bits: one E8M0 byte per 32
        #expect(try bytes("w=fp16") == 64 * 576 * 2 && bytes("w=bf16") == 64 * 576 * 2)
        // Odd shapes: a partial nibble block is padded like the integer formats.
        let odd = try WeightQuantizer.quantizeTable(Array(w.prefix(3 * 33)), rows: 3, cols: 33, spec: try Self.spec(.nf4))
        #expect(odd.storageBytes == 3 * 32 + 3 * 1 * 4)
    }

    @Test func badOptionsAreClearErrors() {
        expectBadInput("mxfp4", "blocks of 32") { _ = try WeightQuantizer.quantizeTable([0, 1], rows: 1, cols: 2, spec: try Scheme(parsing: "w=mxfp4,g64").weights!) }
        expectBadInput("nf4", "symmetric") { _ = try WeightQuantizer.quantizeTable([0, 1], rows: 1, cols: 2, spec: try Scheme(parsing: "w=nf4,asym").weights!) }
        expectBadInput("gptq applies to int4") { _ = try Scheme(parsing: "w=nf4,gptq") }
    }

    // MARK: The layer and the schemes

    /// The layer computes with exactly the decoded table values (one row and several).
    @Test(arguments: formats)
    func layerMatchesDequantizeThenFP32(format: NumberFormat) throws {
        let rows = 37, cols = 577
        let m = try WeightQuantizer.quantizeTable(Self.gaussian(rows * cols, seed: 4), rows: rows, cols: cols, spec: try Self.spec(format))
        let layer = TableLinear(m)
        let dense = m.dequantized()
        let scratch = LinearScratch(maxRows: 3, maxInDim: cols)
        for n in [1, 3] {
            let x = Self.gaussian(n * cols, seed: 5, scale: 1)
            var y = [Float](repeating: 0, count: n * rows)
            layer.forward(x, rows: n, into: &y, scratch: scratch)
            for r in 0..<n {
                for o in 0..<rows {
                    var want = 0.0
                    for c in 0..<cols { want += Double(dense[o * cols + c]) * Double(x[r * cols + c]) }
                    #expect(abs(Double(y[r * rows + o]) - want) <= 1e-5 * max(1, abs(want)), "\(format) row \(r) out \(o)")
                }
            }
        }
        #expect(layer.storageBytes == m.storageBytes)
    }

    /// Every emulated format runs end to end on the default model and changes the logits by a
    /// plausible amount (fp16 barely).
    @Test(arguments: ["w=nf4", "w=fp8e4m3", "w=fp8e5m2", "w=mxfp4", "w=fp16", "w=bf16", "w=nf4;a=int8,token"])
    func schemeRunsOnTheDefaultModel(scheme: String) throws {
        let ref = try SchemeEffectTests.logits("fp32"), got = try SchemeEffectTests.logits(scheme)
        let kld = SchemeEffectTests.meanKLD(ref, got, vocab: 49152)
        print("scheme \(scheme): mean KLD \(kld) over \(SchemeEffectTests.tokens.count) positions")
        #expect(ref != got, "\(scheme) left the logits unchanged")
        // 4-bit formats on this 135M model are a large change (w4g128 RTN: ~0.3 here); mxfp4's
        // power-of-two scales cost more.
        #expect(kld > 0 && kld < (scheme.contains("mxfp4") ? 2 : 1), "\(scheme): mean KLD \(kld)")
        let model = try Golden.defaultModel()
        let rt = try SchemeRuntime(model: model, scheme: try Scheme(parsing: scheme))
        let bytes = rt.weights.bytesPerToken(dim: model.config.dim)
        // The model's size in FP32 (the reference itself reads the file's Q4_1 blocks).
        let fp32 = model.weights.parameterCount * MemoryLayout<Float>.size
        let ratio = Double(bytes) / Double(fp32)
        let expected: ClosedRange<Double> = scheme.contains("fp16") || scheme.contains("bf16") ? 0.49...0.51
            : scheme.contains("fp8") ? 0.25...0.27 : 0.13...0.15
        #expect(expected.contains(ratio), "\(scheme): weight bytes \(ratio) of FP32")
    }
}
