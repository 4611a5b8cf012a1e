import Foundation
import QuantDrift

// MARK: - GGUF writer

/// Builds GGUF v2/v3 files in memory: metadata of every value type (nested arrays included) and
/// tensors given as raw bytes, laid out with the file's alignment. Every field can be overridden
/// so that tests can also write files that lie (huge counts, bad offsets, unknown types).
struct GGUFWriter {
    /// One metadata entry, already encoded (`payload` is the value without its type tag).
    struct Entry {
        var key: String
        var type: UInt32
        var payload: [UInt8]
        /// The value, when the entry was made from one.
        var value: GGUFValue?
    }

    struct Tensor {
        var name: String
        /// ggml order, innermost first: a matrix `(rows, cols)` has `dims == [cols, rows]`.
        var dims: [UInt64]
        var rawType: UInt32
        var data: [UInt8]
        /// Written instead of the computed offset.
        var offsetOverride: UInt64? = nil
    }

    /// Where the parts of a built file start.
    struct Layout {
        var bytes: [UInt8]
        /// End of the tensor infos (start of the padding before the data section).
        var headerEnd: Int
        /// Start of the data section.
        var dataOffset: Int
        /// Offset of each tensor's data from the start of the data section.
        var tensorOffsets: [Int]
    }

    var magic: [UInt8] = Array("GGUF".utf8)
    var version: UInt32
    var entries: [Entry] = []
    var tensors: [Tensor] = []
    var tensorCountOverride: UInt64? = nil
    var metadataCountOverride: UInt64? = nil

    init(version: UInt32 = 3) {
        self.version = version
    }

    // MARK: Metadata

    /// Sets `key` to `value`, replacing an earlier entry with that key in place.
    mutating func set(_ key: String, _ value: GGUFValue) {
        var payload: [UInt8] = []
        Self.encode(value, into: &payload)
        setRaw(key, type: Self.typeID(value), payload: payload, value: value)
    }

    /// Sets `key` to raw bytes under any type tag (for malformed values).
    mutating func setRaw(_ key: String, type: UInt32, payload: [UInt8], value: GGUFValue? = nil) {
        let e = Entry(key: key, type: type, payload: payload, value: value)
        if let i = entries.firstIndex(where: { $0.key == key }) { entries[i] = e } else { entries.append(e) }
    }

    mutating func remove(_ key: String) {
        entries.removeAll { $0.key == key }
    }

    /// The alignment a reader will use: `general.alignment` when set, else 32.
    var alignment: Int {
        entries.first { $0.key == "general.alignment" }?.value?.intValue ?? 32
    }

    // MARK: Tensors

    /// Adds a tensor of raw bytes; `dims` innermost first, as ggml stores them.
    mutating func addTensor(_ name: String, dims: [Int], type: GGMLType, data: [UInt8]) {
        tensors.append(Tensor(name: name, dims: dims.map(UInt64.init), rawType: type.rawValue, data: data))
    }

    /// Adds a tensor from FP32 values; `shape` outermost first (row-major), encoded as `type`.
    mutating func addTensor(_ name: String, shape: [Int], floats: [Float], type: GGMLType = .f32) {
        addTensor(name, dims: shape.reversed(), type: type, data: encodeFloats(floats, as: type))
    }

    mutating func removeTensor(_ name: String) {
        tensors.removeAll { $0.name == name }
    }

    /// Index of the tensor named `name` (for tests that edit it).
    func tensorIndex(_ name: String) -> Int {
        guard let i = tensors.firstIndex(where: { $0.name == name }) else { fatalError("no tensor \(name)") }
        return i
    }

    // MARK: Output

    /// The header (metadata, tensor infos, padding up to the data section) and where data go.
    func headerLayout() -> Layout {
        var b: [UInt8] = []
        b += magic
        b.appendLE(version)
        b.appendLE(tensorCountOverride ?? UInt64(tensors.count))
        b.appendLE(metadataCountOverride ?? UInt64(entries.count))
        for e in entries {
            b.appendString(e.key)
            b.appendLE(e.type)
            b += e.payload
        }
        let align = alignment
        var offsets: [Int] = []
        var next = 0
        for t in tensors {
            offsets.append(next)
            next = Self.align(next + t.data.count, align)
        }
        for (t, offset) in zip(tensors, offsets) {
            b.appendString(t.name)
            b.appendLE(UInt32(t.dims.count))
            for d in t.dims { b.appendLE(d) }
            b.appendLE(t.rawType)
            b.appendLE(t.offsetOverride ?? UInt64(offset))
        }
        let headerEnd = b.count
        let dataOffset = Self.align(headerEnd, align)
        b += [UInt8](repeating: 0, count: dataOffset - headerEnd)
        return Layout(bytes: b, headerEnd: headerEnd, dataOffset: dataOffset, tensorOffsets: offsets)
    }

    /// The tensors' data in file order, each preceded by its alignment padding.
    func forEachDataPiece(_ layout: Layout, _ body: ([UInt8]) throws -> Void) rethrows {
        var at = layout.dataOffset
        for (t, offset) in zip(tensors, layout.tensorOffsets) {
            try body([UInt8](repeating: 0, count: layout.dataOffset + offset - at))
            try body(t.data)
            at = layout.dataOffset + offset + t.data.count
        }
    }

    func bytes() -> [UInt8] {
        let header = headerLayout()
        var b = header.bytes
        forEachDataPiece(header) { b += $0 }
        return b
    }

    func layout() -> Layout {
        var l = headerLayout()
        l.bytes = bytes()
        return l
    }

    /// Writes the file piece by piece (no copy of the whole file in memory).
    func write(to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let h = FileHandle(forWritingAtPath: path) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        defer { try? h.close() }
        let header = headerLayout()
        try h.write(contentsOf: header.bytes)
        try forEachDataPiece(header) { try h.write(contentsOf: $0) }
    }

    static func align(_ n: Int, _ a: Int) -> Int { (n + a - 1) / a * a }

    // MARK: Value encoding

    static func typeID(_ v: GGUFValue) -> UInt32 {
        switch v {
        case .uint8: 0
        case .int8: 1
        case .uint16: 2
        case .int16: 3
        case .uint32: 4
        case .int32: 5
        case .float32: 6
        case .bool: 7
        case .string: 8
        case .array: 9
        case .uint64: 10
        case .int64: 11
        case .float64: 12
        }
    }

    /// Appends `v` without its type tag. Arrays take their element type from their first element
    /// (an empty array is written as an array of uint8); all elements must share it.
    static func encode(_ v: GGUFValue, into b: inout [UInt8]) {
        switch v {
        case .uint8(let x): b.appendLE(x)
        case .int8(let x): b.appendLE(x)
        case .uint16(let x): b.appendLE(x)
        case .int16(let x): b.appendLE(x)
        case .uint32(let x): b.appendLE(x)
        case .int32(let x): b.appendLE(x)
        case .float32(let x): b.appendLE(x.bitPattern)
        case .bool(let x): b.append(x ? 1 : 0)
        case .string(let s): b.appendString(s)
        case .uint64(let x): b.appendLE(x)
        case .int64(let x): b.appendLE(x)
        case .float64(let x): b.appendLE(x.bitPattern)
        case .array(let a):
            let type = a.first.map(typeID) ?? 0
            precondition(a.allSatisfy { typeID($0) == type }, "GGUF arrays hold one element type")
            b.appendLE(type)
            b.appendLE(UInt64(a.count))
            for x in a { encode(x, into: &b) }
        }
    }
}

// MARK: - Byte helpers

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }

    /// A GGUF string: u64 length, then UTF-8 bytes.
    mutating func appendString(_ s: String) {
        appendLE(UInt64(s.utf8.count))
        append(contentsOf: s.utf8)
    }

    /// Overwrites bytes at `offset` with `v`, little-endian.
    mutating func patchLE<T: FixedWidthInteger>(_ v: T, at offset: Int) {
        Swift.withUnsafeBytes(of: v.littleEndian) { raw in
            for (i, x) in raw.enumerated() { self[offset + i] = x }
        }
    }
}

// MARK: - Float encoders

/// `x` rounded to the nearest BF16 (ties to even), as bits.
func bf16Bits(_ x: Float) -> UInt16 {
    let u = x.bitPattern
    if x.isNaN { return UInt16(u >> 16) | 0x40 }
    return UInt16((u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16)
}

/// Encodes FP32 values as F32, F16, BF16 or Q8_0 (ggml's `quantize_row_q8_0_ref`); any other
/// type becomes zero blocks.
func encodeFloats(_ x: [Float], as type: GGMLType) -> [UInt8] {
    var b: [UInt8] = []
    switch type {
    case .f32:
        for v in x { b.appendLE(v.bitPattern) }
    case .f16:
        for v in x { b.appendLE(Float16(v).bitPattern) }
    case .bf16:
        for v in x { b.appendLE(bf16Bits(v)) }
    case .q8_0:
        precondition(x.count % 32 == 0)
        for start in stride(from: 0, to: x.count, by: 32) {
            let block = x[start..<(start + 32)]
            let amax = block.map(abs).max()!
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            b.appendLE(Float16(d).bitPattern)
            for v in block { b.append(UInt8(bitPattern: Int8((v * id).rounded(.toNearestOrAwayFromZero)))) }
        }
    default:
        // No encoder: zero blocks of the right size (enough for files that must be refused).
        b = [UInt8](repeating: 0, count: x.count / type.blockSize * type.typeSize)
    }
    return b
}

// MARK: - Temporary folders

/// Runs `body` with a fresh temporary directory, removed afterwards.
func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("quantdrift-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    return try body(dir)
}
