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
use crate::error::{Error, GradError};
use crate::eval::{self, CleanOutcome};
use crate::model::Classifier;
use crate::model::grad::{Loss, engine::LossGrad};
use crate::preprocess::{Pipeline, PipelineSpec, Preprocessed};
use crate::report::json::*;
use crate::scan::{EpsUnit, Intensity, Scan};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array2, ArrayD, Axis, IxDyn};
use rayon::prelude::*;
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
    /// Replace sample names and input paths by short hashes; write `ids.csv`.
    pub anonymize: bool,
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
    pub results: Results,
    pub results_path: PathBuf,
}

/// Counts model evaluations for `timing`, and is the `Objective` attacks see.
struct Counted<'a> {
    model: &'a Classifier,
    forward: AtomicU64,
    gradient: AtomicU64,
}

impl Objective for Counted<'_> {
    fn logits(&self, x: &ArrayD<f32>) -> Result<Array2<f32>, Error> {
        self.forward.fetch_add(x.shape().first().copied().unwrap_or(0) as u64, Ordering::Relaxed);
        // Called from inside a worker: one session, no nested fan-out.
        self.model.session()?.logits(x.clone())
    }
    fn loss_and_grad(&self, x: ArrayD<f32>, classes: &[usize], loss: Loss) -> Result<LossGrad<f32>, Error> {
        self.gradient.fetch_add(classes.len() as u64, Ordering::Relaxed);
        self.model.loss_and_grad(x, classes, loss)
    }
}

fn stack(scans: &[Scan], idx: &[usize]) -> ArrayD<f32> {
    let views: Vec<_> = idx.iter().map(|&i| scans[i].data.view()).collect();
    // Batches are cut within one preprocessing group, whose scans share a shape.
    ndarray::stack(Axis(0), &views).expect("scans of one group share one shape").into_dyn()
}

/// One sample's result under one attack at one ε.
struct AttackedSample {
    index: usize,
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
fn group_chunks(group_of: &[usize], groups: usize, batch: usize) -> Vec<(usize, Vec<usize>)> {
    let mut out = Vec::new();
    for g in 0..groups {
        let members: Vec<usize> = (0..group_of.len()).filter(|&i| group_of[i] == g).collect();
        out.extend(members.chunks(batch).map(|c| (g, c.to_vec())));
    }
    out
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
    crate::report::check_out_dir(&req.out)?;
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
    // The shard is cut from the listing, before decoding: (listing index, sample).
    let listed: Vec<(usize, &Sample)> =
        ds.samples.iter().enumerate().filter(|(i, _)| req.shard.is_none_or(|sh| sh.contains(*i))).collect();

    // Decode: a file that fails is recorded, the rest go on. A multi-frame
    // file becomes one sample per frame, `id#k` (k from 1).
    let decoded: Vec<Result<Vec<Scan>, String>> = listed
        .par_iter()
        .map(|(_, s)| {
            let scans = crate::scan::decode(&s.path, req.max_pixels, &config).map_err(|e| e.to_string())?;
            for scan in &scans {
                for e in &req.eps {
                    e.unit.per_unit(&scan.intensity).map_err(|why| format!("{}: {why}", s.path.display()))?;
                }
            }
            Ok(scans)
        })
        .collect();
    let mut samples: Vec<Sample> = Vec::new();
    let mut listing: Vec<usize> = Vec::new();
    let mut scans: Vec<Scan> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: Vec<usize> = Vec::new();
    for ((i, s), d) in listed.iter().zip(decoded) {
        let frames = match d {
            Ok(frames) => frames,
            Err(reason) => {
                skipped.push(SkippedRecord { path: s.path.display().to_string(), reason });
                continue;
            }
        };
        let multi = frames.len() > 1;
        for (k, scan) in frames.into_iter().enumerate() {
            let id = if multi { format!("{}#{}", s.id, k + 1) } else { s.id.clone() };
            let shape = scan.data.shape();
            let spec = PipelineSpec {
                src: [shape[0], shape[1], shape[2]],
                offset: scan.intensity.offset(),
                invert: scan.intensity.invert,
                dst: [c, h, w],
                filter: config.resize(),
                mean: mean.clone(),
                std: std.clone(),
            };
            let g = match groups.iter().position(|g| *g.pipeline.spec() == spec && g.intensity == scan.intensity) {
                Some(g) => g,
                None => match Pipeline::new(spec) {
                    Ok(pipeline) => {
                        groups.push(Group { pipeline, intensity: scan.intensity });
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
            samples.push(Sample { id, path: s.path.clone(), label: s.label });
            listing.push(*i);
            scans.push(scan);
            group_of.push(g);
        }
    }

    let counted = Counted { model: &model, forward: AtomicU64::new(0), gradient: AtomicU64::new(0) };
    let batch = req.batch_size.max(1);
    let objective = |g: usize| Preprocessed { inner: &counted, pipeline: &groups[g].pipeline };
    // Logits of every sample, batch by batch within each group.
    let all_logits = |scans: &[Scan], group_of: &[usize]| -> Result<Vec<Vec<f32>>, Error> {
        let chunks = group_chunks(group_of, groups.len(), batch);
        let parts: Vec<Vec<(usize, Vec<f32>)>> = chunks
            .par_iter()
            .map(|(g, chunk)| {
                let z = objective(*g).logits(&stack(scans, chunk))?;
                Ok(chunk.iter().zip(z.outer_iter()).map(|(&i, row)| (i, row.to_vec())).collect())
            })
            .collect::<Result<_, Error>>()?;
        let mut out = vec![Vec::new(); scans.len()];
        for (i, z) in parts.into_iter().flatten() {
            out[i] = z;
        }
        Ok(out)
    };
    let clean_logits = all_logits(&scans, &group_of)?;
    // A sample whose clean logits are not finite cannot be evaluated: report it, do not count it.
    let finite: Vec<bool> = clean_logits.iter().map(|r| r.iter().all(|v| v.is_finite())).collect();
    let keep: Vec<usize> = (0..samples.len()).filter(|&i| finite[i]).collect();
    for i in (0..samples.len()).filter(|&i| !finite[i]) {
        skipped.push(SkippedRecord {
            path: format!("{} ({})", samples[i].path.display(), samples[i].id),
            reason: "the model's output is NaN or infinite for this image".into(),
        });
    }
    let samples: Vec<Sample> = keep.iter().map(|&i| samples[i].clone()).collect();
    let listing: Vec<usize> = keep.iter().map(|&i| listing[i]).collect();
    let scans: Vec<Scan> = keep.iter().map(|&i| scans[i].clone()).collect();
    let group_of: Vec<usize> = keep.iter().map(|&i| group_of[i]).collect();
    let clean_logits: Vec<Vec<f32>> = keep.iter().map(|&i| clean_logits[i].clone()).collect();
    // A shard may be empty (more shards than inputs, or only broken files in
    // it): it still writes its results, for the merge. A whole run may not.
    if samples.is_empty() && req.shard.is_none() {
        return Err(Error::Output {
            path: req.data.clone(),
            reason: format!("no image could be evaluated ({} skipped)", skipped.len()),
        });
    }
    let n = samples.len();
    let classes = clean_logits.first().map_or(0, Vec::len);
    if let Some(t) = req.targeted
        && n > 0
        && t >= classes
    {
        return Err(
            GradError::Graph(format!("--targeted {t}: the model has {classes} classes (0..{})", classes - 1)).into()
        );
    }
    let clean: Vec<CleanOutcome> = clean_logits
        .iter()
        .zip(&samples)
        .map(|(z, s)| {
            let probs = eval::softmax(z);
            CleanOutcome { label: s.label, pred: eval::argmax(&probs), probs }
        })
        .collect();
    // Untargeted attacks move away from the label, or from the clean prediction when unlabelled.
    let attack_classes: Vec<usize> = clean.iter().map(|c| req.targeted.unwrap_or(c.label.unwrap_or(c.pred))).collect();
    let chunks = group_chunks(&group_of, groups.len(), batch);

    // Determinism: a second identical forward pass must agree bit for bit.
    let mut check_data = vec![SampleChecks::default(); n];
    let again = all_logits(&scans, &group_of)?;
    for ((d, a), b) in check_data.iter_mut().zip(&clean_logits).zip(&again) {
        d.nondeterministic = a.iter().zip(b).any(|(p, q)| p.to_bits() != q.to_bits());
    }

    let total = (attacks.len() * req.eps.len() * n) as u64;
    let bar = if req.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or(ProgressStyle::default_bar()),
    );

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
    // ε in attack units of the first sample, for ordering ε and for `runs[].eps`.
    let eps_units = |e: &EpsSpec| match group_of.first() {
        Some(&g) => e.attack_units(&groups[g].intensity),
        None => e.value,
    };
    let rng_for = |a: &dyn attack::Attack, eps: &EpsSpec, i: usize| {
        sample_rng(req.seed, &format!("{}|{}|{}|{}", a.name(), req.norm, eps.label, samples[i].id))
    };
    // Runs one attack at one ε over every sample: per sample its probabilities,
    // L∞ and L2 distance (attack units), and the prediction after quantisation.
    let attack_all = |a: &dyn attack::Attack, eps: &EpsSpec| -> Result<Vec<AttackedSample>, Error> {
        let parts: Vec<Vec<AttackedSample>> = chunks
            .par_iter()
            .map(|(g, chunk)| {
                let budget = budget_for(a.name(), eps, *g);
                budget.validate()?;
                let objective = objective(*g);
                let x = stack(&scans, chunk);
                let classes_b: Vec<usize> = chunk.iter().map(|&i| attack_classes[i]).collect();
                let mut rngs: Vec<_> = chunk.iter().map(|&i| rng_for(a, eps, i)).collect();
                let adv = a.run(&objective, &x, &classes_b, &mut rngs, &budget)?;
                let logits = objective.logits(&adv)?;
                let intensity = groups[*g].intensity;
                let quantized = objective.logits(&quantize(&intensity, &adv, &x, budget.norm, budget.eps))?;
                bar.inc(chunk.len() as u64);
                Ok(chunk
                    .iter()
                    .zip(logits.outer_iter())
                    .zip(quantized.outer_iter())
                    .zip(norms(&x, &adv))
                    .map(|(((&i, z), zq), (linf, l2))| AttackedSample {
                        index: i,
                        probs: eval::softmax(&z.to_vec()),
                        pred_quantized: eval::argmax(&zq.to_vec()),
                        linf,
                        l2,
                    })
                    .collect())
            })
            .collect::<Result<_, Error>>()?;
        Ok(parts.into_iter().flatten().collect())
    };

    // The gallery (and --save-adversarial) show the strongest attack at the
    // largest ε; only the per-sample probability drop of that one run is
    // kept here, and the few adversarial images shown are recomputed at the end.
    let showcase = req.gallery.max(req.save_adversarial);
    let gallery_run: Option<(usize, usize)> = if showcase == 0 {
        None
    } else {
        let a = (0..attacks.len()).min_by_key(|&k| (crate::report::attack_rank(attacks[k].name()), k));
        let e = (0..req.eps.len()).rev().max_by(|&x, &y| eps_units(&req.eps[x]).total_cmp(&eps_units(&req.eps[y])));
        a.zip(e)
    };
    let mut drops = vec![0f32; n];
    let mut runs = Vec::new();
    let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); n];
    for (ai, a) in attacks.iter().enumerate() {
        for (ei, eps) in req.eps.iter().enumerate() {
            bar.set_message(format!("{} {}", a.name(), eps.label));
            let t = Instant::now();
            for r in attack_all(a.as_ref(), eps)? {
                let (i, p) = (r.index, &r.probs);
                let pred = eval::argmax(p);
                outcomes[i].push(Outcome {
                    attack: a.name().into(),
                    norm: req.norm.to_string(),
                    eps: eps.attack_units(&groups[group_of[i]].intensity),
                    eps_label: eps.label.clone(),
                    pred,
                    confidence: p[pred],
                    clean_pred_prob: p[clean[i].pred],
                    flipped: pred != clean[i].pred,
                    linf: r.linf,
                    l2: r.l2,
                    pred_quantized: Some(r.pred_quantized),
                });
                if gallery_run == Some((ai, ei)) {
                    drops[i] = clean[i].probs[clean[i].pred] - p[clean[i].pred];
                }
            }
            let budget = match group_of.first() {
                Some(&g) => budget_for(a.name(), eps, g),
                None => {
                    budget_for(a.name(), &EpsSpec { value: eps.value, unit: EpsUnit::Model, label: String::new() }, 0)
                }
            };
            // The figures are filled in by eval::aggregate from the per-sample records.
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
                seconds: t.elapsed().as_secs_f64(),
            });
        }
    }
    bar.finish_and_clear();

    // The trust checks' raw data, per sample; eval::aggregate turns it into `checks`.
    let differentiable = model.engine().is_ok();
    // ε = 0 must reproduce the clean predictions exactly (the first attack requested).
    if let Some(a) = attacks.iter().find(|a| differentiable || a.name() == "square" || a.name() == "noise") {
        let zero = EpsSpec { value: 0.0, unit: EpsUnit::Model, label: "0".into() };
        for r in attack_all(a.as_ref(), &zero)? {
            check_data[r.index].eps_zero_changed = Some(eval::argmax(&r.probs) != clean[r.index].pred);
        }
    }
    if differentiable {
        let grads: Vec<(usize, bool, bool)> = chunks
            .par_iter()
            .map(|(g, chunk)| {
                let x = stack(&scans, chunk);
                let cls: Vec<usize> = chunk.iter().map(|&i| attack_classes[i]).collect();
                let grad = objective(*g).loss_and_grad(x, &cls, loss)?.grad;
                Ok(chunk
                    .iter()
                    .zip(grad.outer_iter())
                    .map(|(&i, s)| (i, s.iter().all(|&v| v == 0.0), s.iter().any(|v| !v.is_finite())))
                    .collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>, Error>>()?
            .into_iter()
            .flatten()
            .collect();
        for (i, zero, nonfinite) in grads {
            check_data[i].gradient_zero = Some(zero);
            check_data[i].gradient_nonfinite = Some(nonfinite);
        }
        for i in 0..n.min(eval::DIRECTIONAL_PROBES) {
            let (gd, fd) =
                directional_probe(&objective(group_of[i]), &scans[i], attack_classes[i], &samples[i], req.seed, loss)?;
            // Stored as f32, which survives the JSON round trip exactly (merge recomputes from it).
            check_data[i].directional = Some([gd as f32, fd as f32]);
        }
    }

    let mut min_eps: Vec<Option<Option<f32>>> = vec![None; n];
    if req.min_eps {
        // A quarter of an 8-bit grey level: finer than any file can store.
        let precision = eval::MIN_EPS_PRECISION;
        // Bisection runs sample by sample, so spread single samples over the
        // workers whatever the batch size.
        let found: Vec<Option<f32>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let g = group_of[i];
                let eps_max = req.eps.iter().map(|e| e.attack_units(&groups[g].intensity)).fold(0.0, f32::max);
                let base =
                    budget_for("pgd", &EpsSpec { value: eps_max, unit: EpsUnit::Model, label: String::new() }, g);
                let x = stack(&scans, &[i]);
                let rng = |_: usize| sample_rng(req.seed, &format!("min-eps|{}|{}", req.norm, samples[i].id));
                let found = attack::minimal_eps::minimal_eps(
                    &objective(g),
                    &x,
                    &[attack_classes[i]],
                    &rng,
                    &base,
                    eps_max,
                    precision,
                )?;
                Ok(found.into_iter().next().flatten())
            })
            .collect::<Result<Vec<_>, Error>>()?;
        min_eps = found.into_iter().map(Some).collect();
    }

    // A report folder is replaced as a whole: no adversarial file of an earlier run may stay.
    let adversarial_dir = req.out.join("adversarial");
    if adversarial_dir.is_dir() {
        std::fs::remove_dir_all(&adversarial_dir)
            .map_err(|e| Error::Output { path: adversarial_dir.clone(), reason: e.to_string() })?;
    }
    let mut gallery = Vec::new();
    if let Some((ai, ei)) = gallery_run {
        // Most fragile first: smallest minimal ε when measured (unflipped last),
        // then the largest drop; ties keep the data set's order. A shard ranks
        // its own samples by the same rule, so the merged top N lies in the
        // union of the shards' top N.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| {
            let key = |k: usize| (min_eps[k].flatten(), drops[k], listing[k]);
            eval::fragility_cmp(key(i), key(j))
        });
        order.truncate(showcase);
        let (a, eps) = (attacks[ai].as_ref(), &req.eps[ei]);
        if req.save_adversarial > 0 {
            std::fs::create_dir_all(&adversarial_dir)
                .map_err(|e| Error::Output { path: adversarial_dir.clone(), reason: e.to_string() })?;
        }
        let shown: Vec<(Option<GalleryItem>, Option<bool>)> = order
            .par_iter()
            .enumerate()
            .map(|(rank, &i)| {
                let g = group_of[i];
                let objective = objective(g);
                let intensity = groups[g].intensity;
                let x = stack(&scans, &[i]);
                let mut rngs = vec![rng_for(a, eps, i)];
                let adv = a.run(&objective, &x, &[attack_classes[i]], &mut rngs, &budget_for(a.name(), eps, g))?;
                let item = if rank < req.gallery {
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
                        id: samples[i].id.clone(),
                        index: listing[i],
                        attack: a.name().into(),
                        norm: req.norm.to_string(),
                        eps_label: eps.label.clone(),
                        clean_pred: clean[i].pred,
                        clean_confidence: clean[i].probs[clean[i].pred],
                        adv_pred: pred,
                        adv_confidence: p[pred],
                        drop: drops[i],
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
                        &samples[i],
                        &scans[i],
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
                Ok((item, round_trip))
            })
            .collect::<Result<_, Error>>()?;
        for (&i, (item, round_trip)) in order.iter().zip(shown) {
            gallery.extend(item);
            check_data[i].round_trip = round_trip;
        }
    }

    let sample_records = samples
        .iter()
        .zip(&listing)
        .zip(&clean)
        .zip(outcomes)
        .zip(min_eps)
        .zip(check_data)
        .zip(&scans)
        .map(|((((((s, &index), c), o), m), d), scan)| SampleRecord {
            id: s.id.clone(),
            index,
            label: s.label,
            clean_pred: c.pred,
            clean_confidence: c.probs[c.pred],
            outcomes: o,
            min_eps: m,
            check_data: d,
            scan: Some(scan.record.clone()),
        })
        .collect();
    let preprocessing = preprocessing_records(
        groups
            .iter()
            .enumerate()
            .map(|(g, grp)| (group_of.iter().filter(|&&k| k == g).count(), grp.pipeline.describe())),
    );
    let positive_class = if classes > 0 { config.positive_class(classes)? } else { None };
    let class_names = if classes > 0 { config.class_names(classes) } else { Vec::new() };
    let graph = model.graph();
    let tensor = |t: &crate::model::graph::TensorInfo| TensorRecord {
        name: t.name.clone(),
        elem_type: t.elem_type.clone(),
        shape: t.shape.iter().flatten().map(|d| serde_json::to_value(d).unwrap_or_default()).collect(),
    };
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
        samples: sample_records,
        min_eps: None,
        checks: Vec::new(),
        timing: Timing {
            seconds,
            forward_evals: forward,
            gradient_evals: gradient,
            images_per_second: if seconds > 0.0 { (total as f64) / seconds } else { 0.0 },
        },
        gallery,
    };
    // Every aggregate comes from the per-sample records, as in `advscan merge`.
    eval::aggregate(&mut results, classes).map_err(|reason| Error::Output { path: req.out.clone(), reason })?;
    std::fs::create_dir_all(&req.out).map_err(|e| Error::Output { path: req.out.clone(), reason: e.to_string() })?;
    if req.anonymize {
        let map = crate::report::anonymize::anonymize(&mut results);
        crate::report::write_atomic(&req.out.join("ids.csv"), crate::report::anonymize::ids_csv(&map).as_bytes())?;
    }
    // Canonical order (after anonymising, which renames them), whatever order the files were met in.
    sort_skipped(&mut results.data.skipped);
    let results_path = req.out.join("results.json");
    crate::report::write_atomic(&results_path, results.to_json().as_bytes())?;
    Ok(RunOutcome { results, results_path })
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
    scan: &Scan,
    class: usize,
    sample: &Sample,
    seed: u64,
    loss: Loss,
) -> Result<(f64, f64), Error> {
    use rand_chacha::rand_core::Rng;
    let h = 1e-3f32;
    let x = scan.data.clone().insert_axis(Axis(0)).into_dyn();
    let mut rng = sample_rng(seed, &format!("directional|{}", sample.id));
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
