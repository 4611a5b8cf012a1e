// Chat prompts: ChatML (`<|im_start|>role\n…<|im_end|>\n`, SmolLM2, Qwen) or Gemma's turns
// (`<start_of_turn>user\n…<end_of_turn>\n<start_of_turn>model\n`), picked by the vocabulary.

/// The chat formats `chatPrompt` writes.
public enum ChatFormat: String, Sendable {
    case chatML
    /// Gemma: no system role; a system prompt goes first in the user turn, then a blank line.
    case gemma
}

extension Tokenizer {
    /// The system prompt the model's chat template inserts when the conversation has none, if
    /// the template (GGUF `tokenizer.chat_template`) writes a fixed ChatML system turn, e.g.
    /// SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging Face".
    public var defaultSystemPrompt: String? {
        guard let template = spec.chatTemplate else { return nil }
        return Self.defaultSystemPrompt(inTemplate: template)
    }

    static func defaultSystemPrompt(inTemplate t: String) -> String? {
        // The literal may hold a real newline or a Jinja escape ("\n" written as backslash-n).
        for opener in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
            var from = t.startIndex
            while let a = t.range(of: opener, range: from..<t.endIndex),
                  let b = t.range(of: "<|im_end|>", range: a.upperBound..<t.endIndex) {
                let text = t[a.upperBound..<b.lowerBound]
                // Only a fixed text counts, not an expression such as `' + message['content'] + '`.
                if !text.isEmpty && !text.contains(where: { "{}'\"+\\".contains($0) }) { return String(text) }
                from = a.upperBound
            }
        }
        return nil
    }

    /// Gemma's format when the vocabulary has its turn tokens (`<start_of_turn>`, `<end_of_turn>`)
    /// and no ChatML ones; ChatML otherwise.
    static func chatFormat(tokens: [String]) -> ChatFormat {
        if tokens.contains("<start_of_turn>") && tokens.contains("<end_of_turn>") && !tokens.contains("<|im_start|>") {
            return .gemma
        }
        return .chatML
    }

    /// A chat prompt (`chatFormat`) for one user turn, ending with the opened assistant turn. Without
    /// `system`, the template's default system prompt is used when it has one. Encode the
    /// result with `parseSpecial: true` (and BOS first if `spec.addBOS`).
    public func chatPrompt(user: String, system: String? = nil) -> String {
        if chatFormat == .gemma {
            let content = system.map { "\($0)\n\n\(user)" } ?? user
            return "<start_of_turn>user\n\(content)<end_of_turn>\n<start_of_turn>model\n"
        }
        var p = ""
        if let s = system ?? defaultSystemPrompt {
            p += "<|im_start|>system\n\(s)<|im_end|>\n"
        }
        p += "<|im_start|>user\n\(user)<|im_end|>\n<|im_start|>assistant\n"
        return p
    }
}
