import ArgumentParser
import Foundation
import QuantDrift

struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Measure static activation ranges (and SmoothQuant/outlier maxima) for a scheme on calibration texts; write a JSON artifact for calib=FILE.json.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: "Scheme to calibrate for (its calib= method picks the ranges; default percentile:99.99).")
    var scheme: String = "w8a8-static"

    @Option(name: .long, help: "Calibration texts: a folder of .txt files or one file.")
    var data: String = CalibrationOptions.defaultPath

    @Option(name: [.short, .customLong("output")], help: "Artifact to write (quantdrift.calibration/1 JSON).")
    var output: String

    @Flag(name: .long, help: "Print a JSON summary on stdout.")
    var json = false

    func run() throws {
        let s = try Scheme(parsing: scheme)
        if s.calibrationFile != nil {
            throw QuantDriftError.invalidInput("calibrate measures ranges; the scheme must not name a calibration file (calib=FILE.json)")
        }
        let folder = (URL(fileURLWithPath: output).deletingLastPathComponent().path)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw QuantDriftError.invalidInput("\(output): folder \(folder) does not exist")
        }
        let model = try modelOptions.load()
        let set = try CalibrationOptions.load(data, tokenizer: model.tokenizer)
        let sha = try FileDigest.sha256(path: model.path)
        let bar = ProgressBar(label: "calibrate")
        let artifact = try ActivationCalibrator.calibrate(model: model, scheme: s, data: set, modelSHA256: sha) { stage, done, total in
            bar.update(done + (stage == "histograms" ? total : 0), of: 2 * total)
        }
        bar.finish()
        try artifact.write(to: output)
        if json {
            CLI.printJSON([
                "output": .string(output), "schema": .string(CalibrationArtifact.schema), "scheme": .string(artifact.scheme),
                "method": .string(artifact.method.description), "sites": .int(artifact.sites.count),
                "tokens": .int(artifact.tokenCount), "data_sha256": .string(artifact.dataSHA256),
                "model_sha256": .string(artifact.modelSHA256),
            ])
        } else {
            print("wrote \(output): \(artifact.sites.count) sites, \(artifact.method), \(artifact.tokenCount) tokens in \(artifact.sequenceCount) sequences of \(artifact.dataPath) (sha256 \(artifact.dataSHA256.prefix(12))…)")
        }
    }
}
