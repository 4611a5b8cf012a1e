import Foundation

/// Renders a `quantdrift.report/1` document as `summary.md` and `report.html`. Rendering reads the
/// JSON back (not the in-memory results), so a report re-renders identically from its file.
public enum ReportRenderer {
    /// `summary.md` text. `file` names the document in error messages.
    public static func markdown(_ reportJSON: Data, file: String = "report.json") throws -> String {
        MarkdownReport.render(try ReportDocument.parse(reportJSON, file: file))
    }

    /// `report.html` text: one self-contained file.
    public static func html(_ reportJSON: Data, file: String = "report.json") throws -> String {
        HTMLReport.render(try ReportDocument.parse(reportJSON, file: file))
    }

    /// The scheme table `compare` and `run` print when they finish: one line per scheme.
    public static func consoleTable(_ reportJSON: Data, file: String = "report.json") throws -> String {
        ReportReading.consoleTable(try ReportDocument.parse(reportJSON, file: file))
    }

    static func markdown(_ report: JSONNode) throws -> String { MarkdownReport.render(try ReportDocument(report)) }
    static func html(_ report: JSONNode) throws -> String { HTMLReport.render(try ReportDocument(report)) }
}

/// Writes the renderings beside report.json, each atomically (temporary file + rename), so an
/// interrupted run never leaves a half-written file.
public enum ReportWriter {
    /// Writes BASE.json, BASE.md and BASE.html into `dir`, each atomically (the family, matrix and grid reports).
    static func writeSet(base: String, json: JSON, markdown: String, html: String, to dir: URL) throws {
        try AtomicFile.write(Data((json.serialized(pretty: true) + "\n").utf8), to: dir.appendingPathComponent(base + ".json"))
        try AtomicFile.write(Data(markdown.utf8), to: dir.appendingPathComponent(base + ".md"))
        try AtomicFile.write(Data(html.utf8), to: dir.appendingPathComponent(base + ".html"))
    }

    public static let reportName = "report.json"
    public static let tokensName = "tokens.csv"
    public static let markdownName = "summary.md"
    public static let htmlName = "report.html"

    /// Renders `summary.md` and `report.html` from the report's JSON bytes into `dir`.
    /// Returns the written files.
    @discardableResult
    public static func writeRenderings(reportJSON: Data, to dir: URL, file: String = "report.json") throws -> [URL] {
        let report = try ReportDocument.parse(reportJSON, file: file)
        return try write(report, to: dir)
    }

    /// Renders from a report the caller holds as a `JSON` value.
    @discardableResult
    public static func writeRenderings(report: JSON, to dir: URL) throws -> [URL] {
        try writeRenderings(reportJSON: Data(report.serialized().utf8), to: dir)
    }

    /// Renders from a report.json file; the renderings go beside it unless `dir` is given.
    @discardableResult
    public static func writeRenderings(reportAt path: URL, to dir: URL? = nil) throws -> [URL] {
        let report = try ReportDocument.read(path: path.path)
        return try write(report, to: dir ?? path.deletingLastPathComponent())
    }

    private static func write(_ report: ReportDocument, to dir: URL) throws -> [URL] {
        let md = dir.appendingPathComponent(markdownName), html = dir.appendingPathComponent(htmlName)
        do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
            throw QuantDriftError.invalidInput("\(dir.path): cannot create the report folder")
        }
        try AtomicFile.write(Data(MarkdownReport.render(report).utf8), to: md)
        try AtomicFile.write(Data(HTMLReport.render(report).utf8), to: html)
        return [md, html]
    }
}
