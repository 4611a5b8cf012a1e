import CKernels

/// llama.cpp's block quantizers for the formats QuantDrift stores as ggml blocks (Q5_0, Q5_1,
/// IQ4_NL, Q2_K…Q6_K): the bytes llama-quantize writes for the same FP32 tensor without an importance
/// matrix (`ggml_quantize.c`; a test checks them against llama-quantize's output for every
/// tensor of the default model).
public enum GGMLQuantizer {
    /// The types `quantize` writes.
    public static let types: [GGMLType] = [.q5_0, .q5_1, .iq4_nl, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]

    /// `values` (rows of `cols`, `cols` a multiple of the block size) as blocks of `type`.
    public static func quantize(_ values: UnsafeBufferPointer<Float>, cols: Int, type: GGMLType) throws -> [UInt8] {
        guard types.contains(type) else {
            throw QuantDriftError.unsupported("no ggml quantizer for \(type.name); supported: \(types.map(\.name).joined(separator: ", "))")
        }
        guard cols > 0, cols % type.blockSize == 0, values.count % cols == 0 else {
            throw QuantDriftError.invalidInput("\(type.name) needs rows whose length is a multiple of \(type.blockSize) (got \(cols))")
        }
        var out = [UInt8](repeating: 0, count: values.count / type.blockSize * type.typeSize)
        let ok = out.withUnsafeMutableBufferPointer {
            qd_quantize_ggml(Int32(type.rawValue), values.baseAddress, values.count, $0.baseAddress)
        }
        precondition(ok == 1 || values.isEmpty)
        return out
    }

    public static func quantize(_ values: [Float], cols: Int, type: GGMLType) throws -> [UInt8] {
        try values.withUnsafeBufferPointer { try quantize($0, cols: cols, type: type) }
    }
}
