import ArgumentParser
import Foundation
import QuantDrift

struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Measure static activation ranges (and SmoothQuant/outlier maxima) for a scheme on calibration texts; write a JSON artifact for calib=FILE.json.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var blas: BLASOptions
    @OptionGroup var output: OutputOptions

    @Option(name: .long, help: "Scheme to calibrate for (its calib= method picks the ranges, default percentile:99.99; default scheme: w8a8-static).",
            transform: SchemeArgument.parse)
    var scheme: Scheme = try! SchemeArgument.parse("w8a8-static")

    @Option(name: .long, help: "Calibration texts: a folder of .txt files or one file.")
    var data: String = CalibrationOptions.defaultPath

    @Option(name: [.customShort("o"), .customLong("output")], help: "Artifact to write (quantdrift.calibration/1 JSON).")
    var artifactPath: String

    func validate() throws {
        if scheme.calibrationFile != nil {
            throw ValidationError("calibrate measures ranges; the scheme must not name a calibration file (calib=FILE.json)")
        }
    }

    func run() throws {
        let folder = (URL(fileURLWithPath: artifactPath).deletingLastPathComponent().path)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw QuantDriftError.invalidInput("\(artifactPath): folder \(folder) does not exist")
        }
        let model = try modelOptions.load(blas)
        let set = try CalibrationOptions.load(data, tokenizer: model.tokenizer)
        let sha = try FileDigest.sha256(path: model.path)
        let bar = ProgressBar(label: "calibrate")
        let artifact = try ActivationCalibrator.calibrate(model: model, scheme: scheme, data: set, modelSHA256: sha) { stage, done, total in
            bar.update(done + (stage == "histograms" ? total : 0), of: 2 * total)
        }
        bar.finish()
        try artifact.write(to: artifactPath)
        if output.json {
            CLI.printJSON([
                "output": .string(artifactPath), "schema": .string(CalibrationArtifact.schema), "scheme": .string(artifact.scheme),
                "method": .string(artifact.method.description), "sites": .int(artifact.sites.count),
                "tokens": .int(artifact.tokenCount), "data_sha256": .string(artifact.dataSHA256),
                "model_sha256": .string(artifact.modelSHA256),
            ])
        } else {
            print("wrote \(artifactPath): \(artifact.sites.count) sites, \(artifact.method), \(artifact.tokenCount) tokens in \(artifact.sequenceCount) sequences of \(artifact.dataPath) (sha256 \(artifact.dataSHA256.prefix(12))…)")
        }
    }
}
