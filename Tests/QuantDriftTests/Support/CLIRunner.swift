import Foundation

/// Runs the built `quantdrift` executable (it sits beside the test bundle in the build folder).
enum CLIRunner {
    struct Output {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static var executable: URL {
        var dir = Bundle.main.bundleURL
        if dir.pathExtension == "xctest" { dir = dir.deletingLastPathComponent() }
        return dir.appendingPathComponent("quantdrift")
    }

    /// `environment` entries are added to this process's environment. With `launcher`, runs
    /// `launcher [executable] arguments` (e.g. `/usr/bin/time -v`).
    static func run(_ arguments: [String], cwd: URL = Golden.packageRoot, environment: [String: String] = [:],
                    launcher: [String] = []) throws -> Output {
        let p = Process()
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        p.executableURL = launcher.first.map { URL(fileURLWithPath: $0) } ?? executable
        p.arguments = launcher.isEmpty ? arguments : Array(launcher.dropFirst()) + [executable.path] + arguments
        p.currentDirectoryURL = cwd
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Read both pipes before waiting so a large output cannot block the child.
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: e, as: UTF8.self))
    }

    static func json(_ arguments: [String]) throws -> [String: Any] {
        let r = try run(arguments)
        guard r.status == 0 else { throw CLIError(message: "quantdrift \(arguments.joined(separator: " ")) exited \(r.status): \(r.stderr)") }
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
    }

    struct CLIError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}
