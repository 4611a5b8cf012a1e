import ArgumentParser
import Foundation
import QuantDrift

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Model summary: architecture, sizes, tensor types, tokenizer; with --activations, the activation outlier profile per layer and site.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var blas: BLASOptions
    @OptionGroup var output: OutputOptions

    @Flag(name: .long, help: "Profile the activations of every linear input (FP32) on calibration texts: max |x|, 99.9th percentile, kurtosis, outlier channels.")
    var activations = false

    @Option(name: .long, help: "Texts for --activations: a folder of .txt files or one file.")
    var data: String = CalibrationOptions.defaultPath

    @Option(name: .long, help: "List the format every weight matrix gets under this scheme (for a llama.cpp mix such as q4_k_m: the types llama-quantize writes).")
    var scheme: String?

    func run() throws {
        let model = try modelOptions.load(blas)
        if activations { return try profile(model) }
        if let scheme { return try listFormats(model, scheme: try Scheme(parsing: scheme)) }
        let c = model.config
        let spec = model.tokenizer.spec
        var typeCounts: [String: Int] = [:]
        for t in model.sourceTensorTypes { typeCounts[t.type, default: 0] += 1 }
        let types = typeCounts.sorted { $0.key < $1.key }
        let special = spec.tokenTypes.enumerated().filter { $0.element == .control }.map(\.offset)
        if output.json {
            CLI.printJSON([
                "name": .string(model.name), "path": .string(model.path),
                "architecture": .string(c.architecture.rawValue),
                "parameters": .int(model.weights.parameterCount),
                "layers": .int(c.layerCount), "dim": .int(c.dim), "hidden_dim": .int(c.hiddenDim),
                "heads": .int(c.headCount), "kv_heads": .int(c.kvHeadCount), "head_dim": .int(c.headDim),
                "vocab": .int(c.vocabSize), "context_length": .int(c.contextLength),
                "rope_base": .double(Double(c.ropeBase)), "rope_style": .string(c.ropeStyle.rawValue),
                "norm_eps": .double(Double(c.normEps)), "tied_output": .bool(c.tiedOutput),
                "qk_norm": .bool(c.traits.qkNorm), "post_norms": .bool(c.traits.postNorms),
                "activation": .string(c.traits.activation.rawValue), "scaled_embedding": .bool(c.traits.scaledEmbedding),
                "attention_scale": .double(Double(c.attentionScale)), "rope_scaling": .string(ropeScalingText(c.ropeScaling)),
                "sliding_window": c.slidingWindow.map { .int($0) } ?? .null,
                "local_layers": .ints((0..<c.layerCount).filter { c.isLocal($0) }),
                "local_rope_base": c.localRopeBase.map { .double(Double($0)) } ?? .null,
                "tensor_types": .object(types.map { ($0.key, .int($0.value)) }),
                "tokenizer": [
                    "kind": .string(spec.kind.rawValue), "pre": .string(spec.pre), "tokens": .int(spec.tokens.count),
                    "merges": .int(spec.merges.count), "add_bos": .bool(spec.addBOS),
                    "bos": spec.bosID.map { .int($0) } ?? .null, "eos": spec.eosID.map { .int($0) } ?? .null,
                    "control_tokens": .int(special.count),
                ],
            ])
            return
        }
        print("\(model.name)  (\(model.path))")
        print("architecture \(c.architecture.rawValue), \(model.weights.parameterCount) parameters (FP32 after dequantization)")
        print("layers \(c.layerCount), dim \(c.dim), hidden \(c.hiddenDim), heads \(c.headCount) (KV \(c.kvHeadCount)) × \(c.headDim)")
        print("vocab \(c.vocabSize), context \(c.contextLength), RoPE base \(c.ropeBase) (\(c.ropeStyle.rawValue)), RMSNorm eps \(c.normEps), output head \(c.tiedOutput ? "tied to the embedding" : "separate")")
        var features: [String] = []
        if c.traits.qkNorm { features.append("Q/K norms") }
        if c.traits.postNorms { features.append("post-attention and post-FFN norms") }
        features.append(c.traits.activation == .silu ? "SwiGLU" : "GeGLU (tanh GELU)")
        if c.traits.scaledEmbedding { features.append("embeddings × √dim") }
        features.append(String(format: "attention scale %.4g", c.attentionScale))
        if c.ropeScaling != .none { features.append("RoPE scaling " + ropeScalingText(c.ropeScaling)) }
        if let w = c.slidingWindow {
            let local = (0..<c.layerCount).filter { c.isLocal($0) }.count
            features.append("sliding window \(w) on \(local) of \(c.layerCount) layers" + (c.localRopeBase.map { " (RoPE base \($0))" } ?? ""))
        }
        print("features: " + features.joined(separator: ", "))
        print("tensor types in the file: " + types.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        print("tokenizer \(spec.kind.rawValue) (pre-tokenizer \(spec.pre)), \(spec.tokens.count) tokens, \(spec.merges.count) merges, \(special.count) control tokens, add BOS \(spec.addBOS)")
        for (name, id) in [("BOS", spec.bosID), ("EOS", spec.eosID), ("EOT", spec.eotID)] {
            if let id { print("  \(name) \(id) \(spec.tokens[id])") }
        }
    }

    /// Tensor formats under a scheme, layers folded as blk.N (the layers listed where they differ).
    func listFormats(_ model: Model, scheme: Scheme) throws {
        let formats = SchemeBuilder.tensorFormats(config: model.config, scheme: scheme)
        // Which rotation matrices `rot=` uses at this model's widths (Hadamard or the random fallback).
        var rotations: [(String, String)] = []
        if scheme.rotation?.residual == true { rotations.append(("residual", Rotation(order: model.config.dim).summary)) }
        if scheme.rotation?.down == true { rotations.append(("ffn_down input", Rotation(order: model.config.hiddenDim).summary)) }
        if output.json {
            CLI.printJSON(["model": .string(model.name), "scheme": .string(scheme.description),
                           "tensors": .object(formats.map { ($0.tensor, .string($0.format)) }),
                           "rotations": .object(rotations.map { ($0.0, .string($0.1)) })])
            return
        }
        print("\(model.name) under \(scheme.description): \(formats.count) weight matrices")
        for (site, r) in rotations { print("  rotation of the \(site): \(r)") }
        var order: [String] = [], byKind: [String: [(layer: Int, format: String)]] = [:], single: [String: String] = [:]
        for (name, format) in formats {
            let parts = name.split(separator: ".")
            if parts.count > 2, parts[0] == "blk", let layer = Int(parts[1]) {
                let key = "blk.N." + parts.dropFirst(2).joined(separator: ".")
                if byKind[key] == nil { order.append(key) }
                byKind[key, default: []].append((layer, format))
            } else {
                order.append(name)
                single[name] = format
            }
        }
        let width = order.map(\.count).max() ?? 0
        for key in order {
            let label = "  " + key.padding(toLength: width + 2, withPad: " ", startingAt: 0)
            if let f = single[key] { print(label + f); continue }
            let rows = byKind[key]!
            let distinct = rows.map(\.format).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            if distinct.count == 1 { print(label + distinct[0]); continue }
            print(label + distinct.map { f in f + " " + rows.filter { $0.format == f }.map { String($0.layer) }.joined(separator: ",") }
                .joined(separator: "; "))
        }
    }

    func profile(_ model: Model) throws {
        let set = try CalibrationOptions.load(data, tokenizer: model.tokenizer)
        let bar = ProgressBar(label: "profile")
        let p = try ActivationProfile.measure(model: model, data: set) { stage, done, total in
            bar.update(done + (stage == "histograms" ? total : 0), of: 2 * total)
        }
        bar.finish()
        if output.json {
            CLI.printJSON([
                "model": .string(model.name),
                "data": ["path": .string(set.source), "sha256": .string(set.sha256), "tokens": .int(set.tokenCount)],
                "outlier_rule": .string(ActivationProfile.outlierRule),
                "sites": .array(p.sites.map { s in
                    [
                        "layer": .int(s.id.layer), "site": .string(s.id.site.rawValue), "channels": .int(s.width),
                        "max_abs": .double(Double(s.maxAbs)), "p99_9_abs": .double(Double(s.p999)),
                        "kurtosis": .double(s.kurtosis), "median_channel_max_abs": .double(Double(s.medianChannelMax)),
                        "outlier_channels": .int(s.outliers.count), "outlier_ids": .ints(s.outliers),
                    ]
                }),
            ])
            return
        }
        print("activation profile of \(model.name) (FP32) on \(p.tokenCount) tokens of \(set.source)")
        print("outlier channel: \(ActivationProfile.outlierRule); kurtosis is Pearson's (3 for a Gaussian)")
        print("layer  site          max|x|   p99.9|x|    kurtosis  outliers  ids (first 6)")
        for s in p.sites {
            let ids = s.outliers.prefix(6).map(String.init).joined(separator: ",") + (s.outliers.count > 6 ? ",…" : "")
            let site = s.id.site.rawValue.padding(toLength: 11, withPad: " ", startingAt: 0)
            print(String(format: "%5d  ", s.id.layer) + site
                  + String(format: " %8.2f  %9.3f  %10.1f  %8d  ", s.maxAbs, s.p999, s.kurtosis, s.outliers.count) + ids)
        }
    }
}

/// RoPE scaling in a few words: "none", "linear ×4", "per-pair divisors 1…8".
func ropeScalingText(_ r: RopeScaling) -> String {
    switch r {
    case .none: return "none"
    case .linear(let f): return "linear ×\(f)"
    case .perPairDivisors(let d): return "per-pair divisors \(d.min() ?? 1)…\(d.max() ?? 1)"
    }
}
