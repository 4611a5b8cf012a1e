/// A model configuration compared with the reference.
public struct TrackerCandidate: Sendable {
    public enum Role: Sendable, Equatable {
        /// A scheme of the report.
        case main
        /// One part of scheme `parent`'s split: "weights", "activations" or "kv" (teacher-forced only).
        case part(String, parent: Int)
        /// Scheme `parent` applied to one layer only (teacher-forced only).
        case layer(Int, parent: Int)
    }

    public var name: String
    public var scheme: Scheme
    public var role: Role
    /// Built ahead (main schemes), or built by the worker that runs it (parts, layers).
    public var runtime: SchemeRuntime?

    public init(name: String, scheme: Scheme, role: Role = .main, runtime: SchemeRuntime? = nil) {
        self.name = name
        self.scheme = scheme
        self.role = role
        self.runtime = runtime
    }
}
