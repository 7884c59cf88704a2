//! The library's typed errors. Every variant names the file, node or sample it
//! concerns, so the binary can print one sentence a user can act on.

use std::path::PathBuf;

/// A model file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: cannot read the file: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a readable ONNX model ({reason})", path.display())]
    NotOnnx { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error("{}: tract cannot run this model: {reason}", path.display())]
    Tract { path: PathBuf, reason: String },
}

/// A failure of the gradient engine: building the reverse pass or running it.
#[derive(Debug, thiserror::Error)]
pub enum GradError {
    #[error(
        "node '{node}' is a {op}, which advscan cannot differentiate, and it lies between the image \
         input and the logits. Ops with a backward rule: {supported}. The gradient-free attack \
         (square) still works on this model."
    )]
    UnsupportedOp { node: String, op: String, supported: String },
    #[error("node '{node}' ({op}): {reason}")]
    Node { node: String, op: String, reason: String },
    #[error("{0}")]
    Graph(String),
    #[error("input has shape {got:?}, the model expects {expected}")]
    InputShape { got: Vec<usize>, expected: String },
}

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Grad(#[from] GradError),
    #[error("{}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },
    #[error(transparent)]
    Attack(#[from] AttackError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "interrupted by {signal}: the run stopped before it finished; no report was written, and an earlier report in the output folder is unchanged"
    )]
    Interrupted { signal: &'static str },
}

/// An attack that cannot run as asked, or whose result breaks its budget.
/// `sample` is the index within the batch the attack was given; the caller
/// maps it back to the sample's id.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    #[error("unknown attack '{name}'; known attacks: {known}")]
    Unknown { name: String, known: String },
    #[error("invalid attack budget: {0}")]
    Budget(String),
    #[error("{attack}: {reason}")]
    Batch { attack: &'static str, reason: String },
    #[error(
        "{attack}: sample {sample} of the batch: input pixel {pixel} is {value}, outside the valid range \
         [{lo}, {hi}] the attack must keep images in"
    )]
    InputRange { attack: &'static str, sample: usize, pixel: usize, value: f32, lo: f32, hi: f32 },
    #[error(
        "{attack}: sample {sample} of the batch left its {norm} ε-ball: distance {distance:e} > ε = {eps:e} \
         (tolerance {tolerance:e})"
    )]
    OutsideBall { attack: &'static str, sample: usize, norm: &'static str, distance: f64, eps: f32, tolerance: f64 },
    #[error("{attack}: sample {sample} of the batch: adversarial pixel {pixel} = {value} is outside [{lo}, {hi}]")]
    OutsideRange { attack: &'static str, sample: usize, pixel: usize, value: f32, lo: f32, hi: f32 },
    #[error(
        "{attack}: sample {sample} of the batch: adversarial pixel {pixel} is {value}; the model's logits or \
         gradient were not finite"
    )]
    NotFinite { attack: &'static str, sample: usize, pixel: usize, value: f32 },
}

/// An image file that cannot be turned into a model input. Every variant names
/// the file; the run records it as a skipped sample and goes on.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{}: cannot read the file: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error("{}: not a decodable image: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{}: the image is {width}×{height} pixels × {frames} frame(s) = {pixels} pixels, over the limit of \
         {limit} pixels (refused before decoding, so a decompression bomb cannot allocate); raise the limit \
         with --max-pixels N",
        path.display()
    )]
    TooLarge { path: PathBuf, width: u64, height: u64, frames: u64, pixels: u64, limit: u64 },
}

/// Inputs that cannot be walked at all. A single bad file or CSV row is not an
/// error: it becomes a `dataset::Skipped` entry.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: no such file or folder", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a usable labels CSV: {reason}", path.display())]
    Csv { path: PathBuf, reason: String },
    #[error(
        "{}: no usable images found (PNG or JPEG; {skipped} entries skipped{})",
        path.display(),
        if *skipped > 0 { ", see the skipped list" } else { "" }
    )]
    Empty { path: PathBuf, skipped: usize },
}

impl AttackError {
    /// The attack does not implement this threat model (e.g. square is L∞ only).
    pub fn unsupported_norm(attack: &'static str, norm: &'static str) -> AttackError {
        AttackError::Batch { attack, reason: format!("the {norm} norm is not supported by this attack") }
    }
}

/// A gate policy that cannot be read or applied. Each variant names the
/// policy file (and the line of the requirement or key concerned), so a CI log
/// says exactly what to fix. A requirement that cannot be evaluated is an
/// error, never a silent pass.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{}: cannot read the policy: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}:{line}: {}{reason}",
        path.display(),
        key.as_ref().map(|k| format!("key '{k}': ")).unwrap_or_default()
    )]
    Policy { path: PathBuf, line: usize, key: Option<String>, reason: String },
    #[error("{}:{line}: requirement '{requirement}' cannot be evaluated: {reason}", path.display())]
    Unmatched { path: PathBuf, line: usize, requirement: String, reason: String },
    #[error("{}: not a readable advscan results.json: {reason}", path.display())]
    Results { path: PathBuf, reason: String },
}

/// The message of a panic contained with `catch_unwind` (a dependency failing
/// on untrusted input), for the error that replaces it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}
