// The two merge algorithms llama.cpp uses for GGUF vocabularies: byte-level BPE merged by rank
// (`llm_tokenizer_bpe`, GGUF `gpt2`) and SentencePiece-style BPE merged by token score
// (`llm_tokenizer_spm`, GGUF `llama`). Both work on one word at a time.

// MARK: - GPT-2 byte ↔ unicode map

/// GPT-2's reversible map from bytes to printable characters: printable Latin-1 bytes map to
/// themselves, the other 68 bytes to U+0100… in byte order.
enum ByteUnicode {
    /// Scalar value standing for each byte.
    static let scalarOfByte: [UInt32] = {
        var map = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            if (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) {
                map[b] = UInt32(b)
            } else {
                map[b] = 256 + n
                n += 1
            }
        }
        return map
    }()

    /// Byte of a scalar value from the map, or -1.
    static let byteOfScalar: [Int16] = {
        var rev = [Int16](repeating: -1, count: 0x144)
        for (b, s) in scalarOfByte.enumerated() { rev[Int(s)] = Int16(b) }
        return rev
    }()

    /// The raw bytes a byte-level token text stands for, or nil if a character is outside the map.
    static func bytes(ofTokenText text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars {
            let v = Int(s.value)
            guard v < byteOfScalar.count, byteOfScalar[v] >= 0 else { return nil }
            out.append(UInt8(byteOfScalar[v]))
        }
        return out
    }
}

// MARK: - Work queue

/// A candidate merge of the adjacent symbols `left` and `right`.
struct Bigram {
    /// Higher merges first (BPE: minus the rank; SentencePiece: the token score).
    var priority: Float
    var left: Int32
    var right: Int32
    /// What the merge was computed from, to skip it once a side has changed
    /// (BPE: the two symbol ids; SentencePiece: the byte length of both sides, in `a`).
    var a: Int32
    var b: Int32
}

/// Binary max-heap of bigrams: highest priority first, then the leftmost.
struct BigramHeap {
    private(set) var items: [Bigram] = []

    var isEmpty: Bool { items.isEmpty }
    mutating func removeAll() { items.removeAll(keepingCapacity: true) }

    private static func before(_ x: Bigram, _ y: Bigram) -> Bool {
        x.priority > y.priority || (x.priority == y.priority && x.left < y.left)
    }

    mutating func push(_ e: Bigram) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard Self.before(items[i], items[p]) else { break }
            items.swapAt(i, p)
            i = p
        }
    }

    mutating func pop() -> Bigram {
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            let n = items.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && Self.before(items[l], items[m]) { m = l }
                if r < n && Self.before(items[r], items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

/// Scratch buffers for merging one word; reused across the words of one `encode` call.
struct MergeScratch {
    var id: [Int32] = []       // (symbols) token id (BPE) or byte start (SentencePiece)
    var len: [Int32] = []      // (symbols) byte length, 0 once merged away
    var prev: [Int32] = []     // (symbols) previous live symbol or -1
    var next: [Int32] = []     // (symbols) next live symbol or -1
    var heap = BigramHeap()

    mutating func reset() {
        id.removeAll(keepingCapacity: true); len.removeAll(keepingCapacity: true)
        prev.removeAll(keepingCapacity: true); next.removeAll(keepingCapacity: true)
        heap.removeAll()
    }

    mutating func append(id i: Int32, len n: Int32) {
        let k = Int32(id.count)
        id.append(i); len.append(n); prev.append(k - 1); next.append(k + 1)
    }

    /// Removes `right` from the chain after merging it into `left`.
    mutating func unlink(left: Int, right: Int) {
        len[left] += len[right]
        len[right] = 0
        next[left] = next[right]
        if next[right] >= 0 { prev[Int(next[right])] = Int32(left) }
    }
}

// MARK: - Byte-level BPE

/// GPT-2 style BPE over bytes. Merges are keyed by pairs of ids; strings formed by merges that
/// are not in the vocabulary get ids past its end ("virtual" ids), so that such merges still
/// happen as in llama.cpp, which merges strings.
struct ByteLevelBPE: Sendable {
    let pre: PreTokenizer
    let vocabCount: Int
    /// Id of the symbol for each byte (may be virtual).
    let byteSymbol: [Int32]
    /// `left << 32 | right` → (rank, merged id).
    let merges: [UInt64: (rank: Int32, merged: Int32)]
    /// UTF-8 of the byte-encoded text of each virtual id (index id - vocabCount).
    let virtualText: [[UInt8]]
    /// Token of each one-byte (ASCII) token text, or -1: how llama.cpp spells out a word piece
    /// that is not in the vocabulary.
    let asciiToken: [Int32]
    /// Raw bytes of each token → id, for `ignoreMerges` (empty otherwise).
    let wordToken: [ArraySlice<UInt8>: Int32]

    init(spec: TokenizerSpec, pre: PreTokenizer) throws {
        self.pre = pre
        vocabCount = spec.tokens.count
        var idOf: [String: Int32] = [:]
        idOf.reserveCapacity(spec.tokens.count)
        for (i, t) in spec.tokens.enumerated() where idOf[t] == nil { idOf[t] = Int32(i) }
        var virtualStrings: [String] = []
        let vocabCount = self.vocabCount
        func intern(_ s: String) -> Int32 {
            if let i = idOf[s] { return i }
            let i = Int32(vocabCount + virtualStrings.count)
            virtualStrings.append(s)
            idOf[s] = i
            return i
        }
        guard spec.merges.count < 1 << 24 else {          // ranks must be exact as Float priorities
            throw QuantDriftError.unsupported("tokenizer has \(spec.merges.count) merges (at most 16M supported)")
        }
        var merges: [UInt64: (rank: Int32, merged: Int32)] = [:]
        merges.reserveCapacity(spec.merges.count)
        for (rank, m) in spec.merges.enumerated() {
            // "left right", split at the first space after the first byte, as llama.cpp does
            // (which also keeps, and never uses, a merge without a space).
            let u = Array(m.utf8)
            guard u.count >= 3, let sp = u[1...].firstIndex(of: 0x20) else { continue }
            let l = String(decoding: u[..<sp], as: UTF8.self), r = String(decoding: u[(sp + 1)...], as: UTF8.self)
            let key = UInt64(UInt32(bitPattern: intern(l))) << 32 | UInt64(UInt32(bitPattern: intern(r)))
            if merges[key] == nil { merges[key] = (Int32(rank), intern(l + r)) }
        }
        byteSymbol = ByteUnicode.scalarOfByte.map { intern(String(Character(Unicode.Scalar($0)!))) }
        self.merges = merges
        virtualText = virtualStrings.map { Array($0.utf8) }
        asciiToken = (0..<128).map { b in
            guard let t = idOf[String(UnicodeScalar(UInt8(b)))], Int(t) < vocabCount else { return -1 }
            return t
        }
        var wordToken: [ArraySlice<UInt8>: Int32] = [:]
        if pre.ignoreMerges {
            for (i, t) in spec.tokens.enumerated() {
                if let raw = ByteUnicode.bytes(ofTokenText: t), wordToken[raw[...]] == nil { wordToken[raw[...]] = Int32(i) }
            }
        }
        self.wordToken = wordToken
    }

    /// Appends the tokens of one pre-tokenized word (its raw bytes).
    func encodeWord(_ w: ArraySlice<UInt8>, _ s: inout MergeScratch, into out: inout [Int]) {
        if pre.ignoreMerges, let t = wordToken[w] { out.append(Int(t)); return }
        if w.count == 1 { emit(byteSymbol[Int(w.first!)], into: &out); return }
        s.reset()
        for b in w { s.append(id: byteSymbol[Int(b)], len: 1) }
        s.next[s.next.count - 1] = -1
        for i in 1..<s.id.count { push(i - 1, i, &s) }
        while !s.heap.isEmpty {
            let g = s.heap.pop()
            let l = Int(g.left), r = Int(g.right)
            guard s.len[l] > 0, s.len[r] > 0, s.id[l] == g.a, s.id[r] == g.b else { continue }  // stale
            s.id[l] = merges[key(g.a, g.b)]!.merged
            s.unlink(left: l, right: r)
            if s.prev[l] >= 0 { push(Int(s.prev[l]), l, &s) }
            if s.next[l] >= 0 { push(l, Int(s.next[l]), &s) }
        }
        var i = 0
        while i >= 0 {
            emit(s.id[i], into: &out)
            i = Int(s.next[i])
        }
    }

    @inline(__always) private func key(_ l: Int32, _ r: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: l)) << 32 | UInt64(UInt32(bitPattern: r))
    }

    private func push(_ l: Int, _ r: Int, _ s: inout MergeScratch) {
        let a = s.id[l], b = s.id[r]
        guard let m = merges[key(a, b)] else { return }
        s.heap.push(Bigram(priority: -Float(m.rank), left: Int32(l), right: Int32(r), a: a, b: b))
    }

    /// A vocabulary id as is; a virtual one spelled out byte by byte as llama.cpp does (only
    /// one-byte token texts can match, others are dropped).
    private func emit(_ id: Int32, into out: inout [Int]) {
        if Int(id) < vocabCount { out.append(Int(id)); return }
        for c in virtualText[Int(id) - vocabCount] where c < 0x80 && asciiToken[Int(c)] >= 0 {
            out.append(Int(asciiToken[Int(c)]))
        }
    }
}

// MARK: - SentencePiece-style BPE

/// SentencePiece BPE as in llama.cpp's `llm_tokenizer_spm`: spaces become U+2581, characters
/// are merged into the best-scoring token first, characters left over become `<0xXX>` tokens.
struct SentencePieceBPE: Sendable {
    /// UTF-8 text of each token → id.
    let tokenOf: [ArraySlice<UInt8>: Int32]
    let scores: [Float]
    /// `<0xXX>` token (or the one-byte token) for each byte, or -1.
    let byteToken: [Int32]
    let unknownID: Int32

    init(spec: TokenizerSpec) {
        var tokenOf: [ArraySlice<UInt8>: Int32] = [:]
        tokenOf.reserveCapacity(spec.tokens.count)
        for (i, t) in spec.tokens.enumerated() where tokenOf[Array(t.utf8)[...]] == nil {
            tokenOf[Array(t.utf8)[...]] = Int32(i)
        }
        self.tokenOf = tokenOf
        scores = spec.scores.count == spec.tokens.count ? spec.scores : [Float](repeating: 0, count: spec.tokens.count)
        let hex = Array("0123456789ABCDEF".utf8)
        byteToken = (0..<256).map { b in
            let name: [UInt8] = Array("<0x".utf8) + [hex[b >> 4], hex[b & 15], UInt8(ascii: ">")]
            return tokenOf[name[...]] ?? tokenOf[[UInt8(b)][...]] ?? -1
        }
        unknownID = Int32(spec.unknownID ?? -1)
    }

    /// Appends the tokens of `text` (already escaped: spaces as U+2581).
    func encode(_ text: [UInt8], _ s: inout MergeScratch, into out: inout [Int]) {
        guard !text.isEmpty else { return }
        s.reset()
        var o = 0
        while o < text.count {
            let n = min(Self.utf8Length(text[o]), text.count - o)
            s.append(id: Int32(o), len: Int32(n))
            o += n
        }
        s.next[s.next.count - 1] = -1
        for i in 1..<s.id.count { push(text, i - 1, i, &s) }
        while !s.heap.isEmpty {
            let g = s.heap.pop()
            let l = Int(g.left), r = Int(g.right)
            guard s.len[l] > 0, s.len[r] > 0, s.len[l] + s.len[r] == g.a else { continue }  // stale
            s.unlink(left: l, right: r)
            if s.prev[l] >= 0 { push(text, Int(s.prev[l]), l, &s) }
            if s.next[l] >= 0 { push(text, l, Int(s.next[l]), &s) }
        }
        var i = 0
        while i >= 0 {
            let piece = text[Int(s.id[i])..<Int(s.id[i] + s.len[i])]
            if let t = tokenOf[piece] {
                out.append(Int(t))
            } else {
                for b in piece {                                     // byte fallback
                    let t = byteToken[Int(b)] >= 0 ? byteToken[Int(b)] : unknownID
                    if t >= 0 { out.append(Int(t)) }
                }
            }
            i = Int(s.next[i])
        }
    }

    private func push(_ text: [UInt8], _ l: Int, _ r: Int, _ s: inout MergeScratch) {
        let start = Int(s.id[l]), n = Int(s.len[l] + s.len[r])
        guard let t = tokenOf[text[start..<start + n]] else { return }
        s.heap.push(Bigram(priority: scores[Int(t)], left: Int32(l), right: Int32(r), a: Int32(n), b: 0))
    }

    /// Length of a UTF-8 sequence from its first byte (continuation bytes count as 1).
    static func utf8Length(_ b: UInt8) -> Int {
        switch b >> 4 {
        case 0xC, 0xD: return 2
        case 0xE: return 3
        case 0xF: return 4
        default: return 1
        }
    }
}
