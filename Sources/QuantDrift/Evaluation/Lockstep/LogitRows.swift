#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Rows of `vocab` logits (the reference's teacher-forced rows, or its decode logits when
/// sampling), appended in order and read back by row. Live runs keep them in an unlinked
/// temporary file, as llama.cpp's `--kl-divergence-base` keeps its base logits in a file: the
/// values come back exactly, the process holds one row at a time (the page cache holds the
/// rest, and the kernel may drop it to disk), and nothing is left behind even if the process
/// is killed. Rows from a saved trace, or made by tests, stay in memory.
public final class LogitRows: @unchecked Sendable {
    public let vocab: Int
    public private(set) var count: Int = 0
    private var memory: [Float]
    private let fd: Int32

    /// Rows held in memory: `values.count` must be a multiple of `vocab`.
    public init(values: [Float], vocab: Int) {
        precondition(vocab > 0 ? values.count % vocab == 0 : values.isEmpty)
        self.vocab = vocab
        memory = values
        count = vocab > 0 ? values.count / vocab : 0
        fd = -1
    }

    /// An empty file-backed store in the temporary folder (`TMPDIR`).
    public init(spillingRowsOf vocab: Int) throws {
        precondition(vocab > 0)
        self.vocab = vocab
        memory = []
        var template = Array((NSTemporaryDirectory() + "/quantdrift-logits-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw QuantDriftError.invalidInput("cannot create a temporary file for reference logits in \(NSTemporaryDirectory()): \(String(cString: strerror(errno)))")
        }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        self.fd = fd
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    public var isFileBacked: Bool { fd >= 0 }

    /// Appends one row of `vocab` values.
    public func append(_ row: UnsafeBufferPointer<Float>) throws {
        precondition(row.count == vocab)
        if fd < 0 {
            memory.append(contentsOf: row)
        } else {
            var offset = off_t(count * vocab * MemoryLayout<Float>.size)
            var raw = UnsafeRawBufferPointer(row)
            while !raw.isEmpty {
                let n = pwrite(fd, raw.baseAddress!, raw.count, offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw QuantDriftError.invalidInput("cannot write reference logits to a temporary file in \(NSTemporaryDirectory()): \(n < 0 ? String(cString: strerror(errno)) : "no space")")
                }
                raw = UnsafeRawBufferPointer(rebasing: raw[n...])
                offset += off_t(n)
            }
        }
        count += 1
    }

    /// Copies row `t` into `dst` (`vocab` values).
    public func copyRow(_ t: Int, into dst: UnsafeMutableBufferPointer<Float>) {
        precondition(t >= 0 && t < count && dst.count >= vocab)
        if fd < 0 {
            memory.withUnsafeBufferPointer { dst.baseAddress!.update(from: $0.baseAddress! + t * vocab, count: vocab) }
            return
        }
        var offset = off_t(t * vocab * MemoryLayout<Float>.size)
        var raw = UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(dst)[..<(vocab * MemoryLayout<Float>.size)])
        while !raw.isEmpty {
            let n = pread(fd, raw.baseAddress!, raw.count, offset)
            if n < 0 && errno == EINTR { continue }
            // The file is ours, unlinked and written before: a short read is a broken machine.
            precondition(n > 0, "reading back reference logits failed: \(n < 0 ? String(cString: strerror(errno)) : "end of file")")
            raw = UnsafeMutableRawBufferPointer(rebasing: raw[n...])
            offset += off_t(n)
        }
    }

    /// Calls `body(t, row)` for every row in order, reading each into one buffer.
    public func forEachRow(_ body: (Int, UnsafeBufferPointer<Float>) throws -> Void) rethrows {
        guard count > 0 else { return }
        if fd < 0 {
            try memory.withUnsafeBufferPointer { m in
                for t in 0..<count { try body(t, UnsafeBufferPointer(rebasing: m[(t * vocab)..<((t + 1) * vocab)])) }
            }
            return
        }
        let row = UnsafeMutableBufferPointer<Float>.allocate(capacity: vocab)
        defer { row.deallocate() }
        for t in 0..<count {
            copyRow(t, into: row)
            try body(t, UnsafeBufferPointer(row))
        }
    }

    /// All rows as one array (count × vocab).
    public func values() -> [Float] {
        if fd < 0 { return memory }
        var all = [Float](repeating: 0, count: count * vocab)
        all.withUnsafeMutableBufferPointer { a in
            for t in 0..<count { copyRow(t, into: UnsafeMutableBufferPointer(rebasing: a[(t * vocab)..<((t + 1) * vocab)])) }
        }
        return all
    }
}
