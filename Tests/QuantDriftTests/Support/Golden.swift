import Foundation
@testable import QuantDrift

/// Golden reference files (copied from shared/reference into Fixtures/) and the default model.
enum Golden {
    static let packageRoot = QuantDriftTests.packageRoot()

    /// eval.txt as llama-perplexity reads it (`-f` drops one trailing newline), BOS first when
    /// the model adds BOS.
    static func evalTokens(_ model: Model) throws -> [Int] {
        var text = try String(contentsOf: fixtureURL("eval.txt"), encoding: .utf8)
        if text.hasSuffix("\n") { text.removeLast() }  // llama-perplexity -f drops one trailing newline
        return Perplexity.textTokens(text, tokenizer: model.tokenizer)
    }

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
