import Foundation
import Testing
@testable import QuantDrift

@Suite("SHA-256")
struct SHA256Tests {
    @Test func knownVectors() {
        #expect(SHA256.hex([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Incremental updates across block boundaries give the same digest.
        let data = (0..<1000).map { UInt8($0 % 251) }
        var h = SHA256()
        h.update(data[0..<3]); h.update(data[3..<130]); h.update(data[130...])
        #expect(h.finalize().map { String(format: "%02x", $0) }.joined() == SHA256.hex(data))
    }

    @Test func defaultModelFileMatchesTheManifest() throws {
        let file = try MappedFile(path: defaultModelPath())
        // The mapping must outlive the hashing of its bytes.
        let digest = withExtendedLifetime(file) { SHA256.hex(file.bytes) }
        #expect(digest == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
        // The fingerprint reports, traces and calibration artifacts state is the same plain digest
        // (it was once the SHA-256 of the digest).
        #expect(try FileDigest.sha256(path: defaultModelPath()) == digest)
    }
}
