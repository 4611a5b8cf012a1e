/// A model configuration compared with the reference.
public struct TrackerCandidate: Sendable {
    public enum Role: Sendable, Equatable {
        /// A scheme of the report.
        case main
        /// One part of scheme `parent`'s split: "weights", "activations" or "kv" (teacher-forced only).
        case part(String, parent: Int)
        /// Scheme `parent` applied to one layer only (teacher-forced only).
        case layer(Int, parent: Int)
        /// The FP32 model again with every product in another summation order
        /// (`Transformer.rowKernelsOnly`): what rounding alone changes, the report's noise floor
        /// (teacher-forced always, free-running when the run is).
        case noiseFloor
    }

    /// The name of the noise-floor candidate (not a scheme name: those never hold a space and a parenthesis).
    public static let noiseFloorName = "fp32 (row kernels)"

    /// The noise floor's candidate: the FP32 scheme, run with `rowKernelsOnly`.
    public static var noiseFloor: TrackerCandidate {
        TrackerCandidate(name: noiseFloorName, scheme: Scheme(preset: "fp32"), role: .noiseFloor)
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

extension TrackerCandidate {
    /// The candidates of a run: every scheme (its quantized weights built now, `preparing` told
    /// before each), then, when asked, each scheme's weight, activation and KV parts alone
    /// (`attribute`) and the scheme on one layer at a time (`perLayer`), built by the worker
    /// that runs them.
    /// The noise floor's candidate comes last (`noiseFloor`, on by default: every report has one).
    public static func plan(_ schemes: [Scheme], model: Model, calibration: CalibrationSet?, attribute: Bool, perLayer: Bool,
                            noiseFloor: Bool = true,
                            preparing: (Scheme) -> Void = { _ in }) throws -> [TrackerCandidate] {
        var candidates: [TrackerCandidate] = []
        for s in schemes {
            preparing(s)
            candidates.append(TrackerCandidate(name: s.name, scheme: s,
                                               runtime: try SchemeRuntime(model: model, scheme: s, calibration: calibration)))
        }
        let layers = model.config.layerCount
        for (parent, s) in schemes.enumerated() {
            if attribute {
                for (label, part) in AttributionParts.split(s) {
                    candidates.append(TrackerCandidate(name: "\(s.name)/\(label)", scheme: part, role: .part(label, parent: parent)))
                }
            }
            if perLayer, !s.isReference, s.weights != nil || s.activations != nil || s.kv != nil {
                for l in 0..<layers {
                    candidates.append(TrackerCandidate(name: "\(s.name)/layer \(l)", scheme: AttributionParts.onlyLayer(s, l, of: layers),
                                                       role: .layer(l, parent: parent)))
                }
            }
        }
        if noiseFloor { candidates.append(.noiseFloor) }
        return candidates
    }
}
