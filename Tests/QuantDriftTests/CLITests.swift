import Foundation
import Testing

/// The command-line contract: JSON keys, exit codes, one-line errors.
@Suite("Command line", .serialized)
struct CLITests {
    @Test func executableIsBuilt() {
        #expect(FileManager.default.isExecutableFile(atPath: CLIRunner.executable.path),
                "quantdrift not found at \(CLIRunner.executable.path)")
    }

    @Test func logitsJSONMatchesReferenceTokensAndTop() throws {
        let ref = try Golden.json("logits-france.json") as! [String: Any]
        let j = try CLIRunner.json(["logits", ref["text"] as! String, "--json", "--top", "10"])
        #expect((j["tokens"] as! [Int]) == (ref["tokens"] as! [Int]))
        let positions = j["positions"] as! [[String: Any]]
        let refPositions = ref["positions"] as! [[String: Any]]
        #expect(positions.count == refPositions.count)
        for (mine, theirs) in zip(positions, refPositions) {
            let a = mine["top"] as! [[Double]], b = theirs["top"] as! [[Double]]
            #expect(a.count == 10)
            for (x, y) in zip(a, b) where abs(x[1] - y[1]) / max(abs(y[1]), 1) > 1e-3 {
                Issue.record("logit \(x) vs \(y)")
            }
        }
    }

    @Test func generateJSONHasTheContractKeysAndIsDeterministic() throws {
        let args = ["generate", "-p", "The capital of France is", "-n", "12", "--json"]
        let a = try CLIRunner.json(args), b = try CLIRunner.json(args)
        for key in ["prompt_tokens", "generated", "text", "tokens_per_s"] { #expect(a[key] != nil, "missing \(key)") }
        #expect(a["generated"] as! [Int] == b["generated"] as! [Int])
        #expect((a["generated"] as! [Int]).prefix(2) == [7042, 30])  // " Paris."
        let sampled = ["generate", "-p", "Once upon a time", "-n", "16", "--temp", "0.8", "--top-p", "0.9", "--seed", "42", "--json"]
        #expect(try CLIRunner.json(sampled)["generated"] as! [Int] == CLIRunner.json(sampled)["generated"] as! [Int])
    }

    @Test func tokenizeJSON() throws {
        let j = try CLIRunner.json(["tokenize", "Hello world", "--json"])
        #expect(j["ids"] as! [Int] == [19556, 905])
        #expect(j["pieces"] as! [String] == ["Hello", " world"])
    }

    @Test func benchJSONHasTheContractKeys() throws {
        let j = try CLIRunner.json(["bench", "--prefill", "16", "--decode", "4", "--runs", "1", "--json"])
        for key in ["scheme", "prefill_tok_s", "decode_tok_s", "weight_bytes_per_token", "read_bandwidth_gb_s", "bound_fraction"] {
            #expect(j[key] != nil, "missing \(key)")
        }
        // The FP32 reference reads the file's blocks: the 106,168,320 layer weights in Q4_1 (20 bytes per
        // 32), the embedding (= tied head, 49,152 × 576) in Q8_0 (34 per 32), the 35,136 norm weights in
        // FP32, plus the one embedding row looked up.
        let embedding = 49_152 * 576
        #expect(j["weight_bytes_per_token"] as! Int == 106_168_320 / 32 * 20 + embedding / 32 * 34 + (35_136 + 576) * 4)
    }

    /// Corrupt model files given to the CLI: exit 2 with one line naming the file.
    @Test func corruptModelFilesExitTwoWithOneLine() throws {
        let real = try Data(contentsOf: URL(fileURLWithPath: try defaultModelPath()), options: .alwaysMapped)
        try withTemporaryDirectory { dir in
            var cases: [(String, Data)] = [
                ("header-cut.gguf", real.prefix(1000)),
                ("data-cut.gguf", real.prefix(real.count / 2)),
                ("empty.gguf", Data()),
            ]
            var badMagic = Data(real.prefix(4096)); badMagic[0] = 0x58
            cases.append(("bad-magic.gguf", badMagic))
            var lyingCount = Data(real.prefix(4096))
            lyingCount.replaceSubrange(8..<16, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
            cases.append(("lying-tensor-count.gguf", lyingCount))
            for (name, bytes) in cases {
                let url = dir.appendingPathComponent(name)
                try bytes.write(to: url)
                let r = try CLIRunner.run(["inspect", "--model", url.path])
                #expect(r.status == 2, "\(name): exit \(r.status) \(r.stderr)")
                let lines = r.stderr.split(separator: "\n")
                #expect(lines.count == 1 && lines[0].contains(name), "\(name): \(r.stderr)")
            }
        }
    }

    /// Bad input: exit 2 and exactly one line on stderr.
    @Test(arguments: [
        ["inspect", "--model", "/nonexistent/model.gguf"],
        ["inspect", "--model", "/tmp"],
        ["inspect", "--model", "Package.swift"],
        ["generate"],
        ["generate", "-p", ""],
        ["generate", "-p", "hi", "-n", "9000"],
        ["generate", "-p", "hi", "--temp", "-1"],
        ["perplexity", "--file", "/nonexistent.txt"],
        ["perplexity", "--file", "Package.swift", "--ctx", "100000"],
        ["tokenize"],
        ["bench", "--threads", "0"],
        ["no-such-command"],
    ])
    func badInputExitsTwoWithOneLine(arguments: [String]) throws {
        let r = try CLIRunner.run(arguments)
        #expect(r.status == 2, "\(arguments): exit \(r.status), stderr \(r.stderr)")
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(arguments): stderr \(r.stderr)")
        #expect(lines.first?.hasPrefix("quantdrift: error:") == true)
    }
}
