import Foundation

/// The keys of report.json (schema `quantdrift.report/1`, see report-schema.md) that its writer
/// (`ReportBuilder`) and its reader (`ReportDocument`) share. A new summary metric is one case
/// of `SummaryKey` plus its computation in `ReportBuilder.summary`.
public enum ReportKeys {
    /// The value of the top-level `schema` key.
    public static let schema = "quantdrift.report/1"

    /// The KLD percentiles llama.cpp prints, highest first: (key in `kld_percentiles`, fraction).
    public static var percentiles: [(key: String, fraction: Double)] {
        LlamaCppStatistics.percentileKeys.map { (key: $0.0, fraction: $0.1) }
    }
}

/// A key of a scheme's `summary` object, in the order report.json writes them.
public enum SummaryKey: String, CaseIterable, Sendable {
    /// Teacher-forced positions scored (always present).
    case positions

    // MARK: Teacher-forced (null when mode = free)

    case meanKLD = "mean_kld"
    case meanKLDSE = "mean_kld_se"
    case meanKLDCI = "mean_kld_ci"
    case medianKLD = "median_kld"
    case p99KLD = "p99_kld"
    case maxKLD = "max_kld"
    case kldPercentiles = "kld_percentiles"
    /// Share of the total KLD carried by the 1% of positions with the largest KLD.
    case kldTailShare = "kld_tail_share"
    /// Mean KLD of positions whose reference entropy (nats) is below 0.5, in [0.5, 2), and 2 or more.
    case meanKLDLowEntropy = "mean_kld_low_entropy"
    case meanKLDMidEntropy = "mean_kld_mid_entropy"
    case meanKLDHighEntropy = "mean_kld_high_entropy"
    case meanReverseKLD = "mean_reverse_kld"
    case meanTV = "mean_tv"
    case top1Agreement = "top1_agreement"
    case top1AgreementCI = "top1_agreement_ci"
    /// Top-k containment: the reference's top-1 among the candidate's top 5, and the reverse.
    case referenceTop1InCandidateTop5 = "reference_top1_in_candidate_top5"
    case candidateTop1InReferenceTop5 = "candidate_top1_in_reference_top5"
    case meanDp = "mean_dp"
    case rmsDp = "rms_dp"
    case meanDNLL = "mean_dnll"
    case meanEntropyReference = "mean_entropy_reference"
    case meanEntropyCandidate = "mean_entropy_candidate"
    case growthExponent = "growth_exponent"
    case lateEarlyRatio = "late_early_ratio"
    /// Mean KLD over the noise floor's (the FP32-vs-FP32 comparison's) mean KLD.
    case kldOverNoiseFloor = "kld_over_noise_floor"

    // MARK: Free-running (null when mode = teacher)

    case medianFirstDivergence = "median_first_divergence"
    case divergedPrompts = "diverged_prompts"
    case reconvergedPrompts = "reconverged_prompts"
    case survival
    case survivalPredicted = "survival_predicted"
    /// Prompts whose first divergence is a tie flip (the reference's margin there within the noise
    /// floor's tie margin); the median first divergence and survival counting real flips only
    /// (Kaplan–Meier, a tie flip censoring its prompt). Greedy runs with a noise floor.
    case tieFlips = "tie_flips"
    case medianFirstRealDivergence = "median_first_real_divergence"
    case survivalReal = "survival_real"
    case referenceTextNLL = "reference_text_nll"
    case candidateTextNLL = "candidate_text_nll"
    case repetitionReference = "repetition_reference"
    case repetitionCandidate = "repetition_candidate"

    /// Which part of a run measures the value.
    public enum Part: Sendable { case always, teacherForced, freeRunning }

    /// The JSON shape of the value.
    public enum Shape: Sendable {
        /// A number (or null); the reader keeps these in `SchemeResult.summary`.
        case number
        /// `[low, high]`, a 95% interval.
        case interval
        /// `{"99.9": x, …}` with the keys of `ReportKeys.percentiles`.
        case percentiles
        /// One number per position.
        case series
    }

    public var part: Part {
        switch self {
        case .positions: .always
        case .medianFirstDivergence, .divergedPrompts, .reconvergedPrompts, .survival, .survivalPredicted,
             .tieFlips, .medianFirstRealDivergence, .survivalReal,
             .referenceTextNLL, .candidateTextNLL, .repetitionReference, .repetitionCandidate: .freeRunning
        default: .teacherForced
        }
    }

    public var shape: Shape {
        switch self {
        case .meanKLDCI, .top1AgreementCI: .interval
        case .kldPercentiles: .percentiles
        case .survival, .survivalPredicted, .survivalReal: .series
        default: .number
        }
    }
}
