//! The `advscan attack` run, end to end: walk the data, decode every scan
//! (a bad one is skipped with its reason, never fatal), predict clean, run
//! each attack at each ε in parallel over samples, evaluate, run the trust
//! checks and write `results.json`. The CLI only builds an [`AttackRequest`].
//!
//! With `--shard K/N` only the data set listing indices i with i mod N = K − 1
//! are decoded and attacked; every per-sample quantity depends on the sample
//! alone (randomness is seeded per sample), so `advscan merge` can put the
//! shards back together (see `crate::merge` and docs/sharding.md).

use crate::attack::{self, Budget, Norm, Objective, sample_rng};
use crate::config::ModelConfig;
use crate::dataset::{self, Sample};
use crate::error::DecodeError;
use crate::error::{AttackError, Error, GradError};
use crate::eval::{self, CleanOutcome};
use crate::model::Classifier;
use crate::model::grad::{Loss, engine::LossGrad};
use crate::preprocess::{Pipeline, PipelineSpec, Preprocessed};
use crate::report::json::*;
use crate::report::staging::Staging;
use crate::scan::{EpsUnit, Intensity, Scan, ScanRecord};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array2, ArrayD, Axis, IxDyn};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// ε as the user wrote it: a number in a unit (`5HU`, `2gl`, `2/255`).
#[derive(Debug, Clone, PartialEq)]
pub struct EpsSpec {
    /// The number, in `unit`.
    pub value: f32,
    pub unit: EpsUnit,
    pub label: String,
}

impl EpsSpec {
    /// ε in attack units for scans of one intensity (the unit was checked
    /// against every scan when it was decoded).
    fn attack_units(&self, intensity: &Intensity) -> f32 {
        (self.value as f64 * self.unit.per_unit(intensity).unwrap_or(f64::NAN)) as f32
    }
}

/// Parses `--shard K/N`: 1 ≤ K ≤ N (K 1-based, as Jest's and Playwright's `--shard`).
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let (k, n) = s.trim().split_once('/').ok_or_else(|| format!("'{s}' is not K/N (e.g. 1/4)"))?;
    let int = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("'{s}': '{}' is not a whole number", v.trim()));
    let (k, n) = (int(k)?, int(n)?);
    if n == 0 {
        return Err(format!("'{s}': N, the number of shards, must be at least 1"));
    }
    if !(1..=n).contains(&k) {
        return Err(format!("'{s}': K counts from 1 and must be between 1 and N = {n}"));
    }
    Ok(Shard { index: k, count: n })
}

/// Parses `2/255`, `0.01` or `8e-3` (model-input scale: 1 = the full display
/// range), `5HU` (Hounsfield units) or `2gl` (grey levels of an 8-bit
/// display, 1gl = 1/255); units are case-insensitive.
pub fn parse_eps(s: &str) -> Result<EpsSpec, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (number, unit) = if let Some(n) = lower.strip_suffix("hu") {
        (n, EpsUnit::Hu)
    } else if let Some(n) = lower.strip_suffix("gl") {
        (n, EpsUnit::Gl)
    } else {
        (lower.as_str(), EpsUnit::Model)
    };
    let value = parse_number(number)?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("ε must be a number ≥ 0, got '{s}'"));
    }
    Ok(EpsSpec { value, unit, label: t.to_string() })
}

fn parse_number(s: &str) -> Result<f32, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a number or a fraction like 2/255");
    match s.split_once('/') {
        Some((a, b)) => {
            let (a, b): (f64, f64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
            if b == 0.0 {
                return Err(format!("'{s}' divides by zero"));
            }
            Ok((a / b) as f32)
        }
        None => s.parse::<f32>().map_err(|_| bad()),
    }
}

/// `--step-size`: an absolute value, or `eps/K` (a fraction of each ε).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepSize {
    Absolute(f32),
    EpsOver(f32),
}

impl StepSize {
    pub fn parse(s: &str) -> Result<StepSize, String> {
        let t = s.trim();
        if let Some(k) = t.strip_prefix("eps/").or_else(|| t.strip_prefix("ε/")) {
            let k = parse_number(k)?;
            return if k > 0.0 && k.is_finite() {
                Ok(StepSize::EpsOver(k))
            } else {
                Err(format!("bad step size '{s}'"))
            };
        }
        let v = parse_number(t)?;
        if v > 0.0 && v.is_finite() {
            Ok(StepSize::Absolute(v))
        } else {
            Err(format!("the step size must be > 0, got '{s}'"))
        }
    }
    pub fn at(self, eps: f32) -> f32 {
        match self {
            StepSize::Absolute(v) => v,
            StepSize::EpsOver(k) => eps / k,
        }
    }
}

/// Everything `advscan attack` was asked to do.
#[derive(Debug, Clone)]
pub struct AttackRequest {
    pub model: PathBuf,
    pub data: PathBuf,
    pub labels: Option<PathBuf>,
    pub out: PathBuf,
    pub attacks: Vec<String>,
    pub eps: Vec<EpsSpec>,
    pub norm: Norm,
    /// Gradient steps; `None` = each attack's default (10 for PGD, 100 for
    /// APGD as AutoAttack, whose step-size schedule needs room to adapt).
    pub steps: Option<usize>,
    pub step_size: StepSize,
    pub step_size_label: String,
    pub restarts: usize,
    pub random_start: bool,
    pub targeted: Option<usize>,
    /// Queries per sample for the gradient-free square attack.
    pub queries: usize,
    pub min_eps: bool,
    pub seed: u64,
    pub threads: usize,
    pub batch_size: usize,
    pub quiet: bool,
    pub max_pixels: u64,
    /// How many of the most fragile samples to show in the gallery (0: none).
    pub gallery: usize,
    /// Replace sample names and input paths by short hashes.
    pub anonymize: bool,
    /// With `anonymize`: where to write the key (short id → path); never inside `out`.
    pub ids_file: Option<PathBuf>,
    /// Evaluate only this shard of the data set listing.
    pub shard: Option<Shard>,
    /// `--model-config`; `None`: `<model>.model.toml` beside the model, else defaults.
    pub model_config: Option<PathBuf>,
    /// Write the N most fragile samples' adversarial images in their own format.
    pub save_adversarial: usize,
}

/// The run's record, and whether any input was skipped (the binary turns
/// that into its exit status).
pub struct RunOutcome {
    /// As written to results.json, with its samples digested (they are not held in memory).
    pub results: crate::report::digest::Summary,
    /// Holds results.json (and manifest.sha256, adversarial/) until the caller has
    /// added the reports and commits it over `--out`.
    pub staging: Staging,
}

/// Counts model evaluations for `timing`, and is the `Objective` attacks see.
struct Counted<'a> {
    model: &'a Classifier,
    forward: AtomicU64,
    gradient: AtomicU64,
}

// Every model evaluation first checks for Ctrl-C/SIGTERM, so a run stops
// within one forward or backward pass, even inside a long attack.
impl Counted<'_> {
    fn count_forward(&self, x: &ArrayD<f32>) -> Result<(), Error> {
        crate::interrupt::check()?;
        self.forward.fetch_add(x.shape().first().copied().unwrap_or(0) as u64, Ordering::Relaxed);
        Ok(())
    }

    /// tract's own logits, for the `engine_matches_tract` check; `None`
    /// when every verdict is tract's anyway (see `Classifier::verdicts_by_engine`).
    fn tract_logits(&self, x: &ArrayD<f32>) -> Result<Option<Array2<f32>>, Error> {
        if !self.model.verdicts_by_engine() {
            return Ok(None);
        }
        self.count_forward(x)?;
        Ok(Some(self.model.session()?.logits(x.clone())?))
    }
}

impl Objective for Counted<'_> {
    fn logits(&self, x: &ArrayD<f32>) -> Result<Array2<f32>, Error> {
        self.count_forward(x)?;
        // Called from inside a worker: its own batch, no nested fan-out.
        self.model.verdict_logits(x)
    }
    fn loss_and_grad(&self, x: ArrayD<f32>, classes: &[usize], loss: Loss) -> Result<LossGrad<f32>, Error> {
        crate::interrupt::check()?;
        self.gradient.fetch_add(classes.len() as u64, Ordering::Relaxed);
        self.model.loss_and_grad(x, classes, loss)
    }
}

/// What the first decode keeps of a scan: enough to group it, not its pixels.
#[derive(Debug, Clone, Copy)]
struct ScanMeta {
    shape: [usize; 3],
    intensity: Intensity,
}

impl ScanMeta {
    fn of(scan: &Scan) -> ScanMeta {
        let s = scan.data.shape();
        ScanMeta { shape: [s[0], s[1], s[2]], intensity: scan.intensity }
    }
}

/// The data manifest's file name in a report folder.
pub const MANIFEST_FILE: &str = "manifest.sha256";

/// Steps (queries for Square) of the ε = 0 trust check's replay of the first
/// attack: two, so that a step taken from an already projected iterate is
/// exercised too.
pub const ZERO_CHECK_STEPS: usize = 2;

/// Files decoded at a time by the first pass (which learns shapes, intensity
/// maps and hashes): bounds what it holds, whatever the data set's size.
const DECODE_WINDOW: usize = 256;

/// Spill files in the staging folder (see `report::spill`): the records as
/// their batches finish, then in sample order with the late check data.
const RAW_SPILL: &str = ".samples-raw.jsonl";
const SAMPLES_SPILL: &str = ".samples.jsonl";

/// `offsets[i]` of a sample with no record (skipped after decoding).
const NO_RECORD: u64 = u64::MAX;

/// `sha256sum` lines (`HASH  PATH`, paths relative to the data folder when
/// inside it), sorted by path: `sha256sum -c` checks them, and the sha256 of
/// this text is `data.manifest_sha256`.
pub fn manifest_text(mut lines: Vec<(String, String)>) -> String {
    lines.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    lines.dedup();
    lines.iter().map(|(sha, path)| format!("{sha}  {path}\n")).collect()
}

fn manifest_path(data: &std::path::Path, file: &std::path::Path) -> String {
    // A labels.csv names files relative to its own folder.
    let root = if data.is_file() { data.parent().unwrap_or(data) } else { data };
    file.strip_prefix(root).unwrap_or(file).to_string_lossy().replace('\\', "/")
}

/// One sample of the run: a frame of a listed file. The listing holds its
/// path, id and label; this is all a run keeps per sample while it attacks.
#[derive(Debug, Clone, Copy)]
struct Item {
    /// Index in the data set listing.
    listing: usize,
    /// 1-based frame of a multi-frame file (as `ScanRecord::frame`).
    frame: Option<usize>,
    /// Its preprocessing group.
    group: usize,
}

impl Item {
    /// The listing's sample, with the id of its frame (`id#k`).
    fn sample(self, listing: &[Sample]) -> Sample {
        let s = &listing[self.listing];
        let id = match self.frame {
            Some(k) => format!("{}#{k}", s.id),
            None => s.id.clone(),
        };
        Sample { id, path: s.path.clone(), label: s.label }
    }
}

/// Decodes samples' pixels again when a batch needs them; a file whose
/// bytes changed since the run first read it is an error, not silently a
/// different scan.
struct Loader<'a> {
    listing: &'a [Sample],
    /// sha256 of each listed file's bytes when first read (`None`: not read).
    sha256: &'a [Option<[u8; 32]>],
    groups: &'a [Group],
    max_pixels: u64,
    config: &'a ModelConfig,
}

impl Loader<'_> {
    fn decode_file(&self, listing: usize) -> Result<Vec<Scan>, Error> {
        let path = &self.listing[listing].path;
        let bytes = std::fs::read(path).map_err(|source| DecodeError::Io { path: path.clone(), source })?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        if self.sha256.get(listing).copied().flatten() != Some(sha256) {
            return Err(Error::Output {
                path: path.clone(),
                reason: "the file changed while advscan was running; run again on data that stays put".into(),
            });
        }
        Ok(crate::scan::decode_bytes(&bytes, path, self.max_pixels, self.config)?)
    }

    /// The scan of `item` (its frame of its file).
    fn scan(&self, item: Item) -> Result<Scan, Error> {
        let frames = self.decode_file(item.listing)?;
        self.pick(item, &frames)
    }

    fn pick(&self, item: Item, frames: &[Scan]) -> Result<Scan, Error> {
        let group = &self.groups[item.group];
        frames
            .get(item.frame.map_or(0, |f| f - 1))
            .cloned()
            .filter(|s| s.data.shape() == group.pipeline.spec().src && s.intensity == group.intensity)
            .ok_or_else(|| Error::Output {
                path: self.listing[item.listing].path.clone(),
                reason: "decoded differently the second time (frame missing or other shape)".into(),
            })
    }

    /// The batch `[N, C, H, W]` of `items` (of one group, so one shape), and
    /// what decoding applied to each; frames of one file decode it once.
    fn stack(&self, items: &[Item]) -> Result<(ArrayD<f32>, Vec<ScanRecord>), Error> {
        let mut scans: Vec<Scan> = Vec::with_capacity(items.len());
        let mut last: Option<(usize, Vec<Scan>)> = None;
        for &item in items {
            if item.frame.is_none() {
                scans.push(self.scan(item)?);
                continue;
            }
            if last.as_ref().is_none_or(|(l, _)| *l != item.listing) {
                last = Some((item.listing, self.decode_file(item.listing)?));
            }
            let frames = last.as_ref().map_or(&[][..], |(_, f)| f.as_slice());
            scans.push(self.pick(item, frames)?);
        }
        let views: Vec<_> = scans.iter().map(|s| s.data.view()).collect();
        // Batches are cut within one preprocessing group, whose scans share a shape.
        let x = ndarray::stack(Axis(0), &views)
            .map_err(|e| Error::Output { path: PathBuf::from("<batch>"), reason: e.to_string() })?
            .into_dyn();
        Ok((x, scans.into_iter().map(|s| s.record).collect()))
    }
}

/// One sample during the attack phase.
struct Evaluated {
    /// Position among the run's samples (`items`).
    index: usize,
    /// The class attacks move away from (or towards, when targeted).
    class: usize,
    clean: CleanOutcome,
    outcomes: Vec<Outcome>,
    checks: SampleChecks,
    /// Drop of the clean class's probability under the gallery's run.
    drop: f32,
    min_eps: Option<Option<f32>>,
    scan: ScanRecord,
    /// Why it cannot be evaluated: the model's output went NaN/Inf under an attack.
    not_finite: Option<String>,
}

/// A sample's finished record, with what the run still needs of it.
struct Done {
    /// Position among the run's samples.
    index: usize,
    class: usize,
    drop: f32,
    record: SampleRecord,
}

/// A batch's samples, and the worker time spent on each run and on the rest.
struct ChunkResult {
    done: Vec<Done>,
    /// Samples the model's output was NaN or infinite on (clean or attacked).
    not_finite: Vec<SkippedRecord>,
    /// The model's class count (its logits' width).
    classes: usize,
    run_seconds: Vec<f64>,
    other_seconds: f64,
}

/// A gallery candidate: a sample among the most fragile seen so far.
#[derive(Debug, Clone)]
struct Fragile {
    /// (minimal ε, drop, listing index): the key of `eval::fragility_cmp`.
    key: (Option<f32>, f32, usize),
    index: usize,
    class: usize,
    clean_pred: usize,
    clean_confidence: f32,
}

/// Takes the batches' results as the workers finish them and handles them in
/// batch order: writes each record to the spill file and keeps the little
/// the rest of the run needs. A batch waits in `pending` only until every
/// earlier batch is in; workers take batches in order (`par_bridge`), so
/// `pending` holds about one batch per worker, whatever the data set's size.
struct Sink {
    next: usize,
    pending: std::collections::BTreeMap<usize, ChunkResult>,
    spill: crate::report::spill::SpillWriter,
    /// Where each sample's record starts in the spill (`NO_RECORD`: none).
    offsets: Vec<u64>,
    run_seconds: Vec<f64>,
    worker_seconds: f64,
    not_finite: Vec<SkippedRecord>,
    classes: Option<usize>,
    /// Evaluated samples per preprocessing group.
    per_group: Vec<usize>,
    /// (index, class) of the first evaluated samples, for the directional probes.
    first: Vec<(usize, usize)>,
    /// The `showcase` most fragile samples, most fragile first.
    fragile: Vec<Fragile>,
    /// Gallery samples and adversarial files to show (0 without a gallery run).
    showcase: usize,
}

impl Sink {
    fn push(&mut self, k: usize, chunk: ChunkResult, items: &[Item]) -> Result<(), Error> {
        self.pending.insert(k, chunk);
        while let Some(chunk) = self.pending.remove(&self.next) {
            self.next += 1;
            for (s, t) in self.run_seconds.iter_mut().zip(&chunk.run_seconds) {
                *s += t;
            }
            self.worker_seconds += chunk.run_seconds.iter().sum::<f64>() + chunk.other_seconds;
            self.not_finite.extend(chunk.not_finite);
            if !chunk.done.is_empty() {
                self.classes = Some(chunk.classes);
            }
            for d in chunk.done {
                self.offsets[d.index] = self.spill.write(&d.record)?;
                self.per_group[items[d.index].group] += 1;
                // Batches of several groups come group by group, not in sample order: keep the lowest.
                self.first.push((d.index, d.class));
                self.first.sort_unstable();
                self.first.truncate(eval::DIRECTIONAL_PROBES);
                if self.showcase > 0 {
                    let r = &d.record;
                    self.fragile.push(Fragile {
                        key: (r.min_eps.flatten(), d.drop, r.index),
                        index: d.index,
                        class: d.class,
                        clean_pred: r.clean_pred,
                        clean_confidence: r.clean_confidence,
                    });
                    // Ties (frames of one file) keep sample order, as a stable sort of all samples did.
                    self.fragile.sort_by(|a, b| eval::fragility_cmp(a.key, b.key).then(a.index.cmp(&b.index)));
                    self.fragile.truncate(self.showcase);
                }
            }
        }
        Ok(())
    }
}

/// One sample's result under one attack at one ε.
struct AttackedSample {
    probs: Vec<f32>,
    pred_quantized: usize,
    linf: f32,
    l2: f32,
}

/// The adversarial image rounded to what its file can store. Under L∞ the
/// rounding stays inside the ε-ball (see `Intensity::quantize_within`); under
/// L2 it is plain rounding, which may move the image by up to half a level
/// per pixel.
fn quantize(intensity: &Intensity, adv: &ArrayD<f32>, x: &ArrayD<f32>, norm: Norm, eps: f32) -> ArrayD<f32> {
    match norm {
        Norm::Linf => ndarray::Zip::from(adv).and(x).map_collect(|&a, &c| intensity.quantize_within(a, c, eps)),
        _ => adv.mapv(|v| intensity.quantize(v)),
    }
}

/// Batches of at most `batch` samples, each within one group, in sample order.
fn group_chunks(items: &[Item], groups: usize, batch: usize) -> Vec<(usize, Vec<usize>)> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for (i, item) in items.iter().enumerate() {
        members[item.group].push(i);
    }
    members.iter().enumerate().flat_map(|(g, m)| m.chunks(batch).map(move |c| (g, c.to_vec()))).collect()
}

/// Scans that share a preprocessing and an intensity map, so they can share
/// a batch and a budget.
struct Group {
    pipeline: Pipeline,
    intensity: Intensity,
}

fn norms(x: &ArrayD<f32>, adv: &ArrayD<f32>) -> Vec<(f32, f32)> {
    x.outer_iter()
        .zip(adv.outer_iter())
        .map(|(a, b)| {
            let (mut linf, mut l2) = (0f64, 0f64);
            for (p, q) in a.iter().zip(b.iter()) {
                let d = (*q as f64 - *p as f64).abs();
                linf = linf.max(d);
                l2 += d * d;
            }
            (linf as f32, l2.sqrt() as f32)
        })
        .collect()
}

pub fn run_attack(req: &AttackRequest) -> Result<RunOutcome, Error> {
    let started = Instant::now();
    let model = Classifier::load(&req.model)?;
    let shape = model.sample_shape().to_vec();
    let [c, h, w] = shape[..] else {
        return Err(GradError::Graph(format!(
            "{}: advscan attack needs an image model with input [N, C, H, W], this one takes [N, {}]",
            req.model.display(),
            shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    };
    let attacks: Vec<Box<dyn attack::Attack>> =
        req.attacks.iter().map(|a| attack::by_name(a)).collect::<Result<_, _>>()?;
    if let Some(a) = attacks.iter().find(|a| !a.supports(req.norm)) {
        return Err(crate::error::AttackError::unsupported_norm(a.name(), req.norm.as_str()).into());
    }
    if let Some(file) = &req.ids_file {
        let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        if absolute(file).starts_with(absolute(&req.out)) {
            return Err(Error::Output {
                path: file.clone(),
                reason: "--ids-file must lie outside --out: the key re-identifies the samples and must not travel \
                         with the report"
                    .into(),
            });
        }
    }
    let staging = Staging::begin(&req.out)?;
    let (config, config_path, defaults) = ModelConfig::resolve(&req.model, req.model_config.as_deref())?;
    // Not tied to `quiet` (which only hides the progress bar, and is forced
    // when stderr is not a terminal): a run on defaults must always say so.
    if config_path.is_none() {
        eprintln!("no model config beside {} (or --model-config); defaults used:", req.model.display());
        for d in &defaults {
            eprintln!("  {d}");
        }
    }
    // The model's own input shape is the authority; a config that disagrees is a mistake.
    let mismatch = match (config.input.size, config.input.channels) {
        (Some(size), _) if size != [h, w] => Some(format!("input.size is {size:?} but the model takes {h}×{w}")),
        (_, Some(ch)) if ch != c => Some(format!("input.channels is {ch} but the model takes {c} channel(s)")),
        _ => None,
    };
    if let Some(reason) = mismatch {
        return Err(crate::config::ConfigError::Model { path: config_path.clone(), reason }.into());
    }
    let (mean, std) = config.mean_std();
    let class_names = config.classes.names.clone().unwrap_or_default();
    let ds = dataset::scan(&req.data, req.labels.as_deref(), &class_names)?;
    let mut skipped: Vec<SkippedRecord> = ds
        .skipped
        .iter()
        .map(|s| SkippedRecord { path: s.path.display().to_string(), reason: s.reason.clone() })
        .collect();
    // The shard is cut from the listing, before decoding: listing indices.
    let listed: Vec<usize> = (0..ds.samples.len()).filter(|&i| req.shard.is_none_or(|sh| sh.contains(i))).collect();

    // Every listed file is decoded once here, to learn its frames' shapes and
    // intensity maps (for grouping) and its sha256 (for the data manifest),
    // and its pixels are dropped again: they are decoded anew batch by batch
    // when attacked, so memory does not grow with the data set. A file that
    // fails is recorded and the rest go on. A multi-frame file becomes one
    // sample per frame, `id#k` (k from 1).
    let mut sha256: Vec<Option<[u8; 32]>> = vec![None; ds.samples.len()];
    let mut items: Vec<Item> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for window in listed.chunks(DECODE_WINDOW) {
        let decoded: Vec<(Option<[u8; 32]>, Result<Vec<ScanMeta>, String>)> = window
            .par_iter()
            .map(|&i| {
                let s = &ds.samples[i];
                let bytes = match std::fs::read(&s.path) {
                    Ok(bytes) => bytes,
                    Err(source) => return (None, Err(DecodeError::Io { path: s.path.clone(), source }.to_string())),
                };
                let sha256: [u8; 32] = Sha256::digest(&bytes).into();
                let scans = crate::scan::decode_bytes(&bytes, &s.path, req.max_pixels, &config)
                    .map_err(|e| e.to_string())
                    .and_then(|scans| {
                        for scan in &scans {
                            for e in &req.eps {
                                e.unit
                                    .per_unit(&scan.intensity)
                                    .map_err(|why| format!("{}: {why}", s.path.display()))?;
                            }
                        }
                        Ok(scans.iter().map(ScanMeta::of).collect())
                    });
                (Some(sha256), scans)
            })
            .collect();
        for (&i, (digest, d)) in window.iter().zip(decoded) {
            let s = &ds.samples[i];
            // Every file read is in the manifest, also one that then failed to decode.
            sha256[i] = digest;
            let frames = match d {
                Ok(frames) => frames,
                Err(reason) => {
                    skipped.push(SkippedRecord { path: s.path.display().to_string(), reason });
                    continue;
                }
            };
            let multi = frames.len() > 1;
            for (k, meta) in frames.into_iter().enumerate() {
                let spec = PipelineSpec {
                    src: meta.shape,
                    offset: meta.intensity.offset(),
                    invert: meta.intensity.invert,
                    clip: meta.intensity.window_clips(),
                    dst: [c, h, w],
                    filter: config.resize(),
                    mean: mean.clone(),
                    std: std.clone(),
                };
                let g = match groups.iter().position(|g| *g.pipeline.spec() == spec && g.intensity == meta.intensity) {
                    Some(g) => g,
                    None => match Pipeline::new(spec) {
                        Ok(pipeline) => {
                            groups.push(Group { pipeline, intensity: meta.intensity });
                            groups.len() - 1
                        }
                        Err(e) => {
                            let path = format!(
                                "{}{}",
                                s.path.display(),
                                if multi { format!("#{}", k + 1) } else { String::new() }
                            );
                            skipped.push(SkippedRecord { path, reason: e.to_string() });
                            continue;
                        }
                    },
                };
                items.push(Item { listing: i, frame: multi.then_some(k + 1), group: g });
            }
        }
    }
    let manifest_files = sha256.iter().filter(|h| h.is_some()).count();
    let loader =
        Loader { listing: &ds.samples, sha256: &sha256, groups: &groups, max_pixels: req.max_pixels, config: &config };

    let counted = Counted { model: &model, forward: AtomicU64::new(0), gradient: AtomicU64::new(0) };
    let batch = req.batch_size.max(1);
    let objective = |g: usize| Preprocessed { inner: &counted, pipeline: &groups[g].pipeline };
    let chunks = group_chunks(&items, groups.len(), batch);
    let total = (attacks.len() * req.eps.len() * items.len()) as u64;
    let bar = if req.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or(ProgressStyle::default_bar()),
    );
    bar.set_message("attacking");

    let loss = Loss { kind: crate::model::grad::LossKind::CrossEntropy, targeted: req.targeted.is_some() };
    // ε and step sizes are converted to attack units per group (HU depend on
    // the window width); the box is what the group's files can store.
    let budget_for = |name: &str, eps: &EpsSpec, g: usize| {
        let intensity = &groups[g].intensity;
        let eps = eps.attack_units(intensity);
        let (lo, hi) = intensity.bounds();
        Budget {
            norm: req.norm,
            eps,
            steps: match name {
                "square" => req.queries,
                "apgd" | "apgd-dlr" => req.steps.unwrap_or(100),
                _ => req.steps.unwrap_or(10),
            },
            step_size: req.step_size.at(eps),
            restarts: req.restarts,
            random_start: req.random_start,
            loss,
            lo,
            hi,
        }
    };
    // ε in attack units of the first sample, for ordering ε.
    let eps_units = |e: &EpsSpec| match items.first() {
        Some(item) => e.attack_units(&groups[item.group].intensity),
        None => e.value,
    };
    let rng_for = |a: &dyn attack::Attack, eps: &EpsSpec, id: &str| {
        sample_rng(req.seed, &format!("{}|{}|{}|{}", a.name(), req.norm, eps.label, id))
    };
    let differentiable = model.engine().is_ok();
    // The ε = 0 check replays the first attack requested that can run.
    let zero_attack = attacks.iter().position(|a| differentiable || a.name() == "square" || a.name() == "noise");
    // The gallery (and --save-adversarial) show the strongest attack at the
    // largest ε; only the per-sample probability drop of that one run is
    // kept, and the few adversarial images shown are recomputed at the end.
    let showcase = req.gallery.max(req.save_adversarial);
    let gallery_run: Option<(usize, usize)> = if showcase == 0 {
        None
    } else {
        let a = (0..attacks.len()).min_by_key(|&k| (crate::report::attack_rank(attacks[k].name()), k));
        let e = (0..req.eps.len()).rev().max_by(|&x, &y| eps_units(&req.eps[x]).total_cmp(&eps_units(&req.eps[y])));
        a.zip(e)
    };
    let runs_count = attacks.len() * req.eps.len();

    // Everything per sample, one batch at a time: decode, predict clean
    // (twice, for the determinism check, and once more by tract alone, for
    // the engine_matches_tract check), every attack at every ε, the
    // trust checks and the minimal ε. A batch's pixels are dropped when it
    // is done.
    let attack_started = Instant::now();
    let process = |g: usize, chunk: &[usize]| -> Result<ChunkResult, Error> {
        crate::interrupt::check()?;
        let started = Instant::now();
        let objective = objective(g);
        let intensity = groups[g].intensity;
        let chunk_items: Vec<Item> = chunk.iter().map(|&i| items[i]).collect();
        let (x_all, scans) = loader.stack(&chunk_items)?;
        let z = objective.logits(&x_all)?;
        let again = objective.logits(&x_all)?;
        let tract = counted.tract_logits(&groups[g].pipeline.forward(&x_all))?;
        let classes = z.ncols();
        let mut out = ChunkResult {
            done: Vec::new(),
            not_finite: Vec::new(),
            classes,
            run_seconds: vec![0.0; runs_count],
            other_seconds: 0.0,
        };
        let sample = |i: usize| items[i].sample(&ds.samples);
        let not_finite = |i: usize, reason: String| {
            let s = sample(i);
            SkippedRecord { path: format!("{} ({})", s.path.display(), s.id), reason }
        };
        // A sample whose clean logits are not finite cannot be evaluated: report it, do not count it.
        let mut keep = Vec::new();
        for (k, &i) in chunk.iter().enumerate() {
            let row = z.row(k).to_vec();
            if row.iter().all(|v| v.is_finite()) {
                keep.push(k);
            } else {
                out.not_finite.push(not_finite(i, "the model's output is NaN or infinite for this image".into()));
            }
        }
        if keep.is_empty() {
            out.other_seconds = started.elapsed().as_secs_f64();
            return Ok(out);
        }
        let idx: Vec<usize> = keep.iter().map(|&k| chunk[k]).collect();
        let ids: Vec<String> = idx.iter().map(|&i| sample(i).id).collect();
        let x = if keep.len() == chunk.len() { x_all } else { x_all.select(Axis(0), &keep) };
        if let Some(t) = req.targeted
            && t >= classes
        {
            return Err(GradError::Graph(format!(
                "--targeted {t}: the model has {classes} classes (0..{})",
                classes - 1
            ))
            .into());
        }
        let clean: Vec<CleanOutcome> = keep
            .iter()
            .zip(&idx)
            .map(|(&k, &i)| {
                let probs = eval::softmax(&z.row(k).to_vec());
                CleanOutcome { label: ds.samples[items[i].listing].label, pred: eval::argmax(&probs), probs }
            })
            .collect();
        // Untargeted attacks move away from the label, or from the clean prediction when unlabelled.
        let attack_classes: Vec<usize> =
            clean.iter().map(|c| req.targeted.unwrap_or(c.label.unwrap_or(c.pred))).collect();
        let mut records: Vec<Evaluated> = keep
            .iter()
            .zip(&idx)
            .zip(clean)
            .map(|((&k, &i), clean)| Evaluated {
                index: i,
                class: 0,
                clean,
                outcomes: Vec::new(),
                checks: SampleChecks {
                    nondeterministic: z.row(k).iter().zip(again.row(k)).any(|(p, q)| p.to_bits() != q.to_bits()),
                    engine_gap: tract
                        .as_ref()
                        .map(|t| crate::model::onnx::relative_gap(&z.row(k).to_vec(), &t.row(k).to_vec())),
                    ..Default::default()
                },
                drop: 0.0,
                min_eps: None,
                scan: scans[k].clone(),
                not_finite: None,
            })
            .collect();
        for (r, &cls) in records.iter_mut().zip(&attack_classes) {
            r.class = cls;
        }
        out.other_seconds += started.elapsed().as_secs_f64();

        // One attack at one ε on the batch rows `rows`: per sample its
        // probabilities, L∞ and L2 distance (attack units), and the
        // prediction after quantisation; `None` where the model's output
        // on the adversarial image is NaN or infinite.
        let attack_rows = |a: &dyn attack::Attack,
                           eps: &EpsSpec,
                           budget: &Budget,
                           rows: &[usize]|
         -> Result<Vec<Option<AttackedSample>>, Error> {
            crate::interrupt::check()?;
            budget.validate()?;
            let subset;
            let xs = if rows.len() == idx.len() {
                &x
            } else {
                subset = x.select(Axis(0), rows);
                &subset
            };
            let classes: Vec<usize> = rows.iter().map(|&k| attack_classes[k]).collect();
            let mut rngs: Vec<_> = rows.iter().map(|&k| rng_for(a, eps, &ids[k])).collect();
            let adv = a.run(&objective, xs, &classes, &mut rngs, budget)?;
            // Both verdicts in one pass (a row's logits do not depend on
            // its batch): the adversarial images, then their rounding.
            let quantized = quantize(&intensity, &adv, xs, budget.norm, budget.eps);
            let both = ndarray::concatenate(Axis(0), &[adv.view(), quantized.view()])
                .map_err(|e| AttackError::Batch { attack: a.name(), reason: e.to_string() })?;
            let logits = objective.logits(&both)?;
            if logits.nrows() != 2 * rows.len() {
                let reason = format!("{} logit rows for {} images", logits.nrows(), 2 * rows.len());
                return Err(AttackError::Batch { attack: a.name(), reason }.into());
            }
            let (logits, quantized) = logits.view().split_at(Axis(0), rows.len());
            Ok(logits
                .outer_iter()
                .zip(quantized.outer_iter())
                .zip(norms(xs, &adv))
                .map(|((z, zq), (linf, l2))| {
                    let finite = z.iter().chain(zq.iter()).all(|v| v.is_finite());
                    finite.then(|| AttackedSample {
                        probs: eval::softmax(&z.to_vec()),
                        pred_quantized: eval::argmax(&zq.to_vec()),
                        linf,
                        l2,
                    })
                })
                .collect())
        };
        // The whole batch; when the attack itself met a NaN/Inf (a loss
        // or gradient), one sample at a time, to find which. A sample's
        // result does not depend on its batch, so this changes no other.
        let attack_batch =
            |a: &dyn attack::Attack, eps: &EpsSpec, budget: &Budget| -> Result<Vec<Option<AttackedSample>>, Error> {
                let all: Vec<usize> = (0..idx.len()).collect();
                match attack_rows(a, eps, budget, &all) {
                    Err(Error::Attack(AttackError::NotFinite { .. })) => all
                        .iter()
                        .map(|&k| match attack_rows(a, eps, budget, &[k]) {
                            Ok(mut one) => Ok(one.pop().flatten()),
                            Err(Error::Attack(AttackError::NotFinite { .. })) => Ok(None),
                            Err(e) => Err(e),
                        })
                        .collect(),
                    other => other,
                }
            };
        for (ai, a) in attacks.iter().enumerate() {
            for (ei, eps) in req.eps.iter().enumerate() {
                let t = Instant::now();
                let budget = budget_for(a.name(), eps, g);
                for (rec, r) in records.iter_mut().zip(attack_batch(a.as_ref(), eps, &budget)?) {
                    let Some(r) = r else {
                        rec.not_finite.get_or_insert_with(|| {
                            format!(
                                "the model's output is NaN or infinite on its {} adversarial image at ε = {}",
                                a.name(),
                                eps.label
                            )
                        });
                        continue;
                    };
                    let p = &r.probs;
                    let pred = eval::argmax(p);
                    let clean_pred = rec.clean.pred;
                    rec.outcomes.push(Outcome {
                        attack: a.name().into(),
                        norm: req.norm.to_string(),
                        eps: eps.attack_units(&intensity),
                        eps_label: eps.label.clone(),
                        pred,
                        confidence: p[pred],
                        clean_pred_prob: p[clean_pred],
                        flipped: pred != clean_pred,
                        linf: r.linf,
                        l2: r.l2,
                        pred_quantized: Some(r.pred_quantized),
                    });
                    if gallery_run == Some((ai, ei)) {
                        rec.drop = rec.clean.probs[clean_pred] - p[clean_pred];
                    }
                }
                out.run_seconds[ai * req.eps.len() + ei] += t.elapsed().as_secs_f64();
                bar.inc(idx.len() as u64);
            }
        }

        let t = Instant::now();
        // The trust checks' raw data, per sample; eval::aggregate turns it into `checks`.
        // ε = 0 must reproduce the clean predictions exactly. Every step
        // at ε = 0 is the same operation (step, then project back onto
        // the clean image and the storable box), so the replay stops
        // after ZERO_CHECK_STEPS steps of one restart: a projection or
        // quantisation fault shows in the first step, and a full replay
        // would double the run's time.
        if let Some(a) = zero_attack {
            let zero = EpsSpec { value: 0.0, unit: EpsUnit::Model, label: "0".into() };
            let full = budget_for(attacks[a].name(), &zero, g);
            let budget = Budget { steps: full.steps.min(ZERO_CHECK_STEPS), restarts: 1, ..full };
            for (rec, r) in records.iter_mut().zip(attack_batch(attacks[a].as_ref(), &zero, &budget)?) {
                rec.checks.eps_zero_changed = r.map(|r| eval::argmax(&r.probs) != rec.clean.pred);
            }
        }
        if differentiable {
            let grad = objective.loss_and_grad(x.clone(), &attack_classes, loss)?.grad;
            for (rec, s) in records.iter_mut().zip(grad.outer_iter()) {
                rec.checks.gradient_zero = Some(s.iter().all(|&v| v == 0.0));
                rec.checks.gradient_nonfinite = Some(s.iter().any(|v| !v.is_finite()));
            }
        }
        if req.min_eps {
            // A quarter of an 8-bit grey level: finer than any file can store.
            let precision = eval::MIN_EPS_PRECISION;
            let eps_max = req.eps.iter().map(|e| e.attack_units(&intensity)).fold(0.0, f32::max);
            let base = budget_for("pgd", &EpsSpec { value: eps_max, unit: EpsUnit::Model, label: String::new() }, g);
            // Bisection runs sample by sample, whatever the batch size.
            for (k, rec) in records.iter_mut().enumerate() {
                crate::interrupt::check()?;
                if rec.not_finite.is_some() {
                    continue;
                }
                let xi = x.select(Axis(0), &[k]);
                let rng = |_: usize| sample_rng(req.seed, &format!("min-eps|{}|{}", req.norm, ids[k]));
                match attack::minimal_eps::minimal_eps(&objective, &xi, &[rec.class], &rng, &base, eps_max, precision) {
                    Ok(found) => rec.min_eps = Some(found.into_iter().next().flatten()),
                    Err(Error::Attack(AttackError::NotFinite { .. })) => {
                        rec.not_finite =
                            Some("the model's output is NaN or infinite during the minimal-ε search".into())
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        out.other_seconds += t.elapsed().as_secs_f64();
        for r in records {
            if let Some(reason) = r.not_finite {
                out.not_finite.push(not_finite(r.index, reason));
                continue;
            }
            let item = items[r.index];
            out.done.push(Done {
                index: r.index,
                class: r.class,
                drop: r.drop,
                record: SampleRecord {
                    id: sample(r.index).id,
                    index: item.listing,
                    label: r.clean.label,
                    clean_pred: r.clean.pred,
                    clean_confidence: r.clean.probs[r.clean.pred],
                    outcomes: r.outcomes,
                    min_eps: r.min_eps,
                    check_data: r.checks,
                    scan: Some(r.scan),
                },
            });
        }
        Ok(out)
    };
    // Workers take batches in order (`par_bridge` hands them out one by one)
    // and the sink writes their records in that order as they come in.
    let raw_spill = staging.path().join(RAW_SPILL);
    let sink = std::sync::Mutex::new(Sink {
        next: 0,
        pending: Default::default(),
        spill: crate::report::spill::SpillWriter::create(&raw_spill)?,
        offsets: vec![NO_RECORD; items.len()],
        run_seconds: vec![0.0; runs_count],
        worker_seconds: 0.0,
        not_finite: Vec::new(),
        classes: None,
        per_group: vec![0; groups.len()],
        first: Vec::new(),
        fragile: Vec::new(),
        showcase: if gallery_run.is_some() { showcase } else { 0 },
    });
    chunks.iter().enumerate().par_bridge().try_for_each(|(k, (g, chunk))| -> Result<(), Error> {
        let result = process(*g, chunk)?;
        // A worker that panicked holding the lock has already failed the run.
        sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(k, result, &items)
    })?;
    bar.finish_and_clear();
    let attack_wall = attack_started.elapsed().as_secs_f64();
    drop(chunks);
    let Sink { spill, offsets, run_seconds, worker_seconds, not_finite, classes, per_group, first, fragile, .. } =
        sink.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    spill.finish()?;
    // Samples with non-finite model outputs become skipped entries.
    skipped.extend(not_finite);
    let n: usize = per_group.iter().sum();
    let first_evaluated = offsets.iter().position(|&o| o != NO_RECORD).map(|i| items[i]);
    // `runs[].eps`: in attack units of the first evaluated sample.
    let eps_units = |e: &EpsSpec| match first_evaluated {
        Some(item) => e.attack_units(&groups[item.group].intensity),
        None => e.value,
    };
    // A shard may be empty (more shards than inputs, or only broken files in
    // it): it still writes its results, for the merge. A whole run may not.
    if n == 0 && req.shard.is_none() {
        return Err(Error::Output {
            path: req.data.clone(),
            reason: format!("no image could be evaluated ({} skipped)", skipped.len()),
        });
    }
    let classes = classes.unwrap_or(0);

    // The directional-derivative probe, on the first evaluated samples; its
    // result goes into their records when they are read back below.
    let mut directional: std::collections::BTreeMap<usize, Option<[f32; 2]>> = Default::default();
    if differentiable {
        for &(i, class) in &first {
            crate::interrupt::check()?;
            let (x, _) = loader.stack(&[items[i]])?;
            let id = items[i].sample(&ds.samples).id;
            let (gd, fd) = directional_probe(&objective(items[i].group), x, class, &id, req.seed, loss)?;
            // Stored as f32, which survives the JSON round trip exactly (merge
            // recomputes from it); a NaN/Inf probe has nothing to compare.
            let probe = [gd as f32, fd as f32];
            directional.insert(i, probe.iter().all(|v| v.is_finite()).then_some(probe));
        }
    }

    // The attack phase's wall time, shared among the runs in proportion to
    // the worker time each took (their sum is the phase's wall time, checks included).
    let share = |s: f64| if worker_seconds > 0.0 { attack_wall * s / worker_seconds } else { 0.0 };
    let mut runs = Vec::new();
    for (ai, a) in attacks.iter().enumerate() {
        for (ei, eps) in req.eps.iter().enumerate() {
            let budget = match first_evaluated {
                Some(item) => budget_for(a.name(), eps, item.group),
                None => {
                    budget_for(a.name(), &EpsSpec { value: eps.value, unit: EpsUnit::Model, label: String::new() }, 0)
                }
            };
            // The figures are filled in by eval::Aggregate from the per-sample records.
            runs.push(Run {
                attack: a.name().into(),
                norm: req.norm.to_string(),
                eps: eps_units(eps),
                eps_label: eps.label.clone(),
                steps: budget.steps,
                step_size: budget.step_size,
                restarts: budget.restarts,
                random_start: budget.random_start,
                loss: if a.name() == "apgd-dlr" { "dlr".into() } else { "cross-entropy".into() },
                robust_accuracy: None,
                flip_rate: 0.0,
                attack_success_rate: None,
                mean_confidence_drop: 0.0,
                per_class: Vec::new(),
                flip_rate_quantized: None,
                robust_accuracy_quantized: None,
                seconds: share(run_seconds[ai * req.eps.len() + ei]),
            });
        }
    }

    let adversarial_dir = staging.path().join("adversarial");
    let mut gallery = Vec::new();
    // `round_trip` of the samples whose adversarial file was written, for their records.
    let mut round_trips: std::collections::BTreeMap<usize, Option<bool>> = Default::default();
    if let Some((ai, ei)) = gallery_run {
        // Most fragile first (the sink kept the top `showcase`): smallest
        // minimal ε when measured (unflipped last), then the largest drop;
        // ties keep the data set's order. A shard ranks its own samples by
        // the same rule, so the merged top N lies in the union of the shards' top N.
        let (a, eps) = (attacks[ai].as_ref(), &req.eps[ei]);
        if req.save_adversarial > 0 {
            std::fs::create_dir_all(&adversarial_dir)
                .map_err(|e| Error::Output { path: adversarial_dir.clone(), reason: e.to_string() })?;
        }
        let shown: Vec<(Option<GalleryItem>, Option<bool>)> = fragile
            .par_iter()
            .enumerate()
            .map(|(rank, f)| {
                crate::interrupt::check()?;
                let item = items[f.index];
                let sample = item.sample(&ds.samples);
                let g = item.group;
                let objective = objective(g);
                let intensity = groups[g].intensity;
                let scan = loader.scan(item)?;
                let x = scan.data.clone().insert_axis(Axis(0)).into_dyn();
                let mut rngs = vec![rng_for(a, eps, &sample.id)];
                let adv = a.run(&objective, &x, &[f.class], &mut rngs, &budget_for(a.name(), eps, g))?;
                let gallery_item = if rank < req.gallery {
                    let p = eval::softmax(&objective.logits(&adv)?.row(0).to_vec());
                    let pred = eval::argmax(&p);
                    let enc = |e: String| Error::Output { path: req.out.join("results.json"), reason: e };
                    let display = |v: f32| {
                        let u = (v - intensity.offset()).clamp(0.0, 1.0);
                        if intensity.invert { 1.0 - u } else { u }
                    };
                    let (clean_png, adversarial_png, perturbation_png, scale) =
                        gallery_images(x.index_axis(Axis(0), 0), adv.index_axis(Axis(0), 0), display).map_err(enc)?;
                    Some(GalleryItem {
                        id: sample.id.clone(),
                        index: item.listing,
                        attack: a.name().into(),
                        norm: req.norm.to_string(),
                        eps_label: eps.label.clone(),
                        clean_pred: f.clean_pred,
                        clean_confidence: f.clean_confidence,
                        adv_pred: pred,
                        adv_confidence: p[pred],
                        drop: f.key.1,
                        scale,
                        clean_png,
                        adversarial_png,
                        perturbation_png,
                    })
                } else {
                    None
                };
                let round_trip = if rank < req.save_adversarial {
                    let quantized = quantize(&intensity, &adv, &x, req.norm, budget_for(a.name(), eps, g).eps);
                    let want = eval::argmax(&objective.logits(&quantized)?.row(0).to_vec());
                    let description = format!(
                        "advscan {} adversarial example: {} {} eps={} seed={}",
                        env!("CARGO_PKG_VERSION"),
                        a.name(),
                        req.norm,
                        eps.label,
                        req.seed
                    );
                    let written = crate::save::write_adversarial(
                        &adversarial_dir,
                        &sample,
                        &scan,
                        quantized
                            .index_axis(Axis(0), 0)
                            .into_dimensionality()
                            .map_err(|e| Error::Output { path: adversarial_dir.clone(), reason: e.to_string() })?,
                        &description,
                        req.anonymize,
                    )?;
                    Some(read_back_prediction(&written, &config, [c, h, w], req.max_pixels, &counted)? == Some(want))
                } else {
                    None
                };
                Ok((gallery_item, round_trip))
            })
            .collect::<Result<_, Error>>()?;
        for (f, (gallery_item, round_trip)) in fragile.iter().zip(shown) {
            gallery.extend(gallery_item);
            round_trips.insert(f.index, round_trip);
        }
    }

    let preprocessing =
        preprocessing_records(groups.iter().zip(&per_group).map(|(grp, &count)| (count, grp.pipeline.describe())));
    let positive_class = if classes > 0 { config.positive_class(classes)? } else { None };
    let class_names = if classes > 0 { config.class_names(classes) } else { Vec::new() };
    let graph = model.graph();
    let tensor = |t: &crate::model::graph::TensorInfo| TensorRecord {
        name: t.name.clone(),
        elem_type: t.elem_type.clone(),
        shape: t.shape.iter().flatten().map(|d| serde_json::to_value(d).unwrap_or_default()).collect(),
    };
    let samples_spill = staging.path().join(SAMPLES_SPILL);
    let seconds = started.elapsed().as_secs_f64();
    let forward = counted.forward.load(Ordering::Relaxed);
    let gradient = counted.gradient.load(Ordering::Relaxed);
    let mut results = Results {
        schema_version: SCHEMA_VERSION,
        tool: Tool { name: "advscan".into(), version: env!("CARGO_PKG_VERSION").into() },
        model: ModelRecord {
            path: req.model.display().to_string(),
            sha256: model.sha256().into(),
            input: tensor(&graph.input),
            output: tensor(&graph.output),
            logits: graph.logits_name().into(),
            softmax_stripped: model.softmax_stripped(),
            config_path: config_path.as_ref().map(|p| p.display().to_string()),
            config: Some(config.clone()),
            class_names,
            positive_class,
        },
        data: DataRecord {
            path: req.data.display().to_string(),
            labels: req.labels.as_ref().map(|l| l.display().to_string()),
            samples: n,
            labelled: 0,
            skipped,
            notes: ds.notes.clone(),
            preprocessing,
            manifest_sha256: None,
            manifest_files,
        },
        settings: Settings {
            attacks: attacks.iter().map(|a| a.name().to_string()).collect(),
            eps: req.eps.iter().map(|e| e.label.clone()).collect(),
            norm: req.norm.to_string(),
            steps: req.steps,
            step_size: req.step_size_label.clone(),
            restarts: req.restarts,
            random_start: req.random_start,
            targeted: req.targeted,
            min_eps: req.min_eps,
            seed: req.seed,
            threads: req.threads,
            batch_size: batch,
            gallery: req.gallery,
            shard: req.shard,
        },
        clean: Clean { accuracy: None },
        runs,
        samples: crate::report::spill::SpilledSamples { path: samples_spill.clone() },
        min_eps: None,
        checks: Vec::new(),
        timing: Timing {
            seconds,
            forward_evals: forward,
            gradient_evals: gradient,
            images_per_second: if seconds > 0.0 { (runs_count * n) as f64 / seconds } else { 0.0 },
        },
        gallery,
    };

    // The records back in sample order, completed with the checks measured
    // after the attack phase, anonymised if asked, into the spill that
    // results.json is streamed from. Every aggregate comes from them, as in
    // `advscan merge`, and the reports' digest too.
    let mut all = eval::Aggregate::new(&results, classes);
    let mut digest = crate::report::digest::SampleDigest::default();
    let mut sample_ids = Vec::new();
    {
        let mut raw = crate::report::spill::SpillReader::open(&raw_spill)?;
        let mut out = crate::report::spill::SpillWriter::create(&samples_spill)?;
        for (i, &offset) in offsets.iter().enumerate() {
            if offset == NO_RECORD {
                continue;
            }
            let mut rec = raw.read_at(offset)?;
            if let Some(&probe) = directional.get(&i) {
                rec.check_data.directional = probe;
            }
            if let Some(&round_trip) = round_trips.get(&i) {
                rec.check_data.round_trip = round_trip;
            }
            all.add(&rec).map_err(|reason| Error::Output { path: req.out.clone(), reason })?;
            if req.anonymize {
                let pair = crate::report::anonymize::anonymize_sample(&mut rec);
                // The key lists every sample: only kept when it is written.
                if req.ids_file.is_some() {
                    sample_ids.push(pair);
                }
            }
            digest.add(&rec);
            out.write(&rec)?;
        }
        out.finish()?;
    }
    std::fs::remove_file(&raw_spill).map_err(|e| Error::Output { path: raw_spill.clone(), reason: e.to_string() })?;
    all.finish(&mut results);
    if req.anonymize {
        let mut map = crate::report::anonymize::anonymize_rest(&mut results);
        if let Some(file) = &req.ids_file {
            map.extend(sample_ids);
            map.sort();
            map.dedup();
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Output { path: file.clone(), reason: e.to_string() })?;
            }
            crate::report::write_atomic(file, crate::report::anonymize::ids_csv(&map).as_bytes())?;
        }
    }
    // Canonical order (after anonymising, which renames them), whatever order the files were met in.
    sort_skipped(&mut results.data.skipped);
    results.data.manifest_sha256 = Some(write_manifest(
        &req.data,
        &ds.samples,
        &sha256,
        (!req.anonymize).then(|| staging.path().join(MANIFEST_FILE)).as_deref(),
    )?);
    crate::report::write_atomic_with(&staging.path().join("results.json"), |w| results.write_json(w))?;
    std::fs::remove_file(&samples_spill)
        .map_err(|e| Error::Output { path: samples_spill.clone(), reason: e.to_string() })?;
    Ok(RunOutcome { results: results.map_samples(|_| digest), staging })
}

/// The data manifest (see [`manifest_text`]) of the files read (`sha256[i]`
/// of listing entry i), streamed line by line into `file` when given; returns
/// the sha256 of its text.
fn write_manifest(
    data: &std::path::Path,
    listing: &[Sample],
    sha256: &[Option<[u8; 32]>],
    file: Option<&std::path::Path>,
) -> Result<String, Error> {
    let path = |i: usize| manifest_path(data, &listing[i].path);
    // Sorted by (path, hash) and deduplicated as manifest_text does; paths are
    // recomputed in each comparison rather than held for every file.
    let mut files: Vec<(usize, [u8; 32])> = sha256.iter().enumerate().filter_map(|(i, h)| Some((i, (*h)?))).collect();
    files.sort_by(|a, b| (path(a.0), a.1).cmp(&(path(b.0), b.1)));
    files.dedup_by(|a, b| a.1 == b.1 && path(a.0) == path(b.0));
    let mut hasher = Sha256::new();
    let mut lines = |w: &mut dyn std::io::Write| -> std::io::Result<()> {
        for &(i, sha) in &files {
            let line = format!("{}  {}\n", hex::encode(sha), path(i));
            hasher.update(line.as_bytes());
            w.write_all(line.as_bytes())?;
        }
        Ok(())
    };
    match file {
        Some(file) => crate::report::write_atomic_with(file, lines)?,
        None => lines(&mut std::io::sink())
            .map_err(|e| Error::Output { path: data.to_path_buf(), reason: e.to_string() })?,
    }
    Ok(hex::encode(hasher.finalize()))
}

/// One record per distinct preprocessing with its sample count, merged by
/// steps and sorted, so shards merge to what a single run writes.
pub fn preprocessing_records(items: impl IntoIterator<Item = (usize, Vec<String>)>) -> Vec<PreprocessRecord> {
    let mut by_steps: std::collections::BTreeMap<Vec<String>, usize> = Default::default();
    for (samples, steps) in items {
        *by_steps.entry(steps).or_default() += samples;
    }
    by_steps.into_iter().filter(|(_, n)| *n > 0).map(|(steps, samples)| PreprocessRecord { samples, steps }).collect()
}

/// Sorts skipped entries by path, then reason, and drops exact duplicates.
pub fn sort_skipped(skipped: &mut Vec<SkippedRecord>) {
    skipped.sort_by(|a, b| (&a.path, &a.reason).cmp(&(&b.path, &b.reason)));
    skipped.dedup();
}

/// g·d against a central difference of the loss along a random unit
/// direction d, on one sample (h = 1e-3 in attack units).
fn directional_probe(
    model: &dyn Objective,
    x: ArrayD<f32>,
    class: usize,
    id: &str,
    seed: u64,
    loss: Loss,
) -> Result<(f64, f64), Error> {
    use rand_chacha::rand_core::Rng;
    let h = 1e-3f32;
    let mut rng = sample_rng(seed, &format!("directional|{id}"));
    let mut d: ArrayD<f32> =
        ArrayD::from_shape_fn(IxDyn(x.shape()), |_| (rng.next_u32() as f32 / u32::MAX as f32) - 0.5);
    let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    d.mapv_inplace(|v| v / norm);
    let g = model.loss_and_grad(x.clone(), &[class], loss)?;
    let gd: f64 = g.grad.iter().zip(d.iter()).map(|(a, b)| *a as f64 * *b as f64).sum();
    let plus = model.loss_and_grad(&x + &(&d * h), &[class], loss)?.losses[0] as f64;
    let minus = model.loss_and_grad(&x - &(&d * h), &[class], loss)?.losses[0] as f64;
    Ok((gd, (plus - minus) / (2.0 * h as f64)))
}

/// Reads a written adversarial file back through the normal input path
/// (decode → attack units → preprocessing → model) and returns the
/// prediction on its first frame, or `None` when it does not decode.
fn read_back_prediction(
    path: &std::path::Path,
    config: &ModelConfig,
    model_shape: [usize; 3],
    max_pixels: u64,
    model: &dyn Objective,
) -> Result<Option<usize>, Error> {
    let Ok(scans) = crate::scan::decode(path, max_pixels, config) else { return Ok(None) };
    let Some(scan) = scans.into_iter().next() else { return Ok(None) };
    let (mean, std) = config.mean_std();
    let shape = scan.data.shape();
    let pipeline = Pipeline::new(PipelineSpec {
        src: [shape[0], shape[1], shape[2]],
        offset: scan.intensity.offset(),
        invert: scan.intensity.invert,
        clip: scan.intensity.window_clips(),
        dst: model_shape,
        filter: config.resize(),
        mean,
        std,
    })?;
    let x = scan.data.insert_axis(Axis(0)).into_dyn();
    let z = Preprocessed { inner: model, pipeline: &pipeline }.logits(&x)?;
    Ok(Some(eval::argmax(&z.row(0).to_vec())))
}

/// One image `[C, H, W]` in the model's [0, 1] input range as a base64 PNG:
/// RGB for 3 channels, else 8-bit grey of the first channel.
fn png_base64(img: ndarray::ArrayViewD<f32>, to_unit: impl Fn(f32) -> f32) -> Result<String, String> {
    use base64::Engine as _;
    use image::ImageEncoder as _;
    let (c, h, w) = (img.shape()[0], img.shape()[1], img.shape()[2]);
    let px = |v: f32| (to_unit(v).clamp(0.0, 1.0) * 255.0).round() as u8;
    let (bytes, color): (Vec<u8>, _) = if c == 3 {
        let b = (0..h * w).flat_map(|k| (0..3).map(move |ch| (ch, k / w, k % w))).map(|(ch, y, x)| px(img[[ch, y, x]]));
        (b.collect(), image::ExtendedColorType::Rgb8)
    } else {
        ((0..h * w).map(|k| px(img[[0, k / w, k % w]])).collect(), image::ExtendedColorType::L8)
    };
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&bytes, w as u32, h as u32, color)
        .map_err(|e| format!("gallery image: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(png))
}

/// (clean, adversarial, perturbation, scale): the images through the
/// model's window (`display`), so a reader sees what the model sees; the
/// perturbation δ (attack units) is drawn as 0.5 + scale·δ with scale =
/// 0.5 / max|δ|, so ±max|δ| is black/white around mid-grey (scale 1 when
/// nothing changed).
fn gallery_images(
    x: ndarray::ArrayViewD<f32>,
    adv: ndarray::ArrayViewD<f32>,
    display: impl Fn(f32) -> f32 + Copy,
) -> Result<(String, String, String, f32), String> {
    let delta = &adv - &x;
    let max = delta.iter().fold(0f32, |m, d| m.max(d.abs()));
    let scale = if max > 0.0 { 0.5 / max } else { 1.0 };
    Ok((png_base64(x, display)?, png_base64(adv, display)?, png_base64(delta.view(), |d| 0.5 + scale * d)?, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_one_based_and_round_robin() {
        assert_eq!(parse_shard("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(parse_shard(" 1/1 "), Ok(Shard { index: 1, count: 1 }));
        for bad in ["0/3", "4/3", "1/0", "3", "a/2", "-1/2", "1/2/3"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
        let parts: Vec<Vec<usize>> =
            (1..=3).map(|k| (0..8).filter(|&i| Shard { index: k, count: 3 }.contains(i)).collect()).collect();
        assert_eq!(parts, vec![vec![0, 3, 6], vec![1, 4, 7], vec![2, 5]]);
    }
}
