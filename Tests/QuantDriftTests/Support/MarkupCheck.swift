import Foundation

/// A small well-formedness check for the XHTML-style markup we write (report.html, JUnit XML):
/// every tag closed in order, attributes quoted, no raw `<` or stray `&` in text.
/// Returns nil when well-formed, else the first problem.
enum MarkupCheck {
    static func problem(_ text: String) -> String? {
        let s = Array(text.unicodeScalars)
        var i = 0
        var stack: [String] = []
        func at(_ prefix: String) -> Bool {
            let p = Array(prefix.unicodeScalars)
            return i + p.count <= s.count && Array(s[i..<i + p.count]) == p
        }
        func skip(past end: String) -> Bool {
            let e = Array(end.unicodeScalars)
            while i + e.count <= s.count {
                if Array(s[i..<i + e.count]) == e { i += e.count; return true }
                i += 1
            }
            return false
        }
        while i < s.count {
            let c = s[i]
            if c == "&" {
                // An entity: &name; or &#123; or &#x1F;
                var j = i + 1
                while j < s.count, j - i < 12, s[j] != ";" {
                    guard s[j].properties.isAlphabetic || ("0"..."9").contains(s[j]) || s[j] == "#" else { return "stray & at \(i)" }
                    j += 1
                }
                guard j < s.count, s[j] == ";", j > i + 1 else { return "stray & at \(i)" }
                i = j + 1
                continue
            }
            if c == ">" { return "raw > in text at \(i)" }
            guard c == "<" else { i += 1; continue }
            if at("<!--") { guard skip(past: "-->") else { return "unclosed comment" }; continue }
            if at("<!DOCTYPE") || at("<?") { guard skip(past: ">") else { return "unclosed declaration" }; continue }
            i += 1
            let closing = i < s.count && s[i] == "/"
            if closing { i += 1 }
            var name = ""
            while i < s.count, s[i].properties.isAlphabetic || ("0"..."9").contains(s[i]) || s[i] == "-" || s[i] == ":" {
                name.unicodeScalars.append(s[i]); i += 1
            }
            guard !name.isEmpty else { return "raw < in text at \(i)" }
            // Attributes: name="value" pairs until > or />.
            var selfClosing = false
            while true {
                while i < s.count, s[i] == " " || s[i] == "\n" || s[i] == "\t" { i += 1 }
                guard i < s.count else { return "unterminated tag <\(name)>" }
                if s[i] == ">" { i += 1; break }
                if s[i] == "/", i + 1 < s.count, s[i + 1] == ">" { selfClosing = true; i += 2; break }
                guard !closing else { return "attributes in closing tag </\(name)>" }
                var attr = ""
                while i < s.count, s[i] != "=", s[i] != " ", s[i] != ">", s[i] != "/" { attr.unicodeScalars.append(s[i]); i += 1 }
                guard !attr.isEmpty, i + 1 < s.count, s[i] == "=", s[i + 1] == "\"" else { return "unquoted attribute '\(attr)' in <\(name)>" }
                i += 2
                while i < s.count, s[i] != "\"" {
                    if s[i] == "<" { return "raw < in attribute \(attr) of <\(name)>" }
                    i += 1
                }
                guard i < s.count else { return "unterminated attribute \(attr) in <\(name)>" }
                i += 1
            }
            if closing {
                guard let open = stack.popLast() else { return "</\(name)> without an open tag" }
                guard open == name else { return "</\(name)> closes <\(open)>" }
            } else if !selfClosing {
                stack.append(name)
            }
        }
        return stack.isEmpty ? nil : "unclosed <\(stack.last!)>"
    }

    /// Number of non-overlapping occurrences of `needle`.
    static func count(_ needle: String, in text: String) -> Int {
        text.components(separatedBy: needle).count - 1
    }
}
