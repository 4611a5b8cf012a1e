import ArgumentParser
import Foundation
import QuantDrift

/// Entry point: parse, run, and turn every error into one line on stderr with exit code 2 (bad
/// input) or 1 (internal failure). Help and --version exit 0.
do {
    var command = try QuantDriftCLI.parseAsRoot()
    try command.run()
    fflush(nil)
} catch let error as QuantDriftError {
    fflush(nil)
    if case .interrupted = error { CLI.fail(error.description, code: 130) }
    CLI.fail(error.description, code: error.isBadInput ? 2 : 1)
} catch {
    fflush(nil)
    let code = QuantDriftCLI.exitCode(for: error)
    if code == .success {
        print(QuantDriftCLI.fullMessage(for: error))
        exit(0)
    }
    let message = QuantDriftCLI.message(for: error)
        .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        .joined(separator: " ")
    CLI.fail(message.isEmpty ? "\(error)" : message, code: 2)
}
