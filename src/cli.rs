//! Command-line arguments (clap derive). Validation only: nothing here
//! touches a file.

use advscan::attack::Norm;
use advscan::report::json::Shard;
use advscan::run::{EpsSpec, StepSize, parse_eps, parse_shard};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "advscan",
    version,
    about = "Measure how easily an ONNX diagnostic imaging model's predictions flip under adversarial perturbations."
)]
pub struct Cli {
    /// Worker threads for inference and attacks (default: all cores).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a model: input, output, softmax, op histogram and which ops advscan can differentiate.
    Inspect {
        /// The ONNX model file.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The model config to resolve (default: MODEL.model.toml beside the model).
        #[arg(long, value_name = "FILE")]
        model_config: Option<PathBuf>,
    },
    /// Attack a model on a folder of scans and measure how many diagnoses flip.
    Attack(AttackArgs),
    /// Combine the results of `advscan attack --shard K/N` runs (shards 1..N, each once) into the
    /// results.json one unsharded run would have written, plus report.html, summary.md and junit.xml.
    /// Exit codes as `attack`. See docs/sharding.md.
    Merge {
        /// The shards' output folders (or their results.json files), in any order.
        #[arg(required = true, value_name = "DIR")]
        inputs: Vec<PathBuf>,
        /// Gate the merged results on this TOML policy (exit 1 when a requirement fails).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Output folder for the merged results.json and reports.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a results.json against a robustness policy: exit 0 when every requirement holds, 1 when
    /// any fails (one `FAIL` line each), 2 on error. Writes summary.md and junit.xml beside the results.
    Gate {
        /// The TOML policy (see docs/policies/example.toml).
        #[arg(long)]
        policy: PathBuf,
        /// A results.json from an earlier run, for `max_robust_accuracy_drop`.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// The results.json written by `advscan attack`.
        results: PathBuf,
    },
    /// Rebuild the reports beside a results.json from it alone: report.html, summary.md and
    /// junit.xml. Exits 0 whatever the verdict; `advscan gate` gives the exit code.
    Report {
        /// The results.json written by `advscan attack`.
        results: PathBuf,
        /// Include this policy's verdict in the reports, as `attack --policy` does.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Baseline results.json for the policy's `max_robust_accuracy_drop`.
        #[arg(long, requires = "policy")]
        baseline: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NormArg {
    Linf,
    L2,
}

impl From<NormArg> for Norm {
    fn from(n: NormArg) -> Norm {
        match n {
            NormArg::Linf => Norm::Linf,
            NormArg::L2 => Norm::L2,
        }
    }
}

#[derive(Debug, Args)]
pub struct AttackArgs {
    /// The ONNX model file.
    #[arg(long)]
    pub model: PathBuf,
    /// A folder of scans (class sub-folders give labels), a single image, or a CSV `path,label`.
    #[arg(long)]
    pub data: PathBuf,
    /// A CSV `path,label` with the labels of the scans in --data.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Attacks to run, comma-separated (fgsm, pgd, noise, and those listed by the library).
    #[arg(long = "attack", value_delimiter = ',', default_value = "fgsm,pgd,noise")]
    pub attacks: Vec<String>,
    /// Budgets in the model-input scale: fractions (2/255) or decimals.
    #[arg(long, value_delimiter = ',', value_parser = parse_eps, default_value = "1/255,2/255,4/255,8/255")]
    pub eps: Vec<EpsSpec>,
    #[arg(long, value_enum, default_value = "linf")]
    pub norm: NormArg,
    /// Gradient steps of the iterative attacks [default: 10 for pgd, 100 for apgd].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Step size: an absolute value or eps/K.
    #[arg(long, default_value = "eps/4", value_parser = StepSize::parse)]
    pub step_size: StepSize,
    /// Independent restarts per sample; the worst case is kept.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub restarts: u32,
    /// Start iterative attacks at the clean image instead of a random point of the ball.
    #[arg(long)]
    pub no_random_start: bool,
    /// Attack towards this class instead of away from the label.
    #[arg(long)]
    pub targeted: Option<usize>,
    /// Queries per sample for the gradient-free square attack.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Also measure, per sample, the smallest ε that flips it.
    #[arg(long)]
    pub min_eps: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples per model call.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = advscan::io::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Show this many of the most fragile samples (original, adversarial, perturbation) in
    /// report.html; 0 disables the gallery.
    #[arg(long, default_value_t = 8)]
    pub gallery: usize,
    /// Reports name samples by short hashes instead of their paths. Saved DICOM is
    /// de-identified (PS3.15 basic profile).
    #[arg(long)]
    pub anonymize: bool,
    /// With --anonymize: write the key (short id → input path, CSV) to this file. It must lie
    /// outside --out: it re-identifies the samples, so it never travels with the report.
    #[arg(long, requires = "anonymize", value_name = "FILE")]
    pub ids_file: Option<PathBuf>,
    /// The model config (input size, resize, window, normalisation, classes); default:
    /// MODEL.model.toml beside MODEL.onnx, else defaults (printed).
    #[arg(long, value_name = "FILE")]
    pub model_config: Option<PathBuf>,
    /// Write the N most fragile samples' adversarial images (quantised) in their own format
    /// to DIR/adversarial/, read each back and check its prediction (`adversarial_round_trip`).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub save_adversarial: usize,
    /// Evaluate only shard K of N (1 ≤ K ≤ N): the data set listing entries i with i mod N = K−1.
    /// Combine the N outputs with `advscan merge`.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Gate the run on this TOML policy once results.json is written (exit 1 when a requirement fails).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Output folder for results.json, report.html, summary.md and junit.xml.
    #[arg(long)]
    pub out: PathBuf,
}
