/// Text ⇄ token ids, exactly as llama.cpp tokenizes (`llama_tokenize` without added specials).
///
/// Byte-level BPE (GGUF `gpt2`) with llama.cpp's pre-tokenizers, and SentencePiece-style BPE
/// (GGUF `llama`) with byte fallback. Everything is built once in `init`; `encode` and `decode`
/// are thread-safe.
public final class Tokenizer: @unchecked Sendable {
    /// The spec, with token texts as llama.cpp reads them from GGUF: cut at the first NUL, and
    /// `[EMPTY_<id>]` for an empty text.
    public let spec: TokenizerSpec
    /// Tokens that end a generation (EOS, EOT and llama.cpp's end-of-generation names).
    public let endOfGenerationIDs: Set<Int>
    /// The chat format the vocabulary calls for (found once: a scan of the whole vocabulary).
    public let chatFormat: ChatFormat

    private enum Merger {
        case byteLevel(ByteLevelBPE)
        case sentencePiece(SentencePieceBPE)
    }
    private let merger: Merger

    /// Tokens split out of the text before merging (control, user-defined and unknown types),
    /// longest text first; `alwaysParsed` ones (user-defined) also without `parseSpecial`.
    private let specials: [(id: Int, text: [UInt8], alwaysParsed: Bool)]

    private let pieceBytes: [UInt8]    // (all tokens' decoded bytes, concatenated)
    private let pieceStart: [Int]      // (vocabSize + 1) offsets into pieceBytes

    /// Token texts llama.cpp treats as end of generation (and as control tokens).
    static let endOfGenerationNames: Set<String> = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
        "<|end_of_text|>", "<end_of_utterance>", "</s>",
        // fill-in-the-middle pad / repository / file separators are end-of-generation too
        "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<reponame>", "<|file_sep|>",
    ]

    /// Token texts llama.cpp forces to the control type (besides the end-of-generation names).
    static let forcedControlNames: Set<String> = [
        "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "\u{2581}<PRE>",
        "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "\u{2581}<SUF>",
        "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "\u{2581}<MID>",
    ]

    public init(spec: TokenizerSpec) throws {
        var spec = spec
        spec.tokens = spec.tokens.enumerated().map { i, t in
            let cut = t.utf8.contains(0) ? String(decoding: t.utf8.prefix { $0 != 0 }, as: UTF8.self) : t
            return cut.isEmpty ? "[EMPTY_\(i)]" : cut
        }
        let n = spec.tokens.count
        guard n > 0 else { throw QuantDriftError.invalidInput("tokenizer has no tokens") }
        guard spec.tokenTypes.isEmpty || spec.tokenTypes.count == n else {
            throw QuantDriftError.invalidInput("tokenizer has \(spec.tokenTypes.count) token types for \(n) tokens")
        }
        for (key, id) in [("bos", spec.bosID), ("eos", spec.eosID), ("eot", spec.eotID), ("unknown", spec.unknownID)] {
            if let id, !(0..<n).contains(id) { throw QuantDriftError.invalidInput("tokenizer \(key) id \(id) is out of range") }
        }
        self.spec = spec
        var types = spec.tokenTypes.isEmpty ? [TokenizerSpec.TokenType](repeating: .normal, count: n) : spec.tokenTypes

        var eog = Set([spec.eosID, spec.eotID].compactMap { $0 })
        for (i, t) in spec.tokens.enumerated() {
            if Self.endOfGenerationNames.contains(t) { eog.insert(i) }
            if Self.endOfGenerationNames.contains(t) || Self.forcedControlNames.contains(t) { types[i] = .control }
        }
        endOfGenerationIDs = eog
        chatFormat = Self.chatFormat(tokens: spec.tokens)

        specials = types.indices
            .filter { [.control, .userDefined, .unknown].contains(types[$0]) }
            .map { (id: $0, text: Array(spec.tokens[$0].utf8), alwaysParsed: types[$0] == .userDefined) }
            .sorted { $0.text.count != $1.text.count ? $0.text.count > $1.text.count : $0.id < $1.id }

        switch spec.kind {
        case .byteLevelBPE:
            merger = .byteLevel(try ByteLevelBPE(spec: spec, pre: try PreTokenizer(name: spec.pre)))
        case .sentencePiece:
            merger = .sentencePiece(SentencePieceBPE(spec: spec))
        }

        // What each token decodes to, as llama.cpp's `token_to_piece` with `special = true`.
        var bytes: [UInt8] = []
        var start = [0]
        start.reserveCapacity(n + 1)
        for (i, text) in spec.tokens.enumerated() {
            switch types[i] {
            case .control, .userDefined, .unknown:
                bytes += text.utf8
            case .normal where spec.kind == .sentencePiece:
                bytes += Self.unescapingSpaces(Array(text.utf8))
            case .normal:
                bytes += ByteUnicode.bytes(ofTokenText: text) ?? Array(text.utf8)
            case .byte:
                if let b = Self.byteValue(ofByteToken: text) { bytes.append(b) }
            case .unused, .undefined:
                break
            }
            start.append(bytes.count)
        }
        pieceBytes = bytes
        pieceStart = start
    }

    public var vocabSize: Int { spec.tokens.count }

    // MARK: - Encoding

    /// Token ids of `text` (no BOS added). With `parseSpecial`, control tokens written in the text
    /// (e.g. `<|im_start|>`) become their ids; without, they are tokenized as plain text.
    /// User-defined tokens are split out either way, as llama.cpp does.
    public func encode(_ text: String, parseSpecial: Bool = false) -> [Int] {
        let u = Array(text.utf8)
        var out: [Int] = []
        out.reserveCapacity(u.count / 3 + 1)
        var scratch = MergeScratch()
        var isPrevSpecial = true
        var cps: [UInt32] = [], cls: [CharClass] = [], offs: [Int] = []
        for f in partition(u, parseSpecial: parseSpecial) {
            switch f {
            case .token(let id):
                out.append(id)
                isPrevSpecial = true
            case .text(let r):
                switch merger {
                case .byteLevel(let bpe):
                    Self.decodeScalars(u[r], &cps, &cls, &offs)
                    var a = 0
                    for b in bpe.pre.split(cps, cls) {
                        bpe.encodeWord(u[offs[a]..<offs[b]], &scratch, into: &out)
                        a = b
                    }
                case .sentencePiece(let spm):
                    var t: [UInt8] = []
                    t.reserveCapacity(r.count + 8)
                    if spec.addSpacePrefix && isPrevSpecial { t += [0xE2, 0x96, 0x81] }
                    for c in u[r] {
                        if c == 0x20 { t += [0xE2, 0x96, 0x81] } else { t.append(c) }
                    }
                    spm.encode(t, &scratch, into: &out)
                }
                isPrevSpecial = false
            }
        }
        return out
    }

    private enum Fragment {
        case text(Range<Int>)
        case token(Int)
    }

    /// Splits the text at special tokens like llama.cpp's `tokenizer_st_partition`: longest
    /// special token first, every occurrence in the text not yet claimed, left to right.
    private func partition(_ u: [UInt8], parseSpecial: Bool) -> [Fragment] {
        guard !u.isEmpty else { return [] }
        var frags: [Fragment] = [.text(0..<u.count)]
        u.withUnsafeBufferPointer { p in
            for s in specials where parseSpecial || s.alwaysParsed {
                let pat = s.text
                let first = pat[0]
                var next: [Fragment] = []
                var changed = false
                for f in frags {
                    guard case .text(let r) = f else { next.append(f); continue }
                    var lo = r.lowerBound
                    var i = r.lowerBound
                    while i + pat.count <= r.upperBound {
                        if p[i] == first && Self.matches(p, at: i, pat) {
                            if i > lo { next.append(.text(lo..<i)) }
                            next.append(.token(s.id))
                            i += pat.count
                            lo = i
                            changed = true
                        } else {
                            i += 1
                        }
                    }
                    if lo < r.upperBound { next.append(.text(lo..<r.upperBound)) }
                }
                if changed { frags = next }
            }
        }
        return frags
    }

    private static func matches(_ p: UnsafeBufferPointer<UInt8>, at i: Int, _ pat: [UInt8]) -> Bool {
        for k in 1..<pat.count where p[i + k] != pat[k] { return false }
        return true
    }

    /// Scalar values of valid UTF-8, their classes, and the byte offset of each scalar (plus the end).
    private static func decodeScalars(_ u: ArraySlice<UInt8>, _ cps: inout [UInt32], _ cls: inout [CharClass],
                                      _ offs: inout [Int]) {
        cps.removeAll(keepingCapacity: true); cls.removeAll(keepingCapacity: true); offs.removeAll(keepingCapacity: true)
        var i = u.startIndex
        while i < u.endIndex {
            let b = u[i]
            let n = SentencePieceBPE.utf8Length(b)
            var c: UInt32
            switch n {
            case 2: c = UInt32(b & 0x1F)
            case 3: c = UInt32(b & 0x0F)
            case 4: c = UInt32(b & 0x07)
            default: c = UInt32(b)
            }
            for k in 1..<max(n, 1) { c = c << 6 | UInt32(u[i + k] & 0x3F) }
            offs.append(i)
            cps.append(c)
            cls.append(CharClass.of(c))
            i += n
        }
        offs.append(u.endIndex)
    }

    // MARK: - Decoding

    /// The bytes a token stands for when decoded (control tokens: their text; SentencePiece:
    /// U+2581 as space, `<0xXX>` as that byte). Empty for ids out of range.
    public func bytes(of id: Int) -> [UInt8] {
        guard id >= 0 && id < vocabSize else { return [] }
        return Array(pieceBytes[pieceStart[id]..<pieceStart[id + 1]])
    }

    /// Decoded text of a sequence of ids; invalid UTF-8 becomes U+FFFD. For SentencePiece
    /// vocabularies that add a space prefix, the first token's leading space is dropped, as
    /// llama.cpp's detokenizer does.
    public func decode(_ ids: [Int]) -> String {
        var b: [UInt8] = []
        for id in ids where id >= 0 && id < vocabSize { b += pieceBytes[pieceStart[id]..<pieceStart[id + 1]] }
        if spec.kind == .sentencePiece && spec.addSpacePrefix, let first = ids.first, first >= 0, first < vocabSize,
           pieceStart[first] < pieceStart[first + 1], pieceBytes[pieceStart[first]] == 0x20 {
            b.removeFirst()
        }
        return String(decoding: b, as: UTF8.self)
    }

    /// True for tokens that end a generation (EOS, EOT, `<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, …).
    public func isEndOfGeneration(_ id: Int) -> Bool { endOfGenerationIDs.contains(id) }

    /// UTF-8 with every U+2581 (E2 96 81) turned into a space, byte-wise (a String replacement
    /// would compare grapheme clusters and miss `▁` followed by a combining mark).
    static func unescapingSpaces(_ u: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(u.count)
        var i = 0
        while i < u.count {
            if u[i] == 0xE2 && i + 2 < u.count && u[i + 1] == 0x96 && u[i + 2] == 0x81 {
                out.append(0x20); i += 3
            } else {
                out.append(u[i]); i += 1
            }
        }
        return out
    }

    /// The byte of a `<0xXX>` token.
    static func byteValue(ofByteToken text: String) -> UInt8? {
        let u = Array(text.utf8)
        guard u.count == 6, u[0...2].elementsEqual("<0x".utf8), u[5] == UInt8(ascii: ">") else { return nil }
        return UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16)
    }
}

// MARK: - Streaming decoding

/// Turns generated ids into text as they arrive, never splitting a UTF-8 character: bytes of an
/// incomplete character are held until the rest arrives.
public struct StreamingDecoder {
    public let tokenizer: Tokenizer
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// Adds one token; returns the text that is now complete (possibly empty).
    public mutating func append(_ id: Int) -> String {
        pending += tokenizer.bytes(of: id)
        let keep = Self.incompleteSuffixLength(pending)
        guard keep < pending.count else { return "" }
        let text = String(decoding: pending[..<(pending.count - keep)], as: UTF8.self)
        pending.removeFirst(pending.count - keep)
        return text
    }

    /// Returns whatever is held, with U+FFFD for an incomplete character, and resets.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the trailing bytes that begin a valid but unfinished UTF-8 sequence (0 if none).
    static func incompleteSuffixLength(_ b: [UInt8]) -> Int {
        let n = b.count
        for back in 1...min(3, max(n, 1)) where n >= back {
            let lead = b[n - back]
            if lead & 0xC0 == 0x80 { continue }                 // continuation byte: look further back
            let need: Int
            var secondRange: ClosedRange<UInt8> = 0x80...0xBF
            switch lead {
            case 0xC2...0xDF: need = 2
            case 0xE0: need = 3; secondRange = 0xA0...0xBF
            case 0xED: need = 3; secondRange = 0x80...0x9F
            case 0xE1...0xEF: need = 3
            case 0xF0: need = 4; secondRange = 0x90...0xBF
            case 0xF4: need = 4; secondRange = 0x80...0x8F
            case 0xF1...0xF3: need = 4
            default: return 0
            }
            guard back < need else { return 0 }                  // complete (or over-long: invalid)
            if back >= 2 && !secondRange.contains(b[n - back + 1]) { return 0 }
            return back
        }
        return 0
    }
}
