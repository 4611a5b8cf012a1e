import CKernels
import Foundation

/// The conditions every report states (DESIGN §5): model, workload, runtime.
public enum RunConditions {
    public static func model(_ model: Model, sha256 known: String? = nil) throws -> JSON {
        .object([("name", .string(model.name)), ("architecture", .string(model.config.architecture.rawValue)),
                 ("sha256", .string(try known ?? FileDigest.sha256(path: model.path))),
                 ("file", .string(URL(fileURLWithPath: model.path).lastPathComponent)),
                 ("parameters", .int(model.weights.parameterCount))])
    }

    public static func workload(_ w: Workload, options: TrackerOptions) -> JSON {
        let s = options.sampling
        return .object([("prompts_file", .string(w.file)), ("prompts_sha256", .string(w.sha256)),
                        ("prompts", .int(w.prompts.count)),
                        ("max_tokens", .int(w.prompts.map { options.maxTokens(for: $0) }.max() ?? 0)),
                        ("mode", .string(options.mode.rawValue)),
                        ("sampling", .object([("temperature", .double(Double(s.temperature))), ("top_k", .int(s.topK)),
                                              ("top_p", .double(Double(s.topP)))])),
                        ("seed", .int(Int(truncatingIfNeeded: s.seed))),
                        ("stop_at_end_of_generation", .bool(options.stopAtEndOfGeneration)),
                        ("decode_batch", .int(options.decodeBatch))])
    }

    /// How `scheme` was calibrated ({method, data_sha256, tokens}): on `data` when it needs a
    /// calibration set, from its artifact when it names one (calib=FILE), else nil.
    public static func calibration(of scheme: Scheme, data: CalibrationSet?) -> JSON? {
        if scheme.needsCalibrationSet, let data {
            return .object([("method", .string(scheme.calibration?.description ?? "minmax")),
                            ("data_sha256", .string(data.sha256)), ("tokens", .int(data.tokenCount))])
        }
        if let file = scheme.calibrationFile {
            return .object([("method", .string(scheme.calibration?.description ?? "file")),
                            ("data_sha256", .string((try? FileDigest.sha256(path: file)) ?? "")), ("tokens", .null)])
        }
        return nil
    }

    /// The CPU's model name from /proc/cpuinfo.
    public static var cpu: String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            if let colon = line.firstIndex(of: ":") { return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
        }
        return "unknown"
    }

    /// Which kernel path runs: "avx2" or "portable".
    public static var kernels: String { qd_has_avx2() != 0 ? "avx2" : "portable" }

    public static func runtime(version: String, threads: Int) -> JSON {
        .object([("version", .string(version)), ("cpu", .string(cpu)), ("threads", .int(threads)),
                 ("blas", .string(BLAS.configuration)), ("kernels", .string(kernels))])
    }
}
