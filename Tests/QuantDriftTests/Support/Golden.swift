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

    /// Loaded once; BLAS is set to one thread first (the CLI's default), before any test runs a
    /// product on the model, so the count never changes under a running product.
    private static let shared: Result<Model, Error> = Result {
        BLAS.setThreads(1)
        return try Model.load(path: defaultModelPath())
    }
}
