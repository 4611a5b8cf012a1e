import Foundation
@testable import QuantDrift

/// Random-weight GGUF files of real model shapes, for time and memory checks at sizes the
/// fixtures do not reach. Random weights make meaningless text: what such a file measures is
/// speed and memory. The tokenizer is the default model's (49,152 tokens), so prompts tokenize.
enum LargeModel {
    struct Shape {
        var dim: Int
        var layers: Int
        var heads: Int
        var kvHeads: Int
        var hidden: Int
        var context = 4096

        /// Llama-3.2-1B's block shapes (its 128k vocabulary aside: the default tokenizer's is used).
        static let llama32_1B = Shape(dim: 2048, layers: 16, heads: 32, kvHeads: 8, hidden: 8192)
    }

    /// Parameters of `shape` with a tied head over `vocab` tokens.
    static func parameterCount(_ s: Shape, vocab: Int) -> Int {
        let head = s.dim / s.heads, kv = s.kvHeads * head
        let perLayer = 2 * s.dim * s.dim + 2 * kv * s.dim + 3 * s.dim * s.hidden + 2 * s.dim
        return vocab * s.dim + s.layers * perLayer + s.dim
    }

    /// Writes a llama-architecture GGUF of `shape` to `url`: F16 matrices uniform in ±0.5/√fan-in
    /// (seeded, so the file is the same every time), unit norms, a tied head, and the default
    /// model's tokenizer. Returns the file's size in bytes.
    @discardableResult
    static func write(_ s: Shape, to url: URL, seed: UInt64 = 1) throws -> Int {
        let source = try GGUFFile(path: try defaultModelPath())
        var g = GGUFWriter()
        let p = "llama."
        g.set("general.architecture", .string("llama"))
        g.set("general.name", .string("random-\(s.dim)x\(s.layers)"))
        g.set(p + "context_length", .uint32(UInt32(s.context)))
        g.set(p + "embedding_length", .uint32(UInt32(s.dim)))
        g.set(p + "block_count", .uint32(UInt32(s.layers)))
        g.set(p + "feed_forward_length", .uint32(UInt32(s.hidden)))
        g.set(p + "attention.head_count", .uint32(UInt32(s.heads)))
        g.set(p + "attention.head_count_kv", .uint32(UInt32(s.kvHeads)))
        g.set(p + "attention.layer_norm_rms_epsilon", .float32(1e-5))
        g.set(p + "rope.freq_base", .float32(500_000))
        g.set(p + "rope.dimension_count", .uint32(UInt32(s.dim / s.heads)))
        for key in source.metadataKeys where key.hasPrefix("tokenizer.") {
            g.set(key, source.metadata[key]!)
        }
        let vocab = try source.strings("tokenizer.ggml.tokens").count
        g.set(p + "vocab_size", .uint32(UInt32(vocab)))

        var random = RandomStream(seed: seed)
        func matrix(_ name: String, _ rows: Int, _ cols: Int) {
            let bound = 0.5 / Double(cols).squareRoot()
            var bytes = [UInt8](repeating: 0, count: rows * cols * 2)
            bytes.withUnsafeMutableBytes { raw in
                let h = raw.bindMemory(to: UInt16.self)
                for i in h.indices { h[i] = Float16(Float((random.nextDouble() * 2 - 1) * bound)).bitPattern.littleEndian }
            }
            g.addTensor(name, dims: [cols, rows], type: .f16, data: bytes)
        }
        func ones(_ name: String, _ n: Int) {
            g.addTensor(name, shape: [n], floats: [Float](repeating: 1, count: n), type: .f32)
        }
        let head = s.dim / s.heads, kv = s.kvHeads * head
        matrix("token_embd.weight", vocab, s.dim)
        for i in 0..<s.layers {
            let b = "blk.\(i)."
            ones(b + "attn_norm.weight", s.dim)
            matrix(b + "attn_q.weight", s.dim, s.dim)
            matrix(b + "attn_k.weight", kv, s.dim)
            matrix(b + "attn_v.weight", kv, s.dim)
            matrix(b + "attn_output.weight", s.dim, s.dim)
            ones(b + "ffn_norm.weight", s.dim)
            matrix(b + "ffn_gate.weight", s.hidden, s.dim)
            matrix(b + "ffn_up.weight", s.hidden, s.dim)
            matrix(b + "ffn_down.weight", s.dim, s.hidden)
        }
        ones("output_norm.weight", s.dim)
        try g.write(to: url.path)
        return try FileManager.default.attributesOfItem(atPath: url.path)[.size] as! Int
    }

    /// Runs the `quantdrift` executable under `/usr/bin/time -v`: its output, wall seconds and
    /// peak resident memory in bytes.
    static func measured(_ arguments: [String]) throws -> (output: CLIRunner.Output, seconds: Double, peakBytes: Int) {
        let t0 = Date()
        let output = try CLIRunner.run(arguments, launcher: ["/usr/bin/time", "-v"])
        let kb = output.stderr.split(separator: "\n").first { $0.contains("Maximum resident set size") }
            .flatMap { Int($0.split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) } ?? -1
        return (output, Date().timeIntervalSince(t0), kb * 1024)
    }
}
