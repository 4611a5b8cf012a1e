import Foundation
import Testing
@testable import QuantDrift

@Suite("Activation profile", .serialized)
struct ActivationProfileTests {
    @Test func statisticsOfAKnownInput() {
        // x = channel index, 3 rows: moments and per-channel maxima by hand.
        let c = StatisticsCollector.Accumulator(id: SiteID(0, .attentionInput), width: 4,
                                                plan: .init(upper: 4), bins: 4)
        let x: [Float] = [0, 1, -2, 3, 0, 1, -2, 3, 0, 1, -2, 3.5]
        x.withUnsafeBufferPointer { c.add($0.baseAddress!, rows: 3) }
        let s = c.statistics()
        #expect(s.count == 12)
        #expect(s.channelMaxAbs == [0, 1, 2, 3.5])
        #expect(s.maxAbs == 3.5)
        #expect(abs(s.sum - 6.5) < 1e-12)
        #expect(s.histogram?.counts == [3, 3, 3, 3])
    }

    @Test func kurtosisOfAGaussianIsThree() {
        let xs = gaussianSamples(200_000, seed: 2)
        let acc = StatisticsCollector.Accumulator(id: SiteID(0, .attentionInput), width: 1, plan: nil, bins: 1)
        xs.withUnsafeBufferPointer { acc.add($0.baseAddress!, rows: xs.count) }
        let k = acc.statistics().kurtosis
        #expect(abs(k - 3) < 0.1, "kurtosis \(k)")
    }

    @Test func profileOfTheDefaultModel() throws {
        let model = try Golden.defaultModel()
        let p = try ActivationProfile.measure(model: model, data: try CalibrationFixtures.small())
        #expect(p.sites.count == 4 * model.config.layerCount + 1)
        for s in p.sites {
            #expect(s.p999 > 0 && s.p999 <= s.maxAbs, "\(s.id)")
            #expect(s.kurtosis > 1, "\(s.id)")
            for j in s.outliers { #expect(j >= 0 && j < s.width) }
        }
        // SmolLM2's SwiGLU products carry massive activations: some site has outlier channels and a
        // max |x| far beyond its 99.9th percentile.
        #expect(p.sites.contains { $0.id.site == .feedForwardDownInput && !$0.outliers.isEmpty && $0.maxAbs > 10 * $0.p999 })
    }

    @Test func inspectActivationsJSON() throws {
        let j = try CLIRunner.json(["inspect", "--activations", "--data", "Prompts/calibration/02-dialogue.txt", "--json"])
        #expect((j["outlier_rule"] as? String)?.contains("6 ×") == true)
        let sites = j["sites"] as! [[String: Any]]
        #expect(sites.count == 121)
        for key in ["layer", "site", "max_abs", "p99_9_abs", "kurtosis", "outlier_channels", "outlier_ids"] {
            #expect(sites[0][key] != nil, "missing \(key)")
        }
        let text = try CLIRunner.run(["inspect", "--activations", "--data", "Prompts/calibration/02-dialogue.txt"])
        #expect(text.status == 0)
        #expect(text.stdout.contains("median channel max") && text.stdout.contains("ffn_down_in"))
    }
}
