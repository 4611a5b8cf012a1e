/// Errors the library throws. The CLI maps `.invalidInput` and `.unsupported` to exit code 2
/// (the user's file, text or option is at fault) and `.internalError` to exit code 1.
public enum QuantDriftError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Input that is malformed, inconsistent or out of range (a corrupt file, a bad option).
    case invalidInput(String)
    /// Input that is well-formed but names something this build does not handle.
    case unsupported(String)
    /// A bug or an environment failure (allocation, write error) not caused by the input.
    case internalError(String)
    /// The user stopped the run (SIGINT/SIGTERM); finished work was kept.
    case interrupted(String)

    /// The message on one line: messages quote names and text from hostile files, so newlines
    /// and other control characters in them are shown escaped (`\n`, `\u{1B}`).
    public var description: String {
        switch self {
        case .invalidInput(let m), .unsupported(let m), .internalError(let m), .interrupted(let m): return Self.oneLine(m)
        }
    }

    static func oneLine(_ m: String) -> String {
        guard m.unicodeScalars.contains(where: Self.needsEscape) else { return m }
        var out = ""
        for s in m.unicodeScalars {
            if Self.needsEscape(s) { out += s.escaped(asASCII: false) } else { out.unicodeScalars.append(s) }
        }
        return out
    }

    static func needsEscape(_ s: Unicode.Scalar) -> Bool {
        s.properties.generalCategory == .control || s == "\u{2028}" || s == "\u{2029}"
    }

    /// True when the user's input is at fault (exit code 2).
    public var isBadInput: Bool {
        switch self {
        case .invalidInput, .unsupported: return true
        case .internalError, .interrupted: return false
        }
    }
}
