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
    }
}
