/// Which comparisons a run makes.
public enum TrackerMode: String, Sendable, CaseIterable {
    /// The candidate reads the reference's tokens: the per-token shift at every position.
    case teacher
    /// Each model generates its own continuation: first divergence, survival, text quality.
    case free
    case both

    var teacherForced: Bool { self != .free }
    var freeRunning: Bool { self != .teacher }
}

/// The settings of a tracker run.
public struct TrackerOptions: Sendable {
    /// Continuation length for prompts without their own `max_tokens`.
    public var maxTokens: Int
    /// Overrides every prompt's `max_tokens` when set (`-n`).
    public var forcedMaxTokens: Int?
    public var mode: TrackerMode
    /// Temperature 0 = greedy; otherwise coupled sampling with the seed's shared stream.
    public var sampling: SamplingParameters
    /// Workers running models side by side (each with one BLAS thread).
    public var threads: Int
    /// Stop a continuation after an end-of-generation token.
    public var stopAtEndOfGeneration: Bool
    /// Tokens per teacher-forced forward chunk.
    public var chunk: Int
    /// Free-running sequences decoded together (`Transformer.step`): prompts are taken in groups of
    /// this many, and each step reads the weights once for the whole group. A row's values do not
    /// depend on the rows next to it, so results do not depend on this either; it is recorded.
    public var decodeBatch: Int = 16
    /// Bytes of reference logits kept at once (in temporary files, `LogitRows`): prompts are run
    /// in batches of at most this much (but at least one prompt per worker, and one decode group
    /// while its logits fit 8 GiB), so disk use does not grow with the workload.
    public var referenceBudgetBytes: Int = 512 << 20

    public init(maxTokens: Int = 256, forcedMaxTokens: Int? = nil, mode: TrackerMode = .both,
                sampling: SamplingParameters = SamplingParameters(), threads: Int = 2,
                stopAtEndOfGeneration: Bool = true, chunk: Int = 128) {
        self.maxTokens = maxTokens
        self.forcedMaxTokens = forcedMaxTokens
        self.mode = mode
        self.sampling = sampling
        self.threads = threads
        self.stopAtEndOfGeneration = stopAtEndOfGeneration
        self.chunk = chunk
    }

    func maxTokens(for p: WorkloadPrompt) -> Int { forcedMaxTokens ?? p.maxTokens ?? maxTokens }
}
