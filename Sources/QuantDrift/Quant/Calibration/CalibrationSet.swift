import Foundation

/// Calibration data: token sequences cut from the text files of a folder (e.g. Prompts/calibration),
/// with the hash that reports and calibration artifacts state.
public struct CalibrationSet: Sendable {
    /// The folder or file it came from.
    public var source: String
    /// SHA-256 over the files' names and bytes, in name order.
    public var sha256: String
    /// Token sequences of at most `sequenceLength` tokens each.
    public var sequences: [[Int]]

    public var tokenCount: Int { sequences.reduce(0) { $0 + $1.count } }

    public init(source: String, sha256: String, sequences: [[Int]]) {
        self.source = source
        self.sha256 = sha256
        self.sequences = sequences
    }

    /// Reads every `*.txt` file of `path` (a folder, in name order) or the single file `path`,
    /// tokenizes each, and cuts it into sequences of `sequenceLength` tokens (the last may be shorter).
    public static func load(path: String, tokenizer: Tokenizer, sequenceLength: Int = 512) throws -> CalibrationSet {
        guard sequenceLength >= 2 else { throw QuantDriftError.invalidInput("calibration sequence length must be ≥ 2") }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw QuantDriftError.invalidInput("\(path): calibration data not found")
        }
        let files: [String]
        if isDir.boolValue {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            files = names.filter { $0.hasSuffix(".txt") }.sorted().map { (path as NSString).appendingPathComponent($0) }
            guard !files.isEmpty else { throw QuantDriftError.invalidInput("\(path): no .txt calibration files") }
        } else {
            files = [path]
        }
        var hasher = SHA256()
        var sequences: [[Int]] = []
        for f in files {
            guard let data = FileManager.default.contents(atPath: f) else {
                throw QuantDriftError.invalidInput("\(f): cannot read")
            }
            guard let text = String(data: data, encoding: .utf8) else { throw QuantDriftError.invalidInput("\(f): not valid UTF-8") }
            hasher.update(Array((f as NSString).lastPathComponent.utf8) + [0])
            hasher.update(data)
            let ids = tokenizer.encode(text)
            var i = 0
            while i < ids.count {
                let chunk = Array(ids[i..<min(ids.count, i + sequenceLength)])
                if chunk.count >= 2 { sequences.append(chunk) }
                i += sequenceLength
            }
        }
        guard !sequences.isEmpty else { throw QuantDriftError.invalidInput("\(path): calibration text has no tokens") }
        let digest = hasher.finalizeHex()
        return CalibrationSet(source: path, sha256: digest, sequences: sequences)
    }
}
