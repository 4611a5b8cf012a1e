import Foundation

// MARK: - Values

/// One metadata value of a GGUF file.
public indirect enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    case array([GGUFValue])

    /// The value as an integer, when it is one of the integer types (or a bool).
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return v <= UInt64(Int.max) ? Int(v) : nil
        case .int64(let v): return Int(v)
        case .bool(let v): return v ? 1 : 0
        default: return nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return intValue.map(Double.init)
        }
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var arrayValue: [GGUFValue]? {
        if case .array(let a) = self { return a }
        return nil
    }
}

// MARK: - Tensor infos

/// Where one tensor lives in the file and what it holds. `dims[0]` is the innermost (contiguous)
/// dimension, as in ggml: a weight matrix `(out, in)` is stored as `dims == [in, out]`.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    public let dims: [Int]
    public let type: GGMLType
    /// Offset from the start of the data section.
    public let offset: Int
    public let elementCount: Int
    public let byteCount: Int
}

// MARK: - File

/// A parsed GGUF file (versions 2 and 3) with memory-mapped tensor data. Every count, length,
/// dimension and offset is checked against the file before it is used, so a truncated or lying
/// file throws `QuantDriftError.invalidInput` instead of crashing or allocating without bound.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: Int
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Offset of the data section from the start of the file.
    public let dataOffset: Int
    public let file: MappedFile
    private let tensorIndex: [String: Int]

    static let magic: UInt32 = 0x4655_4747  // "GGUF" little-endian
    static let maxDims = 4
    static let maxNesting = 8

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        self.path = file.path
        var r = ByteReader(bytes: file.bytes, source: file.path)
        guard file.bytes.count >= 4 else {
            throw QuantDriftError.invalidInput("\(path): not a GGUF file (\(file.bytes.count) bytes, too short for the magic)")
        }
        let magic: UInt32 = try r.read()
        guard magic == Self.magic else {
            throw QuantDriftError.invalidInput("\(path): not a GGUF file (bad magic)")
        }
        let version = Int(try r.read() as UInt32)
        guard version == 2 || version == 3 else {
            throw QuantDriftError.unsupported("\(path): GGUF version \(version) is not supported (2 and 3 are)")
        }
        self.version = version
        let tensorCount: UInt64 = try r.read()
        let kvCount: UInt64 = try r.read()
        // Each metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info
        // at least 8 + 4 + 4 + 8 bytes: counts that could not fit in the file are lies.
        guard kvCount <= UInt64(r.remaining / 13) else {
            throw QuantDriftError.invalidInput("\(path): metadata count \(kvCount) exceeds what the file can hold")
        }
        guard tensorCount <= UInt64(r.remaining / 24) else {
            throw QuantDriftError.invalidInput("\(path): tensor count \(tensorCount) exceeds what the file can hold")
        }
        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        for _ in 0..<Int(kvCount) {
            let key = try r.readString()
            let type: UInt32 = try r.read()
            let value = try r.readValue(type: type, depth: 0)
            if metadata[key] == nil { keys.append(key) }
            metadata[key] = value
        }
        self.metadata = metadata
        self.metadataKeys = keys

        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard let v = a.intValue, v > 0, v <= 1 << 20, v & (v - 1) == 0 else {
                throw QuantDriftError.invalidInput("\(path): general.alignment must be a power of two, got \(a)")
            }
            alignment = v
        }
        self.alignment = alignment

        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(Int(tensorCount))
        var index: [String: Int] = [:]
        for _ in 0..<Int(tensorCount) {
            let name = try r.readString()
            let nDims = Int(try r.read() as UInt32)
            guard nDims >= 1, nDims <= Self.maxDims else {
                throw QuantDriftError.invalidInput("\(path): tensor '\(name)' has \(nDims) dimensions (1...\(Self.maxDims) allowed)")
            }
            var dims: [Int] = []
            var count = 1
            for _ in 0..<nDims {
                let d: UInt64 = try r.read()
                guard d >= 1, d <= UInt64(Int32.max) else {
                    throw QuantDriftError.invalidInput("\(path): tensor '\(name)' has dimension \(d) out of range")
                }
                let (p, overflow) = count.multipliedReportingOverflow(by: Int(d))
                guard !overflow, p <= Int(Int32.max) * 64 else {
                    throw QuantDriftError.invalidInput("\(path): tensor '\(name)' dimensions overflow (element count too large)")
                }
                count = p
                dims.append(Int(d))
            }
            let rawType: UInt32 = try r.read()
            guard let type = GGMLType(rawValue: rawType) else {
                throw QuantDriftError.unsupported("\(path): tensor '\(name)' has unknown ggml type \(rawType)")
            }
            let offset: UInt64 = try r.read()
            guard dims[0] % type.blockSize == 0 else {
                throw QuantDriftError.invalidInput("\(path): tensor '\(name)' row length \(dims[0]) is not a multiple of \(type.name)'s block size \(type.blockSize)")
            }
            let bytes = count / type.blockSize * type.typeSize
            guard offset <= UInt64(Int.max) else {
                throw QuantDriftError.invalidInput("\(path): tensor '\(name)' offset \(offset) out of range")
            }
            guard Int(offset) % alignment == 0 else {
                throw QuantDriftError.invalidInput("\(path): tensor '\(name)' offset \(offset) is not aligned to \(alignment)")
            }
            guard index[name] == nil else {
                throw QuantDriftError.invalidInput("\(path): tensor '\(name)' appears twice")
            }
            index[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: Int(offset),
                                        elementCount: count, byteCount: bytes))
        }
        let headerEnd = r.offset
        let dataOffset = (headerEnd + alignment - 1) / alignment * alignment
        self.dataOffset = dataOffset
        let dataSize = file.bytes.count - min(dataOffset, file.bytes.count)
        for t in infos {
            let (end, overflow) = t.offset.addingReportingOverflow(t.byteCount)
            guard !overflow, dataOffset <= file.bytes.count, end <= dataSize else {
                throw QuantDriftError.invalidInput("\(path): tensor '\(t.name)' data (\(t.byteCount) bytes at offset \(t.offset)) lies past the end of the file")
            }
        }
        self.tensors = infos
        self.tensorIndex = index
    }

    // MARK: Lookup

    public func tensor(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    public func data(of info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[(dataOffset + info.offset)..<(dataOffset + info.offset + info.byteCount)])
    }

    /// The tensor dequantized to FP32, in storage order.
    public func floats(_ info: GGUFTensorInfo) throws -> [Float] {
        guard GGMLType.dequantizable.contains(info.type) else {
            let supported = GGMLType.dequantizable.map(\.name).sorted().joined(separator: ", ")
            throw QuantDriftError.unsupported("\(path): tensor '\(info.name)' has type \(info.type.name), which is not supported (supported: \(supported))")
        }
        let raw = data(of: info)
        return try [Float](unsafeUninitializedCapacity: info.elementCount) { buf, n in
            try dequantize(info.type, raw, count: info.elementCount, into: buf.baseAddress!)
            n = info.elementCount
        }
    }

    /// A 2-D tensor as a weight matrix: FP32 tensors read into memory, other types kept encoded
    /// in the mapped file (decoded on demand, the mapping kept alive by the matrix). Refuses
    /// NaN/Inf weights, checked a tile of rows at a time so no FP32 copy of the tensor is made.
    public func matrix(_ info: GGUFTensorInfo) throws -> WeightMatrix {
        guard info.type != .f32, info.dims.count == 2, info.elementCount > 0, GGMLType.dequantizable.contains(info.type) else {
            let w = try floats(info)
            try Model.checkFinite(w, tensor: info.name, file: path)
            return WeightMatrix(values: w)
        }
        let cols = info.dims[0], rows = info.dims[1]
        let m = WeightMatrix(encoded: info.type, bytes: data(of: info), count: info.elementCount, cols: cols, owner: file)
        let tileRows = max(1, (1 << 16) / max(cols, 1))
        var tile = [Float](repeating: 0, count: tileRows * cols)
        var bad: (count: Int, first: Int, value: Float)?
        var r0 = 0
        while r0 < rows {
            let r1 = min(rows, r0 + tileRows)
            if r1 - r0 < tileRows { tile.removeLast((tileRows - (r1 - r0)) * cols) }
            tile.withUnsafeMutableBufferPointer { m.decodeRows(r0..<r1, cols: cols, into: $0.baseAddress!) }
            if let b = Model.nonFinite(tile) {
                bad = ((bad?.count ?? 0) + b.count, bad?.first ?? r0 * cols + b.first, bad?.value ?? tile[b.first])
            }
            r0 = r1
        }
        if let bad { throw Model.nonFiniteError(bad.count, first: bad.value, at: bad.first, tensor: info.name, file: path) }
        return m
    }

    // MARK: Typed metadata access

    public func int(_ key: String) throws -> Int {
        guard let v = metadata[key] else { throw QuantDriftError.invalidInput("\(path): missing metadata key \(key)") }
        guard let i = v.intValue else { throw QuantDriftError.invalidInput("\(path): metadata \(key) is not an integer") }
        return i
    }

    public func double(_ key: String) throws -> Double {
        guard let v = metadata[key] else { throw QuantDriftError.invalidInput("\(path): missing metadata key \(key)") }
        guard let d = v.doubleValue else { throw QuantDriftError.invalidInput("\(path): metadata \(key) is not a number") }
        return d
    }

    public func string(_ key: String) throws -> String {
        guard let v = metadata[key] else { throw QuantDriftError.invalidInput("\(path): missing metadata key \(key)") }
        guard let s = v.stringValue else { throw QuantDriftError.invalidInput("\(path): metadata \(key) is not a string") }
        return s
    }

    public func strings(_ key: String) throws -> [String] {
        guard let v = metadata[key] else { throw QuantDriftError.invalidInput("\(path): missing metadata key \(key)") }
        guard let a = v.arrayValue else { throw QuantDriftError.invalidInput("\(path): metadata \(key) is not an array") }
        return try a.map {
            guard let s = $0.stringValue else { throw QuantDriftError.invalidInput("\(path): metadata \(key) holds a non-string") }
            return s
        }
    }
}

// MARK: - Bounds-checked reader

/// GGUF strings and metadata values (`source` is the file path).
extension ByteReader {
    mutating func readString() throws -> String {
        let n: UInt64 = try read()
        guard n <= UInt64(remaining) else {
            throw QuantDriftError.invalidInput("\(source): string length \(n) at offset \(offset - 8) runs past the end of the file")
        }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + Int(n))]), as: UTF8.self)
        offset += Int(n)
        return s
    }

    mutating func readValue(type: UInt32, depth: Int) throws -> GGUFValue {
        switch type {
        case 0: return .uint8(try read())
        case 1: return .int8(try read())
        case 2: return .uint16(try read())
        case 3: return .int16(try read())
        case 4: return .uint32(try read())
        case 5: return .int32(try read())
        case 6: return .float32(Float(bitPattern: try read()))
        case 7:
            let b: UInt8 = try read()
            guard b <= 1 else { throw QuantDriftError.invalidInput("\(source): bool value \(b) at offset \(offset - 1)") }
            return .bool(b == 1)
        case 8: return .string(try readString())
        case 9:
            guard depth < GGUFFile.maxNesting else {
                throw QuantDriftError.invalidInput("\(source): metadata arrays nested deeper than \(GGUFFile.maxNesting)")
            }
            let elementType: UInt32 = try read()
            let count: UInt64 = try read()
            let minSize: Int
            switch elementType {
            case 0, 1, 7: minSize = 1
            case 2, 3: minSize = 2
            case 4, 5, 6: minSize = 4
            case 8, 10, 11, 12: minSize = 8
            case 9: minSize = 12
            default: throw QuantDriftError.invalidInput("\(source): unknown metadata value type \(elementType) at offset \(offset - 12)")
            }
            guard count <= UInt64(remaining / minSize) else {
                throw QuantDriftError.invalidInput("\(source): array of \(count) elements at offset \(offset - 12) runs past the end of the file")
            }
            var values: [GGUFValue] = []
            values.reserveCapacity(Int(count))
            for _ in 0..<Int(count) { values.append(try readValue(type: elementType, depth: depth + 1)) }
            return .array(values)
        case 10: return .uint64(try read())
        case 11: return .int64(try read())
        case 12: return .float64(Double(bitPattern: try read()))
        default:
            throw QuantDriftError.invalidInput("\(source): unknown metadata value type \(type) at offset \(offset - 4)")
        }
    }

}
