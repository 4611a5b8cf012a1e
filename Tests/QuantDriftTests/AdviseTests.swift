import Foundation
import Testing
@testable import QuantDrift

/// `hi=` (tensors kept in a higher weight format) and `quantdrift advise` (issue 15, item 5).
@Suite("hi= and advise")
struct AdviseTests {
    @Test func hiParsesAndPrintsBack() throws {
        let s = try Scheme(parsing: "w4g32;hi=int8@0,29,lm_head")
        #expect(s.spec == "w=int4,g32,sym;hi=int8,channel,sym@0,29,lm_head")
        #expect(try Scheme(parsing: s.spec).spec == s.spec)
        #expect(s.upgrade?.covers(kind: "attn_q", layer: 0) == true && s.upgrade?.covers(kind: "attn_q", layer: 1) == false)
        #expect(s.upgrade?.covers(kind: "lm_head", layer: nil) == true)
        for (bad, words) in [("hi=int8@1", "needs w="), ("w4g32;hi=int8", "FORMAT@TARGETS"), ("w4g32;hi=int8@", "FORMAT@TARGETS"),
                             ("w4g32;hi=int8@wq", "unknown skip item"), ("w4g32;hi=mix:q4_k_m@0", "not a mix"),
                             ("w4g32;hi=int8@0;hi=int8@1", "given twice")] {
            #expect(throws: QuantDriftError.self, "\(bad)") { try Scheme(parsing: bad) }
            do { _ = try Scheme(parsing: bad) } catch { #expect("\(error)".contains(words), "\(bad): \(error)") }
        }
    }

    @Test func hiFormatsTheTensorsItNames() throws {
        let model = try Golden.defaultModel()
        let f = SchemeBuilder.tensorFormats(config: model.config, scheme: try Scheme(parsing: "w4g32;hi=int8@3,ffn_down"))
        let byName = Dictionary(uniqueKeysWithValues: f.map { ($0.tensor, $0.format) })
        #expect(byName["blk.3.attn_q.weight"] == "int8,channel,sym")
        #expect(byName["blk.4.ffn_down.weight"] == "int8,channel,sym")
        #expect(byName["blk.4.attn_q.weight"] == "int4,g32,sym")
        #expect(byName["token_embd.weight"] == "int4,g32,sym")
    }

    /// Every layer and the head kept at int8 is w8 itself: the same bytes and the same logits, bit for bit.
    @Test func hiEverywhereIsW8() throws {
        let model = try Golden.defaultModel()
        let all = "w4g32;hi=int8@" + (0..<model.config.layerCount).map(String.init).joined(separator: ",") + ",lm_head"
        let a = try SchemeRuntime(model: model, scheme: try Scheme(parsing: all))
        let b = try SchemeRuntime(model: model, scheme: try Scheme(parsing: "w8"))
        #expect(a.weightBytes == b.weightBytes)
        let tokens = Array(CalibrationFixtures.evalTokens.prefix(48))
        #expect(try CalibrationFixtures.logits(a.weights, tokens: tokens) == CalibrationFixtures.logits(b.weights, tokens: tokens))
    }

    /// The search's shortcut (matrices swapped between two builds) is what building the scheme gives.
    @Test(arguments: [SkipItem.tensor("attn_v"), .layer(7), .tensor("lm_head")])
    func swappingEqualsBuilding(_ unit: SkipItem) throws {
        let model = try Golden.defaultModel()
        let search = try MixedPrecisionSearch(model: model, base: try Scheme(parsing: "w4g32"),
                                              keep: try Scheme(parsing: "w8").weights, budget: .meanKLD(0.01))
        let base = try SchemeRuntime(model: model, scheme: search.base)
        let high = try SchemeRuntime(model: model, scheme: search.scheme(keeping: (0..<model.config.layerCount).map { .layer($0) } + [.tensor("lm_head")]))
        let swapped = SchemeRuntime(scheme: search.scheme(keeping: [unit]),
                                    weights: MixedPrecisionSearch.swapping(unit, base: base.weights, high: high.weights))
        let built = try SchemeRuntime(model: model, scheme: search.scheme(keeping: [unit]))
        #expect(swapped.weightBytes == built.weightBytes)
        let tokens = Array(CalibrationFixtures.evalTokens.prefix(40))
        #expect(try CalibrationFixtures.logits(swapped.weights, tokens: tokens) == CalibrationFixtures.logits(built.weights, tokens: tokens))
    }

    @Test func badAdviseArgumentsAreOneLineErrors() throws {
        for (args, words) in [(["--scheme", "w4g32"], "give one budget"),
                              (["--scheme", "w4g32", "--budget", "0.1", "--min-top1", "0.9"], "give one budget"),
                              (["--scheme", "w4g32", "--budget", "0.1", "--keep", "int9"], "scheme"),
                              (["--scheme", "w4g32", "--budget", "0.1", "--keep", "w8a8"], "--keep w8a8"),
                              (["--scheme", "kv4", "--budget", "0.1"], "quantizes no weights"),
                              (["--scheme", "w4g32", "--budget=-1"], "--budget must be a positive mean KLD")] {
            let r = try CLIRunner.run(["advise"] + args)
            #expect(r.status == 2, "\(args): \(r.stderr)")
            #expect(r.stderr.contains(words), "\(args): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
        }
    }

    /// On the default model, small settings: a budget between w4g32 and w8 gets a verified scheme
    /// within it and cheaper than w8; an impossible budget is said to be impossible.
    @Test func adviseMeetsABudgetBetweenW4g32AndW8() throws {
        let model = try Golden.defaultModel()
        let data = try CalibrationFixtures.small()
        let tokens = Array(data.sequences.flatMap { $0 }.prefix(1024))
        var options = TrackerOptions(forcedMaxTokens: 24, mode: .teacher, threads: 2, chunk: 32)
        options.decodeBatch = 16
        func advise(_ budget: MixedPrecisionSearch.Budget) throws -> MixedPrecisionSearch.Outcome {
            let search = try MixedPrecisionSearch(model: model, base: try Scheme(parsing: "w4g32"),
                                                  keep: try Scheme(parsing: "w8").weights, budget: budget)
            return try search.run(searchTokens: tokens, nCtx: 256, calibration: nil, layers: false, kinds: true,
                                  workload: LockstepTests.workload, options: options)
        }
        let mid = try advise(.meanKLD(0.1))
        #expect(mid.base.meanKLD > 0.1 && mid.keepAll.meanKLD < 0.1, "the budget lies between w4g32 and w8 here")
        let a = try #require(mid.advised, "\(mid.reason ?? "")")
        #expect(a.meanKLD <= 0.1)
        #expect(a.bytes < mid.keepAll.bytes && a.bytes > mid.base.bytes)
        #expect(a.scheme.upgrade != nil && a.scheme.spec.hasPrefix("w=int4,g32,sym;hi=int8,channel,sym@"))
        // The advice verifies again as printed: its spec string builds the same scheme.
        #expect(try SchemeRuntime(model: model, scheme: try Scheme(parsing: a.scheme.spec)).weightBytes == a.bytes)
        #expect(mid.units.count == 8)

        let impossible = try advise(.meanKLD(mid.keepAll.meanKLD / 2))
        #expect(impossible.advised == nil)
        #expect(impossible.reason?.contains("no scheme of this kind meets the budget") == true, "\(impossible.reason ?? "")")
    }
}
