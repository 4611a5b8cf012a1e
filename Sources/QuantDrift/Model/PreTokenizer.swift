// Pre-tokenization for byte-level BPE: splitting text into words before merges, with the same
// results as llama.cpp's `unicode_regex_split` for the supported `tokenizer.ggml.pre` names.
// The regular expressions are hand-written matchers over Unicode scalars.

// MARK: - Character classes

/// The Unicode classes the pre-tokenizer patterns test (`\p{L}`, `\p{N}`, `\s`, `\p{P}`).
struct CharClass: OptionSet, Sendable {
    let rawValue: UInt8
    static let letter = CharClass(rawValue: 1)
    static let number = CharClass(rawValue: 2)
    static let whitespace = CharClass(rawValue: 4)
    static let punctuation = CharClass(rawValue: 8)

    /// The Unicode version of llama.cpp's category table (`src/unicode-data.cpp`): characters
    /// assigned later are unassigned there, so they count as neither letter, number nor space.
    static let unicodeVersion = (major: 15, minor: 1)

    /// Classes of a scalar value. `\s` is Unicode White_Space, as in llama.cpp's table.
    static func of(_ cp: UInt32) -> CharClass {
        if cp < 0x10000 { return CharClass(rawValue: bmpTable[Int(cp)]) }
        return compute(cp)
    }

    private static func compute(_ cp: UInt32) -> CharClass {
        guard let s = Unicode.Scalar(cp), let age = s.properties.age,
              (age.major, age.minor) <= unicodeVersion else { return [] }
        let p = s.properties
        var c: CharClass = p.isWhitespace ? .whitespace : []
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            c.insert(.letter)
        case .decimalNumber, .letterNumber, .otherNumber:
            c.insert(.number)
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            c.insert(.punctuation)
        default:
            break
        }
        return c
    }

    /// Classes of every BMP scalar, built once per process.
    private static let bmpTable: [UInt8] = (0..<0x10000).map { compute(UInt32($0)).rawValue }
}

// MARK: - Pre-tokenizer

/// One splitting pass. Each pass splits every piece left by the previous pass further.
enum PreTokenizerPass: Sendable {
    /// `\p{N}`: every number character becomes its own piece (llama.cpp `smollm`, `starcoder`, …).
    case eachNumber
    /// `[\p{P}\$\+<=>\^~\|]+` runs (first pass of llama.cpp's `default`).
    case punctuationRuns
    /// `\p{N}+` runs.
    case numberRuns
    /// `[0-9][0-9][0-9]`: leftmost triples of ASCII digits.
    case asciiDigitTriples
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    case gpt2
    /// Llama 3 / Qwen 2: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    case llama3(maxDigits: Int)
}

/// The pre-tokenizer named by `tokenizer.ggml.pre`, as llama.cpp configures it.
struct PreTokenizer: Sendable {
    let passes: [PreTokenizerPass]
    /// A word that is itself a token skips the merges (llama.cpp `ignore_merges`, Llama 3).
    let ignoreMerges: Bool

    init(name: String) throws {
        switch name {
        case "default", "":
            passes = [.punctuationRuns, .gpt2, .numberRuns, .asciiDigitTriples]; ignoreMerges = false
        case "gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4",
             "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "jina-v1-en", "jina-v2-code", "roberta-bpe",
             "gigachat", "a.x-4.0", "mellum", "modern-bert":
            passes = [.gpt2]; ignoreMerges = false
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
            passes = [.llama3(maxDigits: 3)]; ignoreMerges = true
        case "dbrx", "smaug-bpe":
            passes = [.llama3(maxDigits: 3)]; ignoreMerges = false
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2":
            passes = [.eachNumber, .gpt2]; ignoreMerges = false
        case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "megrez", "hunyuan", "solar-open", "grok-2":
            passes = [.llama3(maxDigits: 1)]; ignoreMerges = false
        default:
            throw QuantDriftError.unsupported(
                "pre-tokenizer '\(name)' is not supported (supported: default, gpt2, llama3/llama-bpe, smollm, qwen2 and their aliases)")
        }
    }

    /// Splits `cps` (scalar values, with their classes in `cls`) into pieces; returns the end
    /// index of each piece, in order.
    func split(_ cps: [UInt32], _ cls: [CharClass]) -> [Int] {
        var ends = cps.isEmpty ? [] : [cps.count]
        var next: [Int] = []
        next.reserveCapacity(cps.count / 2 + 1)
        for pass in passes {
            next.removeAll(keepingCapacity: true)
            var start = 0
            for end in ends {
                var m = PieceSplitter(cps: cps, cls: cls, start: start, end: end)
                swap(&m.out, &next)                 // lend the buffer without copying it
                m.run(pass)
                swap(&m.out, &next)
                start = end
            }
            swap(&ends, &next)
        }
        return ends
    }
}

// MARK: - Matchers

/// Splits one piece `cps[start..<end]`, appending the end index of each sub-piece to `out`.
/// Positions outside the piece read as class-less and never match.
private struct PieceSplitter {
    let cps: [UInt32]
    let cls: [CharClass]
    let start: Int
    let end: Int
    var out: [Int] = []
    private var last: Int

    init(cps: [UInt32], cls: [CharClass], start: Int, end: Int) {
        self.cps = cps; self.cls = cls; self.start = start; self.end = end; self.last = start
    }

    private func cp(_ i: Int) -> UInt32 { i < end ? cps[i] : 0xFFFF_FFFF }
    private func cl(_ i: Int) -> CharClass { i < end ? cls[i] : [] }
    /// In range and neither letter, number nor whitespace: `[^\s\p{L}\p{N}]`.
    private func isOther(_ i: Int) -> Bool { i < end && cls[i].isDisjoint(with: [.letter, .number, .whitespace]) }

    /// Ends the current piece at `i` (nothing when empty).
    private mutating func cut(_ i: Int) {
        if i > last { out.append(i); last = i }
    }

    mutating func run(_ pass: PreTokenizerPass) {
        // The matchers read these copies, not `self`, so that `out` keeps a single owner.
        let cps = self.cps, cls = self.cls, end = self.end
        func has(_ i: Int, _ c: CharClass) -> Bool { i < end && cls[i].contains(c) }
        switch pass {
        case .eachNumber:
            matchAll { has($0, .number) ? 1 : 0 }
        case .punctuationRuns:
            matchAll { i0 in
                var i = i0
                while i < end, cls[i].contains(.punctuation) || Self.isGPT2Symbol(cps[i]) { i += 1 }
                return i - i0
            }
        case .numberRuns:
            matchAll { i0 in
                var i = i0
                while has(i, .number) { i += 1 }
                return i - i0
            }
        case .asciiDigitTriples:
            matchAll { i0 in (0..<3).allSatisfy { i0 + $0 < end && (48...57).contains(cps[i0 + $0]) } ? 3 : 0 }
        case .gpt2: gpt2()
        case .llama3(let maxDigits): llama3(maxDigits: maxDigits)
        }
        cut(end)
    }

    private static func isGPT2Symbol(_ c: UInt32) -> Bool {
        c == 0x24 || c == 0x2B || c == 0x3C || c == 0x3D || c == 0x3E || c == 0x5E || c == 0x7E || c == 0x7C
    }

    /// A regular expression used as a splitter: leftmost matches become pieces, and so does the
    /// text between them. `match(i)` is the length of the match starting at `i` (0: none).
    private mutating func matchAll(_ match: (Int) -> Int) {
        var i = start
        while i < end {
            let n = match(i)
            if n > 0 {
                cut(i); i += n; cut(i)
            } else {
                i += 1
            }
        }
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `i`: the length matched (0, 2 or 3).
    private func contraction(at i: Int, ignoringCase: Bool) -> Int {
        guard cp(i) == 0x27, i + 1 < end else { return 0 }
        func lower(_ c: UInt32) -> UInt32 { ignoringCase && (65...90).contains(c) ? c + 32 : c }
        let a = lower(cp(i + 1))
        if a == 0x73 || a == 0x74 || a == 0x6D || a == 0x64 { return 2 }            // s t m d
        guard i + 2 < end else { return 0 }
        let b = lower(cp(i + 2))
        if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) { return 3 } // re ve ll
        return 0
    }

    /// Whitespace run at `i`: `\s+(?!\S)` leaves the last space for the next word, `\s+` takes it all.
    private mutating func whitespace(at i: inout Int) {
        var n = 0
        while cl(i + n).contains(.whitespace) { n += 1 }
        if n > 1 && i + n < end {
            i += n - 1
        } else if n > 0 {
            i += n
        } else {
            i += 1                                                                    // no alternative matched
        }
        cut(i)
    }

    private mutating func gpt2() {
        var i = start
        while i < end {
            let c = cps[i]
            let k = contraction(at: i, ignoringCase: false)
            if k > 0 { i += k; cut(i); continue }
            // ` ?X+` for X in letters, numbers, other: the class after an optional space decides.
            let lead = c == 0x20 ? i + 1 : i
            let f = cl(lead)
            if f.contains(.letter) || f.contains(.number) {
                let want: CharClass = f.contains(.letter) ? .letter : .number
                i = lead
                while cl(i).contains(want) { i += 1 }
                cut(i); continue
            }
            if isOther(lead) {
                i = lead
                while isOther(i) { i += 1 }
                cut(i); continue
            }
            whitespace(at: &i)
        }
    }

    private mutating func llama3(maxDigits: Int) {
        var i = start
        while i < end {
            let c = cps[i]
            let f = cls[i]
            let k = contraction(at: i, ignoringCase: true)
            if k > 0 { i += k; cut(i); continue }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if c != 0x0D && c != 0x0A && !f.contains(.number) && (f.contains(.letter) || cl(i + 1).contains(.letter)) {
                i += 1
                while cl(i).contains(.letter) { i += 1 }
                cut(i); continue
            }
            // `\p{N}{1,maxDigits}`
            if f.contains(.number) {
                var run = 0
                while cl(i).contains(.number) {
                    i += 1; run += 1
                    if run == maxDigits { cut(i); run = 0 }
                }
                cut(i); continue
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let lead = c == 0x20 ? i + 1 : i
            if cl(lead).isDisjoint(with: [.letter, .number, .whitespace]) {
                i = lead
                while isOther(i) { i += 1 }
                while cp(i) == 0x0D || cp(i) == 0x0A { i += 1 }
                cut(i); continue
            }
            // `\s*[\r\n]+`: whitespace up to the last line break of the run
            var n = 0
            var lastBreak = -1
            while cl(i + n).contains(.whitespace) {
                if cp(i + n) == 0x0D || cp(i + n) == 0x0A { lastBreak = i + n + 1 }
                n += 1
            }
            if lastBreak > 0 { i = lastBreak; cut(i); continue }
            whitespace(at: &i)
        }
    }
}
