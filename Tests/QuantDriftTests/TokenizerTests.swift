import Foundation
import Testing
@testable import QuantDrift

// MARK: - Shared fixtures

/// The default model's tokenizer, loaded once for all tests.
enum DefaultTokenizer {
    private static let loaded = Result<Tokenizer, any Error> {
        let g = try GGUFFile(path: try defaultModelPath())
        return try Tokenizer(spec: try GGUFModelLoader.tokenizerSpec(g))
    }
    static func get() throws -> Tokenizer { try loaded.get() }
}

struct TokenizeCase: Decodable {
    let name: String
    let text: String
    let parse_special: Bool
    let ids: [Int]
}

func loadTokenizeCases() throws -> [TokenizeCase] {
    try JSONDecoder().decode([TokenizeCase].self, from: Data(contentsOf: fixtureURL("tokenize.json")))
}

/// Strings that are hard on pre-tokenizers, byte fallback and decoding.
let trickyTexts: [String] = [
    "emoji 👩‍👩‍👧‍👦 family, flags 🇫🇷🇯🇵, skin 👍🏿, keycap 1️⃣",
    "中文，日本語の文章、한국어 문장。",
    "combining: e\u{301} a\u{308}\u{332} Z\u{35C}\u{361}a",
    "replacement-looking \u{FFFD} bidi \u{202E}abc\u{202C} zero-width\u{200B}joiner\u{200D}",
    "nbsp\u{00A0}thin\u{2009}ideographic\u{3000}space, NEL\u{0085}line sep\u{2028}end",
    "tabs\t\tand\r\n\r\nCRLF   \n  trailing   ",
    "digits ٠١٢٣ ① Ⅻ ¾ 1.5e-3 0x1F",
    "apostrophes: it's IT'S we'VE 'quoted' ’curly’",
    "<|im_start|> <|im_end|> <|endoftext|> <reponame> not parsed",
    "\u{10FFFF}\u{E000} private use, astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    "",
    " ",
    "\n",
]

// MARK: - Default model (SmolLM2, byte-level BPE, smollm pre-tokenizer)

@Suite("Tokenizer on the default model")
struct TokenizerGoldenTests {
    @Test("every tokenize.json case equals llama.cpp's ids")
    func goldenIDs() throws {
        let tok = try DefaultTokenizer.get()
        let cases = try loadTokenizeCases()
        #expect(cases.count >= 20)
        for c in cases {
            let ids = tok.encode(c.text, parseSpecial: c.parse_special)
            #expect(ids == c.ids, "case \(c.name): \(c.text.debugDescription)")
        }
    }

    @Test("prompt tokens of the logits and greedy fixtures", arguments: [
        "logits-chat-poem.json", "logits-code.json", "logits-france.json",
        "greedy-story.json", "greedy-chat-poem.json", "greedy-france.json",
    ])
    func fixturePrompts(file: String) throws {
        let tok = try DefaultTokenizer.get()
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureURL(file))) as? [String: Any])
        let text = try #require(obj["text"] as? String)
        let special = obj["parse_special"] as? Bool ?? false
        let expected = try #require((obj["tokens"] ?? obj["prompt_tokens"]) as? [Int])
        #expect(tok.encode(text, parseSpecial: special) == expected)
        if let generated = obj["generated"] as? [Int], let generatedText = obj["generated_text"] as? String {
            #expect(tok.decode(generated) == generatedText)
        }
    }

    @Test("decode(encode(x)) == x on golden and tricky texts")
    func roundTrip() throws {
        let tok = try DefaultTokenizer.get()
        for t in try loadTokenizeCases().filter({ !$0.parse_special }).map(\.text) + trickyTexts {
            #expect(tok.decode(tok.encode(t)) == t, "\(t.debugDescription)")
        }
        let special = "<|im_start|>user\nHi<|im_end|>\n"
        #expect(tok.decode(tok.encode(special, parseSpecial: true)) == special)
    }

    @Test("control tokens are parsed only with parseSpecial")
    func specialTokens() throws {
        let tok = try DefaultTokenizer.get()
        #expect(tok.encode("<|im_end|>", parseSpecial: true) == [2])
        #expect(tok.encode("<|im_end|>", parseSpecial: false).count > 1)
        // Longest match wins: "<reponame>" must not be read as "<repo_name>" or plain text.
        #expect(tok.encode("a<reponame>b<repo_name>", parseSpecial: true).contains(4))
        #expect(tok.encode("a<reponame>b<repo_name>", parseSpecial: true).contains(3))
        #expect(tok.bytes(of: 1) == Array("<|im_start|>".utf8))
    }

    @Test("end of generation: <|im_end|> and <|endoftext|>, not ordinary tokens")
    func endOfGeneration() throws {
        let tok = try DefaultTokenizer.get()
        #expect(tok.isEndOfGeneration(2))
        #expect(tok.isEndOfGeneration(0))
        #expect(!tok.isEndOfGeneration(1))
        #expect(!tok.isEndOfGeneration(19556))
    }

    @Test("ChatML prompt with SmolLM2's default system prompt")
    func chatPrompt() throws {
        let tok = try DefaultTokenizer.get()
        #expect(tok.defaultSystemPrompt == "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        let p = tok.chatPrompt(user: "Hi")
        #expect(p == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        let ids = tok.encode(p, parseSpecial: true)
        #expect(ids.first == 1)
        #expect(ids.contains(2))
        #expect(Array(ids.suffix(4)) == [1, 520, 9531, 198])           // "<|im_start|>assistant\n"
        #expect(tok.chatPrompt(user: "Hi", system: "Be brief.")
            == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    }

    @Test("eval.txt: token count fits llama.cpp's 9 perplexity chunks of 512, and encoding is fast")
    func evalText() throws {
        let tok = try DefaultTokenizer.get()
        let text = try String(contentsOf: fixtureURL("eval.txt"), encoding: .utf8)
        let clock = ContinuousClock()
        var ids: [Int] = []
        let elapsed = clock.measure { ids = tok.encode(text) }
        #expect((9 * 512..<10 * 512).contains(ids.count), "\(ids.count) tokens")
        #expect(tok.decode(ids) == text)
        #expect(elapsed < .seconds(5), "encoding \(text.utf8.count) bytes took \(elapsed)")
        print("eval.txt: \(text.utf8.count) bytes → \(ids.count) tokens in \(elapsed)")
    }
}

// MARK: - Streaming decoding

@Suite("StreamingDecoder")
struct StreamingDecoderTests {
    @Test("a multi-token emoji is emitted whole, never as a partial character")
    func emojiByToken() throws {
        let tok = try DefaultTokenizer.get()
        let text = "Launch 🚀 ok 👍🏽!"
        let ids = tok.encode(text)
        let emojiIDs = tok.encode("🚀")
        #expect(emojiIDs.count > 1, "the test needs an emoji split over several tokens")
        var d = StreamingDecoder(tokenizer: tok)
        var pieces: [String] = []
        for id in ids { pieces.append(d.append(id)) }
        pieces.append(d.finish())
        for p in pieces { #expect(!p.unicodeScalars.contains("\u{FFFD}"), "partial character in \(p.debugDescription)") }
        #expect(pieces.joined() == text)
        var e = StreamingDecoder(tokenizer: tok)
        let out = emojiIDs.map { e.append($0) }
        #expect(out.dropLast().allSatisfy { $0.isEmpty })
        #expect(out.last == "🚀")
    }

    @Test("held bytes: incomplete sequences wait, invalid ones pass, finish() flushes")
    func heldBytes() {
        #expect(StreamingDecoder.incompleteSuffixLength([0x41, 0xF0, 0x9F]) == 2)
        #expect(StreamingDecoder.incompleteSuffixLength([0xE2, 0x82]) == 2)
        #expect(StreamingDecoder.incompleteSuffixLength([0xE2, 0x82, 0xAC]) == 0)
        #expect(StreamingDecoder.incompleteSuffixLength([0xE0, 0x80]) == 0)        // over-long: never valid
        #expect(StreamingDecoder.incompleteSuffixLength([0x80, 0x80]) == 0)
        #expect(StreamingDecoder.incompleteSuffixLength([]) == 0)
    }

    @Test("finish() turns an unfinished character into U+FFFD")
    func finishFlushes() throws {
        let tok = try DefaultTokenizer.get()
        let first = tok.encode("🚀")[0]
        var d = StreamingDecoder(tokenizer: tok)
        #expect(d.append(first) == "")
        #expect(d.finish() == "\u{FFFD}")
        #expect(d.finish() == "")
    }
}

// MARK: - Pre-tokenizers

@Suite("Pre-tokenizer splits")
struct PreTokenizerTests {
    static func pieces(_ pre: String, _ text: String) throws -> [String] {
        let p = try PreTokenizer(name: pre)
        let cps = text.unicodeScalars.map(\.value)
        let ends = p.split(cps, cps.map(CharClass.of))
        var out: [String] = []
        var a = 0
        for b in ends {
            var s = String.UnicodeScalarView()
            s.append(contentsOf: text.unicodeScalars.dropFirst(a).prefix(b - a))
            out.append(String(s))
            a = b
        }
        return out
    }

    static let sample = "Hello world 12345 don't\n\n  x"

    @Test func gpt2() throws {
        #expect(try Self.pieces("gpt-2", Self.sample) == ["Hello", " world", " 12345", " don", "'t", "\n\n ", " x"])
    }

    @Test func smollm() throws {
        #expect(try Self.pieces("smollm", Self.sample)
            == ["Hello", " world", " ", "1", "2", "3", "4", "5", " don", "'t", "\n\n ", " x"])
    }

    @Test func llama3() throws {
        #expect(try Self.pieces("llama-bpe", Self.sample)
            == ["Hello", " world", " ", "123", "45", " don", "'t", "\n\n", " ", " x"])
        #expect(try Self.pieces("llama3", "DON'T ?!\n\nok") == ["DON", "'T", " ?!\n\n", "ok"])
    }

    @Test func qwen2() throws {
        #expect(try Self.pieces("qwen2", Self.sample)
            == ["Hello", " world", " ", "1", "2", "3", "4", "5", " don", "'t", "\n\n", " ", " x"])
    }

    @Test func llamaDefault() throws {
        #expect(try Self.pieces("default", Self.sample)
            == ["Hello", " world", " ", "123", "45", " don", "'", "t", "\n\n ", " x"])
    }

    @Test("characters newer than llama.cpp's Unicode 15.1 table are unassigned there")
    func unicodeVersion() {
        #expect(CharClass.of(0x13763) == [])                 // Egyptian hieroglyph, Unicode 16.0
        #expect(CharClass.of(0x2EBF0).contains(.letter))     // CJK Extension I, Unicode 15.1
        #expect(CharClass.of(0x3000).contains(.whitespace))
        #expect(CharClass.of(0x0085).contains(.whitespace))
        #expect(!CharClass.of(0x1C).contains(.whitespace))
        #expect(CharClass.of(0x0663).contains(.number))
    }

    @Test func unknownNameThrows() {
        #expect(throws: QuantDriftError.self) { try PreTokenizer(name: "no-such-pre") }
    }
}

// MARK: - SentencePiece BPE on a hand-built vocabulary

@Suite("SentencePiece tokenizer")
struct SentencePieceTests {
    /// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then scored pieces.
    static func tokenizer() throws -> Tokenizer {
        var tokens = ["<unk>", "<s>", "</s>"]
        var types: [TokenizerSpec.TokenType] = [.unknown, .control, .control]
        var scores: [Float] = [0, 0, 0]
        for b in 0..<256 {
            tokens.append(String(format: "<0x%02X>", b)); types.append(.byte); scores.append(0)
        }
        let pieces: [(String, Float)] = [
            ("▁", -20), ("h", -20), ("e", -20), ("l", -20), ("o", -20), ("w", -20), ("r", -20), ("d", -20),
            ("ll", -1), ("▁h", -2), ("▁he", -3), ("▁hell", -4), ("▁hello", -5), ("he", -10),
            ("or", -1.5), ("ld", -1.2), ("▁w", -2.5), ("▁wor", -3.5), ("▁world", -6),
        ]
        for (t, s) in pieces { tokens.append(t); types.append(.normal); scores.append(s) }
        let spec = TokenizerSpec(kind: .sentencePiece, pre: "default", tokens: tokens, tokenTypes: types, scores: scores,
                                 merges: [], bosID: 1, eosID: 2, eotID: nil, unknownID: 0, addBOS: true,
                                 addSpacePrefix: true, chatTemplate: nil)
        return try Tokenizer(spec: spec)
    }

    static func ids(_ tok: Tokenizer, _ names: [String]) -> [Int] {
        names.map { n in tok.spec.tokens.firstIndex(of: n)! }
    }

    @Test("merges by score, with the space prefix")
    func merges() throws {
        let tok = try Self.tokenizer()
        #expect(tok.encode("hello world") == Self.ids(tok, ["▁hello", "▁world"]))
        #expect(tok.decode(tok.encode("hello world")) == "hello world")
    }

    @Test("characters outside the vocabulary fall back to <0xXX> bytes")
    func byteFallback() throws {
        let tok = try Self.tokenizer()
        let ids = tok.encode("hé\n")
        #expect(ids == Self.ids(tok, ["▁h", "<0xC3>", "<0xA9>", "<0x0A>"]))
        #expect(tok.bytes(of: ids[1]) == [0xC3])
        #expect(tok.decode(ids) == "hé\n")
    }

    @Test("control tokens with and without parseSpecial")
    func special() throws {
        let tok = try Self.tokenizer()
        #expect(tok.encode("<s>hello", parseSpecial: true) == [1] + Self.ids(tok, ["▁hello"]))
        #expect(tok.encode("<s>hello") == Self.ids(tok, ["▁", "<0x3C>", "<0x73>", "<0x3E>", "he", "ll", "o"]))
        #expect(tok.decode(tok.encode("<s>hello")) == "<s>hello")
        #expect(tok.isEndOfGeneration(2))
    }

    @Test("round trip of tricky text through byte fallback")
    func roundTrip() throws {
        let tok = try Self.tokenizer()
        for t in trickyTexts {
            #expect(tok.decode(tok.encode(t)) == t, "\(t.debugDescription)")
        }
    }
}

// MARK: - Other pre-tokenizers and SentencePiece against llama.cpp

/// `tokenize-variants.json`: 603 random texts (words, contractions, digits, punctuation, every
/// kind of whitespace, scripts, emoji, combining marks, control-token texts, random code points)
/// tokenized by llama.cpp's `llama_tokenize` (no added specials; the llama.cpp vendored in PyPI
/// llama-cpp-python 0.3.36) on vocab-only GGUF files: the default model's, the same with
/// `tokenizer.ggml.pre` replaced by gpt-2, llama-bpe, qwen2 and default, and a SentencePiece
/// vocabulary derived from it (`syntheticSentencePiece`).
struct VariantFixture: Decodable {
    struct Case: Decodable {
        let text: String
        let parse_special: Bool
    }
    let cases: [Case]
    let ids: [String: [[Int]]]
}

@Suite("Tokenizer variants against llama.cpp")
struct TokenizerVariantTests {
    static let fixture = Result<VariantFixture, any Error> {
        try JSONDecoder().decode(VariantFixture.self, from: Data(contentsOf: fixtureURL("tokenize-variants.json")))
    }

    /// A SentencePiece vocabulary built from a byte-level one: `<unk>`, `<s>`, `</s>`, the 256
    /// byte tokens, the control tokens, then every normal token that is valid UTF-8, spaces as
    /// U+2581, first occurrence only, scored -index.
    static func syntheticSentencePiece(from base: TokenizerSpec) -> TokenizerSpec {
        var tokens = ["<unk>", "<s>", "</s>"] + (0..<256).map { String(format: "<0x%02X>", $0) }
        var types: [TokenizerSpec.TokenType] = [.unknown, .control, .control] + Array(repeating: .byte, count: 256)
        var seen = Set(tokens.map { Array($0.utf8) })
        for (t, ty) in zip(base.tokens, base.tokenTypes) where ty == .control && seen.insert(Array(t.utf8)).inserted {
            tokens.append(t); types.append(.control)
        }
        for (t, ty) in zip(base.tokens, base.tokenTypes) where ty == .normal {
            guard let raw = ByteUnicode.bytes(ofTokenText: t), let s = String(validating: raw, as: UTF8.self) else { continue }
            let escaped = String(decoding: raw.flatMap { $0 == 0x20 ? [0xE2, 0x96, 0x81] : [$0] }, as: UTF8.self)
            guard !s.isEmpty, seen.insert(Array(escaped.utf8)).inserted else { continue }
            tokens.append(escaped); types.append(.normal)
        }
        let scores = types.indices.map { types[$0] == .normal ? -Float($0) : 0 }
        return TokenizerSpec(kind: .sentencePiece, pre: "default", tokens: tokens, tokenTypes: types, scores: scores,
                             merges: [], bosID: 1, eosID: 2, eotID: nil, unknownID: 0, addBOS: true,
                             addSpacePrefix: true, chatTemplate: nil)
    }

    @Test("same ids as llama.cpp", arguments: ["smollm", "gpt-2", "llama-bpe", "qwen2", "default", "spm"])
    func variant(name: String) throws {
        let base = try DefaultTokenizer.get().spec
        let fx = try Self.fixture.get()
        let expected = try #require(fx.ids[name])
        var spec = base
        if name == "spm" { spec = Self.syntheticSentencePiece(from: base) } else { spec.pre = name }
        let tok = try Tokenizer(spec: spec)
        #expect(fx.cases.count == expected.count)
        var mismatches = 0
        for (c, ids) in zip(fx.cases, expected) {
            let got = tok.encode(c.text, parseSpecial: c.parse_special)
            if got != ids { mismatches += 1 }
            #expect(got == ids, "\(name): \(c.text.debugDescription) parseSpecial \(c.parse_special)")
            if !c.parse_special { #expect(tok.decode(got) == c.text, "\(name) round trip: \(c.text.debugDescription)") }
        }
        #expect(mismatches == 0, "\(name): \(mismatches) of \(fx.cases.count) cases differ")
    }
}
