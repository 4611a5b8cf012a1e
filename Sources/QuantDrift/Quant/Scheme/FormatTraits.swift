extension ValueTable {
    /// The table of an emulated format.
    public static func of(_ f: NumberFormat) -> ValueTable? {
        switch f {
        case .nf4: nf4
        case .fp8e4m3: fp8e4m3
        case .fp8e5m2: fp8e5m2
        case .mxfp4: e2m1
        case .fp16: fp16
        case .bf16: bf16
        default: nil
        }
    }
}

extension NumberFormat {
    /// Formats emulated through value tables (decoded to FP32, then BLAS).
    public var isEmulated: Bool { ValueTable.of(self) != nil }
}
