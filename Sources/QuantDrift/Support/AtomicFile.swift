import Foundation

/// Files written whole or not at all.
public enum AtomicFile {
    /// Writes `data` to `url` through a temporary file in the same folder and a rename, so a
    /// reader never sees a half-written file and an interrupted write loses nothing already there.
    public static func write(_ data: Data, to url: URL) throws {
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            if simulateFullDisk {
                // Half the bytes reach the disk, then the device is full: what ENOSPC looks like.
                try data.prefix(data.count / 2).write(to: tmp)
                throw NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC),
                              userInfo: [NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC))])
            }
            try data.write(to: tmp)
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw QuantDriftError.invalidInput("\(url.path): cannot write (\(Self.reason(error)))")
        }
        guard rename(tmp.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: tmp)
            throw QuantDriftError.invalidInput("\(url.path): cannot write (\(reason))")
        }
    }

    /// `QUANTDRIFT_FAIL_WRITES=1` makes every atomic write fail as on a full disk (for the tests
    /// that check a failed write leaves the previous file intact).
    static var simulateFullDisk: Bool { ProcessInfo.processInfo.environment["QUANTDRIFT_FAIL_WRITES"] == "1" }

    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(u.code)))
        }
        return ns.localizedDescription
    }
}
