// PLACEHOLDER: the HF safetensors loader is being written.

enum SafetensorsModelLoader {
    static func load(directory: String) throws -> Model {
        throw QuantDriftError.unsupported("\(directory): HF safetensors folders are not supported yet")
    }
}
