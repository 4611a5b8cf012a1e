import ArgumentParser
import Foundation
import QuantDrift

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Model summary: architecture, sizes, tensor types, tokenizer.")

    @OptionGroup var modelOptions: ModelOptions

    @Flag(name: .long, help: "Print one JSON document.")
    var json = false

    func run() throws {
        let model = try modelOptions.load()
        let c = model.config
        let spec = model.tokenizer.spec
        var typeCounts: [String: Int] = [:]
        for t in model.sourceTensorTypes { typeCounts[t.type, default: 0] += 1 }
        let types = typeCounts.sorted { $0.key < $1.key }
        let special = spec.tokenTypes.enumerated().filter { $0.element == .control }.map(\.offset)
        if json {
            CLI.printJSON([
                "name": .string(model.name), "path": .string(model.path),
                "architecture": .string(c.architecture.rawValue),
                "parameters": .int(model.weights.parameterCount),
                "layers": .int(c.layerCount), "dim": .int(c.dim), "hidden_dim": .int(c.hiddenDim),
                "heads": .int(c.headCount), "kv_heads": .int(c.kvHeadCount), "head_dim": .int(c.headDim),
                "vocab": .int(c.vocabSize), "context_length": .int(c.contextLength),
                "rope_base": .double(Double(c.ropeBase)), "rope_style": .string(c.ropeStyle.rawValue),
                "norm_eps": .double(Double(c.normEps)), "tied_output": .bool(c.tiedOutput),
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
        print("tensor types in the file: " + types.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        print("tokenizer \(spec.kind.rawValue) (pre-tokenizer \(spec.pre)), \(spec.tokens.count) tokens, \(spec.merges.count) merges, \(special.count) control tokens, add BOS \(spec.addBOS)")
        for (name, id) in [("BOS", spec.bosID), ("EOS", spec.eosID), ("EOT", spec.eotID)] {
            if let id { print("  \(name) \(id) \(spec.tokens[id])") }
        }
    }
}
