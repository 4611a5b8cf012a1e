import Foundation

/// Reads an HF `tokenizer.json` (with `tokenizer_config.json`, `chat_template.jinja` and the
/// model's `config.json` for special tokens) into a `TokenizerSpec`, the way llama.cpp's
/// converter would fill the GGUF tokenizer metadata. Byte-level BPE, and SentencePiece-style BPE
/// with byte fallback (Gemma, Llama 2) read as llama.cpp's SentencePiece merger.
enum HFTokenizerLoader {
    /// Token ids must stay below this (the vocabulary limit of `ModelConfig.validate`).
    static let maxTokenID = 1 << 22

    /// Split regexes of the pre-tokenizers llama.cpp names.
    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The tokenizer of the HF folder `directory`. Token ids must be below `vocabSize` (the
    /// model's vocabulary) when given, so a lying file cannot make a huge token table.
    static func spec(directory: String, config: JSONNode?, vocabSize: Int? = nil) throws -> TokenizerSpec {
        let dir = URL(fileURLWithPath: directory)
        let path = dir.appendingPathComponent("tokenizer.json").path
        guard FileManager.default.fileExists(atPath: path) else {
            throw QuantDriftError.invalidInput("\(directory): no tokenizer.json")
        }
        let mapped = try MappedFile(path: path)
        let j = try JSONNode.read(mapped, path: path)
        let model = try j["model"]
        let type = try model["type"].optional?.string() ?? "BPE"
        guard type == "BPE" else {
            throw QuantDriftError.unsupported("\(path): tokenizer model type '\(type)' is not supported (BPE is)")
        }
        let pre = try preTokenizer(j["pre_tokenizer"])
        let byteLevelDecoder = try isByteLevel(j["decoder"])
        // SentencePiece-style BPE (Gemma, Llama 2): spaces become U+2581 in the normalizer or a
        // Metaspace pre-tokenizer, unknown bytes fall back to <0xXX> tokens.
        /// For SentencePiece-style BPE: whether "▁" goes before the text (nil: byte-level BPE).
        var sentencePieceSpacePrefix: Bool?
        if !(pre.byteLevel || byteLevelDecoder) {
            guard try model["byte_fallback"].optional?.bool() == true else {
                throw QuantDriftError.unsupported("\(path): only byte-level BPE tokenizers are supported, and SentencePiece-style BPE with byte_fallback (this one has neither)")
            }
            sentencePieceSpacePrefix = try sentencePieceSpaces(normalizer: j["normalizer"], pre: j["pre_tokenizer"], path: path)
        }

        // Token strings by id: the BPE vocabulary, then added tokens on top (as HF's get_vocab does).
        var byID: [Int: String] = [:]
        var types: [Int: TokenizerSpec.TokenType] = [:]
        let limit = min(vocabSize ?? maxTokenID, maxTokenID)
        func checkedID(_ node: JSONNode) throws -> Int {
            let id = try node.int()
            guard id >= 0, id < limit else {
                throw node.error("is token id \(id), out of range 0..<\(limit)\(vocabSize != nil ? " (the model's vocab_size)" : "")")
            }
            return id
        }
        // The vocabulary is read with its keys' exact bytes: a Swift dictionary would merge
        // canonically-equivalent tokens (Gemma has such pairs).
        let vocabNode = try model["vocab"]
        guard !vocabNode.isNull else { throw vocabNode.error("is missing") }
        guard vocabNode.value is [String: Any] else { throw vocabNode.error("is not an object") }
        let vocab = try withExtendedLifetime(mapped) {
            try JSONObjectEntries.integers(in: mapped.bytes, at: ["model", "vocab"], file: path)
        }
        for (key, value) in vocab {
            let token = String(decoding: key, as: UTF8.self)
            guard value >= 0, value < limit else {
                throw QuantDriftError.invalidInput("\(path): model.vocab.\(token) is token id \(value), out of range 0..<\(limit)\(vocabSize != nil ? " (the model's vocab_size)" : "")")
            }
            let id = value
            if let other = byID[id] {
                throw QuantDriftError.invalidInput("\(path): token id \(id) is both '\(other)' and '\(token)' in model.vocab")
            }
            byID[id] = token
            types[id] = sentencePieceSpacePrefix != nil && Tokenizer.byteValue(ofByteToken: token) != nil ? .byte : .normal
        }
        for node in try j["added_tokens"].optional?.array() ?? [] {
            let id = try checkedID(node["id"])
            byID[id] = try node["content"].string()
            types[id] = try node["special"].optional?.bool() == true ? .control : .userDefined
        }
        let count = (byID.keys.max() ?? -1) + 1
        guard count > 0 else { throw QuantDriftError.invalidInput("\(path): model.vocab is empty") }
        var tokens: [String] = []
        var tokenTypes: [TokenizerSpec.TokenType] = []
        tokens.reserveCapacity(count)
        tokenTypes.reserveCapacity(count)
        for id in 0..<count {
            tokens.append(byID[id] ?? "[PAD\(id)]")
            tokenTypes.append(types[id] ?? .unused)
        }

        var merges: [(left: String, right: String)] = []
        for node in try model["merges"].optional?.array() ?? [] {
            if let s = node.value as? String {
                guard let space = s.utf8.firstIndex(of: 0x20) else { throw node.error("is not a merge (a \"left right\" string or a pair)") }
                merges.append((String(s[..<space]), String(s[s.utf8.index(after: space)...])))
            } else {
                let pair = try node.array()
                guard pair.count == 2 else { throw node.error("is not a merge (a \"left right\" string or a pair)") }
                merges.append((try pair[0].string(), try pair[1].string()))
            }
        }

        // Token ids by their exact bytes (not by String, which compares canonically).
        var idOfBytes: [[UInt8]: Int] = [:]
        for (id, t) in tokens.enumerated() where idOfBytes[Array(t.utf8)] == nil { idOfBytes[Array(t.utf8)] = id }
        func idOf(_ t: String) -> Int? { idOfBytes[Array(t.utf8)] }

        // Special tokens: tokenizer_config.json names them, config.json gives ids.
        let tcPath = dir.appendingPathComponent("tokenizer_config.json").path
        let tc = FileManager.default.fileExists(atPath: tcPath) ? try JSONNode.read(path: tcPath) : nil
        func special(_ key: String) throws -> Int? {
            if let node = try tc?[key + "_token"].optional {
                // A name missing from the vocabulary falls through to config.json, as in llama.cpp.
                let content = try (node.value is String ? node : node["content"]).string()
                if let id = idOf(content) { return id }
            }
            if let node = try config?[key + "_token_id"].optional {
                let id = try (node.value is [Any] ? node.array().first ?? node : node).int()
                guard id >= 0, id < count else { throw node.error("is token id \(id), out of range 0..<\(count)") }
                return id
            }
            return nil
        }
        var bos = try special("bos")
        let eos = try special("eos")
        var unknown = try special("unk")
        if unknown == nil, let u = try model["unk_token"].optional?.string() { unknown = idOf(u) }

        // add_bos_token, else whether the post-processor puts the BOS token first.
        var addBOS = try tc?["add_bos_token"].optional?.bool()
        if addBOS == nil, let first = try templateFirstSpecial(j["post_processor"]) {
            if bos == nil { bos = idOf(first) }
            addBOS = bos != nil && idOf(first) == bos
        }

        var chatTemplate: String?
        if let t = try tc?["chat_template"].optional {
            if let s = t.value as? String {
                chatTemplate = s
            } else {
                let named = try t.array()
                let pick = try named.first { try $0["name"].string() == "default" } ?? named.first
                chatTemplate = try pick?["template"].string()
            }
        }
        let jinja = dir.appendingPathComponent("chat_template.jinja").path
        if chatTemplate == nil, FileManager.default.fileExists(atPath: jinja) {
            let f = try MappedFile(path: jinja)
            chatTemplate = String(decoding: f.bytes, as: UTF8.self)
        }

        if let addSpacePrefix = sentencePieceSpacePrefix {
            // llama.cpp's SentencePiece merger picks the pair whose merged token scores highest;
            // HF's BPE applies the lowest-ranked merge first. Scoring a token −(rank of the first
            // merge that makes it) makes the two agree; tokens no merge makes are never preferred.
            // (llama.cpp would still merge a pair no merge lists when the joined token exists; HF
            // would not. A converter's merges list every such pair, so the two do not differ there.)
            let never = -Float(merges.count + 1)
            var scores = [Float](repeating: never, count: count)
            for (rank, m) in merges.enumerated() {
                if let id = idOfBytes[Array(m.left.utf8) + Array(m.right.utf8)], scores[id] == never { scores[id] = -Float(rank) }
            }
            return TokenizerSpec(
                kind: .sentencePiece, pre: "default", tokens: tokens, tokenTypes: tokenTypes, scores: scores, merges: [],
                bosID: bos, eosID: eos, eotID: nil, unknownID: unknown, addBOS: addBOS ?? false,
                addSpacePrefix: addSpacePrefix, chatTemplate: chatTemplate)
        }
        return TokenizerSpec(
            kind: .byteLevelBPE,
            pre: pre.name,
            tokens: tokens,
            tokenTypes: tokenTypes,
            scores: [],
            merges: merges.map { $0.left + " " + $0.right },
            bosID: bos,
            eosID: eos,
            eotID: nil,
            unknownID: unknown,
            addBOS: addBOS ?? false,
            addSpacePrefix: pre.addPrefixSpace,
            chatTemplate: chatTemplate)
    }

    // MARK: - Pre-tokenizer

    /// The llama.cpp pre-tokenizer name a `pre_tokenizer` amounts to, and whether it is byte-level.
    static func preTokenizer(_ node: JSONNode) throws -> (name: String, byteLevel: Bool, addPrefixSpace: Bool) {
        var steps: [JSONNode] = []
        func collect(_ n: JSONNode) throws {
            guard n.optional != nil else { return }
            if try n["type"].string() == "Sequence" {
                for child in try n["pretokenizers"].array() { try collect(child) }
            } else {
                steps.append(n)
            }
        }
        try collect(node)
        var byteLevel = false, byteLevelRegex = false, addPrefixSpace = false, digits = false
        var regexes: [String] = []
        for s in steps {
            switch try s["type"].string() {
            case "ByteLevel":
                byteLevel = true
                byteLevelRegex = try s["use_regex"].optional?.bool() ?? true
                addPrefixSpace = try s["add_prefix_space"].optional?.bool() ?? false
            case "Digits":
                digits = try s["individual_digits"].optional?.bool() ?? false
            case "Split":
                if let r = try s["pattern"]["Regex"].optional?.string() { regexes.append(r) }
            default:
                break
            }
        }
        let name: String
        if regexes.contains(llama3Regex) || regexes.contains(where: { $0.contains(#"\p{N}{1,3}"#) }) {
            name = "llama-bpe"
        } else if regexes.contains(qwen2Regex)
                    || regexes.contains(where: { $0.contains(#"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"#) }) {
            name = "qwen2"
        } else if digits && byteLevelRegex && regexes.isEmpty {
            name = "smollm"
        } else {
            name = "gpt2"
        }
        return (name, byteLevel, addPrefixSpace)
    }

    /// Whether a SentencePiece-style tokenizer puts U+2581 before the text: from a `Replace(" " →
    /// "▁")` normalizer (with `Prepend("▁")` for the prefix) or a `Metaspace` pre-tokenizer. Any
    /// other normalizer or pre-tokenizer step is refused, naming it.
    static func sentencePieceSpaces(normalizer: JSONNode, pre: JSONNode, path: String) throws -> Bool {
        func steps(_ n: JSONNode, _ list: String) throws -> [JSONNode] {
            guard n.optional != nil else { return [] }
            return try n["type"].string() == "Sequence" ? try n[list].array().flatMap { try steps($0, list) } : [n]
        }
        var replaced = false, prefix = false
        for n in try steps(normalizer, "normalizers") {
            switch try n["type"].string() {
            case "Replace" where try n["pattern"]["String"].optional?.string() == " " && (try n["content"].string()) == "\u{2581}":
                replaced = true
            case "Prepend" where try n["prepend"].string() == "\u{2581}":
                prefix = true
            case let other:
                throw QuantDriftError.unsupported("\(path): normalizer step \(other) is not supported for SentencePiece-style BPE")
            }
        }
        for n in try steps(pre, "pretokenizers") {
            switch try n["type"].string() {
            case "Metaspace":
                replaced = true
                let scheme = try n["prepend_scheme"].optional?.string() ?? ((try n["add_prefix_space"].optional?.bool() ?? true) ? "always" : "never")
                prefix = prefix || scheme != "never"
            case let other:
                throw QuantDriftError.unsupported("\(path): pre_tokenizer \(other) is not supported for SentencePiece-style BPE")
            }
        }
        guard replaced else {
            throw QuantDriftError.unsupported("\(path): SentencePiece-style BPE without a Replace(\" \" → \"▁\") normalizer or Metaspace pre-tokenizer is not supported")
        }
        return prefix
    }

    static func isByteLevel(_ node: JSONNode) throws -> Bool {
        guard node.optional != nil else { return false }
        switch try node["type"].string() {
        case "ByteLevel": return true
        case "Sequence": return try node["decoders"].array().contains { try isByteLevel($0) }
        default: return false
        }
    }

    /// The special token a `TemplateProcessing` post-processor puts before a single sequence.
    static func templateFirstSpecial(_ node: JSONNode) throws -> String? {
        guard node.optional != nil else { return nil }
        switch try node["type"].string() {
        case "TemplateProcessing":
            guard let first = try node["single"].optional?.array().first else { return nil }
            return try first["SpecialToken"].optional?["id"].string()
        case "Sequence":
            for p in try node["processors"].array() {
                if let s = try templateFirstSpecial(p) { return s }
            }
            return nil
        default:
            return nil
        }
    }
}
