import CKernels

/// A weight matrix as the model holds it: FP32 values in memory, or the model file's own encoding
/// (F16, Q4_1, …: the mapped bytes, never copied), decoded to FP32 a few rows at a time where
/// values are needed. A GGUF model's FP32 reference is its dequantized weights; keeping them
/// encoded spares a second, FP32 copy of the model (4.3 GB for a 1B-parameter F16 file) and
/// gives exactly the same values.
public struct WeightMatrix: @unchecked Sendable {
    indirect enum Storage {
        case values([Float])
        /// `bytes` stay valid while `owner` (the mapped file) lives.
        case encoded(GGMLType, bytes: UnsafeRawBufferPointer, owner: AnyObject)
        /// `base` with column j multiplied by columns[j], then row r divided by rowDivisors[r],
        /// applied as rows are read.
        case scaled(WeightMatrix, columns: [Float]?, rowDivisors: [Float]?)
    }

    let storage: Storage
    /// Elements in total.
    public let count: Int
    /// Elements per row: set for encoded matrices; 0 for values (whose shape the user knows).
    public let cols: Int

    public init(values: [Float]) {
        storage = .values(values)
        count = values.count
        cols = 0
    }

    /// `bytes` hold `count` elements of `type`, rows of `cols` elements each a whole number of blocks.
    init(encoded type: GGMLType, bytes: UnsafeRawBufferPointer, count: Int, cols: Int, owner: AnyObject) {
        precondition(cols > 0 && cols % type.blockSize == 0 && count % cols == 0)
        precondition(bytes.count == count / type.blockSize * type.typeSize)
        storage = .encoded(type, bytes: bytes, owner: owner)
        self.count = count
        self.cols = cols
    }

    /// Blocks of `type` made in memory (a scheme's quantizer), rows of `cols` elements.
    public init(blocks: [UInt8], type: GGMLType, count: Int, cols: Int) {
        let owner = OwnedBytes(blocks)
        self.init(encoded: type, bytes: UnsafeRawBufferPointer(rebasing: owner.buffer[0..<blocks.count]), count: count, cols: cols, owner: owner)
    }

    /// The FP32 values when the matrix holds them (no copy); nil when it is encoded.
    public var storedValues: [Float]? {
        if case .values(let v) = storage { return v }
        return nil
    }

    /// The file's type of an encoded matrix.
    public var encoding: GGMLType? {
        if case .encoded(let t, _, _) = storage { return t }
        return nil
    }

    /// The file's bytes of an encoded matrix (valid while the matrix lives).
    public var encodedBytes: UnsafeRawBufferPointer? {
        if case .encoded(_, let bytes, _) = storage { return bytes }
        return nil
    }

    /// This matrix with column j multiplied by `columns[j]`, then row r divided by
    /// `rowDivisors[r]` (exactly those operations, in that order, on each value), applied where
    /// rows are read: a rescaled model (SmoothQuant) costs no FP32 copy of its matrices.
    public func scaled(columns: [Float]?, rowDivisors: [Float]?) -> WeightMatrix {
        guard columns != nil || rowDivisors != nil else { return self }
        return WeightMatrix(storage: .scaled(self, columns: columns, rowDivisors: rowDivisors), count: count, cols: cols)
    }

    private init(storage: Storage, count: Int, cols: Int) {
        self.storage = storage
        self.count = count
        self.cols = cols
    }

    /// Bytes the matrix occupies (FP32 values, or its encoded bytes).
    public var storageBytes: Int {
        switch storage {
        case .values(let v): v.count * MemoryLayout<Float>.size
        case .encoded(_, let bytes, _): bytes.count
        case .scaled(let base, _, _): base.storageBytes
        }
    }

    /// All values in FP32: the stored array, or a decoded copy (which the caller owns: hold it
    /// only as long as needed).
    public var values: [Float] {
        switch storage {
        case .values(let v): return v
        case .encoded:
            return [Float](unsafeUninitializedCapacity: count) { buf, n in
                decodeRows(0..<(count / cols), cols: cols, into: buf.baseAddress!)
                n = count
            }
        case .scaled(let base, let columns, let rowDivisors):
            let cols = columns?.count ?? count / rowDivisors!.count
            var v = base.values
            v.withUnsafeMutableBufferPointer { apply(columns, rowDivisors, rows: 0..<(count / cols), cols: cols, to: $0.baseAddress!) }
            return v
        }
    }

    /// Rows `range` of a matrix with rows of `cols` elements, as FP32, into `dst`.
    public func decodeRows(_ range: Range<Int>, cols: Int, into dst: UnsafeMutablePointer<Float>) {
        guard !range.isEmpty else { return }
        precondition(range.lowerBound >= 0 && range.upperBound * cols <= count)
        switch storage {
        case .values(let v):
            v.withUnsafeBufferPointer { dst.update(from: $0.baseAddress! + range.lowerBound * cols, count: range.count * cols) }
        case .encoded(let type, let bytes, _):
            precondition(cols == self.cols)
            let rowBytes = cols / type.blockSize * type.typeSize
            let src = UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound * rowBytes)..<(range.upperBound * rowBytes)])
            let n = range.count * cols
            if qd_decode_ggml(Int32(type.rawValue), src.baseAddress!.assumingMemoryBound(to: UInt8.self), n, dst) == 0 {
                // Types without a C decoder: the Swift one (its type was accepted at load).
                try! dequantize(type, src, count: n, into: dst)
            }
        case .scaled(let base, let columns, let rowDivisors):
            base.decodeRows(range, cols: cols, into: dst)
            apply(columns, rowDivisors, rows: range, cols: cols, to: dst)
        }
    }

    /// The scaling of `.scaled` on rows `rows` held at `dst`.
    private func apply(_ columns: [Float]?, _ rowDivisors: [Float]?, rows: Range<Int>, cols: Int, to dst: UnsafeMutablePointer<Float>) {
        for (i, r) in rows.enumerated() {
            let row = dst + i * cols
            if let columns { for j in 0..<cols { row[j] *= columns[j] } }
            if let rowDivisors {
                let f = rowDivisors[r]
                for j in 0..<cols { row[j] /= f }
            }
        }
    }
}

/// Bytes a `WeightMatrix` reads that live in memory rather than in a mapped file.
final class OwnedBytes {
    let buffer: UnsafeMutableRawBufferPointer

    init(_ bytes: [UInt8]) {
        buffer = .allocate(byteCount: max(1, bytes.count), alignment: 64)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
    }

    deinit { buffer.deallocate() }
}
