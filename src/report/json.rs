//! `results.json`, schema version 1: the machine-readable record of a run,
//! and the single source every other output is rendered from.
//!
//! Top-level keys (all always present):
//! - `schema_version`: 1.
//! - `tool`: `{name, version}`.
//! - `model`: `{path, sha256, input: {name, elem_type, shape}, output: {…}, logits, softmax_stripped,
//!   config_path, config}` — the model config file used (`null`: defaults) and the config as read
//!   (unset keys `null`); `class_names` and `positive_class` when known.
//! - `data`: `{path, labels, samples, labelled, skipped: [{path, reason}], notes: [..],
//!   preprocessing: [{samples, steps: [..]}]}`; `samples` counts the evaluated samples (skipped
//!   files excluded); `skipped` is sorted by path (then reason), whatever order the files were met
//!   in; `preprocessing` lists each distinct scan → model-input preprocessing (window, resize,
//!   channels, normalise; identity steps omitted) with its sample count, sorted by steps;
//!   `manifest_sha256` and `manifest_files`: the data manifest (every file read, see `DataRecord`).
//! - `settings`: every flag as resolved (`attacks`, `eps` labels, `norm`, `steps`, `step_size`
//!   as written, `restarts`, `random_start`, `targeted`, `min_eps`, `seed`, `threads`, `batch_size`,
//!   `gallery`), and `shard: {index, count}` for a run made with `--shard K/N` (`index` = K,
//!   1-based; absent from unsharded runs and from `advscan merge` output). `threads` and
//!   `batch_size` never change a result.
//! - `clean`: `{accuracy}` — `null` when no sample is labelled.
//! - `runs`: one per (attack, norm, ε), in the order run: `attack`, `norm`, `eps` (model-input
//!   scale, i.e. attack units where 1 = the full display range of the window; for ε given in HU
//!   with per-file windows, that of the first sample), `eps_label` (as the user wrote it, with its
//!   unit: `5HU`, `2gl`, `2/255`), `steps`, `step_size`, `restarts`, `random_start`,
//!   `loss`, `robust_accuracy` (labelled samples predicted correctly under attack; clean mistakes
//!   count as not robust; `null` if unlabelled), `flip_rate` (prediction under attack ≠ clean
//!   prediction), `attack_success_rate` (of clean-correct samples, the share misclassified under
//!   attack — for a targeted run, the share predicted as the target; `null` if none),
//!   `mean_confidence_drop` (mean over samples of clean-prediction probability before minus after),
//!   `per_class` (by label, or by clean prediction when unlabelled: `{class, n, robust_accuracy,
//!   flip_rate, predicted_as: [count per class]}`), `flip_rate_quantized` and
//!   `robust_accuracy_quantized` (the same after rounding each adversarial image to the values its
//!   file can store; `null` in files from before quantisation), `seconds` (wall time; the only
//!   non-deterministic field; in merged results, the sum over the shards).
//! - `samples`: per evaluated sample, in data set listing order, `{id, index, label, clean_pred,
//!   clean_confidence, outcomes: [{attack, norm, eps, eps_label, pred, confidence, clean_pred_prob,
//!   flipped, linf, l2, pred_quantized}], min_eps, check_data, scan}`. A multi-frame file gives one
//!   sample per frame, id `path#k` (k from 1). `eps`, `linf`, `l2` and `min_eps` are in the
//!   sample's attack units (physical value / window width for DICOM, level / (2^bits − 1) for PNG);
//!   `pred_quantized` is the prediction after quantisation. `scan` says what decoding applied:
//!   `{format, transfer_syntax, photometric, bits, size, units, rescale: [slope, intercept],
//!   window: [[centre, width], "config"|"file"], frame}`. `index` is the sample's position in the data set
//!   listing (the order `--data` is walked or the CSV is read, before decoding; shard K of N holds
//!   the indices i with i mod N = K − 1). `outcomes[k]` belongs to `runs[k]`; `clean_pred_prob`
//!   is the probability of the clean prediction's class under attack. `min_eps` only with
//!   `--min-eps`: `null` when even the largest ε did not flip it. `check_data` is the sample's raw
//!   trust-check data: `{nondeterministic}` (its logits differed between two identical forward
//!   passes), and when measured `engine_gap` (max |verdict logit − tract's| on the clean image,
//!   relative to max(1, max |logit|); only where the engine gives the verdicts),
//!   `eps_zero_changed` (the first attack, replayed at ε = 0 for `run::ZERO_CHECK_STEPS` steps of
//!   one restart, changed its prediction),
//!   `gradient_zero` / `gradient_nonfinite` (its clean-input gradient is all zero / has NaN or
//!   Inf), `directional: [g·d, central difference]` (f32; only the first 4 samples are probed),
//!   `round_trip` (with `--save-adversarial`: its written adversarial file, read back through the
//!   normal input path, gave the recorded quantised prediction).
//! - `min_eps`: with `--min-eps`, `{attack, norm, precision, eps_max, flipped, median, q1, q3}`.
//! - `checks`: `[{name, status: pass|warn|fail, detail}]`.
//! - `timing`: `{seconds, forward_evals, gradient_evals, images_per_second}`. In merged results
//!   (`advscan merge`) `seconds` and the eval counts are *sums over the shards* (machine time, not
//!   the wall time of the job array) and `images_per_second` is computed from that sum.
//!
//! Every aggregate — `data.samples`, `data.labelled`, `clean`, the figures of `runs`, the `min_eps`
//! summary and `checks` — is computed from `samples` and `settings` by [`crate::eval::aggregate`],
//! so shards merged by `advscan merge` give the same file as one run with the same seed (apart from
//! `timing` and `runs[].seconds`).
//!
//! Optional keys (absent from older files and when empty):
//! - `gallery`: the `--gallery N` most fragile samples (smallest `min_eps` when measured, else
//!   largest drop in the clean prediction's probability) under the strongest attack run at the
//!   largest ε (apgd > pgd > fgsm > square > noise), ties by listing index: `[{id, index, attack,
//!   norm, eps_label, clean_pred, clean_confidence, adv_pred, adv_confidence, drop, scale,
//!   clean_png, adversarial_png, perturbation_png}]`. `index` is the sample's listing index and
//!   `drop` the ranking key measured in that run (clean-prediction probability before minus
//!   after). The images are base64 PNGs of the scan in its own grid, shown through the model's
//!   window (8-bit grey, RGB for colour); the perturbation is shown as `0.5 + scale·δ`, so
//!   ±max|δ| maps to black/white around mid-grey (`scale` = 0.5 / max|δ|, in attack units). The adversarial
//!   image is recomputed for these samples alone (same per-sample seed), and `adv_pred` /
//!   `adv_confidence` are those of that image.

use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

/// The whole record. `S` is what stands for the per-sample records: the
/// records themselves, or — where they are streamed from disk instead of held —
/// a [`crate::report::digest::SampleDigest`] of them (reading) or a spill file
/// (writing); every other field is the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results<S = Vec<SampleRecord>> {
    pub schema_version: u32,
    pub tool: Tool,
    pub model: ModelRecord,
    pub data: DataRecord,
    pub settings: Settings,
    pub clean: Clean,
    pub runs: Vec<Run>,
    pub samples: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_eps: Option<MinEpsSummary>,
    pub checks: Vec<Check>,
    pub timing: Timing,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gallery: Vec<GalleryItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryItem {
    pub id: String,
    /// The sample's data set listing index (see [`SampleRecord::index`]).
    #[serde(default)]
    pub index: usize,
    pub attack: String,
    pub norm: String,
    pub eps_label: String,
    pub clean_pred: usize,
    pub clean_confidence: f32,
    pub adv_pred: usize,
    pub adv_confidence: f32,
    /// The ranking key: the clean prediction's probability before minus after the gallery run's attack.
    #[serde(default)]
    pub drop: f32,
    /// Amplification of the perturbation image: pixel = 0.5 + scale·δ.
    pub scale: f32,
    pub clean_png: String,
    pub adversarial_png: String,
    pub perturbation_png: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord {
    pub name: String,
    pub elem_type: String,
    pub shape: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub path: String,
    pub sha256: String,
    pub input: TensorRecord,
    pub output: TensorRecord,
    pub logits: String,
    pub softmax_stripped: bool,
    /// The model config file used (`null`: defaults) and the config as resolved.
    #[serde(default)]
    pub config_path: Option<String>,
    #[serde(default)]
    pub config: Option<crate::config::ModelConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_class: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedRecord {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    pub path: String,
    pub labels: Option<String>,
    pub samples: usize,
    pub labelled: usize,
    pub skipped: Vec<SkippedRecord>,
    pub notes: Vec<String>,
    /// Each distinct preprocessing applied (scan → model input), with how many samples took it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preprocessing: Vec<PreprocessRecord>,
    /// sha256 of the data manifest: `sha256sum` lines of every file the run
    /// read (`HASH  PATH`, path relative to the data folder, sorted by path),
    /// written beside results.json as `manifest.sha256` (not with
    /// `--anonymize`, whose paths may be identifiers). Proves which scans were tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// How many files the manifest lists.
    #[serde(default)]
    pub manifest_files: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessRecord {
    pub samples: usize,
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub attacks: Vec<String>,
    pub eps: Vec<String>,
    pub norm: String,
    /// `null`: each attack's default (see `runs[].steps`).
    pub steps: Option<usize>,
    pub step_size: String,
    pub restarts: usize,
    pub random_start: bool,
    pub targeted: Option<usize>,
    pub min_eps: bool,
    pub seed: u64,
    pub threads: usize,
    pub batch_size: usize,
    /// `--gallery N`: how many of the most fragile samples the gallery shows.
    #[serde(default)]
    pub gallery: usize,
    /// `--shard K/N`; `None` for an unsharded run and for merged results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

/// Which part of the data set a sharded run evaluated: listing indices i with
/// i mod `count` = `index` − 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// K, 1-based.
    pub index: usize,
    /// N.
    pub count: usize,
}

impl Shard {
    /// Whether listing index `i` belongs to this shard (round-robin).
    pub fn contains(&self, i: usize) -> bool {
        i % self.count == self.index - 1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clean {
    pub accuracy: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassRecord {
    pub class: usize,
    pub n: usize,
    pub robust_accuracy: Option<f64>,
    pub flip_rate: f64,
    pub predicted_as: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub attack: String,
    pub norm: String,
    pub eps: f32,
    pub eps_label: String,
    pub steps: usize,
    pub step_size: f32,
    pub restarts: usize,
    pub random_start: bool,
    pub loss: String,
    pub robust_accuracy: Option<f64>,
    pub flip_rate: f64,
    pub attack_success_rate: Option<f64>,
    pub mean_confidence_drop: f64,
    pub per_class: Vec<ClassRecord>,
    /// The figures again after rounding each adversarial image to the values its file format
    /// can store (`null` in results written before quantisation existed).
    #[serde(default)]
    pub flip_rate_quantized: Option<f64>,
    #[serde(default)]
    pub robust_accuracy_quantized: Option<f64>,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub attack: String,
    pub norm: String,
    pub eps: f32,
    pub eps_label: String,
    pub pred: usize,
    /// Probability of `pred` under attack.
    pub confidence: f32,
    /// Probability of the sample's clean prediction under attack (for `mean_confidence_drop`).
    #[serde(default)]
    pub clean_pred_prob: f32,
    pub flipped: bool,
    pub linf: f32,
    pub l2: f32,
    /// Prediction after rounding the adversarial image to what its file can store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pred_quantized: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub id: String,
    /// Position in the data set listing, before decoding (the order of `--data`'s walk or CSV).
    #[serde(default)]
    pub index: usize,
    pub label: Option<usize>,
    pub clean_pred: usize,
    pub clean_confidence: f32,
    pub outcomes: Vec<Outcome>,
    /// `None` (absent): not measured; `Some(None)` (`null`): not flipped within the largest ε.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub min_eps: Option<Option<f32>>,
    #[serde(default)]
    pub check_data: SampleChecks,
    /// What decoding applied: format, photometric, rescale, window and its source, frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<crate::scan::ScanRecord>,
}

/// A field that is present reads as `Some`, also when it is `null`
/// (`Some(None)`); serde's default reads `null` as `None`, which would lose
/// the difference between "not measured" and "measured, no value" in a round
/// trip (the spill files, `advscan merge`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// One sample's raw trust-check data; `None` when that check was not measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleChecks {
    /// Its logits differed between two identical forward passes.
    pub nondeterministic: bool,
    /// max |z_verdict − z_tract| / max(1, max |z_verdict|) on the clean
    /// image: how far the verdict logits (the gradient engine's forward
    /// pass, tract's at near-ties) are from tract's own. `None` when every
    /// verdict is tract's (no gradient engine, or a batch fixed above 1).
    /// Both are finite on every evaluated sample: a sample with non-finite
    /// clean logits is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_gap: Option<f32>,
    /// The first attack, replayed at ε = 0 (`run::ZERO_CHECK_STEPS` steps, one restart), changed its prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps_zero_changed: Option<bool>,
    /// Its clean-input gradient is exactly zero everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_zero: Option<bool>,
    /// Its clean-input gradient contains NaN or Inf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_nonfinite: Option<bool>,
    /// `[g·d, central difference]` of the directional-derivative probe, rounded to f32 so that
    /// the value survives a JSON round trip bit for bit (only the first 4 samples are probed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directional: Option<[f32; 2]>,
    /// Its adversarial image was saved (`--save-adversarial`), read back through the normal input
    /// path, and gave the recorded quantised prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinEpsSummary {
    pub attack: String,
    pub norm: String,
    pub precision: f32,
    pub eps_max: f32,
    pub flipped: usize,
    pub median: Option<f32>,
    pub q1: Option<f32>,
    pub q3: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub seconds: f64,
    pub forward_evals: u64,
    pub gradient_evals: u64,
    pub images_per_second: f64,
}

impl<S> Results<S> {
    /// The same results with `samples` replaced by `f(samples)`.
    pub fn map_samples<T>(self, f: impl FnOnce(S) -> T) -> Results<T> {
        Results {
            schema_version: self.schema_version,
            tool: self.tool,
            model: self.model,
            data: self.data,
            settings: self.settings,
            clean: self.clean,
            runs: self.runs,
            samples: f(self.samples),
            min_eps: self.min_eps,
            checks: self.checks,
            timing: self.timing,
            gallery: self.gallery,
        }
    }
}

impl Results {
    /// A copy with the samples digested, as the reports read them.
    pub fn summary(&self) -> Results<crate::report::digest::SampleDigest> {
        let digest = crate::report::digest::SampleDigest::of(&self.samples);
        self.clone().map_samples(|_| digest)
    }
}

impl<S: Serialize> Results<S> {
    pub fn to_json(&self) -> String {
        // Serialising plain data structures cannot fail.
        serde_json::to_string_pretty(self).expect("results serialise")
    }

    /// The same JSON as [`Results::to_json`], streamed into `w`: a data set's
    /// results are written without a second, whole copy in memory
    /// (pretty JSON is ~1.4 KB per sample, more than the record itself).
    pub fn write_json(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(w, self).map_err(std::io::Error::other)
    }
}
