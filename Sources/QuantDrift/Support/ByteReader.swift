/// Bounds-checked little-endian reads over a byte buffer (a mapped file, a saved record): a read
/// past the end throws, never traps. Used by the GGUF reader, the reference trace reader and the
/// run checkpoint.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    /// Names the bytes in errors (a file path).
    let source: String
    var offset = 0

    init(bytes: UnsafeRawBufferPointer, source: String) {
        self.bytes = bytes
        self.source = source
    }

    var remaining: Int { bytes.count - offset }

    /// The next T, or `truncated()`.
    mutating func read<T: FixedWidthInteger>() throws -> T {
        guard remaining >= MemoryLayout<T>.size else { throw truncated() }
        return load()
    }

    /// The next T, or the caller's error when the bytes end first.
    mutating func read<T: FixedWidthInteger>(or error: @autoclosure () -> Error) throws -> T {
        guard remaining >= MemoryLayout<T>.size else { throw error() }
        return load()
    }

    private mutating func load<T: FixedWidthInteger>() -> T {
        defer { offset += MemoryLayout<T>.size }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// The next `n` bytes, or the caller's error (`truncated()` by default).
    mutating func take(_ n: Int, or error: @autoclosure () -> Error? = nil) throws -> UnsafeRawBufferPointer {
        guard n >= 0, remaining >= n else { throw error() ?? truncated() }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
    }

    func truncated() -> QuantDriftError {
        .invalidInput("\(source): truncated at offset \(offset) (file is \(bytes.count) bytes)")
    }
}
