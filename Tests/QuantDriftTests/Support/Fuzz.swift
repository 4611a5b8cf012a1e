import Foundation
import QuantDrift
import Testing

// MARK: - Mutator

/// A seeded mutation engine for hostile-input tests: byte-level mutations for binary formats
/// (bit flips, boundary bytes, truncations, inserted/deleted runs, little-endian fields overwritten
/// with huge or boundary values, splices of two seeds) and structural ones for JSON text (wrong
/// types, deep nesting, huge numbers, invalid UTF-8, duplicate keys). Same seed, same inputs.
struct Mutator {
    var rng: SplitMix64
    /// Words that may be inserted or overwritten (format keywords: JSON keys, scheme components…).
    var dictionary: [[UInt8]] = []

    init(seed: UInt64, dictionary: [String] = []) {
        rng = SplitMix64(seed: seed)
        self.dictionary = dictionary.map { Array($0.utf8) }
    }

    /// Values that break length, count and offset checks when written into a 4- or 8-byte field.
    static let boundaryValues: [UInt64] = [
        0, 1, 2, 3, 4, 7, 8, 31, 32, 33, 255, 256, 4096, 65535, 65536,
        UInt64(Int32.max), UInt64(Int32.max) + 1, UInt64(UInt32.max), UInt64(UInt32.max) + 1,
        1 << 40, 1 << 48, UInt64(Int64.max), UInt64(Int64.max) + 1, UInt64.max, UInt64.max - 1,
        UInt64(bitPattern: -2), UInt64(bitPattern: Int64(Int32.min)),
    ]
    static let boundaryBytes: [UInt8] = [0x00, 0xFF, 0x7F, 0x80]

    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(rng.next() % UInt64(n)) }
    mutating func chance(_ p: Double) -> Bool { Double(rng.next() % 1_000_000) < p * 1_000_000 }
    mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }

    /// A position in `0..<count`, three times in four inside the first `hot` bytes (the header
    /// of a binary file, where lengths and counts live) when `hot` is given.
    mutating func position(_ count: Int, hot: Int?) -> Int {
        if let hot, hot > 0, hot < count, below(4) != 0 { return below(hot) }
        return below(count)
    }

    /// `input` with one to four byte-level mutations.
    mutating func mutateBytes(_ input: [UInt8], splice other: [UInt8]? = nil, hot: Int? = nil) -> [UInt8] {
        var b = input
        for _ in 0...below(4) { mutateOnce(&b, splice: other, hot: hot) }
        return b
    }

    mutating func mutateOnce(_ b: inout [UInt8], splice other: [UInt8]?, hot: Int?) {
        if b.isEmpty { b = [pick(Self.boundaryBytes)]; return }
        let i = position(b.count, hot: hot)
        switch below(11) {
        case 0: b[i] ^= 1 << UInt8(below(8))
        case 1: b[i] = pick(Self.boundaryBytes)
        case 2: b.removeSubrange(position(b.count, hot: hot)...)
        case 3:  // insert a run: random bytes, or one byte repeated (up to 4 KiB)
            let n = chance(0.1) ? 1 + below(4096) : 1 + below(16)
            let run: [UInt8] = chance(0.5) ? (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                : [UInt8](repeating: pick(Self.boundaryBytes), count: n)
            b.insert(contentsOf: run, at: i)
        case 4: b.removeSubrange(i..<min(b.count, i + 1 + below(chance(0.2) ? 256 : 16)))
        case 5, 6:  // a 4- or 8-byte little-endian field: a boundary value or a small step
            let width = chance(0.5) ? 4 : 8
            guard b.count >= width else { return }
            let at = min(i, b.count - width)
            var v = pick(Self.boundaryValues)
            if chance(0.3) {
                var old: UInt64 = 0
                for k in 0..<width { old |= UInt64(b[at + k]) << (8 * UInt64(k)) }
                v = old &+ UInt64(bitPattern: Int64(below(33) - 16))
            }
            for k in 0..<width { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
        case 7:  // splice: our prefix, the other seed's suffix
            guard let other, !other.isEmpty else { b[i] ^= 0xFF; return }
            b = Array(b[..<i]) + Array(other[below(other.count)...])
        case 8:  // duplicate a run in place
            let n = min(b.count - i, 1 + below(64))
            b.insert(contentsOf: Array(b[i..<(i + n)]), at: i)
        case 9:
            guard !dictionary.isEmpty else { b[i] = UInt8(truncatingIfNeeded: rng.next()); return }
            b.insert(contentsOf: pick(dictionary), at: i)
        default:
            guard !dictionary.isEmpty else { b.swapAt(i, below(b.count)); return }
            let word = pick(dictionary)
            b.replaceSubrange(i..<min(b.count, i + word.count), with: word)
        }
    }

    // MARK: JSON text

    /// Values of the wrong type or at the edge of what a reader accepts.
    static let hostileJSONValues: [String] = [
        "null", "true", "false", "0", "-1", "1", "1.5", "-0", "1e400", "-1e400", "1e-400",
        "9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
        "123456789012345678901234567890", "4294967295", "2147483648", "1099511627776",
        "\"\"", "\"x\"", "\"\\u0000\"", "\"\\uD800\"", "[]", "{}", "[1,2,3]", "{\"a\":1}", "[[[]]]",
        "\"" + String(repeating: "A", count: 5000) + "\"",
    ]

    /// `text` (a JSON document or JSONL line) with one structural mutation, or byte mutations.
    mutating func mutateJSON(_ text: [UInt8], splice other: [UInt8]? = nil) -> [UInt8] {
        var b = text
        switch below(10) {
        case 0, 1, 2:  // replace a value (after ':' or '[' or ',') with a hostile one
            let starts = b.indices.filter { b[$0] == UInt8(ascii: ":") || b[$0] == UInt8(ascii: "[") || b[$0] == UInt8(ascii: ",") }
            guard let s = starts.isEmpty ? nil : pick(starts) else { return mutateBytes(b) }
            let from = s + 1
            var to = from
            // Skip one simple value: a string or a run of non-structural bytes.
            if to < b.count, b[to] == UInt8(ascii: "\"") {
                to += 1
                while to < b.count, b[to] != UInt8(ascii: "\"") { to += b[to] == UInt8(ascii: "\\") ? 2 : 1 }
                to = min(b.count, to + 1)
            } else {
                while to < b.count, !",]}".utf8.contains(b[to]) { to += 1 }
            }
            b.replaceSubrange(from..<to, with: Array(pick(Self.hostileJSONValues).utf8))
        case 3:  // deep nesting
            let depth = pick([100, 1000, 10_000, 100_000])
            let open: UInt8 = chance(0.5) ? UInt8(ascii: "[") : UInt8(ascii: "{")
            let at = chance(0.5) ? 0 : position(b.count + 1, hot: nil)
            if open == UInt8(ascii: "[") {
                b.insert(contentsOf: [UInt8](repeating: open, count: depth) + (chance(0.5) ? [UInt8](repeating: UInt8(ascii: "]"), count: depth) : []), at: at)
            } else {
                b.insert(contentsOf: Array(String(repeating: "{\"a\":", count: depth).utf8), at: at)
            }
        case 4:  // duplicate key: repeat an existing "key": after the first '{'
            guard let brace = b.firstIndex(of: UInt8(ascii: "{")) else { return mutateBytes(b) }
            let keys = keyNames(b)
            let key = keys.isEmpty ? "k" : pick(keys)
            b.insert(contentsOf: Array("\"\(key)\":\(pick(Self.hostileJSONValues)),".utf8), at: brace + 1)
        case 5:  // invalid UTF-8 (or a lone surrogate escape) inside a string
            let quotes = b.indices.filter { b[$0] == UInt8(ascii: "\"") }
            let bad: [[UInt8]] = [[0xC3, 0x28], [0xFF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xC0, 0x80], [0xE2, 0x82],
                                  Array("\\uDC00".utf8), Array("\\u12".utf8), [0x00]]
            b.insert(contentsOf: pick(bad), at: quotes.isEmpty ? 0 : pick(quotes) + 1)
        case 6:  // huge number replacing a digit run
            let digits = b.indices.filter { (48...57).contains(b[$0]) }
            guard !digits.isEmpty else { return mutateBytes(b) }
            var s = pick(digits), e = s
            while s > 0, (48...57).contains(b[s - 1]) { s -= 1 }
            while e < b.count, (48...57).contains(b[e]) { e += 1 }
            b.replaceSubrange(s..<e, with: Array(pick(["1e999999", "99999999999999999999999", "-9223372036854775809",
                                                         "18446744073709551615", "4294967296", "1099511627776", "-1", "0", "1.0000001"]).utf8))
        default:
            return mutateBytes(b, splice: other)
        }
        return b
    }

    /// The object keys of a JSON text (strings followed by ':').
    func keyNames(_ b: [UInt8]) -> [String] {
        var keys: [String] = []
        var i = 0
        while i < b.count, keys.count < 64 {
            guard b[i] == UInt8(ascii: "\"") else { i += 1; continue }
            var j = i + 1
            while j < b.count, b[j] != UInt8(ascii: "\"") { j += b[j] == UInt8(ascii: "\\") ? 2 : 1 }
            if j + 1 < b.count, b[j + 1] == UInt8(ascii: ":") {
                keys.append(String(decoding: b[(i + 1)..<j], as: UTF8.self))
            }
            i = j + 1
        }
        return keys
    }
}

// MARK: - Harness

/// One reader under fuzz: seed inputs made by code and a body that must either succeed or throw
/// `QuantDriftError` for every input. Adding a reader to the fuzz tests is adding one of these
/// (see `FuzzTests.targets`).
struct FuzzTarget: Sendable, CustomStringConvertible {
    let name: String
    /// Seed inputs (valid files, lines or strings).
    let seeds: @Sendable () throws -> [[UInt8]]
    /// How to derive a new input from a seed (`other` is a second seed to splice with).
    let mutate: @Sendable (inout Mutator, _ seed: [UInt8], _ other: [UInt8]) -> [UInt8]
    /// Feeds one input to the reader; `path` is a file already holding the input.
    let run: @Sendable (_ input: [UInt8], _ path: String) throws -> Void
    /// Words for the mutator's dictionary.
    var dictionary: [String] = []

    var description: String { name }
}

/// Runs a target for a number of seeded executions. Before each execution the input is written to
/// `<folder>/<target>.current`, so a crash (which kills the whole test process) leaves the culprit
/// on disk; an input taking more than `budget` seconds fails the test, and a watchdog aborts the
/// process (naming the saved input) when one takes more than `hangLimit`.
enum FuzzHarness {
    struct Result {
        var executions = 0
        var accepted = 0
        var rejected = 0
        var slowest = 0.0
        var seconds = 0.0
    }

    /// Executions per target: `QUANTDRIFT_FUZZ_ITERATIONS`, else `short`.
    static func iterations(short: Int) -> Int {
        ProcessInfo.processInfo.environment["QUANTDRIFT_FUZZ_ITERATIONS"].flatMap(Int.init) ?? short
    }

    /// The folder holding the current input of each target (and failures, kept for reproduction).
    static var folder: URL {
        let dir = ProcessInfo.processInfo.environment["QUANTDRIFT_FUZZ_DIR"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("quantdrift-fuzz")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    static func run(_ target: FuzzTarget, iterations: Int, seed: UInt64 = 0x5EED,
                    budget: Double = 2, hangLimit: Double = 20,
                    sourceLocation: SourceLocation = #_sourceLocation) throws -> Result {
        let seeds = try target.seeds()
        precondition(!seeds.isEmpty, "fuzz target \(target.name) has no seeds")
        let current = folder.appendingPathComponent("\(target.name).current").path
        let watchdog = Watchdog(target: target.name, inputPath: current, limit: hangLimit)
        defer { watchdog.stop() }
        var m = Mutator(seed: seed, dictionary: target.dictionary)
        var r = Result()
        let t0 = Date()
        for i in 0..<iterations {
            // The seeds themselves first, then mutants.
            let input = i < seeds.count ? seeds[i] : target.mutate(&m, m.pick(seeds), m.pick(seeds))
            guard FileManager.default.createFile(atPath: current, contents: Data(input)) else {
                Issue.record("cannot write \(current)", sourceLocation: sourceLocation)
                return r
            }
            watchdog.begin()
            let start = Date()
            do {
                try target.run(input, current)
                r.accepted += 1
            } catch let e as QuantDriftError {
                r.rejected += 1
                if e.description.contains("\n") || e.description.isEmpty {
                    keep(input, target, i, "multiline")
                    Issue.record("\(target.name) #\(i): error message is not one line: \(e.description.debugDescription)", sourceLocation: sourceLocation)
                }
            } catch {
                let kept = keep(input, target, i, "foreign-error")
                Issue.record("\(target.name) #\(i): threw \(type(of: error)) \(error), not QuantDriftError (input kept at \(kept))", sourceLocation: sourceLocation)
            }
            let dt = Date().timeIntervalSince(start)
            watchdog.end()
            r.slowest = max(r.slowest, dt)
            if dt > budget {
                let kept = keep(input, target, i, "slow")
                Issue.record("\(target.name) #\(i): one input took \(String(format: "%.2f", dt)) s (budget \(budget) s; input kept at \(kept))", sourceLocation: sourceLocation)
            }
            r.executions += 1
        }
        r.seconds = Date().timeIntervalSince(t0)
        try? FileManager.default.removeItem(atPath: current)
        print(String(format: "fuzz %@: %d executions (%d accepted, %d rejected) in %.1f s, slowest input %.3f s",
                     target.name, r.executions, r.accepted, r.rejected, r.seconds, r.slowest))
        return r
    }

    /// Copies a failing input beside the current one and returns its path.
    @discardableResult
    static func keep(_ input: [UInt8], _ target: FuzzTarget, _ i: Int, _ why: String) -> String {
        let path = folder.appendingPathComponent("\(target.name)-\(i)-\(why).bin").path
        FileManager.default.createFile(atPath: path, contents: Data(input))
        return path
    }
}

/// Aborts the process when one execution runs longer than `limit` (a hang would otherwise stall
/// the test run forever), naming the file that holds the input.
final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var started: Date?
    private var stopped = false
    private let target: String, inputPath: String, limit: Double

    init(target: String, inputPath: String, limit: Double) {
        self.target = target
        self.inputPath = inputPath
        self.limit = limit
        let thread = Thread { [weak self] in
            while let self, self.tick() { Thread.sleep(forTimeInterval: 0.25) }
        }
        thread.start()
    }

    func begin() { lock.withLock { started = Date() } }
    func end() { lock.withLock { started = nil } }
    func stop() { lock.withLock { stopped = true } }

    /// False once stopped.
    private func tick() -> Bool {
        lock.withLock {
            if let started, Date().timeIntervalSince(started) > limit {
                FileHandle.standardError.write(Data("fuzz \(target): input hangs (> \(limit) s); it is in \(inputPath)\n".utf8))
                abort()
            }
            return !stopped
        }
    }
}
