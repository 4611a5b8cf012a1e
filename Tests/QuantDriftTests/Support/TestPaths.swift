import Foundation

/// The package root (the folder holding Package.swift), found from this file's path.
func packageRoot() -> URL {
    URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()   // Support
        .deletingLastPathComponent()   // QuantDriftTests
        .deletingLastPathComponent()   // Tests
        .deletingLastPathComponent()
}

/// A file under Tests/QuantDriftTests/Fixtures.
func fixtureURL(_ name: String) -> URL {
    packageRoot().appendingPathComponent("Tests/QuantDriftTests/Fixtures").appendingPathComponent(name)
}

struct MissingTestData: Error, CustomStringConvertible {
    let description: String
}

/// Path of the default model, SmolLM2-135M-Instruct Q4_1; throws a clear error when it is missing.
func defaultModelPath() throws -> String {
    let path = packageRoot().appendingPathComponent("Weights/SmolLM2-135M-Instruct.Q4_1.gguf").path
    guard FileManager.default.fileExists(atPath: path) else {
        throw MissingTestData(description: "default model not found at \(path): run Weights/fetch.sh")
    }
    return path
}

/// Path of the second family's model, Gemma 3 270M Q4_K_M; throws a clear error when it is missing.
func gemmaModelPath() throws -> String {
    let path = packageRoot().appendingPathComponent("Weights/gemma-3-270m-q4_k_m.gguf").path
    guard FileManager.default.fileExists(atPath: path) else {
        throw MissingTestData(description: "Gemma 3 270M not found at \(path): run Weights/fetch.sh gemma3-270m")
    }
    return path
}
