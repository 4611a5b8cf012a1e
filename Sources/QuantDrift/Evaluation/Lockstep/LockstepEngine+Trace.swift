import Foundation

/// Saving the reference runs to a trace and reading them back.
extension LockstepEngine {
    /// What a saved reference depends on: model, workload, runtime, and every option that
    /// changes the reference's continuation.
    public func traceHeader(modelSHA256: String, workload: Workload, version: String) -> ReferenceTraceHeader {
        let s = options.sampling
        return ReferenceTraceHeader(
            modelSHA256: modelSHA256, workloadSHA256: workload.sha256, runtime: RuntimeIdentity.string(toolVersion: version),
            vocabSize: vocab,
            settings: ["kind": "tracker", "max_tokens": options.forcedMaxTokens.map(String.init) ?? "per prompt",
                       "sampling": "temperature \(s.temperature) top_k \(s.topK) top_p \(s.topP) seed \(s.seed)",
                       "stop_at_end_of_generation": String(options.stopAtEndOfGeneration), "chunk": String(options.chunk)])
    }

    /// Adds reference runs to a trace: tokens (prompt + continuation) and the log-probabilities of
    /// every continuation position (a batch at a time; `writer.finish()` when all are in).
    public func append(_ refs: [ReferenceRun], to writer: ReferenceTraceWriter) throws {
        var rows: [Float] = []
        for r in refs {
            rows = r.teacherRows.values()
            rows.withUnsafeMutableBufferPointer { b in
                for t in 0..<r.continuation.count {
                    let row = UnsafeMutableBufferPointer(rebasing: b[(t * vocab)..<((t + 1) * vocab)])
                    let lse = Float(LogSoftmax.logSumExp(UnsafeBufferPointer(row)))
                    for i in 0..<vocab { row[i] -= lse }
                }
            }
            try rows.withUnsafeBufferPointer {
                try writer.append(id: r.id, tokens: r.promptTokens + r.continuation, firstScored: r.promptTokens.count, logProbs: $0)
            }
        }
    }

    /// The reference runs of a saved trace, checked against the workload (same prompts, in order).
    public func load(_ reader: ReferenceTraceReader, workload: Workload, prompts range: Range<Int>? = nil) throws -> [ReferenceRun] {
        guard reader.count == workload.prompts.count else {
            throw QuantDriftError.invalidInput("reference trace \(reader.url.path): \(reader.count) prompts, the workload has \(workload.prompts.count)")
        }
        return try (range ?? 0..<workload.prompts.count).map { i in
            let p = workload.prompts[i]
            let record = try reader.record(at: i)
            let prompt = try Self.promptTokens(p, tokenizer: model.tokenizer)
            guard record.id == p.id, record.firstScored == prompt.count, Array(record.tokens.prefix(prompt.count)) == prompt,
                  record.rows == record.tokens.count - prompt.count, record.rows <= options.maxTokens(for: p) else {
                throw QuantDriftError.invalidInput("reference trace \(reader.url.path): prompt '\(p.id)' does not match the workload")
            }
            return ReferenceRun(id: p.id, promptTokens: prompt, continuation: Array(record.tokens[prompt.count...]),
                                maxTokens: options.maxTokens(for: p), teacherRows: record.logProbs)
        }
    }
}
