// PLACEHOLDER: the tokenizer is being written; this file keeps the public API compiling.

/// Text ⇄ token ids, exactly as llama.cpp tokenizes.
public final class Tokenizer: @unchecked Sendable {
    public let spec: TokenizerSpec

    public init(spec: TokenizerSpec) throws {
        self.spec = spec
    }

    public var vocabSize: Int { spec.tokens.count }

    /// Token ids of `text` (no BOS added). With `parseSpecial`, control tokens written in the text
    /// (e.g. `<|im_start|>`) become their ids; without, they are tokenized as plain text.
    public func encode(_ text: String, parseSpecial: Bool = false) -> [Int] {
        fatalError("tokenizer not implemented yet")
    }

    /// The bytes a token stands for when decoded (control tokens: their text).
    public func bytes(of id: Int) -> [UInt8] { Array(spec.tokens[id].utf8) }

    /// Decoded text of a sequence of ids.
    public func decode(_ ids: [Int]) -> String {
        String(decoding: ids.flatMap { bytes(of: $0) }, as: UTF8.self)
    }

    /// True for tokens that end a generation (EOS, EOT, `<|im_end|>`, `<|endoftext|>`).
    public func isEndOfGeneration(_ id: Int) -> Bool { id == spec.eosID || id == spec.eotID }
}

extension Tokenizer {
    public func chatPrompt(user: String, system: String? = nil) -> String { fatalError("placeholder") }
}

public struct StreamingDecoder {
    public init(tokenizer: Tokenizer) { fatalError("placeholder") }
    public mutating func append(_ id: Int) -> String { fatalError("placeholder") }
    public mutating func finish() -> String { fatalError("placeholder") }
}
