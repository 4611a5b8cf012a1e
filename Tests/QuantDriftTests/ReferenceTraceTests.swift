import CKernels
import Foundation
import Testing
@testable import QuantDrift

@Suite("Reference trace")
struct ReferenceTraceTests {
    static let vocab = 1000

    static func header(model: String = "m1", workload: String = "w1", runtime: String = "rt",
                       settings: [String: String] = ["n_ctx": "64"]) -> ReferenceTraceHeader {
        ReferenceTraceHeader(modelSHA256: model, workloadSHA256: workload, runtime: runtime, vocabSize: vocab, settings: settings)
    }

    static func tempURL(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("qdtrace-\(getpid())-\(name).qdtrace")
    }

    /// Random log-probs (a log-softmax of random logits), seeded.
    static func logProbs(rows: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        var out = [Float](repeating: 0, count: rows * vocab)
        for r in 0..<rows {
            var mx = -Float.infinity
            for i in 0..<vocab { out[r * vocab + i] = Float(g.nextDouble() * 20 - 10); mx = max(mx, out[r * vocab + i]) }
            var s = 0.0
            for i in 0..<vocab { s += exp(Double(out[r * vocab + i] - mx)) }
            let lse = Double(mx) + log(s)
            for i in 0..<vocab { out[r * vocab + i] = Float(Double(out[r * vocab + i]) - lse) }
        }
        return out
    }

    struct Written {
        let url: URL
        let records: [(id: String, tokens: [Int], first: Int, logProbs: [Float])]
    }

    /// A trace of three records (one with no scored rows).
    static func write(_ name: String, header h: ReferenceTraceHeader = header()) throws -> Written {
        let url = tempURL(name)
        let records: [(id: String, tokens: [Int], first: Int, logProbs: [Float])] = [
            ("chunk 0", Array(0..<64), 32, logProbs(rows: 31, seed: 1)),
            ("prompt ü", [5, 999, 0, 42], 0, logProbs(rows: 4, seed: 2)),
            ("empty", [7, 8], 2, []),
        ]
        let w = try ReferenceTraceWriter(url: url, header: h)
        for r in records {
            try r.logProbs.withUnsafeBufferPointer { try w.append(id: r.id, tokens: r.tokens, firstScored: r.first, logProbs: $0) }
        }
        #expect(!FileManager.default.fileExists(atPath: url.path), "the trace appears only on finish")
        try w.finish()
        return Written(url: url, records: records)
    }

    /// The invalidInput message of opening `url`, or nil when it opens.
    static func openError(_ url: URL, expecting: ReferenceTraceHeader? = nil) -> String? {
        do {
            _ = try ReferenceTraceReader(url: url, expecting: expecting)
            return nil
        } catch let e as QuantDriftError {
            if case .invalidInput(let m) = e { return m }
            return "not invalidInput: \(e)"
        } catch {
            return "unexpected error \(error)"
        }
    }

    static func mutated(_ source: URL, _ name: String, _ change: (inout [UInt8]) -> Void) throws -> URL {
        var bytes = [UInt8](try Data(contentsOf: source))
        change(&bytes)
        let url = tempURL(name)
        try Data(bytes).write(to: url)
        return url
    }

    // MARK: - Building blocks

    @Test func xxh64MatchesReferenceVectors() {
        // Digests from the reference xxHash library (XXH64, seed 0).
        #expect(XXH64.hash([UInt8]()) == 0xef46_db37_51d8_e999)
        #expect(XXH64.hash(Array("abc".utf8)) == 0x44bc_2cf5_ad77_0999)
        #expect(XXH64.hash(Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!?".utf8)) == 0xc02a_83e7_5f3e_d6ed)
        let long = Array((0..<3).flatMap { _ in (0..<256).map { UInt8($0) } }) + Array("xyz".utf8)
        #expect(XXH64.hash(long) == 0xe921_a1b4_5bd7_79f8)
    }

    @Test func halfConversionRoundsLikeFloat16() {
        var g = SplitMix64(seed: 7)
        var values: [Float] = [0, -0, 1, -1, 65504, 65519.99, 65520, -70000, .infinity, -.infinity, 6.1e-5, 6.0e-5,
                               5.96e-8, 2.98e-8, 2.99e-8, 1e-10, -3.3e-6, .leastNonzeroMagnitude, -17.123456]
        for _ in 0..<20000 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: g.next()))) }
        values = values.filter { !$0.isNaN }
        var lo = [UInt8](repeating: 0, count: values.count), hi = lo
        qd_f32_to_f16_split(values, values.count, &lo, &hi)
        var back = [Float](repeating: 0, count: values.count)
        qd_f16_split_to_f32(lo, hi, values.count, &back)
        var firstBad: String?
        for (i, x) in values.enumerated() {
            let want = Float16(x).bitPattern
            let scalar = qd_f32_to_f16(x)
            let vector = UInt16(lo[i]) | UInt16(hi[i]) << 8
            let decoded = Float(Float16(bitPattern: want))
            if scalar != want || vector != want || back[i].bitPattern != decoded.bitPattern
                || qd_f16_to_f32(want).bitPattern != decoded.bitPattern {
                firstBad = "x=\(x) want \(want) scalar \(scalar) vector \(vector) back \(back[i]) vs \(decoded)"
                break
            }
        }
        #expect(firstBad == nil, "\(firstBad ?? "")")
    }

    // MARK: - Round trip

    @Test func roundTripKeepsTokensAndLogProbsWithinHalfPrecision() throws {
        let w = try Self.write("roundtrip")
        defer { try? FileManager.default.removeItem(at: w.url) }
        let r = try ReferenceTraceReader(url: w.url, expecting: Self.header())
        #expect(r.count == 3)
        #expect(r.ids == ["chunk 0", "prompt ü", "empty"])
        #expect(r.header == Self.header())
        for (i, want) in w.records.enumerated() {
            let got = try r.record(at: i)
            #expect(got.id == want.id && got.tokens == want.tokens && got.firstScored == want.first)
            #expect(got.rows * Self.vocab == want.logProbs.count && got.logProbs.count == want.logProbs.count)
            var worst = 0.0
            for (a, b) in zip(got.logProbs, want.logProbs) {
                worst = max(worst, Double(abs(a - b)) / max(Double(abs(b)), 6.1e-5))
            }
            #expect(worst <= 1.0 / 2048, "record \(i): worst relative error \(worst)")
            if !want.logProbs.isEmpty { #expect(worst > 0, "binary16 must round something") }
        }
    }

    @Test func unfinishedWriterLeavesNothing() throws {
        let url = Self.tempURL("unfinished")
        do {
            let w = try ReferenceTraceWriter(url: url, header: Self.header())
            let lp = Self.logProbs(rows: 2, seed: 3)
            try lp.withUnsafeBufferPointer { try w.append(id: "a", tokens: [1, 2, 3], firstScored: 0, logProbs: $0) }
        }
        let dir = FileManager.default.temporaryDirectory.path
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(url.lastPathComponent) }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    @Test func writerRefusesRowsThatDoNotFit() throws {
        let url = Self.tempURL("refuse")
        let w = try ReferenceTraceWriter(url: url, header: Self.header())
        let lp = Self.logProbs(rows: 3, seed: 4)
        #expect(throws: QuantDriftError.self) {
            try lp.withUnsafeBufferPointer { try w.append(id: "a", tokens: [1, 2, 3], firstScored: 1, logProbs: $0) }
        }
        #expect(throws: QuantDriftError.self) {
            try lp.withUnsafeBufferPointer { try w.append(id: "a", tokens: [1, 2, 3], firstScored: 0,
                                                          logProbs: UnsafeBufferPointer(rebasing: $0[0..<(Self.vocab + 1)])) }
        }
    }

    // MARK: - Corruption and mismatch

    @Test func headerMismatchNamesTheField() throws {
        let w = try Self.write("mismatch")
        defer { try? FileManager.default.removeItem(at: w.url) }
        let cases: [(ReferenceTraceHeader, String)] = [
            (Self.header(model: "m2"), "model_sha256"),
            (Self.header(workload: "w2"), "workload_sha256"),
            (Self.header(runtime: "other"), "runtime"),
            (Self.header(settings: ["n_ctx": "128"]), "n_ctx"),
            (Self.header(settings: ["n_ctx": "64", "seed": "1"]), "seed"),
        ]
        for (expected, field) in cases {
            let m = Self.openError(w.url, expecting: expected)
            #expect(m?.contains("different \(field)") == true, "\(field): \(m ?? "opened")")
            #expect(m?.contains("\n") == false)
        }
        #expect(Self.openError(w.url, expecting: Self.header()) == nil)
    }

    @Test func corruptFilesGiveClearErrors() throws {
        let w = try Self.write("corrupt")
        defer { try? FileManager.default.removeItem(at: w.url) }
        let bytes = [UInt8](try Data(contentsOf: w.url))
        let headerLength = Int(UInt32(bytes[12]) | UInt32(bytes[13]) << 8 | UInt32(bytes[14]) << 16 | UInt32(bytes[15]) << 24)
        let record0 = 16 + headerLength
        // Offsets inside record 0: "QDRC", u32 id length, id, u32 token count.
        let tokenCountAt = record0 + 8 + "chunk 0".utf8.count
        let payloadAt = tokenCountAt + 4 + 4 * 64 + 8 + 8
        let cases: [(String, (inout [UInt8]) -> Void, String)] = [
            ("magic", { $0[0] = UInt8(ascii: "X") }, "QDTRACE1"),
            ("version", { $0[8] = 9 }, "format version 9"),
            ("header-length", { $0[14] = 0xff }, "runs past the end"),
            ("empty", { $0 = [] }, "QDTRACE1"),
            ("cut-header", { $0 = Array($0[0..<(record0 - 5)]) }, "runs past the end"),
            ("cut-record", { $0 = Array($0[0..<(payloadAt + 100)]) }, "past the end"),
            ("no-footer", { $0 = Array($0[0..<($0.count - 24)]) }, "truncated after 3 records"),
            ("cut-footer", { $0 = Array($0[0..<($0.count - 3)]) }, "truncated"),
            ("token-count", { $0[tokenCountAt + 3] = 0x7f }, "tokens run past the end"),
            ("payload-bit", { $0[payloadAt + 40] ^= 0x10 }, "record 0 (chunk 0): checksum mismatch"),
            ("token-bit", { $0[tokenCountAt + 9] ^= 1 }, "checksum mismatch"),
            ("header-bit", { $0[20] ^= 0x01 }, ""),
            ("footer-count", { $0[$0.count - 16] = 2 }, "end marker counts 2 records"),
            ("footer-digest", { $0[$0.count - 1] ^= 0xff }, "whole-file checksum mismatch"),
            ("trailing", { $0 += [0, 0, 0, 0, 0] }, ""),
        ]
        for (name, change, needle) in cases {
            let url = try Self.mutated(w.url, name, change)
            defer { try? FileManager.default.removeItem(at: url) }
            let m = Self.openError(url)
            #expect(m != nil, "\(name): a corrupt trace opened")
            guard let m else { continue }
            #expect(m.hasPrefix("reference trace \(url.path): "), "\(name): \(m)")
            #expect(needle.isEmpty || m.contains(needle), "\(name): \(m)")
            #expect(!m.contains("\n"), "\(name): \(m)")
        }
    }

    @Test func lyingRowCountIsRefusedBeforeAllocating() throws {
        // A record that claims rows its compressed bytes cannot hold, with a valid checksum.
        let url = Self.tempURL("lying")
        defer { try? FileManager.default.removeItem(at: url) }
        let h = Self.header()
        var bytes = Array("QDTRACE1".utf8)
        let json = h.serialized()
        bytes.appendLE(UInt32(1)); bytes.appendLE(UInt32(json.count)); bytes += json
        var chain = bytes
        var rec = Array("QDRC".utf8)
        rec.appendLE(UInt32(1)); rec += Array("x".utf8)
        let tokens = 1 << 20
        rec.appendLE(UInt32(tokens)); rec += [UInt8](repeating: 0, count: 4 * tokens)
        rec.appendLE(UInt32(0)); rec.appendLE(UInt32(tokens))
        rec.appendLE(UInt64(16)); rec += [UInt8](repeating: 0, count: 16)
        rec.appendLE(XXH64.hash(rec))
        bytes += rec
        chain += rec.suffix(8)
        chain.appendLE(UInt64(1))
        bytes += Array("QDTREND1".utf8); bytes.appendLE(UInt64(1)); bytes.appendLE(XXH64.hash(chain))
        try Data(bytes).write(to: url)
        let m = Self.openError(url)
        #expect(m?.contains("cannot come from 16 compressed bytes") == true, "\(m ?? "opened")")
    }
}

extension SplitMix64 {
    mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
