import Foundation

/// One prompt of a workload file: `{"id":"story-1","prompt":"…","chat":true,"max_tokens":512}`.
public struct WorkloadPrompt: Sendable, Equatable {
    public var id: String
    public var prompt: String
    /// Apply the model's chat template (the prompt becomes a user turn).
    public var chat: Bool
    /// Continuation length for this prompt; nil = the run's default (`-n`).
    public var maxTokens: Int?

    public init(id: String, prompt: String, chat: Bool = false, maxTokens: Int? = nil) {
        self.id = id
        self.prompt = prompt
        self.chat = chat
        self.maxTokens = maxTokens
    }
}

/// A workload: the prompts of a JSONL file (one object per line, blank lines ignored) and the
/// file's SHA-256, which every report states.
public struct Workload: Sendable {
    public var file: String
    public var sha256: String
    public var prompts: [WorkloadPrompt]

    /// Largest workload file read (a prompt file is text written by people, not a dataset dump).
    public static let maxFileBytes = 64 << 20
    /// Longest continuation a prompt may ask for.
    public static let maxTokensLimit = 1 << 16

    public init(file: String, sha256: String, prompts: [WorkloadPrompt]) {
        self.file = file
        self.sha256 = sha256
        self.prompts = prompts
    }

    /// Reads a JSONL workload; every problem is a one-line error naming the file and line.
    public static func load(path: String) throws -> Workload {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw QuantDriftError.invalidInput("\(path): no such file")
        }
        guard !isDir.boolValue else { throw QuantDriftError.invalidInput("\(path): is a directory, expected a JSONL prompts file") }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        if let size = attributes?[.size] as? Int, size > maxFileBytes {
            throw QuantDriftError.invalidInput("\(path): \(size) bytes is too large for a prompts file (limit \(maxFileBytes))")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw QuantDriftError.invalidInput("\(path): cannot read")
        }
        return try parse(data, file: path)
    }

    public static func parse(_ data: Data, file: String) throws -> Workload {
        guard data.count <= maxFileBytes else {
            throw QuantDriftError.invalidInput("\(file): \(data.count) bytes is too large for a prompts file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw QuantDriftError.invalidInput("\(file): not valid UTF-8")
        }
        var prompts: [WorkloadPrompt] = []
        var seen = Set<String>()
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty { continue }
            let place = "\(file):\(lineNumber)"
            let node = try Array(line.utf8).withUnsafeBytes { try JSONNode.parse($0, file: place, what: "line") }
            let fields = try node.object()
            for key in fields.keys where !["id", "prompt", "chat", "max_tokens"].contains(key) {
                throw QuantDriftError.invalidInput("\(place): unknown key '\(key)'; known: id, prompt, chat, max_tokens")
            }
            let id = try node["id"].string()
            guard !id.isEmpty, id.count <= 200 else { throw QuantDriftError.invalidInput("\(place): id must be 1 to 200 characters") }
            guard seen.insert(id).inserted else { throw QuantDriftError.invalidInput("\(place): duplicate id '\(id)'") }
            let prompt = try node["prompt"].string()
            guard !prompt.isEmpty else { throw QuantDriftError.invalidInput("\(place): prompt '\(id)' is empty") }
            let chat = try node["chat"].optional?.bool() ?? false
            var maxTokens: Int?
            if let m = try node["max_tokens"].optional {
                let n = try m.int()
                guard (1...maxTokensLimit).contains(n) else {
                    throw QuantDriftError.invalidInput("\(place): max_tokens must be in 1...\(maxTokensLimit), got \(n)")
                }
                maxTokens = n
            }
            prompts.append(WorkloadPrompt(id: id, prompt: prompt, chat: chat, maxTokens: maxTokens))
        }
        guard !prompts.isEmpty else { throw QuantDriftError.invalidInput("\(file): no prompts (expected one JSON object per line)") }
        return Workload(file: file, sha256: SHA256.hex(data), prompts: prompts)
    }
}
