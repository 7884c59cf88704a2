//! `results.json`, schema version 1: the machine-readable record of a run,
//! and the single source every other output is rendered from.
//!
//! Top-level keys (all always present):
//! - `schema_version`: 1.
//! - `tool`: `{name, version}`.
//! - `model`: `{path, sha256, input: {name, elem_type, shape}, output: {…}, logits, softmax_stripped}`.
//! - `data`: `{path, labels, samples, labelled, skipped: [{path, reason}], notes: [..]}`;
//!   `samples` counts the evaluated samples (skipped files excluded).
//! - `settings`: every flag as resolved (`attacks`, `eps` labels, `norm`, `steps`, `step_size`
//!   as written, `restarts`, `random_start`, `targeted`, `min_eps`, `seed`, `threads`, `batch_size`).
//! - `clean`: `{accuracy}` — `null` when no sample is labelled.
//! - `runs`: one per (attack, norm, ε), in the order run: `attack`, `norm`, `eps` (model-input
//!   scale), `eps_label` (as the user wrote it), `steps`, `step_size`, `restarts`, `random_start`,
//!   `loss`, `robust_accuracy` (labelled samples predicted correctly under attack; clean mistakes
//!   count as not robust; `null` if unlabelled), `flip_rate` (prediction under attack ≠ clean
//!   prediction), `attack_success_rate` (of clean-correct samples, the share misclassified under
//!   attack — for a targeted run, the share predicted as the target; `null` if none),
//!   `mean_confidence_drop` (mean over samples of clean-prediction probability before minus after),
//!   `per_class` (by label, or by clean prediction when unlabelled: `{class, n, robust_accuracy,
//!   flip_rate, predicted_as: [count per class]}`), `seconds` (wall time; the only
//!   non-deterministic field).
//! - `samples`: per sample `{id, label, clean_pred, clean_confidence, outcomes: [{attack, norm,
//!   eps, eps_label, pred, confidence, flipped, linf, l2}], min_eps}` (`min_eps` only with
//!   `--min-eps`: `null` when even the largest ε did not flip it).
//! - `min_eps`: with `--min-eps`, `{attack, norm, precision, eps_max, flipped, median, q1, q3}`.
//! - `checks`: `[{name, status: pass|warn|fail, detail}]`.
//! - `timing`: `{seconds, forward_evals, gradient_evals, images_per_second}`.
//!
//! Optional keys (absent from older files and when empty):
//! - `gallery`: the `--gallery N` most fragile samples (smallest `min_eps` when measured, else
//!   largest drop in the clean prediction's probability) under the strongest attack run at the
//!   largest ε (apgd > pgd > fgsm > square > noise): `[{id, attack, norm, eps_label, clean_pred,
//!   clean_confidence, adv_pred, adv_confidence, scale, clean_png, adversarial_png,
//!   perturbation_png}]`. The images are base64 PNGs of the model input (8-bit grey, RGB for
//!   3-channel models); the perturbation is shown as `0.5 + scale·δ`, so ±max|δ| maps to
//!   black/white around mid-grey (`scale` = 0.5 / max|δ|, in model-input units). The adversarial
//!   image is recomputed for these samples alone (same per-sample seed), and `adv_pred` /
//!   `adv_confidence` are those of that image.

use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema_version: u32,
    pub tool: Tool,
    pub model: ModelRecord,
    pub data: DataRecord,
    pub settings: Settings,
    pub clean: Clean,
    pub runs: Vec<Run>,
    pub samples: Vec<SampleRecord>,
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
    pub attack: String,
    pub norm: String,
    pub eps_label: String,
    pub clean_pred: usize,
    pub clean_confidence: f32,
    pub adv_pred: usize,
    pub adv_confidence: f32,
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
    pub flipped: bool,
    pub linf: f32,
    pub l2: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub id: String,
    pub label: Option<usize>,
    pub clean_pred: usize,
    pub clean_confidence: f32,
    pub outcomes: Vec<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_eps: Option<Option<f32>>,
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

impl Results {
    pub fn to_json(&self) -> String {
        // Serialising plain data structures cannot fail.
        serde_json::to_string_pretty(self).expect("results serialise")
    }
}
