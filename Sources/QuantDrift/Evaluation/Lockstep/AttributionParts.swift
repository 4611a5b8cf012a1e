/// Splits a scheme into the parts whose effects attribution separates, and restricts it to one layer.
public enum AttributionParts {
    /// The weight, activation and KV parts of `s` that it has, each alone (FP32 elsewhere).
    public static func split(_ s: Scheme) -> [(String, Scheme)] {
        var parts: [(String, Scheme)] = []
        if let w = s.weights {
            var part = Scheme(weights: w, calibration: s.calibration, calibrationFile: s.calibrationFile, skip: s.skip)
            part.upgrade = s.upgrade
            parts.append(("weights", part))
        }
        if let a = s.activations {
            parts.append(("activations", Scheme(activations: a, calibration: s.calibration, calibrationFile: s.calibrationFile, skip: s.skip)))
        }
        if let kv = s.kv { parts.append(("kv", Scheme(kv: kv))) }
        return parts
    }

    /// `s` on layer `layer` only (its weights, activations and KV cache): every other layer,
    /// the token embedding and the output head stay FP32.
    public static func onlyLayer(_ s: Scheme, _ layer: Int, of layerCount: Int) -> Scheme {
        var t = s
        t.preset = nil
        t.skip = s.skip + [.tensor("embed"), .tensor("lm_head")] + (0..<layerCount).filter { $0 != layer }.map { .layer($0) }
        return t
    }
}
