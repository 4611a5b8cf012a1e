import CKernels
import Foundation

/// What a reference trace was made from: the run that reads it must match every field, or its
/// log-probabilities belong to a different model, text or runtime. Plain string fields, so a
/// caller can add its own settings (n_ctx, mode, sampling, seed …) and they are compared too.
public struct ReferenceTraceHeader: Sendable, Equatable {
    public static let modelKey = "model_sha256"
    public static let workloadKey = "workload_sha256"
    public static let runtimeKey = "runtime"
    public static let vocabKey = "vocab_size"

    public private(set) var fields: [String: String]

    public init(fields: [String: String]) { self.fields = fields }

    /// The fields every trace has, plus the caller's `settings` (which must not reuse their keys).
    public init(modelSHA256: String, workloadSHA256: String, runtime: String, vocabSize: Int,
                settings: [String: String] = [:]) {
        fields = settings
        fields[Self.modelKey] = modelSHA256
        fields[Self.workloadKey] = workloadSHA256
        fields[Self.runtimeKey] = runtime
        fields[Self.vocabKey] = String(vocabSize)
    }

    public subscript(key: String) -> String? { fields[key] }

    public var vocabSize: Int? { fields[Self.vocabKey].flatMap { Int($0) } }

    /// The first field (in key order) whose value differs between `self` (the trace's) and `other`
    /// (this run's), a missing field counting as different.
    public func firstDifference(from other: ReferenceTraceHeader) -> (key: String, trace: String?, run: String?)? {
        for key in Set(fields.keys).union(other.fields.keys).sorted() where fields[key] != other.fields[key] {
            return (key, fields[key], other.fields[key])
        }
        return nil
    }

    /// Canonical JSON bytes: an object of strings with sorted keys.
    func serialized() -> [UInt8] {
        Array(JSON.object(fields.keys.sorted().map { ($0, JSON.string(fields[$0]!)) }).serialized().utf8)
    }

    init(parsing bytes: UnsafeRawBufferPointer) throws {
        let data = Data(bytes)
        guard let object = try? JSONSerialization.jsonObject(with: data), let dict = object as? [String: Any] else {
            throw QuantDriftError.invalidInput("header is not a JSON object")
        }
        var f: [String: String] = [:]
        for (k, v) in dict {
            guard let s = v as? String else { throw QuantDriftError.invalidInput("header field \(k) is not a string") }
            f[k] = s
        }
        guard let v = f[Self.vocabKey].flatMap({ Int($0) }), v >= 1, v <= 1 << 24 else {
            throw QuantDriftError.invalidInput("header has no valid \(Self.vocabKey)")
        }
        fields = f
    }
}

/// The identity of the code that computed a reference: tool version, BLAS build and which kernel
/// path (AVX2 or portable) ran, so a trace is not silently reused across runtimes whose FP32
/// results may differ in the last bits.
public enum RuntimeIdentity {
    public static func string(toolVersion: String) -> String {
        "quantdrift \(toolVersion); \(BLAS.configuration); kernels \(qd_has_avx2() != 0 ? "avx2" : "portable")"
    }
}
