import ArgumentParser
import QuantDrift

struct SchemesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "schemes", abstract: "The scheme grammar and presets.")

    @Flag(name: .long, help: "Print one JSON document.")
    var json = false

    func run() throws {
        if json {
            CLI.printJSON([
                "grammar": .string(Scheme.grammar),
                "presets": .array(try Scheme.presets.map { p in
                    ["name": .string(p.name), "spec": .string(try Scheme(parsing: p.name).spec), "summary": .string(p.summary)]
                }),
                "formats": .array(FormatTraits.table.map { t in
                    ["name": .string(t.format.rawValue), "bits": .int(t.bits), "storage": .string(Self.storage(t)),
                     "weights": .string(Self.weights(t)), "activations": t.activations.map { .string($0.granularity.description) } ?? .null,
                     "kv": t.kv.map { .string(Self.kv($0)) } ?? .null, "summary": .string(t.summary)]
                }),
            ])
            return
        }
        print(Scheme.grammar)
        print("\npresets:")
        let width = Scheme.presets.map(\.name.count).max() ?? 0
        for p in Scheme.presets {
            let spec = try Scheme(parsing: p.name).spec
            print("  " + p.name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + p.summary)
            print("  " + String(repeating: " ", count: width + 2) + spec)
        }
        print("\nformats (bits, storage; weights default; as activations; as KV cache):")
        let fw = FormatTraits.table.map(\.format.rawValue.count).max() ?? 0
        for t in FormatTraits.table {
            let uses = ["w " + Self.weights(t), t.activations.map { "a " + $0.granularity.description }, t.kv.map { "kv " + Self.kv($0) }]
            print("  " + t.format.rawValue.padding(toLength: fw + 2, withPad: " ", startingAt: 0)
                  + "\(t.bits) bits, \(Self.storage(t)); " + uses.compactMap { $0 }.joined(separator: "; "))
            print("  " + String(repeating: " ", count: fw + 2) + t.summary)
        }
    }

    static func storage(_ t: FormatTraits) -> String {
        switch t.storage {
        case .uniform: "integer kernels"
        case .ggmlBlock: "llama.cpp blocks, integer kernels"
        case .table: "value table, decoded for BLAS"
        case .ggmlEncoded: "llama.cpp blocks, decoded for the FP32 product"
        }
    }

    static func weights(_ t: FormatTraits) -> String {
        let w = t.weights
        var s = "\(w.granularity),\(w.symmetric ? "sym" : "asym")" + (w.fixedLayout ? " (fixed)" : "")
        if w.methods != [.rtn] { s += ", " + w.methods.map(\.rawValue).joined(separator: "|") }
        return s
    }

    static func kv(_ k: FormatTraits.KV) -> String {
        "\(k.containerBits)-bit codes, " + (k.group == 0 ? "g0" : "g\(k.group)") + (k.symmetric ? ",sym" : ",asym")
    }
}
