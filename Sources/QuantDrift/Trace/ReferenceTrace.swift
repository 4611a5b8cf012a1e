import CKernels
import CZstd
import Foundation

// MARK: - File format
//
// A reference trace stores the FP32 reference's side of a comparison so later runs can skip the
// reference model. All integers are little-endian.
//
//   file    = "QDTRACE1"  u32 version (1)  u32 H  header[H]  record*  footer
//   header  = UTF-8 JSON object of strings, keys sorted (ReferenceTraceHeader)
//   record  = "QDRC"
//             u32 idLength, id[idLength] (UTF-8)
//             u32 tokenCount, i32 tokens[tokenCount]
//             u32 firstScored, u32 rows         rows of log-probs for positions firstScored ..< firstScored+rows
//             u64 C, zstd[C]                    one zstd frame (content checksum on) of rows × vocab binary16
//                                               log-probs, byte-split: every low byte, then every high byte
//             u64 xxh64 of the record's bytes from "QDRC" through the frame
//   footer  = "QDTREND1"  u64 recordCount  u64 xxh64(file[0 ..< end of header] ‖ each record's xxh64 ‖ recordCount)
//
// The footer digest chains the header and every record checksum, so together they check the
// whole file; a file without the footer was not finished (the writer renames its temporary file
// into place only after writing it).

enum ReferenceTraceFormat {
    static let magic = Array("QDTRACE1".utf8)
    static let recordMagic = Array("QDRC".utf8)
    static let footerMagic = Array("QDTREND1".utf8)
    static let version: UInt32 = 1
    static let footerSize = 24
    static let maxIDLength = 4096
    /// Decompressed size allowed per compressed byte: real log-probs compress ~3×, so a record
    /// claiming more is lying, and the reader refuses it before allocating.
    static let maxCompressionRatio = 1024
}

/// One record read back: the tokens of a prompt or chunk and the reference's log-probabilities at
/// its scored positions, (rows, vocab) row-major, decoded from binary16.
public struct ReferenceTraceRecord: Sendable {
    public var id: String
    public var tokens: [Int]
    public var firstScored: Int
    public var rows: Int
    public var vocabSize: Int
    public var logProbs: [Float]
}

// MARK: - Writer

/// Writes a reference trace to a temporary file beside `url`, renamed into place by `finish()`;
/// a writer dropped without `finish()` removes its temporary file.
public final class ReferenceTraceWriter {
    public let url: URL
    public let header: ReferenceTraceHeader
    public let vocabSize: Int
    public private(set) var recordCount = 0
    private let tempPath: String
    private var file: UnsafeMutablePointer<FILE>?
    private var chain: [UInt8] = []
    private var split: [UInt8] = []
    private var compressed: [UInt8] = []
    private let cctx: OpaquePointer

    public init(url: URL, header: ReferenceTraceHeader, compressionLevel: Int = 1) throws {
        guard let vocab = header.vocabSize, vocab >= 1, vocab <= 1 << 24 else {
            throw QuantDriftError.invalidInput("reference trace header needs a vocab_size in 1...\(1 << 24)")
        }
        guard let c = ZSTD_createCCtx() else { throw QuantDriftError.internalError("zstd: cannot create a compression context") }
        cctx = c
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(compressionLevel))
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        self.url = url
        self.header = header
        self.vocabSize = vocab
        tempPath = url.path + ".partial-\(getpid())"
        guard let f = fopen(tempPath, "wb") else {
            ZSTD_freeCCtx(cctx)
            throw QuantDriftError.invalidInput("\(url.path): cannot write: \(String(cString: strerror(errno)))")
        }
        file = f
        var start = ReferenceTraceFormat.magic
        let json = header.serialized()
        start.appendLE(ReferenceTraceFormat.version)
        start.appendLE(UInt32(json.count))
        start += json
        chain = start
        try write(start)
    }

    deinit {
        if let f = file {
            fclose(f)
            unlink(tempPath)
        }
        ZSTD_freeCCtx(cctx)
    }

    /// Appends one record: `logProbs` holds (rows, vocab) float32 log-probabilities for positions
    /// `firstScored ..< firstScored + rows` of `tokens`; they are stored as binary16.
    public func append(id: String, tokens: [Int], firstScored: Int, logProbs: UnsafeBufferPointer<Float>) throws {
        guard file != nil else { throw QuantDriftError.internalError("reference trace \(url.path): append after finish") }
        let idBytes = Array(id.utf8)
        guard idBytes.count <= ReferenceTraceFormat.maxIDLength else {
            throw QuantDriftError.invalidInput("reference trace record id longer than \(ReferenceTraceFormat.maxIDLength) bytes")
        }
        guard logProbs.count % vocabSize == 0 else {
            throw QuantDriftError.invalidInput("reference trace record \(id): \(logProbs.count) log-probs is not a whole number of rows of \(vocabSize)")
        }
        let rows = logProbs.count / vocabSize
        guard firstScored >= 0, firstScored + rows <= tokens.count, tokens.count <= Int(UInt32.max) else {
            throw QuantDriftError.invalidInput("reference trace record \(id): \(rows) rows from position \(firstScored) do not fit \(tokens.count) tokens")
        }
        var record = ReferenceTraceFormat.recordMagic
        record.reserveCapacity(32 + idBytes.count + 4 * tokens.count)
        record.appendLE(UInt32(idBytes.count))
        record += idBytes
        record.appendLE(UInt32(tokens.count))
        for t in tokens {
            guard let v = Int32(exactly: t) else { throw QuantDriftError.invalidInput("reference trace record \(id): token \(t) out of Int32 range") }
            record.appendLE(UInt32(bitPattern: v))
        }
        record.appendLE(UInt32(firstScored))
        record.appendLE(UInt32(rows))

        // Binary16, byte-split, then one zstd frame.
        let n = logProbs.count
        if split.count < 2 * n { split = [UInt8](repeating: 0, count: 2 * n) }
        let bound = ZSTD_compressBound(2 * n)
        if compressed.count < bound { compressed = [UInt8](repeating: 0, count: bound) }
        let size = split.withUnsafeMutableBufferPointer { s in
            qd_f32_to_f16_split(logProbs.baseAddress, n, s.baseAddress!, s.baseAddress! + n)
            return compressed.withUnsafeMutableBytes { c in
                ZSTD_compress2(cctx, c.baseAddress, c.count, s.baseAddress, 2 * n)
            }
        }
        if ZSTD_isError(size) != 0 {
            throw QuantDriftError.internalError("zstd: \(String(cString: ZSTD_getErrorName(size)))")
        }
        record.appendLE(UInt64(size))
        // Hash the record in two pieces' worth of bytes without copying the frame into `record`.
        var hashed = record
        hashed += compressed[0..<size]
        let digest = XXH64.hash(hashed)
        try write(record)
        try compressed.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<size])) }
        var tail: [UInt8] = []
        tail.appendLE(digest)
        try write(tail)
        chain += tail
        recordCount += 1
    }

    /// Writes the footer, flushes to disk and renames the file into place.
    public func finish() throws {
        guard let f = file else { return }
        chain.appendLE(UInt64(recordCount))
        var footer = ReferenceTraceFormat.footerMagic
        footer.appendLE(UInt64(recordCount))
        footer.appendLE(XXH64.hash(chain))
        try write(footer)
        file = nil
        let flushed = fflush(f) == 0 && fsync(fileno(f)) == 0
        let closed = fclose(f) == 0
        guard flushed && closed else {
            unlink(tempPath)
            throw QuantDriftError.internalError("\(url.path): cannot write: \(String(cString: strerror(errno)))")
        }
        guard rename(tempPath, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tempPath)
            throw QuantDriftError.invalidInput("\(url.path): cannot rename the finished trace into place: \(reason)")
        }
    }

    private func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    private func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        guard fwrite(bytes.baseAddress, 1, bytes.count, file) == bytes.count else {
            throw QuantDriftError.internalError("\(url.path): cannot write: \(String(cString: strerror(errno)))")
        }
    }
}

// MARK: - Reader

/// Opens a reference trace and validates all of it (magic, version, every length against the
/// file size, every record checksum, the footer digest) before comparing its header with
/// `expecting`: any problem is one `invalidInput` line naming the file. Reading records is safe
/// from several threads (each call decompresses with its own context and scratch).
public final class ReferenceTraceReader: @unchecked Sendable {
    struct Entry {
        var id: String
        var tokensOffset: Int
        var tokenCount: Int
        var firstScored: Int
        var rows: Int
        var payloadOffset: Int
        var payloadLength: Int
    }

    public let url: URL
    public let header: ReferenceTraceHeader
    public let vocabSize: Int
    private let file: MappedFile
    private let entries: [Entry]

    public var count: Int { entries.count }
    public var ids: [String] { entries.map(\.id) }

    public init(url: URL, expecting: ReferenceTraceHeader? = nil) throws {
        self.url = url
        let name = url.path
        func bad(_ m: String) -> QuantDriftError { .invalidInput("reference trace \(name): \(m)") }
        file = try MappedFile(path: name)
        let b = file.bytes
        let size = b.count
        var cursor = ByteReader(bytes: b, source: name)

        guard size >= 16, Array(b[0..<8]) == ReferenceTraceFormat.magic else {
            throw bad("not a quantdrift reference trace (no QDTRACE1 magic)")
        }
        cursor.offset = 8
        let version = try cursor.read(or: bad("truncated header")) as UInt32
        guard version == ReferenceTraceFormat.version else {
            throw bad("format version \(version), this build reads version \(ReferenceTraceFormat.version)")
        }
        let headerLength = Int(try cursor.read(or: bad("truncated header")) as UInt32)
        guard headerLength <= size - cursor.offset else { throw bad("truncated: header of \(headerLength) bytes runs past the end of the file") }
        let parsed: ReferenceTraceHeader
        do {
            parsed = try ReferenceTraceHeader(parsing: UnsafeRawBufferPointer(rebasing: b[cursor.offset..<(cursor.offset + headerLength)]))
        } catch let e as QuantDriftError { throw bad(e.description) }
        cursor.offset += headerLength
        let vocab = parsed.vocabSize!
        var chain = Array(b[0..<cursor.offset])

        var entries: [Entry] = []
        while true {
            let k = entries.count
            if size - cursor.offset == ReferenceTraceFormat.footerSize,
               Array(b[cursor.offset..<(cursor.offset + 8)]) == ReferenceTraceFormat.footerMagic { break }
            if size - cursor.offset < 4 {
                throw bad("truncated after \(k) records: no end marker (the writer did not finish)")
            }
            let start = cursor.offset
            let cut = bad("truncated in record \(k)")
            guard Array(b[start..<(start + 4)]) == ReferenceTraceFormat.recordMagic else {
                throw bad("record \(k) at byte \(start): bad record marker (corrupt or truncated file)")
            }
            cursor.offset += 4
            let idLength = Int(try cursor.read(or: cut) as UInt32)
            guard idLength <= ReferenceTraceFormat.maxIDLength else { throw bad("record \(k): id length \(idLength) over \(ReferenceTraceFormat.maxIDLength)") }
            let idBytes = try cursor.take(idLength, or: cut)
            let id = String(decoding: idBytes, as: UTF8.self)
            let tokenCount = Int(try cursor.read(or: cut) as UInt32)
            guard tokenCount <= (size - cursor.offset) / 4 else { throw bad("record \(k) (\(id)): \(tokenCount) tokens run past the end of the file") }
            let tokensOffset = cursor.offset
            cursor.offset += 4 * tokenCount
            let firstScored = Int(try cursor.read(or: cut) as UInt32)
            let rows = Int(try cursor.read(or: cut) as UInt32)
            guard firstScored <= tokenCount, rows <= tokenCount - firstScored else {
                throw bad("record \(k) (\(id)): \(rows) rows from position \(firstScored) do not fit its \(tokenCount) tokens")
            }
            let payloadLength64 = try cursor.read(or: cut) as UInt64
            guard payloadLength64 <= UInt64(size - cursor.offset) else {
                throw bad("record \(k) (\(id)): compressed log-probs of \(payloadLength64) bytes run past the end of the file")
            }
            let payloadLength = Int(payloadLength64)
            let (raw, overflow) = rows.multipliedReportingOverflow(by: 2 * vocab)
            guard !overflow, raw / ReferenceTraceFormat.maxCompressionRatio <= payloadLength else {
                throw bad("record \(k) (\(id)): \(rows) rows of \(vocab) log-probs cannot come from \(payloadLength) compressed bytes")
            }
            let payloadOffset = cursor.offset
            cursor.offset += payloadLength
            let stored = try cursor.read(or: cut) as UInt64
            guard XXH64.hash(UnsafeRawBufferPointer(rebasing: b[start..<(cursor.offset - 8)])) == stored else {
                throw bad("record \(k) (\(id)): checksum mismatch (corrupt file)")
            }
            chain.appendLE(stored)
            entries.append(Entry(id: id, tokensOffset: tokensOffset, tokenCount: tokenCount, firstScored: firstScored,
                                 rows: rows, payloadOffset: payloadOffset, payloadLength: payloadLength))
        }
        cursor.offset += 8
        let footerCount = try cursor.read(or: bad("truncated footer")) as UInt64
        let footerDigest = try cursor.read(or: bad("truncated footer")) as UInt64
        guard footerCount == UInt64(entries.count) else {
            throw bad("end marker counts \(footerCount) records, the file holds \(entries.count)")
        }
        chain.appendLE(footerCount)
        guard XXH64.hash(chain) == footerDigest else { throw bad("whole-file checksum mismatch (corrupt header or records)") }

        if let expected = expecting, let d = parsed.firstDifference(from: expected) {
            throw bad("made with a different \(d.key) (trace: \(d.trace ?? "none"), this run: \(d.run ?? "none"))")
        }
        header = parsed
        vocabSize = vocab
        self.entries = entries
    }

    public func id(at i: Int) -> String { entries[i].id }
    public func rows(at i: Int) -> Int { entries[i].rows }
    public func firstScored(at i: Int) -> Int { entries[i].firstScored }

    public func tokens(at i: Int) -> [Int] {
        let e = entries[i]
        return (0..<e.tokenCount).map {
            Int(Int32(bitPattern: UInt32(littleEndian: file.bytes.loadUnaligned(fromByteOffset: e.tokensOffset + 4 * $0, as: UInt32.self))))
        }
    }

    /// Decodes record `i`'s log-probs into `out` (at least rows × vocab floats).
    public func readLogProbs(at i: Int, into out: UnsafeMutableBufferPointer<Float>) throws {
        let e = entries[i]
        let n = e.rows * vocabSize
        precondition(out.count >= n, "readLogProbs: buffer of \(out.count) floats for \(n)")
        func bad(_ m: String) -> QuantDriftError { .invalidInput("reference trace \(url.path): record \(i) (\(e.id)): \(m)") }
        let frame = UnsafeRawBufferPointer(rebasing: file.bytes[e.payloadOffset..<(e.payloadOffset + e.payloadLength)])
        let declared = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
        guard declared == UInt64(2 * n), ZSTD_findFrameCompressedSize(frame.baseAddress, frame.count) == frame.count else {
            throw bad("the compressed log-probs are not one frame of \(n) binary16 values")
        }
        guard n > 0 else { return }
        var split = [UInt8](repeating: 0, count: 2 * n)
        try split.withUnsafeMutableBufferPointer { s in
            let got = ZSTD_decompress(s.baseAddress, 2 * n, frame.baseAddress, frame.count)
            if ZSTD_isError(got) != 0 { throw bad("zstd: \(String(cString: ZSTD_getErrorName(got)))") }
            guard got == 2 * n else { throw bad("decompressed \(got) bytes, expected \(2 * n)") }
            qd_f16_split_to_f32(s.baseAddress, s.baseAddress! + n, n, out.baseAddress)
        }
    }

    public func record(at i: Int) throws -> ReferenceTraceRecord {
        let e = entries[i]
        var logProbs = [Float](repeating: 0, count: e.rows * vocabSize)
        try logProbs.withUnsafeMutableBufferPointer { try readLogProbs(at: i, into: $0) }
        return ReferenceTraceRecord(id: e.id, tokens: tokens(at: i), firstScored: e.firstScored, rows: e.rows,
                                    vocabSize: vocabSize, logProbs: logProbs)
    }
}

// MARK: - Bytes

extension Array where Element == UInt8 {
    mutating func appendLE(_ v: UInt32) { Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) } }
    mutating func appendLE(_ v: UInt64) { Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) } }
}
