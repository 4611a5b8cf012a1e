import Foundation
@testable import QuantDrift

/// Golden reference files (copied from shared/reference into Fixtures/) and the default model.
enum Golden {
    static let packageRoot = QuantDriftTests.packageRoot()

    static func json(_ name: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureURL(name)))
    }

    /// The default model, loaded once per test process. Fails with a clear message when missing.
    static func defaultModel() throws -> Model {
        try shared.get()
    }

    private static let shared: Result<Model, Error> = Result { try Model.load(path: defaultModelPath()) }
}
