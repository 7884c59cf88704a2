//! Per-sample outcomes → the numbers a reviewer reads: clean accuracy,
//! robust accuracy, flip rate, attack success, confidence drop, per class;
//! and the trust checks (Carlini et al. 2019, "On Evaluating Adversarial
//! Robustness", and AutoAttack's flags) that say whether those numbers can
//! be believed. Pure functions over plain data; nothing here runs a model.
//!
//! [`aggregate`] is the one place where `results.json`'s aggregates are
//! computed from its per-sample records: `advscan attack` and `advscan merge`
//! both call it, which is what makes merged shards equal a single run.

use crate::report::json::{Check, ClassRecord, MinEpsSummary, Results, SampleRecord, Status};
use std::cmp::Ordering;

/// The minimal-ε search stops when the bracket is narrower than this: a
/// quarter of an 8-bit grey level, finer than any file can store.
pub const MIN_EPS_PRECISION: f32 = 0.25 / 255.0;

/// Directional-derivative probes per run: the first this many evaluated samples.
pub const DIRECTIONAL_PROBES: usize = 4;

/// A sample's clean prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanOutcome {
    pub label: Option<usize>,
    pub pred: usize,
    /// Softmax probabilities of the clean logits.
    pub probs: Vec<f32>,
}

/// The aggregate figures of one (attack, norm, ε) run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    pub robust_accuracy: Option<f64>,
    pub flip_rate: f64,
    pub attack_success_rate: Option<f64>,
    pub mean_confidence_drop: f64,
    pub per_class: Vec<ClassRecord>,
}

pub fn argmax(v: &[f32]) -> usize {
    // Ties go to the lowest index, as torch.argmax.
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|&z| (z - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

pub fn clean_accuracy(clean: &[CleanOutcome]) -> Option<f64> {
    let labelled = clean.iter().filter(|c| c.label.is_some()).count();
    ratio(clean.iter().filter(|c| c.label == Some(c.pred)).count(), labelled)
}

/// One sample under one run, as much as the aggregate figures need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRun {
    pub label: Option<usize>,
    pub clean_pred: usize,
    /// Probability of `clean_pred` on the clean image.
    pub clean_confidence: f32,
    /// Prediction under attack.
    pub adv_pred: usize,
    /// Probability of `clean_pred` under attack.
    pub adv_clean_prob: f32,
}

/// Aggregates one run. `adv_probs[i]` are sample i's probabilities under
/// attack; `target` is the target class of a targeted run.
pub fn summarize(clean: &[CleanOutcome], adv_probs: &[Vec<f32>], target: Option<usize>, classes: usize) -> RunStats {
    let items: Vec<SampleRun> = clean
        .iter()
        .zip(adv_probs)
        .map(|(c, p)| SampleRun {
            label: c.label,
            clean_pred: c.pred,
            clean_confidence: c.probs[c.pred],
            adv_pred: argmax(p),
            adv_clean_prob: p.get(c.pred).copied().unwrap_or(0.0),
        })
        .collect();
    summarize_samples(&items, target, classes)
}

/// Aggregates one run from its per-sample records, in sample order (the
/// confidence drops are summed in that order, in f64).
pub fn summarize_samples(items: &[SampleRun], target: Option<usize>, classes: usize) -> RunStats {
    let mut tally = RunTally::new(target, classes);
    for s in items {
        tally.add(s);
    }
    tally.finish()
}

/// One run's counts, added sample by sample: [`summarize_samples`] without
/// holding the samples. Samples must come in sample order: the confidence
/// drops are summed in that order, in f64, which is what makes a streamed
/// run's mean the same bits as the in-memory one.
#[derive(Debug, Clone)]
pub struct RunTally {
    target: Option<usize>,
    n: usize,
    labelled: usize,
    robust: usize,
    flips: usize,
    correct: usize,
    success: usize,
    drop: f64,
    /// Indexed by class: samples grouped by label, or by clean prediction when unlabelled.
    per_class: Vec<ClassTally>,
}

#[derive(Debug, Clone, Default)]
struct ClassTally {
    n: usize,
    labelled: usize,
    robust: usize,
    flips: usize,
    predicted_as: Vec<usize>,
}

impl RunTally {
    pub fn new(target: Option<usize>, classes: usize) -> RunTally {
        RunTally {
            target,
            n: 0,
            labelled: 0,
            robust: 0,
            flips: 0,
            correct: 0,
            success: 0,
            drop: 0.0,
            per_class: (0..classes)
                .map(|_| ClassTally { predicted_as: vec![0; classes], ..Default::default() })
                .collect(),
        }
    }

    pub fn add(&mut self, s: &SampleRun) {
        let correct = s.label == Some(s.clean_pred);
        // Clean mistakes are not robust: robust = correct before and after.
        let robust = correct && s.label == Some(s.adv_pred);
        let flipped = s.clean_pred != s.adv_pred;
        self.n += 1;
        self.labelled += usize::from(s.label.is_some());
        self.robust += usize::from(robust);
        self.flips += usize::from(flipped);
        if correct {
            self.correct += 1;
            let success = match self.target {
                Some(t) => s.adv_pred == t,
                None => Some(s.adv_pred) != s.label,
            };
            self.success += usize::from(success);
        }
        self.drop += (s.clean_confidence - s.adv_clean_prob) as f64;
        // A class outside the model's range (a label beyond it) is in no class row.
        if let Some(c) = self.per_class.get_mut(s.label.unwrap_or(s.clean_pred)) {
            c.n += 1;
            c.labelled += usize::from(s.label.is_some());
            c.robust += usize::from(robust);
            c.flips += usize::from(flipped);
            if let Some(slot) = c.predicted_as.get_mut(s.adv_pred) {
                *slot += 1;
            }
        }
    }

    pub fn finish(self) -> RunStats {
        let n = self.n;
        RunStats {
            robust_accuracy: ratio(self.robust, self.labelled),
            flip_rate: ratio(self.flips, n).unwrap_or(0.0),
            attack_success_rate: ratio(self.success, self.correct),
            mean_confidence_drop: if n > 0 { self.drop / n as f64 } else { 0.0 },
            per_class: self
                .per_class
                .into_iter()
                .enumerate()
                .filter(|(_, c)| c.n > 0)
                .map(|(class, c)| ClassRecord {
                    class,
                    n: c.n,
                    robust_accuracy: ratio(c.robust, c.labelled),
                    flip_rate: ratio(c.flips, c.n).unwrap_or(0.0),
                    predicted_as: c.predicted_as,
                })
                .collect(),
        }
    }
}

/// Nearest-rank quartiles (q1, median, q3) of per-sample minimal ε, where
/// `None` (not flipped within the largest ε) ranks above every value: a
/// quartile that lands on such a sample is itself `None` ("more than ε_max").
pub fn quartiles(values: &[Option<f32>]) -> (Option<f32>, Option<f32>, Option<f32>) {
    let mut v: Vec<f32> = values.iter().map(|x| x.unwrap_or(f32::INFINITY)).collect();
    v.sort_by(f32::total_cmp);
    let q = |p: f64| -> Option<f32> {
        if v.is_empty() {
            return None;
        }
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1]).filter(|x| x.is_finite())
    };
    (q(0.25), q(0.5), q(0.75))
}

/// One run's figures as the checks need them.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPoint {
    pub attack: String,
    pub eps: f32,
    pub robust_accuracy: Option<f64>,
    pub flip_rate: f64,
}

/// Everything the trust checks look at, measured by the run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckInputs {
    pub runs: Vec<RunPoint>,
    /// Samples whose prediction changed under an ε = 0 attack (must be 0), and how many were tried.
    pub eps_zero: Option<(usize, usize)>,
    /// Clean-input gradients: (all-zero, containing NaN/Inf, total).
    pub gradients: Option<(usize, usize, usize)>,
    /// Samples whose logits differed between two identical forward passes, of how many.
    pub nondeterministic: (usize, usize),
    /// How far the verdict logits were from tract's on the clean images
    /// (`SampleChecks::engine_gap`); none measured when every verdict is tract's.
    pub engine_gaps: EngineGaps,
    /// Directional-derivative checks: (g·d, central difference) per probe.
    pub directional: Vec<(f64, f64)>,
    /// Saved adversarial files whose read-back prediction differed from the recorded one, of how many.
    pub round_trip: Option<(usize, usize)>,
}

/// The engine-vs-tract gaps of a run, gathered sample by sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EngineGaps {
    /// Samples measured.
    pub n: usize,
    /// The largest gap (NaN when the last one was NaN, as the fold over all samples always gave).
    pub worst: f32,
    /// Gaps above [`EngineGaps::LIMIT`], or NaN.
    pub over: usize,
}

impl EngineGaps {
    /// Verdicts are the engine's wherever the top two logits are more than
    /// NEAR_TIE apart; a margin moves by at most twice the gap, so a gap of
    /// NEAR_TIE / 8 leaves a 4× reserve for the adversarial images.
    pub const LIMIT: f32 = crate::model::onnx::NEAR_TIE / 8.0;

    pub fn add(&mut self, gap: f32) {
        self.n += 1;
        self.worst = if gap.is_nan() { f32::NAN } else { self.worst.max(gap) };
        self.over += usize::from(gap.is_nan() || gap > Self::LIMIT);
    }

    pub fn of(gaps: &[f32]) -> EngineGaps {
        let mut all = EngineGaps::default();
        for &g in gaps {
            all.add(g);
        }
        all
    }
}

fn check(name: &str, status: Status, detail: String) -> Check {
    Check { name: name.to_string(), status, detail }
}

const WHITE_BOX: [&str; 4] = ["fgsm", "pgd", "apgd", "apgd-dlr"];
const ITERATIVE: [&str; 3] = ["pgd", "apgd", "apgd-dlr"];

fn fmt(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or_else(|| "n/a".into())
}

/// The trust checks; each warning says in one sentence what it means.
pub fn trust_checks(inp: &CheckInputs) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some((changed, n)) = inp.eps_zero {
        out.push(if changed == 0 {
            check("eps_zero_reproduces_clean", Status::Pass, format!("an ε = 0 attack left all {n} predictions unchanged"))
        } else {
            check(
                "eps_zero_reproduces_clean",
                Status::Fail,
                format!("an ε = 0 attack changed {changed} of {n} predictions: the attack pipeline alters images it should not touch"),
            )
        });
    }

    // Robust accuracy must not rise with ε for the same attack.
    let mut rises = Vec::new();
    let mut attacks: Vec<&str> = inp.runs.iter().map(|r| r.attack.as_str()).collect();
    attacks.dedup();
    for a in &attacks {
        let mut pts: Vec<&RunPoint> = inp.runs.iter().filter(|r| r.attack == *a).collect();
        pts.sort_by(|x, y| x.eps.total_cmp(&y.eps));
        for w in pts.windows(2) {
            if let (Some(lo), Some(hi)) = (w[0].robust_accuracy, w[1].robust_accuracy)
                && hi > lo + 1e-12
            {
                rises.push(format!("{a}: {} at ε={} vs {} at ε={}", fmt(Some(hi)), w[1].eps, fmt(Some(lo)), w[0].eps));
            }
        }
    }
    out.push(if rises.is_empty() {
        check("monotone_in_eps", Status::Pass, "robust accuracy never rises with ε for the same attack".into())
    } else {
        check(
            "monotone_in_eps",
            Status::Warn,
            format!("robust accuracy rises with ε ({}): the attack is not finding the worst case; use more steps or restarts", rises.join("; ")),
        )
    });

    let at = |attack: &str, eps: f32| inp.runs.iter().find(|r| r.attack == attack && r.eps == eps);
    let mut weaker = Vec::new();
    let mut masking = Vec::new();
    let mut noisy = Vec::new();
    for r in &inp.runs {
        if ITERATIVE.contains(&r.attack.as_str())
            && let (Some(f), Some(ra)) = (at("fgsm", r.eps).and_then(|f| f.robust_accuracy), r.robust_accuracy)
            && ra > f + 1e-12
        {
            weaker.push(format!("{} {} vs fgsm {} at ε={}", r.attack, fmt(Some(ra)), fmt(Some(f)), r.eps));
        }
        if r.attack == "square" {
            for g in ITERATIVE {
                if let Some(gr) = at(g, r.eps)
                    && r.flip_rate > gr.flip_rate + 1e-12
                {
                    masking.push(format!(
                        "square flips {} vs {g} {} at ε={}",
                        fmt(Some(r.flip_rate)),
                        fmt(Some(gr.flip_rate)),
                        r.eps
                    ));
                }
            }
        }
        if r.attack == "noise" {
            let best = WHITE_BOX
                .iter()
                .filter_map(|w| at(w, r.eps))
                .map(|w| w.flip_rate)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            // "Far fewer": noise must flip less than half of what the strongest white-box attack flips.
            if let Some(best) = best
                && best > 0.0
                && r.flip_rate >= 0.5 * best
            {
                noisy.push(format!(
                    "noise {} vs best white-box {} at ε={}",
                    fmt(Some(r.flip_rate)),
                    fmt(Some(best)),
                    r.eps
                ));
            }
        }
    }
    if inp.runs.iter().any(|r| ITERATIVE.contains(&r.attack.as_str())) && inp.runs.iter().any(|r| r.attack == "fgsm") {
        out.push(if weaker.is_empty() {
            check("iterative_beats_fgsm", Status::Pass, "iterative attacks did at least as well as FGSM at every ε".into())
        } else {
            check(
                "iterative_beats_fgsm",
                Status::Warn,
                format!("an iterative attack did worse than one FGSM step ({}): its step size or step count is wrong for this model", weaker.join("; ")),
            )
        });
    }
    if inp.runs.iter().any(|r| r.attack == "noise") {
        out.push(if noisy.is_empty() {
            check("noise_baseline", Status::Pass, "random noise flips far fewer samples than the white-box attacks".into())
        } else {
            check(
                "noise_baseline",
                Status::Warn,
                format!("random noise flips nearly as many samples as the white-box attacks ({}): the gradients are not informative (masked or obfuscated)", noisy.join("; ")),
            )
        });
    }
    if inp.runs.iter().any(|r| r.attack == "square") {
        out.push(if masking.is_empty() {
            check("no_gradient_masking", Status::Pass, "the gradient-free square attack did not beat the gradient attacks".into())
        } else {
            check(
                "no_gradient_masking",
                Status::Warn,
                format!("the gradient-free square attack beats the gradient attacks ({}): gradient masking — white-box figures overstate robustness", masking.join("; ")),
            )
        });
    }
    if let Some((zero, nonfinite, n)) = inp.gradients {
        out.push(if nonfinite > 0 {
            check("gradients_finite", Status::Fail, format!("{nonfinite} of {n} clean-input gradients contain NaN or Inf: gradient attacks cannot be trusted on them"))
        } else if zero > 0 {
            check("gradients_finite", Status::Warn, format!("{zero} of {n} clean-input gradients are exactly zero: the model is saturated or masks gradients there"))
        } else {
            check("gradients_finite", Status::Pass, format!("all {n} clean-input gradients are finite and non-zero"))
        });
    }
    let (nd, n) = inp.nondeterministic;
    out.push(if nd == 0 {
        check("model_deterministic", Status::Pass, format!("two forward passes agreed exactly on all {n} samples"))
    } else {
        check(
            "model_deterministic",
            Status::Fail,
            format!("two forward passes disagreed on {nd} of {n} samples: results are not reproducible"),
        )
    });
    if inp.engine_gaps.n > 0 {
        let limit = EngineGaps::LIMIT;
        let EngineGaps { n, worst, over } = inp.engine_gaps;
        out.push(if over == 0 {
            check(
                "engine_matches_tract",
                Status::Pass,
                format!(
                    "the gradient engine's logits matched tract's to {worst:.1e} (relative) on all {n} clean samples; \
                     verdicts within {} of a tie are tract's",
                    crate::model::onnx::NEAR_TIE
                ),
            )
        } else {
            check(
                "engine_matches_tract",
                Status::Fail,
                format!(
                    "the gradient engine's logits differ from tract's by up to {worst:.1e} (relative; limit {limit:.1e}) \
                     on {over} of {n} clean samples: its gradients, and the verdicts it decides, cannot be trusted"
                ),
            )
        });
    }
    if let Some((bad, total)) = inp.round_trip {
        out.push(if bad == 0 {
            check(
                "adversarial_round_trip",
                Status::Pass,
                format!("all {total} saved adversarial files, read back as inputs, gave the recorded prediction"),
            )
        } else {
            check(
                "adversarial_round_trip",
                Status::Fail,
                format!(
                    "{bad} of {total} saved adversarial files gave another prediction when read back: the \
                     written file is not the image that was evaluated"
                ),
            )
        });
    }
    if !inp.directional.is_empty() {
        // f32 central differences with h = 1e-3 carry ~1e-3 relative noise on a smooth loss;
        // a wrong gradient is off by O(1).
        let bad: Vec<String> = inp
            .directional
            .iter()
            .filter(|(g, fd)| (g - fd).abs() > 0.05 * g.abs().max(fd.abs()) + 1e-4)
            .map(|(g, fd)| format!("g·d = {g:.4e} vs {fd:.4e}"))
            .collect();
        out.push(if bad.is_empty() {
            check("directional_derivative", Status::Pass, format!("g·d matched a central difference on {} probes", inp.directional.len()))
        } else {
            check(
                "directional_derivative",
                Status::Warn,
                format!("the gradient disagrees with a central difference on {} of {} probes ({}): the loss is non-smooth there or the gradient is wrong", bad.len(), inp.directional.len(), bad.join("; ")),
            )
        });
    }
    out
}

/// The gallery's ranking, most fragile first: the smallest minimal ε (`None`:
/// not measured, or not flipped within the largest ε, ranks last), then the
/// largest confidence drop, then the listing index. Each argument is
/// `(minimal ε, drop, listing index)`.
pub fn fragility_cmp(a: (Option<f32>, f32, usize), b: (Option<f32>, f32, usize)) -> Ordering {
    let m = |v: Option<f32>| v.unwrap_or(f32::INFINITY);
    m(a.0).total_cmp(&m(b.0)).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2))
}

/// Recomputes every aggregate of `r` from its per-sample records and its
/// settings: `data.samples`, `data.labelled`, `clean.accuracy`, the figures of
/// each run (`robust_accuracy`, `flip_rate`, `attack_success_rate`,
/// `mean_confidence_drop`, `per_class`), the `min_eps` summary and `checks`.
/// `runs` must already hold each run's description (attack, ε, budget, seconds);
/// `samples[i].outcomes[k]` must belong to `runs[k]`. `classes` is the model's
/// class count. The error says which record does not fit.
pub fn aggregate(r: &mut Results, classes: usize) -> Result<(), String> {
    let mut all = Aggregate::new(r, classes);
    for s in &r.samples {
        all.add(s)?;
    }
    all.finish(r);
    Ok(())
}

/// Whether a check held, over the samples where it was measured.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    yes: usize,
    n: usize,
}

impl Measured {
    fn add(&mut self, v: Option<bool>) {
        if let Some(v) = v {
            self.n += 1;
            self.yes += usize::from(v);
        }
    }
    fn get(self) -> Option<(usize, usize)> {
        (self.n > 0).then_some((self.yes, self.n))
    }
}

/// [`aggregate`] one record at a time, so that `advscan attack` computes the
/// figures while it streams its records from disk instead of holding them.
/// Records must be added in sample order (see [`RunTally`]). Per sample it
/// keeps only the minimal ε (with `--min-eps`: the quartiles need every value).
pub struct Aggregate {
    /// (attack, norm, ε label) of each run, which `outcomes[k]` must match.
    runs: Vec<(String, String, String)>,
    n: usize,
    labelled: usize,
    clean_correct: usize,
    tallies: Vec<RunTally>,
    /// `None` from the first sample without a quantised prediction on.
    quantized: Vec<Option<RunTally>>,
    min_eps: Option<Vec<Option<f32>>>,
    eps_zero: Measured,
    gradient_zero: Measured,
    gradient_nonfinite: Measured,
    round_trip_failed: Measured,
    nondeterministic: usize,
    engine_gaps: EngineGaps,
    directional: Vec<(f64, f64)>,
}

impl Aggregate {
    /// For results with `r`'s runs and settings.
    pub fn new<S>(r: &Results<S>, classes: usize) -> Aggregate {
        let target = r.settings.targeted;
        Aggregate {
            runs: r.runs.iter().map(|run| (run.attack.clone(), run.norm.clone(), run.eps_label.clone())).collect(),
            n: 0,
            labelled: 0,
            clean_correct: 0,
            tallies: r.runs.iter().map(|_| RunTally::new(target, classes)).collect(),
            quantized: r.runs.iter().map(|_| Some(RunTally::new(target, classes))).collect(),
            min_eps: r.settings.min_eps.then(Vec::new),
            eps_zero: Measured::default(),
            gradient_zero: Measured::default(),
            gradient_nonfinite: Measured::default(),
            round_trip_failed: Measured::default(),
            nondeterministic: 0,
            engine_gaps: EngineGaps::default(),
            directional: Vec::new(),
        }
    }

    /// Adds the next sample; the error says why its record does not fit the runs.
    pub fn add(&mut self, s: &SampleRecord) -> Result<(), String> {
        if s.outcomes.len() != self.runs.len() {
            return Err(format!(
                "sample '{}' has {} outcome(s) for {} run(s)",
                s.id,
                s.outcomes.len(),
                self.runs.len()
            ));
        }
        if let Some((o, run)) = s.outcomes.iter().zip(&self.runs).find(|(o, run)| {
            (o.attack.as_str(), o.norm.as_str(), o.eps_label.as_str())
                != (run.0.as_str(), run.1.as_str(), run.2.as_str())
        }) {
            return Err(format!(
                "sample '{}' has an outcome of {} {} ε={} where {} {} ε={} was run",
                s.id, o.attack, o.norm, o.eps_label, run.0, run.1, run.2
            ));
        }
        self.n += 1;
        self.labelled += usize::from(s.label.is_some());
        self.clean_correct += usize::from(s.label == Some(s.clean_pred));
        for ((o, tally), quantized) in s.outcomes.iter().zip(&mut self.tallies).zip(&mut self.quantized) {
            let item = SampleRun {
                label: s.label,
                clean_pred: s.clean_pred,
                clean_confidence: s.clean_confidence,
                adv_pred: o.pred,
                adv_clean_prob: o.clean_pred_prob,
            };
            tally.add(&item);
            match (o.pred_quantized, quantized.as_mut()) {
                (Some(adv_pred), Some(q)) => q.add(&SampleRun { adv_pred, ..item }),
                _ => *quantized = None,
            }
        }
        if let Some(found) = &mut self.min_eps {
            found.push(s.min_eps.flatten());
        }
        let d = &s.check_data;
        self.eps_zero.add(d.eps_zero_changed);
        self.gradient_zero.add(d.gradient_zero);
        self.gradient_nonfinite.add(d.gradient_nonfinite);
        self.round_trip_failed.add(d.round_trip.map(|ok| !ok));
        self.nondeterministic += usize::from(d.nondeterministic);
        if let Some(g) = d.engine_gap {
            self.engine_gaps.add(g);
        }
        if let Some([gd, fd]) = d.directional
            && self.directional.len() < DIRECTIONAL_PROBES
        {
            self.directional.push((gd as f64, fd as f64));
        }
        Ok(())
    }

    /// Writes the aggregates into `r` (whose runs and settings it was made for).
    pub fn finish<S>(self, r: &mut Results<S>) {
        let n = self.n;
        r.data.samples = n;
        r.data.labelled = self.labelled;
        r.clean.accuracy = ratio(self.clean_correct, self.labelled);
        let mut points = Vec::with_capacity(r.runs.len());
        for ((run, tally), quantized) in r.runs.iter_mut().zip(self.tallies).zip(self.quantized) {
            let stats = tally.finish();
            run.robust_accuracy = stats.robust_accuracy;
            run.flip_rate = stats.flip_rate;
            run.attack_success_rate = stats.attack_success_rate;
            run.mean_confidence_drop = stats.mean_confidence_drop;
            run.per_class = stats.per_class;
            (run.flip_rate_quantized, run.robust_accuracy_quantized) = match quantized {
                Some(q) if n > 0 => {
                    let stats = q.finish();
                    (Some(stats.flip_rate), stats.robust_accuracy)
                }
                _ => (None, None),
            };
            points.push(RunPoint {
                attack: run.attack.clone(),
                eps: run.eps,
                robust_accuracy: run.robust_accuracy,
                flip_rate: run.flip_rate,
            });
        }
        r.min_eps = self.min_eps.map(|found| {
            let (q1, median, q3) = quartiles(&found);
            MinEpsSummary {
                attack: "pgd".into(),
                norm: r.settings.norm.clone(),
                precision: MIN_EPS_PRECISION,
                eps_max: r.runs.iter().map(|run| run.eps).fold(0.0, f32::max),
                flipped: found.iter().filter(|v| v.is_some()).count(),
                median,
                q1,
                q3,
            }
        });
        let gradients = match (self.gradient_zero.get(), self.gradient_nonfinite.get()) {
            (Some((zero, n)), Some((nonfinite, _))) => Some((zero, nonfinite, n)),
            _ => None,
        };
        r.checks = trust_checks(&CheckInputs {
            runs: points,
            eps_zero: self.eps_zero.get(),
            gradients,
            nondeterministic: (self.nondeterministic, n),
            engine_gaps: self.engine_gaps,
            directional: self.directional,
            round_trip: self.round_trip_failed.get(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(label: Option<usize>, pred: usize) -> CleanOutcome {
        let mut probs = vec![0.1, 0.1];
        probs[pred] = 0.9;
        CleanOutcome { label, pred, probs }
    }

    #[test]
    fn robust_accuracy_flip_rate_and_success_by_definition() {
        // 4 labelled samples: two correct (0→0, 1→1), one wrong (label 0, pred 1), one correct that flips.
        let clean = vec![c(Some(0), 0), c(Some(1), 1), c(Some(0), 1), c(Some(1), 1)];
        // Under attack: sample 0 stays 0, sample 1 stays 1, sample 2 becomes 0 (a clean mistake
        // "fixed" by the attack: still not robust), sample 3 flips to 0.
        let adv = vec![vec![0.8, 0.2], vec![0.3, 0.7], vec![0.6, 0.4], vec![0.55, 0.45]];
        let s = summarize(&clean, &adv, None, 2);
        assert_eq!(s.robust_accuracy, Some(0.5)); // samples 0 and 1
        assert_eq!(s.flip_rate, 0.5); // samples 2 and 3
        assert_eq!(s.attack_success_rate, Some(1.0 / 3.0)); // of the 3 clean-correct, sample 3
        // Drops: 0.9−0.8, 0.9−0.7, 0.9−0.4, 0.9−0.45 = 1.25 → mean 0.3125 (f32 probabilities: 1e-6).
        assert!((s.mean_confidence_drop - 0.3125).abs() < 1e-6);
        assert_eq!(s.per_class[1].predicted_as, vec![1, 1]);
        assert_eq!(clean_accuracy(&clean), Some(0.75));
    }

    #[test]
    fn gallery_ranking_min_eps_then_drop_then_index() {
        let mut v =
            vec![(None, 0.9, 0), (Some(0.02), 0.1, 1), (Some(0.01), 0.1, 2), (Some(0.02), 0.3, 3), (None, 0.9, 4)];
        v.reverse();
        v.sort_by(|a, b| fragility_cmp(*a, *b));
        assert_eq!(v.iter().map(|x| x.2).collect::<Vec<_>>(), vec![2, 3, 1, 0, 4]);
    }

    #[test]
    fn quartiles_rank_unflipped_samples_last() {
        let v = [Some(0.4), None, Some(0.1), Some(0.2)];
        // Sorted: 0.1, 0.2, 0.4, ∞ → nearest-rank q1 = 0.1, median = 0.2, q3 = 0.4.
        assert_eq!(quartiles(&v), (Some(0.1), Some(0.2), Some(0.4)));
        assert_eq!(quartiles(&[None, None, Some(0.3)]), (Some(0.3), None, None));
        assert_eq!(quartiles(&[]), (None, None, None));
    }

    #[test]
    fn unlabelled_runs_report_flips_only() {
        let clean = vec![c(None, 0), c(None, 1)];
        let s = summarize(&clean, &[vec![0.2, 0.8], vec![0.2, 0.8]], None, 2);
        assert_eq!((s.robust_accuracy, s.attack_success_rate, s.flip_rate), (None, None, 0.5));
        assert_eq!(clean_accuracy(&clean), None);
    }

    fn pt(attack: &str, eps: f32, ra: f64, flip: f64) -> RunPoint {
        RunPoint { attack: attack.into(), eps, robust_accuracy: Some(ra), flip_rate: flip }
    }

    fn status(checks: &[Check], name: &str) -> Status {
        checks.iter().find(|c| c.name == name).map(|c| c.status).unwrap_or_else(|| panic!("no check {name}"))
    }

    #[test]
    fn checks_flag_what_they_should() {
        let good = CheckInputs {
            runs: vec![
                pt("fgsm", 0.01, 0.6, 0.3),
                pt("fgsm", 0.02, 0.4, 0.5),
                pt("pgd", 0.01, 0.5, 0.4),
                pt("pgd", 0.02, 0.2, 0.7),
                pt("noise", 0.02, 0.9, 0.02),
                pt("square", 0.02, 0.3, 0.6),
            ],
            eps_zero: Some((0, 10)),
            gradients: Some((0, 0, 10)),
            nondeterministic: (0, 10),
            // NEAR_TIE / 8 = 1.25e-4 is the limit; the committed models measure ~1e-6.
            engine_gaps: EngineGaps::of(&[1e-6, 0.0, 1.2e-4]),
            directional: vec![(1.0, 1.001)],
            round_trip: Some((0, 2)),
        };
        let ok = trust_checks(&good);
        assert!(ok.iter().all(|c| c.status == Status::Pass), "{ok:?}");

        let mut bad = good.clone();
        bad.runs.push(pt("pgd", 0.04, 0.3, 0.6)); // rises after 0.02
        bad.runs[5] = pt("square", 0.02, 0.1, 0.9); // beats pgd: masking
        bad.runs[4] = pt("noise", 0.02, 0.5, 0.6); // noise as strong as white-box
        bad.runs[2] = pt("pgd", 0.01, 0.7, 0.2); // worse than fgsm
        bad.eps_zero = Some((1, 10));
        bad.gradients = Some((3, 0, 10));
        bad.nondeterministic = (2, 10);
        bad.directional = vec![(1.0, -0.5)];
        bad.engine_gaps = EngineGaps::of(&[1e-6, 1.3e-4]);
        let flagged = trust_checks(&bad);
        assert_eq!(status(&flagged, "monotone_in_eps"), Status::Warn);
        assert_eq!(status(&flagged, "no_gradient_masking"), Status::Warn);
        assert_eq!(status(&flagged, "noise_baseline"), Status::Warn);
        assert_eq!(status(&flagged, "iterative_beats_fgsm"), Status::Warn);
        assert_eq!(status(&flagged, "eps_zero_reproduces_clean"), Status::Fail);
        assert_eq!(status(&flagged, "gradients_finite"), Status::Warn);
        assert_eq!(status(&flagged, "model_deterministic"), Status::Fail);
        assert_eq!(status(&flagged, "directional_derivative"), Status::Warn);
        assert_eq!(status(&flagged, "engine_matches_tract"), Status::Fail);
        bad.engine_gaps = EngineGaps::of(&[f32::NAN]);
        assert_eq!(status(&trust_checks(&bad), "engine_matches_tract"), Status::Fail);
        bad.engine_gaps = EngineGaps::default();
        assert!(trust_checks(&bad).iter().all(|c| c.name != "engine_matches_tract"), "not measured, not shown");
        bad.gradients = Some((0, 1, 10));
        assert_eq!(status(&trust_checks(&bad), "gradients_finite"), Status::Fail);
    }
}
