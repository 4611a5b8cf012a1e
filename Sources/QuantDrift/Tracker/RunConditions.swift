import CKernels
import Foundation

/// The conditions every report states (DESIGN §5): model, workload, runtime.
public enum RunConditions {
    /// SHA-256 of a file, or of a folder's files in name order (an HF model folder).
    public static func sha256(path: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw QuantDriftError.invalidInput("\(path): no such file")
        }
        var files = [path]
        if isDir.boolValue {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            files = names.sorted().map { path + "/" + $0 }.filter { f in
                var d: ObjCBool = false
                return FileManager.default.fileExists(atPath: f, isDirectory: &d) && !d.boolValue
            }
        }
        var h = SHA256()
        for f in files {
            let mapped = try MappedFile(path: f)
            withExtendedLifetime(mapped) { h.update(mapped.bytes) }
        }
        return SHA256.hex(h.finalize())
    }

    public static func model(_ model: Model, sha256 known: String? = nil) throws -> JSON {
        .object([("name", .string(model.name)), ("architecture", .string(model.config.architecture.rawValue)),
                 ("sha256", .string(try known ?? sha256(path: model.path))),
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
                        ("stop_at_end_of_generation", .bool(options.stopAtEndOfGeneration))])
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

    /// Writes `data` to `url` through a temporary file in the same folder and a rename, so a
    /// reader never sees a half-written file and an interrupted write loses nothing already there.
    public static func writeAtomically(_ data: Data, to url: URL) throws {
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            if simulateFullDisk {
                // Half the bytes reach the disk, then the device is full: what ENOSPC looks like.
                try data.prefix(data.count / 2).write(to: tmp)
                throw NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC),
                              userInfo: [NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC))])
            }
            try data.write(to: tmp)
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw QuantDriftError.invalidInput("\(url.path): cannot write (\(Self.reason(error)))")
        }
        guard rename(tmp.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: tmp)
            throw QuantDriftError.invalidInput("\(url.path): cannot write (\(reason))")
        }
    }

    /// `QUANTDRIFT_FAIL_WRITES=1` makes every atomic write fail as on a full disk (for the tests
    /// that check a failed write leaves the previous file intact).
    static var simulateFullDisk: Bool { ProcessInfo.processInfo.environment["QUANTDRIFT_FAIL_WRITES"] == "1" }

    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(u.code)))
        }
        return ns.localizedDescription
    }
}
