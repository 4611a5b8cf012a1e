import Foundation

/// The FP32 reference's run on one prompt: its continuation (the teacher-forcing tokens and the
/// reference's free-running text) and its teacher-forced rows at every continuation position.
public struct ReferenceRun: Sendable {
    public var id: String
    public var promptTokens: [Int]
    public var continuation: [Int]
    /// The continuation length asked for (the text may have stopped earlier at end of generation).
    public var maxTokens: Int
    /// (continuation.count, vocab): row t is the teacher-forced distribution that predicts
    /// continuation[t] (a batched forward over prompt + continuation): logits from a live run
    /// (in a temporary file), log-probs from a saved trace (the same distributions: log-softmax
    /// ignores the shift).
    public var teacherRows: LogitRows
    /// (continuation.count, vocab) logits of the decode steps that chose the continuation; kept
    /// only when sampling, where the coupling needs the exact distribution the reference drew from.
    public var decodeLogits: LogitRows?

    /// `textNLL()` kept when the rows have been released.
    var keptNLL: Double?

    /// Mean −log P(y) of the reference's own continuation under its teacher-forced rows.
    public func textNLL() -> Double {
        if let keptNLL { return keptNLL }
        guard !continuation.isEmpty else { return 0 }
        var sum = 0.0
        teacherRows.forEachRow { t, row in sum += LogSoftmax.logSumExp(row) - Double(row[continuation[t]]) }
        return sum / Double(continuation.count)
    }

    /// Whether the rows have been released.
    public var rowsReleased: Bool { keptNLL != nil }

    /// Keeps the own-text NLL and frees the rows (once every candidate has compared against them).
    public mutating func releaseRows() {
        keptNLL = textNLL()
        teacherRows = LogitRows(values: [], vocab: teacherRows.vocab)
        decodeLogits = nil
    }

    public init(id: String, promptTokens: [Int], continuation: [Int], maxTokens: Int, rows: LogitRows,
                decodeRows: LogitRows? = nil) {
        precondition(rows.count == continuation.count && (decodeRows == nil || decodeRows!.count == continuation.count))
        self.id = id
        self.maxTokens = maxTokens
        self.promptTokens = promptTokens
        self.continuation = continuation
        self.teacherRows = rows
        self.decodeLogits = decodeRows
    }

    /// Rows given in memory, (continuation.count, vocab).
    public init(id: String, promptTokens: [Int], continuation: [Int], maxTokens: Int, teacherRows: [Float],
                decodeLogits: [Float]? = nil) {
        let vocab = continuation.isEmpty ? 1 : teacherRows.count / continuation.count
        self.init(id: id, promptTokens: promptTokens, continuation: continuation, maxTokens: maxTokens,
                  rows: LogitRows(values: teacherRows, vocab: vocab),
                  decodeRows: decodeLogits.map { LogitRows(values: $0, vocab: vocab) })
    }
}
