import Foundation

/// A thresholds file for `quantdrift check`, keyed by scheme name:
/// `{"w8": {"max_mean_kld": 0.01, "max_p99_kld": 0.1, "min_top1": 0.95,
///          "min_median_first_divergence": 64, "max_kld_at": {"512": 0.02}}}`.
/// Anything else (unknown key, unknown scheme, wrong type, negative limit) is a one-line
/// `invalidInput` naming the file and the key.
struct Thresholds {
    struct Limits {
        var scheme: String
        var maxMeanKLD: Double?
        var maxP99KLD: Double?
        var minTop1: Double?
        var minMedianFirstDivergence: Double?
        /// (position, limit) in ascending position.
        var maxKLDAt: [(Int, Double)] = []
    }

    static let keys = ["max_mean_kld", "max_p99_kld", "min_top1", "min_median_first_divergence", "max_kld_at"]

    /// Limits in the report's scheme order.
    let limits: [Limits]

    static func read(path: String, report: ReportDocument) throws -> Thresholds {
        guard FileManager.default.fileExists(atPath: path) else { throw QuantDriftError.invalidInput("\(path): no such file") }
        return try Thresholds(try JSONNode.read(path: path), report: report)
    }

    init(_ root: JSONNode, report: ReportDocument) throws {
        let file = root.file
        guard root.value is [String: Any] else {
            throw QuantDriftError.invalidInput("\(file): expected an object keyed by scheme name, like {\"w8\": {\"max_mean_kld\": 0.01}}")
        }
        let schemes = try root.object()
        guard !schemes.isEmpty else {
            throw QuantDriftError.invalidInput("\(file): no thresholds (expected {\"scheme\": {\"max_mean_kld\": …}, …})")
        }
        let known = report.schemes.map(\.name)
        // Report unknown schemes in sorted order so the error is deterministic.
        for name in schemes.keys.sorted() where !known.contains(name) {
            throw QuantDriftError.invalidInput("\(file): scheme '\(name)' is not in \(report.file) (schemes: \(known.joined(separator: ", ")))")
        }
        var out: [Limits] = []
        for name in known {
            guard let node = schemes[name] else { continue }
            guard node.value is [String: Any] else { throw node.error("is not an object of limits (keys: \(Self.keys.joined(separator: ", ")))") }
            let entries = try node.object()
            guard !entries.isEmpty else { throw node.error("has no limits (keys: \(Self.keys.joined(separator: ", ")))") }
            for key in entries.keys.sorted() where !Self.keys.contains(key) {
                throw QuantDriftError.invalidInput("\(file): \(name).\(key): unknown key (expected one of \(Self.keys.joined(separator: ", ")))")
            }
            var l = Limits(scheme: name)
            l.maxMeanKLD = try Self.limit(try node["max_mean_kld"])
            l.maxP99KLD = try Self.limit(try node["max_p99_kld"])
            l.minTop1 = try Self.limit(try node["min_top1"], atMost: 1)
            l.minMedianFirstDivergence = try Self.limit(try node["min_median_first_divergence"])
            if let at = try node["max_kld_at"].optional {
                guard at.value is [String: Any] else { throw at.error("is not an object like {\"512\": 0.02}") }
                let scheme = report.scheme(named: name)!
                let lastEnd = scheme.bins64.map(\.end).max()
                for (key, value) in try at.object().sorted(by: { $0.key < $1.key }) {
                    guard let p = Int(key), p >= 1, String(p) == key else {
                        throw value.error("is not a position (a whole number ≥ 1 as a string key, like \"512\")")
                    }
                    guard scheme.bins64.contains(where: { $0.start <= p && p <= $0.end }) else {
                        let range = lastEnd.map { "positions 1…\($0)" } ?? "no bins_64 curve"
                        throw value.error("is beyond the report's 64-token bins for \(name) (\(range))")
                    }
                    l.maxKLDAt.append((p, try Self.limit(value)!))
                }
                l.maxKLDAt.sort { $0.0 < $1.0 }
                guard !l.maxKLDAt.isEmpty else { throw at.error("is empty") }
            }
            out.append(l)
        }
        limits = out
    }

    /// A finite number ≥ 0 (and ≤ `atMost`), or nil when the key is absent.
    private static func limit(_ n: JSONNode, atMost: Double? = nil) throws -> Double? {
        guard n.value != nil else { return nil }
        guard !(n.value is NSNull) else { throw n.error("is null, expected a number") }
        if ReportDocument.isJSONBoolean(n.value) || !(n.value is NSNumber) { throw n.error("is not a number") }
        let v = try n.double()
        guard v.isFinite, v >= 0 else { throw n.error("must be a number ≥ 0, got \(ReportFormat.sig(v, 6))") }
        if let atMost, v > atMost { throw n.error("must be at most \(ReportFormat.sig(atMost)) (a share), got \(ReportFormat.sig(v, 6))") }
        return v
    }
}
