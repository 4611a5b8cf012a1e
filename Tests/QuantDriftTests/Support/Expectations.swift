import Foundation
import QuantDrift
import Testing

/// Which `QuantDriftError` case a bad file must produce.
enum BadInputKind {
    case invalid, unsupported, either
}

/// Runs `body` and expects it to throw a one-line `QuantDriftError` of bad input (`invalidInput`
/// or `unsupported`, as `kind` says) whose message contains every string in `parts`.
@discardableResult
func expectBadInput(_ parts: String..., kind: BadInputKind = .either,
                    sourceLocation: SourceLocation = #_sourceLocation,
                    _ body: () throws -> Void) -> QuantDriftError? {
    expectBadInput(parts: parts, kind: kind, sourceLocation: sourceLocation, body)
}

@discardableResult
func expectBadInput(parts: [String], kind: BadInputKind = .either,
                    sourceLocation: SourceLocation = #_sourceLocation,
                    _ body: () throws -> Void) -> QuantDriftError? {
    do {
        try body()
        Issue.record("expected an error mentioning \(parts), got none", sourceLocation: sourceLocation)
        return nil
    } catch let e as QuantDriftError {
        switch (kind, e) {
        case (.invalid, .invalidInput), (.unsupported, .unsupported), (.either, .invalidInput), (.either, .unsupported):
            break
        default:
            Issue.record("expected a \(kind) error, got \(e) (\(e.description))", sourceLocation: sourceLocation)
        }
        for p in parts {
            #expect(e.description.contains(p), "message '\(e.description)' should mention '\(p)'", sourceLocation: sourceLocation)
        }
        #expect(!e.description.contains("\n"), "message should be one line: \(e.description)", sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("expected a QuantDriftError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Expects two FP32 arrays to be equal element by element (reports the first mismatch only).
func expectEqualFloats(_ a: [Float], _ b: [Float], _ what: String, tolerance: Float = 0,
                       sourceLocation: SourceLocation = #_sourceLocation) {
    guard a.count == b.count else {
        Issue.record("\(what): \(a.count) values vs \(b.count)", sourceLocation: sourceLocation)
        return
    }
    if let i = a.indices.first(where: { !(abs(a[$0] - b[$0]) <= tolerance) }) {
        Issue.record("\(what)[\(i)]: \(a[i]) vs \(b[i])", sourceLocation: sourceLocation)
    }
}

/// Expects two sets of weights to be equal tensor by tensor.
func expectEqualWeights(_ a: ModelWeights, _ b: ModelWeights, tolerance: Float = 0,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    func eq(_ x: [Float], _ y: [Float], _ what: String) {
        expectEqualFloats(x, y, what, tolerance: tolerance, sourceLocation: sourceLocation)
    }
    func eqOpt(_ x: [Float]?, _ y: [Float]?, _ what: String) {
        #expect((x == nil) == (y == nil), "\(what) present in one only", sourceLocation: sourceLocation)
        if let x, let y { eq(x, y, what) }
    }
    eq(a.tokenEmbedding, b.tokenEmbedding, "tokenEmbedding")
    eq(a.outputNorm, b.outputNorm, "outputNorm")
    eqOpt(a.output, b.output, "output")
    #expect(a.layers.count == b.layers.count, sourceLocation: sourceLocation)
    for (i, (x, y)) in zip(a.layers, b.layers).enumerated() {
        eq(x.attnNorm, y.attnNorm, "layer \(i) attnNorm")
        eq(x.wq, y.wq, "layer \(i) wq")
        eq(x.wk, y.wk, "layer \(i) wk")
        eq(x.wv, y.wv, "layer \(i) wv")
        eq(x.wo, y.wo, "layer \(i) wo")
        eqOpt(x.bq, y.bq, "layer \(i) bq")
        eqOpt(x.bk, y.bk, "layer \(i) bk")
        eqOpt(x.bv, y.bv, "layer \(i) bv")
        eq(x.ffnNorm, y.ffnNorm, "layer \(i) ffnNorm")
        eq(x.wGate, y.wGate, "layer \(i) wGate")
        eq(x.wUp, y.wUp, "layer \(i) wUp")
        eq(x.wDown, y.wDown, "layer \(i) wDown")
    }
}
