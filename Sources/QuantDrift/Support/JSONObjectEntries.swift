/// Reads one object of a JSON document as (key, value) pairs in document order, each key kept as
/// the exact UTF-8 bytes it spells. `JSONSerialization` returns a Swift dictionary, and Swift
/// strings compare by canonical equivalence: two distinct vocabulary tokens such as "é" (U+00E9)
/// and "e" + U+0301 become one key there. A tokenizer's vocabulary must keep both.
///
/// The document is assumed to have been parsed once already (so it is valid JSON); anything this
/// scanner does not expect still becomes a one-line error naming the file, never a crash.
enum JSONObjectEntries {
    /// The entries of the object at `keyPath` (e.g. ["model", "vocab"]), whose values must be
    /// integers.
    static func integers(in bytes: UnsafeRawBufferPointer, at keyPath: [String], file: String) throws -> [(key: [UInt8], value: Int)] {
        var s = Scanner(bytes: bytes, file: file, keyPath: keyPath.joined(separator: "."))
        for key in keyPath {
            guard try s.seekKey(Array(key.utf8)) else {
                throw QuantDriftError.invalidInput("\(file): \(keyPath.joined(separator: ".")) is missing")
            }
        }
        var out: [(key: [UInt8], value: Int)] = []
        try s.expect(UInt8(ascii: "{"))
        if try s.consume(UInt8(ascii: "}")) { return out }
        repeat {
            let key = try s.string()
            try s.expect(UInt8(ascii: ":"))
            out.append((key, try s.integer()))
        } while try s.consume(UInt8(ascii: ","))
        try s.expect(UInt8(ascii: "}"))
        return out
    }

    private struct Scanner {
        let bytes: UnsafeRawBufferPointer
        let file: String
        let keyPath: String
        var i = 0

        init(bytes: UnsafeRawBufferPointer, file: String, keyPath: String) {
            self.bytes = bytes
            self.file = file
            self.keyPath = keyPath
        }

        func fail(_ what: String) -> QuantDriftError {
            .invalidInput("\(file): \(keyPath): \(what) at byte \(i)")
        }

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        mutating func consume(_ c: UInt8) throws -> Bool {
            skipSpace()
            guard i < bytes.count else { throw fail("unexpected end of file") }
            if bytes[i] == c { i += 1; return true }
            return false
        }

        mutating func expect(_ c: UInt8) throws {
            guard try consume(c) else { throw fail("expected '\(Character(UnicodeScalar(c)))'") }
        }

        /// Inside an object (at its '{'), moves to the value of `key`; false when it has none.
        mutating func seekKey(_ key: [UInt8]) throws -> Bool {
            try expect(UInt8(ascii: "{"))
            if try consume(UInt8(ascii: "}")) { return false }
            repeat {
                let k = try string()
                try expect(UInt8(ascii: ":"))
                if k == key { skipSpace(); return true }
                try skipValue(depth: 0)
            } while try consume(UInt8(ascii: ","))
            return false
        }

        mutating func skipValue(depth: Int) throws {
            guard depth < 512 else { throw fail("nesting too deep") }
            skipSpace()
            guard i < bytes.count else { throw fail("unexpected end of file") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                if try consume(UInt8(ascii: "}")) { return }
                repeat {
                    _ = try string()
                    try expect(UInt8(ascii: ":"))
                    try skipValue(depth: depth + 1)
                } while try consume(UInt8(ascii: ","))
                try expect(UInt8(ascii: "}"))
            case UInt8(ascii: "["):
                i += 1
                if try consume(UInt8(ascii: "]")) { return }
                repeat { try skipValue(depth: depth + 1) } while try consume(UInt8(ascii: ","))
                try expect(UInt8(ascii: "]"))
            case UInt8(ascii: "\""):
                _ = try string()
            default:  // number, true, false, null
                while i < bytes.count, !",]} \n\r\t".utf8.contains(bytes[i]) { i += 1 }
            }
        }

        mutating func integer() throws -> Int {
            skipSpace()
            let start = i
            if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
            var value = 0
            var digits = 0
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int(bytes[i] - 0x30))
                guard !o1, !o2 else { throw fail("integer out of range") }
                value = a
                digits += 1
                i += 1
            }
            guard digits > 0, i >= bytes.count || ",]} \n\r\t".utf8.contains(bytes[i]) else {
                i = start
                throw fail("expected an integer")
            }
            return bytes[start] == UInt8(ascii: "-") ? -value : value
        }

        /// A string's bytes with its escapes decoded (an unpaired surrogate becomes U+FFFD).
        mutating func string() throws -> [UInt8] {
            try expect(UInt8(ascii: "\""))
            var out: [UInt8] = []
            while true {
                guard i < bytes.count else { throw fail("unterminated string") }
                let c = bytes[i]
                i += 1
                if c == UInt8(ascii: "\"") { return out }
                guard c == UInt8(ascii: "\\") else { out.append(c); continue }
                guard i < bytes.count else { throw fail("unterminated string") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var u = try hex4()
                    if (0xD800..<0xDC00).contains(u), i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                        let save = i
                        i += 2
                        let low = try hex4()
                        if (0xDC00..<0xE000).contains(low) {
                            u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            i = save
                        }
                    }
                    out.append(contentsOf: String(Character(UnicodeScalar(u) ?? "\u{FFFD}")).utf8)
                default: out.append(e)  // \" \\ \/
                }
            }
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count else { throw fail("unterminated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[i]
                let d: UInt8
                switch c {
                case 0x30...0x39: d = c - 0x30
                case 0x41...0x46: d = c - 0x41 + 10
                case 0x61...0x66: d = c - 0x61 + 10
                default: throw fail("bad \\u escape")
                }
                v = v << 4 | UInt32(d)
                i += 1
            }
            return v
        }
    }
}
