import Foundation

/// Builds `.safetensors` files in memory: a u64 header length, a JSON header padded with spaces
/// to a multiple of 8, then the tensors' bytes back to back.
struct SafetensorsWriter {
    struct Tensor {
        var name: String
        /// `F32`, `F16`, `BF16`, or any other dtype name.
        var dtype: String
        /// Outermost first (row-major).
        var shape: [Int]
        var data: [UInt8]
    }

    var tensors: [Tensor] = []
    var metadata: [String: String] = ["format": "pt"]

    /// The JSON header, tensors in the order given.
    func header() -> String {
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(m.joined(separator: ","))}")
        }
        var offset = 0
        for t in tensors {
            let shape = t.shape.map(String.init).joined(separator: ",")
            parts.append("\(jsonString(t.name)):{\"dtype\":\(jsonString(t.dtype)),\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.data.count)]}")
            offset += t.data.count
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    func bytes() -> [UInt8] {
        Self.file(header: header(), data: tensors.flatMap(\.data))
    }

    func write(to path: String) throws {
        try Data(bytes()).write(to: URL(fileURLWithPath: path))
    }

    /// A file from a header text and data; `headerLength` is written instead of the true length.
    static func file(header: String, data: [UInt8], headerLength: UInt64? = nil) -> [UInt8] {
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(UInt8(ascii: " ")) }
        var b: [UInt8] = []
        b.appendLE(headerLength ?? UInt64(h.count))
        return b + h + data
    }
}

/// `s` as a JSON string literal.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

/// Writes a JSON object (dictionaries, arrays, strings, numbers, bools, NSNull) with sorted keys.
func writeJSON(_ object: Any, to url: URL) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: url)
}
