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
    /// continuation[t] (a batched forward over prompt + continuation): logits from a live run,
    /// log-probs from a saved trace (the same distributions: log-softmax ignores the shift).
    public var teacherRows: [Float]
    /// (continuation.count, vocab) logits of the decode steps that chose the continuation; kept
    /// only when sampling, where the coupling needs the exact distribution the reference drew from.
    public var decodeLogits: [Float]?

    /// `textNLL()` kept when the rows have been released.
    var keptNLL: Double?

    /// Mean −log P(y) of the reference's own continuation under its teacher-forced rows.
    public func textNLL() -> Double {
        if let keptNLL { return keptNLL }
        guard !continuation.isEmpty else { return 0 }
        let vocab = teacherRows.count / continuation.count
        var sum = 0.0
        teacherRows.withUnsafeBufferPointer { rows in
            for t in 0..<continuation.count {
                let row = UnsafeBufferPointer(rebasing: rows[(t * vocab)..<((t + 1) * vocab)])
                sum += LogSoftmax.logSumExp(row) - Double(row[continuation[t]])
            }
        }
        return sum / Double(continuation.count)
    }

    /// Keeps the own-text NLL and frees the rows (once every candidate has compared against them).
    public mutating func releaseRows() {
        keptNLL = textNLL()
        teacherRows = []
        decodeLogits = nil
    }

    public init(id: String, promptTokens: [Int], continuation: [Int], maxTokens: Int, teacherRows: [Float],
                decodeLogits: [Float]? = nil) {
        self.id = id
        self.maxTokens = maxTokens
        self.promptTokens = promptTokens
        self.continuation = continuation
        self.teacherRows = teacherRows
        self.decodeLogits = decodeLogits
    }
}
