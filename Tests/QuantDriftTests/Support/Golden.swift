import Foundation
@testable import QuantDrift

/// Golden reference files (copied from shared/reference into Fixtures/) and the default model.
enum Golden {
    static let fixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func json(_ name: String) throws -> Any {
        let data = try Data(contentsOf: fixtures.appendingPathComponent(name))
        return try JSONSerialization.jsonObject(with: data)
    }

    /// The default model, loaded once per test process. Fails with a clear message when missing.
    static func defaultModel() throws -> Model {
        try shared.get()
    }

    private static let shared: Result<Model, Error> = Result {
        let path = packageRoot.appendingPathComponent("Weights/SmolLM2-135M-Instruct.Q4_1.gguf").path
        guard FileManager.default.fileExists(atPath: path) else {
            throw QuantDriftError.invalidInput("default model missing at \(path): run Weights/fetch.sh first")
        }
        return try Model.load(path: path)
    }
}
