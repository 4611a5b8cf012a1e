import Foundation

/// A value of a parsed JSON document (`config.json`, `tokenizer.json`, a safetensors header), read
/// through checked accessors: a missing key or a wrong type becomes a one-line
/// `QuantDriftError.invalidInput` naming the file and the key path, never a crash.
struct JSONNode {
    /// What `JSONSerialization` produced (nil when the key is absent).
    let value: Any?
    /// The file the document came from.
    let file: String
    /// Where this value sits in the document, e.g. `model.vocab`.
    let keyPath: String

    /// Parses `bytes` as a JSON document read from `file`.
    static func parse(_ bytes: UnsafeRawBufferPointer, file: String, what: String = "file") throws -> JSONNode {
        let data = Data(bytes)
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            throw QuantDriftError.invalidInput("\(file): \(what) is not valid JSON (\(detail))")
        }
        return JSONNode(value: value, file: file, keyPath: "")
    }

    /// Reads and parses a whole JSON file.
    static func read(path: String) throws -> JSONNode {
        try read(try MappedFile(path: path), path: path)
    }

    /// Parses an already mapped JSON file (for a caller that also reads its bytes itself).
    static func read(_ mapped: MappedFile, path: String) throws -> JSONNode {
        guard mapped.bytes.count <= 1 << 30 else {
            throw QuantDriftError.invalidInput("\(path): \(mapped.bytes.count) bytes is too large for a JSON file")
        }
        // Keep the mapping alive while it is parsed (ARC may release it after the last use).
        return try withExtendedLifetime(mapped) { try parse(mapped.bytes, file: path) }
    }

    private var name: String { keyPath.isEmpty ? "top level" : keyPath }

    func error(_ problem: String) -> QuantDriftError {
        .invalidInput("\(file): \(name) \(problem)")
    }

    /// True when the key is absent or holds `null`.
    /// (Compares the dynamic type: `value is NSNull` would bridge a large Swift dictionary to an
    /// NSDictionary on every call, which made reading a 14 MB tokenizer.json take half a minute.)
    var isNull: Bool {
        guard let v = value else { return true }
        return ObjectIdentifier(type(of: v)) == ObjectIdentifier(NSNull.self)
    }

    /// The value under `key`; absent when this value is absent or null. Throws when this value is
    /// something other than an object.
    subscript(key: String) -> JSONNode {
        get throws {
            guard isNull || value is [String: Any] else { throw error("is not an object") }
            let child = (value as? [String: Any])?[key]
            return JSONNode(value: child, file: file, keyPath: keyPath.isEmpty ? key : keyPath + "." + key)
        }
    }

    func object() throws -> [String: JSONNode] {
        guard !isNull else { throw error("is missing") }
        guard let d = value as? [String: Any] else { throw error("is not an object") }
        var out: [String: JSONNode] = [:]
        out.reserveCapacity(d.count)
        for (k, v) in d {
            out[k] = JSONNode(value: v, file: file, keyPath: keyPath.isEmpty ? k : keyPath + "." + k)
        }
        return out
    }

    func array() throws -> [JSONNode] {
        guard !isNull else { throw error("is missing") }
        guard let a = value as? [Any] else { throw error("is not an array") }
        return a.enumerated().map { JSONNode(value: $1, file: file, keyPath: "\(keyPath)[\($0)]") }
    }

    func string() throws -> String {
        guard !isNull else { throw error("is missing") }
        guard let s = value as? String else { throw error("is not a string") }
        return s
    }

    func int() throws -> Int {
        guard !isNull else { throw error("is missing") }
        guard let i = value as? Int else { throw error("is not an integer") }
        return i
    }

    func double() throws -> Double {
        guard !isNull else { throw error("is missing") }
        guard let d = value as? Double else { throw error("is not a number") }
        return d
    }

    func bool() throws -> Bool {
        guard !isNull else { throw error("is missing") }
        guard let b = value as? Bool else { throw error("is not a boolean") }
        return b
    }

    /// The value, or nil when absent or null; a present value of the wrong type still throws.
    var optional: JSONNode? { isNull ? nil : self }
}
