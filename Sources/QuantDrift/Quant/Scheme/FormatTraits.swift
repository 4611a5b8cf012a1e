// MARK: - The number formats

/// Number formats a tensor can be stored in. Everything else about a format lives in its row of
/// `FormatTraits.table`: adding a format is a case here, one row there, and its quantizer.
public enum NumberFormat: String, Sendable, Codable, CaseIterable {
    case int8, int4, int3, int2, nf4, fp8e4m3, fp8e5m2, mxfp4, nvfp4, fp16, bf16
    /// llama.cpp block formats (blocks of 32 along the row, fp16 scales).
    case q8_0, q4_0, q4_1
    /// llama.cpp formats kept as its own blocks (32, or 256-element k-quant super-blocks).
    case q5_0, q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k
    /// ggml's activation blocks for the k-quants (256 per scale; activations only).
    case q8_k

    /// This format's row of the traits table.
    public var traits: FormatTraits { FormatTraits.byFormat[self]! }

    /// Bits per stored value (scales not included).
    public var bits: Int { traits.bits }

    public var isUniformInteger: Bool { if case .uniform = traits.storage { true } else { false } }
    /// llama.cpp's block formats: block size and symmetry are part of the format.
    public var isBlockFormat: Bool { if case .ggmlBlock = traits.storage { true } else { false } }
    /// The ggml type of formats stored as llama.cpp's own blocks.
    public var ggmlType: GGMLType? { if case .ggmlEncoded(let t) = traits.storage { t } else { nil } }
    /// Elements per block along a row: a row must hold whole blocks (1 for formats without).
    public var blockSize: Int {
        if let t = ggmlType { return t.blockSize }
        return isBlockFormat ? 32 : 1
    }
    /// Formats emulated through value tables (decoded to FP32, then BLAS).
    public var isEmulated: Bool { ValueTable.of(self) != nil }
}

/// A weight matrix as a format's quantizer stores it.
public enum StoredWeights: Sendable {
    /// Integer codes for the integer kernels (`QuantizedLinear`).
    case integer(QuantizedMatrix)
    /// Codes into a value table, decoded to FP32 for BLAS (`TableLinear`).
    case table(TableMatrix)
    /// llama.cpp's own blocks, decoded a tile at a time into the FP32 product (`BlockLinear`).
    case blocks(WeightMatrix)
}

// MARK: - Traits

/// Everything QuantDrift knows about one number format, read by the scheme parser, the weight
/// quantizers, the KV cache and `quantdrift schemes`.
public struct FormatTraits: Sendable {
    /// How codes are stored, and so which kernels multiply them.
    public enum Storage: Sendable {
        /// Uniform integer codes: int8 bytes, or nibbles for ≤ 4 bits; integer kernels.
        case uniform
        /// llama.cpp blocks of 32 with fp16 scales (and mins); integer kernels.
        case ggmlBlock
        /// Codes into an exact value table, decoded to FP32 for BLAS (emulated).
        case table(ValueTable)
        /// llama.cpp's blocks of this type, exactly as llama-quantize writes them; products on
        /// decoded tiles.
        case ggmlEncoded(GGMLType)
    }

    /// As weights: defaults, what is fixed, the methods that apply, and the quantizer.
    public struct Weights: Sendable {
        public let granularity: Granularity
        public let symmetric: Bool
        /// Granularity and symmetry are the format's own (llama.cpp blocks): the spec omits them.
        public let fixedLayout: Bool
        public let methods: [QuantMethod]
        /// Format of the token embedding and tied head (llama-quantize keeps them in Q8_0 for
        /// Q4_0/Q4_1); nil = the scheme's own format.
        public let headFormat: NumberFormat?
        /// FP32 (rows, cols) row-major → stored weights.
        public let quantize: @Sendable (_ w: [Float], _ rows: Int, _ cols: Int, _ spec: WeightQuant) throws -> StoredWeights
    }

    /// As linear-layer inputs (quantized per row as they come, or with calibrated ranges).
    public struct Activations: Sendable {
        public let granularity: Granularity
        /// The quantizer when the format fixes its own blocks and rounding (q8_0: no granularity
        /// option, no static ranges); nil = chosen from the scheme's granularity.
        public let fixedQuantizer: ActivationQuantizer.Mode?

        public var fixedLayout: Bool { fixedQuantizer != nil }
    }

    /// As the KV cache's codes.
    public struct KV: Sendable {
        /// Bits a code takes in the cache: 8, 4 or 2 (int3 rides in 4).
        public let containerBits: Int
        /// Default elements per scale along the head dimension; 0 = one group per head.
        public let group: Int
        public let symmetric: Bool
        /// Sign-magnitude codes with one scale per group (FP8): always symmetric, no mins.
        public let signMagnitude: Bool
        /// llama.cpp's cache type (`-ctk/-ctv`): blocks of 32 per token, codes and fp16 scale
        /// (and min) exactly as ggml's reference quantizer writes them.
        public var ggml: GGMLType? = nil
    }

    public let format: NumberFormat
    /// Bits per stored value (scales not included).
    public let bits: Int
    public let storage: Storage
    /// One line for `quantdrift schemes`.
    public let summary: String
    public let weights: Weights
    /// nil: not an activation format.
    public let activations: Activations?
    /// nil: not a KV-cache format.
    public let kv: KV?

    // MARK: The table

    public static let table: [FormatTraits] = [
        uniform(.int8, kvGroup: 0, weightGranularity: .channel, activations: Activations(granularity: .token, fixedQuantizer: nil),
                summary: "uniform 8-bit integers (Int8×Int8→Int32 with int8 activations)"),
        uniform(.int4, kvGroup: 32, weightGranularity: .group(128), methods: [.rtn, .gptq, .awq, .hqq],
                activations: Activations(granularity: .token, fixedQuantizer: nil),
                summary: "uniform 4-bit integers, packed nibbles (as activations: codes −7…7 per token or group, Int4×Int4→Int32)"),
        uniform(.int3, kvGroup: 32, weightGranularity: .group(128), methods: [.rtn, .gptq, .awq, .hqq], summary: "uniform 3-bit integers (stored in nibbles)"),
        uniform(.int2, kvGroup: 32, weightGranularity: .group(128), methods: [.rtn, .gptq, .awq, .hqq], summary: "uniform 2-bit integers (stored in nibbles; 2-bit codes in the KV cache)"),
        emulated(.nf4, .nf4, granularity: .group(64), summary: "QLoRA NormalFloat4, absmax scale per group"),
        emulated(.fp8e4m3, .fp8e4m3, granularity: .channel, kv: true, summary: "OCP FP8 E4M3 (max 448), scale per channel, group or tensor"),
        emulated(.fp8e5m2, .fp8e5m2, granularity: .channel, kv: true, summary: "FP8 E5M2 (max 57344), scale per channel, group or tensor"),
        emulated(.mxfp4, .e2m1, granularity: .group(32), summary: "OCP MXFP4: E2M1 values, E8M0 scale per block of 32"),
        emulated(.nvfp4, .e2m1, granularity: .group(16), methods: [.rtn, .mse],
                 summary: "NVIDIA NVFP4: E2M1 values, E4M3 scale per block of 16, FP32 scale per tensor (mse: searched block scales)"),
        emulated(.fp16, .fp16, granularity: .channel, summary: "IEEE binary16, no scale"),
        emulated(.bf16, .bf16, granularity: .channel, summary: "bfloat16, no scale"),
        ggml(.q8_0, bits: 8, symmetric: true, headFormat: nil, activations: Activations(granularity: .group(32), fixedQuantizer: .q8_0),
             kv: KV(containerBits: 8, group: 32, symmetric: true, signMagnitude: false, ggml: .q8_0),
             summary: "llama.cpp Q8_0: blocks of 32, fp16 scale", quantize: WeightQuantizer.blockQ8_0),
        ggml(.q4_0, bits: 4, symmetric: true, headFormat: .q8_0, kv: KV(containerBits: 4, group: 32, symmetric: true, signMagnitude: false, ggml: .q4_0),
             summary: "llama.cpp Q4_0: blocks of 32, fp16 scale, codes offset by 8", quantize: WeightQuantizer.blockQ4_0),
        ggml(.q4_1, bits: 4, symmetric: false, headFormat: .q8_0, kv: KV(containerBits: 4, group: 32, symmetric: false, signMagnitude: false, ggml: .q4_1),
             summary: "llama.cpp Q4_1: blocks of 32, fp16 scale and min", quantize: WeightQuantizer.blockQ4_1),
        encoded(.q5_0, .q5_0, bits: 5, symmetric: true, kv: KV(containerBits: 8, group: 32, symmetric: true, signMagnitude: false, ggml: .q5_0),
                summary: "llama.cpp Q5_0: blocks of 32, fp16 scale, codes offset by 16 (5.5 bits/weight)"),
        encoded(.q5_1, .q5_1, bits: 5, symmetric: false, kv: KV(containerBits: 8, group: 32, symmetric: false, signMagnitude: false, ggml: .q5_1),
                summary: "llama.cpp Q5_1: blocks of 32, fp16 scale and min (6 bits/weight)"),
        encoded(.iq4_nl, .iq4_nl, bits: 4, symmetric: true, kv: KV(containerBits: 4, group: 32, symmetric: true, signMagnitude: false, ggml: .iq4_nl),
                summary: "llama.cpp IQ4_NL: blocks of 32, fp16 scale, 4-bit indices into a fixed non-uniform table (4.5 bits/weight)"),
        encoded(.q2_k, .q2_K, bits: 2, symmetric: false, summary: "llama.cpp Q2_K: 256-blocks of 16 sub-blocks, 4-bit scales and mins (2.625 bits/weight)"),
        encoded(.q3_k, .q3_K, bits: 3, symmetric: true, summary: "llama.cpp Q3_K: 256-blocks of 16 sub-blocks, 6-bit scales (3.4375 bits/weight)"),
        encoded(.q4_k, .q4_K, bits: 4, symmetric: false, summary: "llama.cpp Q4_K: 256-blocks of 8 sub-blocks, 6-bit scales and mins (4.5 bits/weight)"),
        encoded(.q5_k, .q5_K, bits: 5, symmetric: false, summary: "llama.cpp Q5_K: 256-blocks of 8 sub-blocks, 6-bit scales and mins (5.5 bits/weight)"),
        encoded(.q6_k, .q6_K, bits: 6, symmetric: true, summary: "llama.cpp Q6_K: 256-blocks of 16 sub-blocks, 8-bit scales (6.5625 bits/weight)"),
        FormatTraits(
            format: .q8_k, bits: 8, storage: .uniform, summary: "ggml Q8_K activations: blocks of 256, FP32 scale (activations of the k-quants)",
            weights: Weights(granularity: .group(256), symmetric: true, fixedLayout: true, methods: [.rtn], headFormat: nil) { _, _, _, _ in
                throw QuantDriftError.unsupported("scheme: q8_k is an activation format (ggml's k-quant activations), not a weight format")
            },
            activations: Activations(granularity: .group(256), fixedQuantizer: .q8_K), kv: nil),
    ]

    static let byFormat: [NumberFormat: FormatTraits] = Dictionary(uniqueKeysWithValues: table.map { ($0.format, $0) })

    /// The KV traits of `f`, or the error the parser and the cache both give.
    public static func kv(_ f: NumberFormat) throws -> KV {
        guard let kv = f.traits.kv else {
            throw QuantDriftError.invalidInput("scheme: KV format \(f.rawValue) is not supported; supported: \(names { $0.kv != nil }.joined(separator: ", "))")
        }
        return kv
    }

    /// The formats with a trait, in table order: "int8, int4, …".
    public static func names(where include: (FormatTraits) -> Bool) -> [String] {
        table.filter(include).map(\.format.rawValue)
    }

    // MARK: Row makers, one per storage kind

    static func uniform(_ f: NumberFormat, kvGroup: Int, weightGranularity: Granularity, methods: [QuantMethod] = [.rtn],
                        activations: Activations? = nil, summary: String) -> FormatTraits {
        let bits = Int(f.rawValue.dropFirst(3))!
        return FormatTraits(
            format: f, bits: bits, storage: .uniform, summary: summary,
            weights: Weights(granularity: weightGranularity, symmetric: true, fixedLayout: false, methods: methods, headFormat: nil) { w, rows, cols, spec in
                let group = try WeightQuantizer.uniformGroup(spec, cols: cols)
                if spec.method == .hqq {
                    guard spec.granularity != .tensor else { throw QuantDriftError.invalidInput("scheme: hqq fits each group or channel, not one grid per tensor") }
                    return .integer(HQQ.quantize(w, rows: rows, cols: cols, bits: bits, group: group))
                }
                return .integer(WeightQuantizer.uniform(w, rows: rows, cols: cols, bits: bits, group: group,
                                                        sharedAcrossRows: spec.granularity == .tensor, symmetric: spec.symmetric))
            },
            activations: activations,
            kv: KV(containerBits: bits <= 2 ? 2 : (bits <= 4 ? 4 : 8), group: kvGroup, symmetric: bits == 8, signMagnitude: false))
    }

    static func emulated(_ f: NumberFormat, _ values: ValueTable, granularity: Granularity, kv: Bool = false, methods: [QuantMethod] = [.rtn],
                         summary: String) -> FormatTraits {
        FormatTraits(
            format: f, bits: values.bits, storage: .table(values), summary: summary,
            weights: Weights(granularity: granularity, symmetric: true, fixedLayout: false, methods: methods, headFormat: nil) { w, rows, cols, spec in
                .table(try WeightQuantizer.quantizeTable(w, rows: rows, cols: cols, spec: spec))
            },
            activations: nil,
            kv: kv ? KV(containerBits: values.bits, group: 0, symmetric: true, signMagnitude: true) : nil)
    }

    static func encoded(_ f: NumberFormat, _ type: GGMLType, bits: Int, symmetric: Bool, kv: KV? = nil, summary: String) -> FormatTraits {
        FormatTraits(
            format: f, bits: bits, storage: .ggmlEncoded(type), summary: summary,
            weights: Weights(granularity: .group(type.blockSize), symmetric: symmetric, fixedLayout: true, methods: [.rtn], headFormat: nil) { w, rows, cols, _ in
                .blocks(WeightMatrix(blocks: try GGMLQuantizer.quantize(w, cols: cols, type: type), type: type, count: rows * cols, cols: cols))
            },
            activations: nil, kv: kv)
    }

    static func ggml(_ f: NumberFormat, bits: Int, symmetric: Bool, headFormat: NumberFormat?, activations: Activations? = nil, kv: KV? = nil,
                     summary: String, quantize: @escaping @Sendable ([Float], Int, Int) -> QuantizedMatrix) -> FormatTraits {
        FormatTraits(
            format: f, bits: bits, storage: .ggmlBlock, summary: summary,
            weights: Weights(granularity: .group(32), symmetric: symmetric, fixedLayout: true, methods: [.rtn], headFormat: headFormat) { w, rows, cols, _ in
                .integer(quantize(w, rows, cols))
            },
            activations: activations, kv: kv)
    }
}

extension ValueTable {
    /// The table of an emulated format.
    public static func of(_ f: NumberFormat) -> ValueTable? {
        if case .table(let t) = f.traits.storage { return t }
        return nil
    }
}
