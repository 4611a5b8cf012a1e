import Foundation

/// Finished (candidate, prompt) results kept on disk while a run goes, one small file each,
/// written atomically: an interrupted run resumes where it stopped and, every result being
/// deterministic, ends with the same report as an uninterrupted one.
public final class TrackerCheckpoint: @unchecked Sendable {
    public let folder: URL

    /// - Parameter key: identifies everything the results depend on besides the candidate
    ///   (model, workload, options, version); a different key starts from nothing.
    public init(folder: URL, key: String, resume: Bool) throws {
        self.folder = folder.appendingPathComponent(String(key.prefix(16)))
        let fm = FileManager.default
        if !resume { try? fm.removeItem(at: folder) }
        do { try fm.createDirectory(at: self.folder, withIntermediateDirectories: true) }
        catch { throw QuantDriftError.invalidInput("\(folder.path): cannot create the checkpoint folder") }
    }

    /// The key of a run: everything its results depend on besides the candidate (not the worker
    /// count): tool version, model conditions, workload, options, calibration data and where the
    /// reference comes from (a trace file, or "live").
    public static func key(version: String, model: JSON, workload: Workload, options: TrackerOptions,
                           calibration: CalibrationSet?, referenceTrace: String?) -> String {
        let parts = [version, model.serialized(), workload.sha256, options.mode.rawValue, "\(options.sampling)",
                     "\(options.forcedMaxTokens ?? -1)", "\(!options.stopAtEndOfGeneration)", "\(options.chunk)",
                     calibration?.sha256 ?? "-", referenceTrace ?? "live"]
        return SHA256.hex(Array(parts.joined(separator: "\n").utf8))
    }

    /// A whole result's file, or with `part` ("free", "teacher") the file of one part of a
    /// candidate that runs as two jobs, kept until the other part finishes (not counted in `count`).
    func url(_ candidate: TrackerCandidate, prompt: Int, part: String? = nil) -> URL {
        var h = SHA256()
        h.update(Array((candidate.name + "\n" + candidate.scheme.spec).utf8))
        return folder.appendingPathComponent(String(h.finalizeHex().prefix(16)) + "-\(prompt)" + (part.map { ".\($0).half" } ?? ".bin"))
    }

    /// A kept result, or nil (absent, or unreadable: then it is simply computed again).
    public func load(_ candidate: TrackerCandidate, prompt: Int, part: String? = nil) -> PromptResult? {
        guard let data = try? Data(contentsOf: url(candidate, prompt: prompt, part: part)) else { return nil }
        return try? PromptResultCodec.decode(data)
    }

    public func save(_ r: PromptResult, _ candidate: TrackerCandidate, prompt: Int, part: String? = nil) throws {
        try AtomicFile.write(PromptResultCodec.encode(r), to: url(candidate, prompt: prompt, part: part))
    }

    /// How many results are kept.
    public var count: Int { ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasSuffix(".bin") }.count }

    /// Forgets everything once the report is written.
    public func remove() { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
}

/// A compact binary form of PromptResult: doubles as exact bit patterns, every length checked.
enum PromptResultCodec {
    static let magic: [UInt8] = Array("QDPR0004".utf8)

    static func encode(_ r: PromptResult) -> Data {
        var w = BinaryWriter()
        w.bytes(magic)
        w.int(r.promptIndex)
        w.int(r.positions.count)
        for d in r.positions {
            for x in [d.kld, d.reverseKLD, d.tv, d.dp, d.nllReference, d.nllCandidate, d.entropyReference, d.entropyCandidate,
                      d.referenceMargin, d.marginChange] { w.double(x) }
            // Flags: same top-1, reference top-1 in the candidate's top 5, and the reverse.
            w.int((d.sameTop ? 1 : 0) | (d.referenceTopInCandidateTop5 ? 2 : 0) | (d.candidateTopInReferenceTop5 ? 4 : 0))
        }
        w.doubles(r.samplingTV)
        w.int(r.freeTokens == nil ? -1 : r.freeTokens!.count)
        for t in r.freeTokens ?? [] { w.int(t) }
        w.int(r.firstDivergence ?? -1)
        w.int(r.firstDivergenceMargin == nil ? 0 : 1)
        w.double(r.firstDivergenceMargin ?? 0)
        w.int(r.reconverged.map { $0 ? 1 : 0 } ?? -1)
        w.int(r.candidateTextNLL == nil ? 0 : 1)
        w.double(r.candidateTextNLL ?? 0)
        w.int(r.kvErrorByAge == nil ? -1 : r.kvErrorByAge!.count)
        for b in r.kvErrorByAge ?? [] { w.double(b.sum); w.int(b.count) }
        w.int(r.kvErrorByPosition == nil ? -1 : r.kvErrorByPosition!.count)
        for b in r.kvErrorByPosition ?? [] { w.double(b.sum); w.int(b.count) }
        w.int(r.clipping == nil ? -1 : r.clipping!.count)
        for b in r.clipping ?? [] {
            w.int(b.values); w.int(b.clipped); w.int(b.rowSites); w.double(b.ratioSum); w.double(b.maxRatio)
        }
        w.double(r.teacherSeconds)
        w.double(r.freeSeconds)
        return w.data
    }

    static func decode(_ data: Data) throws -> PromptResult {
        try data.withUnsafeBytes { try decode(ByteReader(bytes: $0, source: "result file")) }
    }

    static func decode(_ reader: ByteReader) throws -> PromptResult {
        var r = reader
        guard Array(try r.take(magic.count)) == magic else { throw QuantDriftError.invalidInput("not a result file") }
        var out = PromptResult(promptIndex: try r.int())
        let n = try r.count(perItem: 11 * 8)
        out.positions = try (0..<n).map { _ in
            let x = try (0..<10).map { _ in try r.double() }
            let flags = try r.int()
            return TokenDivergence(kld: x[0], reverseKLD: x[1], tv: x[2], sameTop: flags & 1 != 0, dp: x[3],
                                   nllReference: x[4], nllCandidate: x[5], entropyReference: x[6], entropyCandidate: x[7],
                                   referenceTopInCandidateTop5: flags & 2 != 0, candidateTopInReferenceTop5: flags & 4 != 0,
                                   referenceMargin: x[8], marginChange: x[9])
        }
        out.samplingTV = try r.doubles()
        let f = try r.int()
        if f >= 0 {
            guard f <= r.remaining / 8 else { throw QuantDriftError.invalidInput("bad count") }
            out.freeTokens = try (0..<f).map { _ in try r.int() }
        }
        let first = try r.int()
        out.firstDivergence = first >= 0 ? first : nil
        let hasMargin = try r.int()
        let margin = try r.double()
        out.firstDivergenceMargin = hasMargin == 1 ? margin : nil
        let re = try r.int()
        out.reconverged = re < 0 ? nil : re == 1
        let hasNLL = try r.int()
        let nll = try r.double()
        out.candidateTextNLL = hasNLL == 1 ? nll : nil
        let k = try r.int()
        if k >= 0 {
            guard k <= r.remaining / 16 else { throw QuantDriftError.invalidInput("bad count") }
            out.kvErrorByAge = try (0..<k).map { _ in (try r.double(), try r.int()) }
        }
        let kp = try r.int()
        if kp >= 0 {
            guard kp <= r.remaining / 16 else { throw QuantDriftError.invalidInput("bad count") }
            out.kvErrorByPosition = try (0..<kp).map { _ in (try r.double(), try r.int()) }
        }
        let cb = try r.int()
        if cb >= 0 {
            guard cb <= r.remaining / 40 else { throw QuantDriftError.invalidInput("bad count") }
            out.clipping = try (0..<cb).map { _ in
                var b = ClippingBin()
                b.values = try r.int(); b.clipped = try r.int(); b.rowSites = try r.int()
                b.ratioSum = try r.double(); b.maxRatio = try r.double()
                return b
            }
        }
        out.teacherSeconds = try r.double()
        out.freeSeconds = try r.double()
        guard r.remaining == 0 else { throw QuantDriftError.invalidInput("trailing bytes") }
        return out
    }
}

struct BinaryWriter {
    var data = Data()
    mutating func bytes(_ b: [UInt8]) { data.append(contentsOf: b) }
    mutating func int(_ v: Int) { withUnsafeBytes(of: Int64(v).littleEndian) { data.append(contentsOf: $0) } }
    mutating func double(_ v: Double) { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
    mutating func doubles(_ v: [Double]) {
        int(v.count)
        for x in v { double(x) }
    }
}

/// The checkpoint's values over the shared reader: Int64 and Double bit patterns, counted arrays.
extension ByteReader {
    mutating func int() throws -> Int { Int(Int64(bitPattern: try read())) }
    mutating func double() throws -> Double { Double(bitPattern: try read()) }
    /// A count of items of `perItem` bytes that the rest of the data can hold.
    mutating func count(perItem: Int) throws -> Int {
        let n = try int()
        guard n >= 0, n <= remaining / perItem else { throw QuantDriftError.invalidInput("\(source): bad count") }
        return n
    }
    mutating func doubles() throws -> [Double] {
        let n = try count(perItem: 8)
        return try (0..<n).map { _ in try double() }
    }
}
