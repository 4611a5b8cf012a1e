import Foundation

/// Number and text formatting for the rendered reports. Fixed C formats without a locale, so the
/// same report gives the same bytes on any machine.
enum ReportFormat {
    /// What a missing (null) value prints as.
    static let none = "–"

    /// `x` with `decimals` digits after the point; never "-0.00".
    static func fixed(_ x: Double, _ decimals: Int) -> String {
        guard x.isFinite else { return none }
        let s = String(format: "%.\(max(0, decimals))f", x)
        if s.hasPrefix("-"), s.dropFirst().allSatisfy({ $0 == "0" || $0 == "." }) { return String(s.dropFirst()) }
        return s
    }

    /// `x` with `digits` significant digits: fixed notation from 0.001 to 10^6, else scientific ("1.2e-5").
    static func sig(_ x: Double?, _ digits: Int = 3) -> String {
        guard let x, x.isFinite else { return none }
        if x == 0 { return "0" }
        let a = abs(x)
        let magnitude = Int(floor(log10(a)))
        if a >= 0.001, a < 1e6 {
            let s = fixed(x, max(0, digits - 1 - magnitude))
            // Rounding can carry into a new digit (0.9996 → "1.000"); that is still exact enough.
            return s
        }
        var s = String(format: "%.\(max(0, digits - 1))e", x)
        // "1.20e-05" → "1.20e-5"
        if let e = s.firstIndex(of: "e") {
            let mantissa = s[..<e]
            var exponent = String(s[s.index(after: e)...])
            let sign = exponent.hasPrefix("-") ? "-" : ""
            exponent = String(exponent.drop(while: { $0 == "-" || $0 == "+" }).drop(while: { $0 == "0" }))
            s = mantissa + "e" + sign + (exponent.isEmpty ? "0" : exponent)
        }
        return s
    }

    /// A share as a percentage: 0.9731 → "97.3%".
    static func percent(_ x: Double?, _ decimals: Int = 1) -> String {
        guard let x, x.isFinite else { return none }
        return fixed(100 * x, decimals) + "%"
    }

    /// A count or position: whole numbers without decimals, others with one.
    static func count(_ x: Double?) -> String {
        guard let x, x.isFinite else { return none }
        return x == x.rounded() ? String(Int(x)) : fixed(x, 1)
    }

    /// 134515008 → "134,515,008".
    static func grouped(_ i: Int) -> String {
        let digits = String(i.magnitude)
        var out = ""
        for (k, c) in digits.enumerated() {
            if k > 0, (digits.count - k) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (i < 0 ? "-" : "") + out
    }

    /// "0.0042 [0.0037, 0.0048]"
    static func withCI(_ x: Double?, _ ci: (Double, Double)?, _ f: (Double?) -> String) -> String {
        guard let ci else { return f(x) }
        return "\(f(x)) [\(f(ci.0)), \(f(ci.1))]"
    }

    /// Escapes text for HTML element content and attribute values.
    static func html(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case _ where c.value < 0x20 && c != "\n" && c != "\t": out += "&#xFFFD;"  // control characters are not valid XML
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// Escapes text for a Markdown table cell or line: no HTML, no table breaks, no code spans,
    /// no emphasis, no links ("](" is broken up); brackets and underscores inside words stay readable.
    static func markdown(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"  // no HTML; a lone ">" mid-line is harmless and stays readable
            case "|": out += "\\|"
            case "`", "*", "\\": out += "\\" + String(c)
            case "(" where out.hasSuffix("]"): out += "\\("
            case "\n", "\r", "\t": out += " "
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// `sig` without trailing zeros: limits print as written ("0.95", not "0.9500").
    static func short(_ x: Double?, _ digits: Int = 4) -> String {
        var s = sig(x, digits)
        guard s.contains("."), !s.contains("e") else { return s }
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }

    /// At most `limit` characters, with an ellipsis when cut (legends have a fixed width).
    static func truncated(_ s: String, _ limit: Int) -> String {
        s.count <= limit ? s : String(s.prefix(limit - 1)) + "…"
    }
}
