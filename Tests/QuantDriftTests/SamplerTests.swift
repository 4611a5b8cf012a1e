import Testing
@testable import QuantDrift

@Suite("Sampling")
struct SamplerTests {
    let logits: [Float] = [1.0, 3.0, 2.0, 3.0, -1.0, 0.5]

    @Test func greedyPicksArgmaxLowestIdOnTies() throws {
        let s = try Sampler(SamplingParameters(), vocabSize: logits.count)
        #expect(logits.withUnsafeBufferPointer { s.sample($0) } == 1)
    }

    @Test func seededSamplingIsReproducible() throws {
        func draw(seed: UInt64) throws -> [Int] {
            let s = try Sampler(SamplingParameters(temperature: 1, seed: seed), vocabSize: logits.count)
            return (0..<200).map { _ in logits.withUnsafeBufferPointer { s.sample($0) } }
        }
        #expect(try draw(seed: 7) == draw(seed: 7))
        #expect(try draw(seed: 7) != draw(seed: 8))
    }

    @Test func topKOneIsGreedyAndTopKLimitsSupport() throws {
        let k1 = try Sampler(SamplingParameters(temperature: 1, topK: 1, seed: 3), vocabSize: logits.count)
        for _ in 0..<50 { #expect(logits.withUnsafeBufferPointer { k1.sample($0) } == 1) }
        let k2 = try Sampler(SamplingParameters(temperature: 1, topK: 2, seed: 3), vocabSize: logits.count)
        for _ in 0..<200 { #expect([1, 3].contains(logits.withUnsafeBufferPointer { k2.sample($0) })) }
    }

    @Test func topPKeepsTheNucleus() throws {
        // Probabilities ∝ exp(logits): tokens 1 and 3 hold ≈ 0.63 together; top-p 0.5 keeps both of them only.
        let s = try Sampler(SamplingParameters(temperature: 1, topP: 0.5, seed: 11), vocabSize: logits.count)
        var seen = Set<Int>()
        for _ in 0..<300 { seen.insert(logits.withUnsafeBufferPointer { s.sample($0) }) }
        #expect(seen == [1, 3])
    }

    @Test func temperatureSamplingFollowsTheDistribution() throws {
        let s = try Sampler(SamplingParameters(temperature: 1, seed: 5), vocabSize: logits.count)
        var counts = [Int](repeating: 0, count: logits.count)
        let n = 20000
        for _ in 0..<n { counts[logits.withUnsafeBufferPointer { s.sample($0) }] += 1 }
        let z = logits.map { Foundation.exp(Double($0)) }.reduce(0, +)
        for i in logits.indices {
            let p = Foundation.exp(Double(logits[i])) / z
            let sd = (p * (1 - p) / Double(n)).squareRoot()
            #expect(abs(Double(counts[i]) / Double(n) - p) < 5 * sd + 1e-3, "token \(i)")
        }
    }

    @Test func invalidParametersAreRejected() {
        #expect(throws: QuantDriftError.self) { try SamplingParameters(temperature: -1).validate() }
        #expect(throws: QuantDriftError.self) { try SamplingParameters(topP: 0).validate() }
        #expect(throws: QuantDriftError.self) { try SamplingParameters(topK: -2).validate() }
    }
}

import Foundation
