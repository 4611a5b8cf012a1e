import Foundation

/// The one fingerprint of a model, trace or calibration file that reports and artifacts state.
public enum FileDigest {
    /// SHA-256 of a file (as `sha256sum` prints it), or of a folder's files in name order (an HF
    /// model folder).
    public static func sha256(path: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw QuantDriftError.invalidInput("\(path): no such file")
        }
        var files = [path]
        if isDir.boolValue {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            files = names.sorted().map { path + "/" + $0 }.filter { f in
                var d: ObjCBool = false
                return FileManager.default.fileExists(atPath: f, isDirectory: &d) && !d.boolValue
            }
        }
        var h = SHA256()
        for f in files {
            let mapped = try MappedFile(path: f)
            withExtendedLifetime(mapped) { h.update(mapped.bytes) }
        }
        return h.finalizeHex()
    }
}
