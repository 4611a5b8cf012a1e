/// Everything a tokenizer is built from, whichever file it came from (GGUF metadata or an HF
/// `tokenizer.json`).
public struct TokenizerSpec: Sendable {
    public enum Kind: String, Sendable {
        /// GPT-2 style byte-level BPE (GGUF `tokenizer.ggml.model = gpt2`).
        case byteLevelBPE = "gpt2"
        /// SentencePiece-style BPE with scores and byte fallback (GGUF `llama`).
        case sentencePiece = "llama"
    }

    /// GGUF token types.
    public enum TokenType: Int, Sendable {
        case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public var kind: Kind
    /// Pre-tokenizer name as in `tokenizer.ggml.pre` (gpt2, llama-bpe, llama3, smollm, qwen2, default).
    public var pre: String
    public var tokens: [String]
    public var tokenTypes: [TokenType]
    /// SentencePiece scores (empty for byte-level BPE).
    public var scores: [Float]
    /// BPE merges, "left right", highest priority first (empty for SentencePiece).
    public var merges: [String]
    public var bosID: Int?
    public var eosID: Int?
    /// End-of-turn token (e.g. `<|im_end|>`), when the file names one.
    public var eotID: Int?
    public var unknownID: Int?
    public var addBOS: Bool
    public var addSpacePrefix: Bool
    public var chatTemplate: String?

    public init(kind: Kind, pre: String, tokens: [String], tokenTypes: [TokenType], scores: [Float], merges: [String],
                bosID: Int?, eosID: Int?, eotID: Int?, unknownID: Int?, addBOS: Bool, addSpacePrefix: Bool,
                chatTemplate: String?) {
        self.kind = kind; self.pre = pre; self.tokens = tokens; self.tokenTypes = tokenTypes; self.scores = scores
        self.merges = merges; self.bosID = bosID; self.eosID = eosID; self.eotID = eotID; self.unknownID = unknownID
        self.addBOS = addBOS; self.addSpacePrefix = addSpacePrefix; self.chatTemplate = chatTemplate
    }
}
