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
use crate::dataset::{self, Sample};
use crate::error::{Error, GradError};
use crate::eval::{self, CleanOutcome};
use crate::io;
use crate::model::Classifier;
use crate::model::grad::{Loss, engine::LossGrad};
use crate::report::json::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array2, ArrayD, Axis, IxDyn};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// ε as the user wrote it and its value in the model-input scale.
#[derive(Debug, Clone, PartialEq)]
pub struct EpsSpec {
    pub value: f32,
    pub label: String,
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

/// Parses `2/255`, `0.01` or `8e-3`.
pub fn parse_eps(s: &str) -> Result<EpsSpec, String> {
    let value = parse_number(s)?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("ε must be a number ≥ 0, got '{s}'"));
    }
    Ok(EpsSpec { value, label: s.trim().to_string() })
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

fn stack(images: &[ndarray::Array3<f32>], idx: &[usize]) -> ArrayD<f32> {
    let views: Vec<_> = idx.iter().map(|&i| images[i].view()).collect();
    // Every image was checked against the model's sample shape when decoded.
    ndarray::stack(Axis(0), &views).expect("decoded images share one shape").into_dyn()
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
    let ds = dataset::scan(&req.data, req.labels.as_deref(), &[])?;
    let mut skipped: Vec<SkippedRecord> = ds
        .skipped
        .iter()
        .map(|s| SkippedRecord { path: s.path.display().to_string(), reason: s.reason.clone() })
        .collect();
    // The shard is cut from the listing, before decoding: (listing index, sample).
    let listed: Vec<(usize, &Sample)> =
        ds.samples.iter().enumerate().filter(|(i, _)| req.shard.is_none_or(|sh| sh.contains(*i))).collect();

    // Decode: a file that fails is recorded, the rest go on.
    let decoded: Vec<Result<ndarray::Array3<f32>, String>> = listed
        .par_iter()
        .map(|(_, s)| {
            io::decode(&s.path, req.max_pixels)
                .and_then(|img| io::png::to_model_input(&img, c, h, w))
                .map(|m| m.data)
                .map_err(|e| e.to_string())
        })
        .collect();
    let mut samples: Vec<Sample> = Vec::new();
    let mut listing: Vec<usize> = Vec::new();
    let mut images = Vec::new();
    for ((i, s), d) in listed.iter().zip(decoded) {
        match d {
            Ok(img) => {
                samples.push((*s).clone());
                listing.push(*i);
                images.push(img);
            }
            Err(reason) => skipped.push(SkippedRecord { path: s.path.display().to_string(), reason }),
        }
    }

    let counted = Counted { model: &model, forward: AtomicU64::new(0), gradient: AtomicU64::new(0) };
    let batch = req.batch_size.max(1);
    let all: Vec<usize> = (0..samples.len()).collect();
    let x_all = if samples.is_empty() { None } else { Some(stack(&images, &all)) };
    let clean_logits = match &x_all {
        Some(x) => model.logits(x, batch)?,
        None => Array2::zeros((0, 0)),
    };
    counted.forward.fetch_add(samples.len() as u64, Ordering::Relaxed);
    // A sample whose clean logits are not finite cannot be evaluated: report it, do not count it.
    let finite: Vec<bool> = clean_logits.outer_iter().map(|r| r.iter().all(|v| v.is_finite())).collect();
    let keep: Vec<usize> = (0..samples.len()).filter(|&i| finite[i]).collect();
    for i in (0..samples.len()).filter(|&i| !finite[i]) {
        skipped.push(SkippedRecord {
            path: samples[i].path.display().to_string(),
            reason: "the model's output is NaN or infinite for this image".into(),
        });
    }
    let samples: Vec<Sample> = keep.iter().map(|&i| samples[i].clone()).collect();
    let listing: Vec<usize> = keep.iter().map(|&i| listing[i]).collect();
    let images: Vec<ndarray::Array3<f32>> = keep.iter().map(|&i| images[i].clone()).collect();
    let clean_logits = clean_logits.select(Axis(0), &keep);
    // A shard may be empty (more shards than inputs, or only broken files in
    // it): it still writes its results, for the merge. A whole run may not.
    if samples.is_empty() && req.shard.is_none() {
        return Err(Error::Output {
            path: req.data.clone(),
            reason: format!("no image could be evaluated ({} skipped)", skipped.len()),
        });
    }
    let n = samples.len();
    let classes = clean_logits.ncols();
    if let Some(t) = req.targeted
        && n > 0
        && t >= classes
    {
        return Err(
            GradError::Graph(format!("--targeted {t}: the model has {classes} classes (0..{})", classes - 1)).into()
        );
    }
    let clean: Vec<CleanOutcome> = clean_logits
        .outer_iter()
        .zip(&samples)
        .map(|(z, s)| {
            let probs = eval::softmax(z.as_slice().unwrap_or(&z.to_vec()));
            CleanOutcome { label: s.label, pred: eval::argmax(&probs), probs }
        })
        .collect();
    // Untargeted attacks move away from the label, or from the clean prediction when unlabelled.
    let attack_classes: Vec<usize> = clean.iter().map(|c| req.targeted.unwrap_or(c.label.unwrap_or(c.pred))).collect();
    let all: Vec<usize> = (0..n).collect();

    // Determinism: a second identical forward pass must agree bit for bit.
    let mut check_data = vec![SampleChecks::default(); n];
    if n > 0 {
        let again = model.logits(&stack(&images, &all), batch)?;
        counted.forward.fetch_add(n as u64, Ordering::Relaxed);
        for ((d, a), b) in check_data.iter_mut().zip(clean_logits.outer_iter()).zip(again.outer_iter()) {
            d.nondeterministic = a.iter().zip(b.iter()).any(|(p, q)| p.to_bits() != q.to_bits());
        }
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

    let chunks: Vec<Vec<usize>> = all.chunks(batch).map(|c| c.to_vec()).collect();
    let loss = Loss { kind: crate::model::grad::LossKind::CrossEntropy, targeted: req.targeted.is_some() };
    let budget_for = |name: &str, eps: f32| Budget {
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
        lo: 0.0,
        hi: 1.0,
    };
    // Runs one attack at one ε over every sample: (probabilities, linf, l2) per sample.
    let attack_all = |a: &dyn attack::Attack,
                      eps: &EpsSpec,
                      idx: &[Vec<usize>]|
     -> Result<Vec<(usize, Vec<f32>, f32, f32)>, Error> {
        let budget = budget_for(a.name(), eps.value);
        budget.validate()?;
        let parts: Vec<Vec<(usize, Vec<f32>, f32, f32)>> = idx
            .par_iter()
            .map(|chunk| {
                let x = stack(&images, chunk);
                let classes_b: Vec<usize> = chunk.iter().map(|&i| attack_classes[i]).collect();
                let mut rngs: Vec<_> = chunk
                    .iter()
                    .map(|&i| {
                        sample_rng(req.seed, &format!("{}|{}|{}|{}", a.name(), req.norm, eps.label, samples[i].id))
                    })
                    .collect();
                let adv = a.run(&counted, &x, &classes_b, &mut rngs, &budget)?;
                let logits = counted.logits(&adv)?;
                bar.inc(chunk.len() as u64);
                Ok(chunk
                    .iter()
                    .zip(logits.outer_iter())
                    .zip(norms(&x, &adv))
                    .map(|((&i, z), (linf, l2))| (i, eval::softmax(&z.to_vec()), linf, l2))
                    .collect())
            })
            .collect::<Result<_, Error>>()?;
        Ok(parts.into_iter().flatten().collect())
    };

    // The gallery shows the strongest attack at the largest ε; only the
    // per-sample probability drop of that one run is kept here, and the few
    // adversarial images shown are recomputed at the end.
    let gallery_run: Option<(usize, usize)> = if req.gallery == 0 {
        None
    } else {
        let a = (0..attacks.len()).min_by_key(|&k| (crate::report::attack_rank(attacks[k].name()), k));
        let e = (0..req.eps.len()).rev().max_by(|&x, &y| req.eps[x].value.total_cmp(&req.eps[y].value));
        a.zip(e)
    };
    let mut drops = vec![0f32; n];
    let mut runs = Vec::new();
    let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); n];
    for (ai, a) in attacks.iter().enumerate() {
        for (ei, eps) in req.eps.iter().enumerate() {
            bar.set_message(format!("{} {}", a.name(), eps.label));
            let t = Instant::now();
            let per_sample = attack_all(a.as_ref(), eps, &chunks)?;
            for (i, p, linf, l2) in per_sample {
                let pred = eval::argmax(&p);
                outcomes[i].push(Outcome {
                    attack: a.name().into(),
                    norm: req.norm.to_string(),
                    eps: eps.value,
                    eps_label: eps.label.clone(),
                    pred,
                    confidence: p[pred],
                    clean_pred_prob: p[clean[i].pred],
                    flipped: pred != clean[i].pred,
                    linf,
                    l2,
                });
                if gallery_run == Some((ai, ei)) {
                    drops[i] = clean[i].probs[clean[i].pred] - p[clean[i].pred];
                }
            }
            let budget = budget_for(a.name(), eps.value);
            // The figures are filled in by eval::aggregate from the per-sample records.
            runs.push(Run {
                attack: a.name().into(),
                norm: req.norm.to_string(),
                eps: eps.value,
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
                seconds: t.elapsed().as_secs_f64(),
            });
        }
    }
    bar.finish_and_clear();

    // The trust checks' raw data, per sample; eval::aggregate turns it into `checks`.
    let differentiable = model.engine().is_ok();
    // ε = 0 must reproduce the clean predictions exactly (the first attack requested).
    if let Some(a) = attacks.iter().find(|a| differentiable || a.name() == "square" || a.name() == "noise") {
        let zero = EpsSpec { value: 0.0, label: "0".into() };
        for (i, p, _, _) in attack_all(a.as_ref(), &zero, &chunks)? {
            check_data[i].eps_zero_changed = Some(eval::argmax(&p) != clean[i].pred);
        }
    }
    if differentiable {
        let grads: Vec<(bool, bool)> = chunks
            .par_iter()
            .map(|chunk| {
                let x = stack(&images, chunk);
                let cls: Vec<usize> = chunk.iter().map(|&i| attack_classes[i]).collect();
                let g = counted.loss_and_grad(x, &cls, loss)?.grad;
                Ok(g.outer_iter()
                    .map(|s| (s.iter().all(|&v| v == 0.0), s.iter().any(|v| !v.is_finite())))
                    .collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>, Error>>()?
            .into_iter()
            .flatten()
            .collect();
        for (d, (zero, nonfinite)) in check_data.iter_mut().zip(grads) {
            d.gradient_zero = Some(zero);
            d.gradient_nonfinite = Some(nonfinite);
        }
        let probes = directional_probes(&counted, &images, &attack_classes, &samples, req.seed, loss)?;
        for (d, (gd, fd)) in check_data.iter_mut().zip(probes) {
            // Stored as f32, which survives the JSON round trip exactly (merge recomputes from it).
            d.directional = Some([gd as f32, fd as f32]);
        }
    }

    let mut min_eps: Vec<Option<Option<f32>>> = vec![None; n];
    if req.min_eps {
        let eps_max = req.eps.iter().map(|e| e.value).fold(0.0, f32::max);
        // A quarter of an 8-bit grey level: finer than any file can store.
        let precision = eval::MIN_EPS_PRECISION;
        let base = budget_for("pgd", eps_max);
        // Bisection runs sample by sample, so spread single samples over the
        // workers whatever the batch size.
        let singles: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        let found: Vec<Option<f32>> = singles
            .par_iter()
            .map(|chunk| {
                let x = stack(&images, chunk);
                let cls: Vec<usize> = chunk.iter().map(|&i| attack_classes[i]).collect();
                let rng = |k: usize| sample_rng(req.seed, &format!("min-eps|{}|{}", req.norm, samples[chunk[k]].id));
                attack::minimal_eps::minimal_eps(&counted, &x, &cls, &rng, &base, eps_max, precision)
            })
            .collect::<Result<Vec<_>, Error>>()?
            .into_iter()
            .flatten()
            .collect();
        min_eps = found.into_iter().map(Some).collect();
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
        order.truncate(req.gallery);
        let (a, eps) = (attacks[ai].as_ref(), &req.eps[ei]);
        let budget = budget_for(a.name(), eps.value);
        gallery = order
            .par_iter()
            .map(|&i| {
                let x = stack(&images, &[i]);
                let mut rngs =
                    vec![sample_rng(req.seed, &format!("{}|{}|{}|{}", a.name(), req.norm, eps.label, samples[i].id))];
                let adv = a.run(&counted, &x, &[attack_classes[i]], &mut rngs, &budget)?;
                let p = eval::softmax(&counted.logits(&adv)?.row(0).to_vec());
                let pred = eval::argmax(&p);
                let enc = |e: String| Error::Output { path: req.out.join("results.json"), reason: e };
                let (clean_png, adversarial_png, perturbation_png, scale) =
                    gallery_images(x.index_axis(Axis(0), 0), adv.index_axis(Axis(0), 0)).map_err(enc)?;
                Ok(GalleryItem {
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
            })
            .collect::<Result<_, Error>>()?;
    }

    let sample_records = samples
        .iter()
        .zip(&listing)
        .zip(&clean)
        .zip(outcomes)
        .zip(min_eps)
        .zip(check_data)
        .map(|(((((s, &index), c), o), m), d)| SampleRecord {
            id: s.id.clone(),
            index,
            label: s.label,
            clean_pred: c.pred,
            clean_confidence: c.probs[c.pred],
            outcomes: o,
            min_eps: m,
            check_data: d,
        })
        .collect();
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
        },
        data: DataRecord {
            path: req.data.display().to_string(),
            labels: req.labels.as_ref().map(|l| l.display().to_string()),
            samples: n,
            labelled: 0,
            skipped,
            notes: ds.notes.clone(),
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

/// Sorts skipped entries by path, then reason, and drops exact duplicates.
pub fn sort_skipped(skipped: &mut Vec<SkippedRecord>) {
    skipped.sort_by(|a, b| (&a.path, &a.reason).cmp(&(&b.path, &b.reason)));
    skipped.dedup();
}

/// g·d against a central difference of the loss along a random unit
/// direction d, on up to 4 samples (h = 1e-3 in input units).
fn directional_probes(
    model: &Counted<'_>,
    images: &[ndarray::Array3<f32>],
    classes: &[usize],
    samples: &[Sample],
    seed: u64,
    loss: Loss,
) -> Result<Vec<(f64, f64)>, Error> {
    use rand_chacha::rand_core::Rng;
    let h = 1e-3f32;
    let mut out = Vec::new();
    for i in 0..images.len().min(eval::DIRECTIONAL_PROBES) {
        let x = images[i].clone().insert_axis(Axis(0)).into_dyn();
        let mut rng = sample_rng(seed, &format!("directional|{}", samples[i].id));
        let mut d: ArrayD<f32> =
            ArrayD::from_shape_fn(IxDyn(x.shape()), |_| (rng.next_u32() as f32 / u32::MAX as f32) - 0.5);
        let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        d.mapv_inplace(|v| v / norm);
        let g = model.loss_and_grad(x.clone(), &classes[i..i + 1], loss)?;
        let gd: f64 = g.grad.iter().zip(d.iter()).map(|(a, b)| *a as f64 * *b as f64).sum();
        let plus = model.loss_and_grad(&x + &(&d * h), &classes[i..i + 1], loss)?.losses[0] as f64;
        let minus = model.loss_and_grad(&x - &(&d * h), &classes[i..i + 1], loss)?.losses[0] as f64;
        out.push((gd, (plus - minus) / (2.0 * h as f64)));
    }
    Ok(out)
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

/// (clean, adversarial, perturbation, scale): the perturbation δ is drawn as
/// 0.5 + scale·δ with scale = 0.5 / max|δ|, so ±max|δ| is black/white around
/// mid-grey (scale 1 when nothing changed).
fn gallery_images(
    x: ndarray::ArrayViewD<f32>,
    adv: ndarray::ArrayViewD<f32>,
) -> Result<(String, String, String, f32), String> {
    let delta = &adv - &x;
    let max = delta.iter().fold(0f32, |m, d| m.max(d.abs()));
    let scale = if max > 0.0 { 0.5 / max } else { 1.0 };
    Ok((png_base64(x, |v| v)?, png_base64(adv, |v| v)?, png_base64(delta.view(), |d| 0.5 + scale * d)?, scale))
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
