//! The attacks: algorithms that move a batch of images inside an ε-ball
//! (L∞ or L2, intersected with the valid input range) to maximise a loss of
//! the model's logits. This module owns the [`Attack`] trait and its registry
//! (one file per attack, one registration line each), the [`Objective`] an
//! attack sees of the model, the [`Budget`] it must respect, and the
//! per-sample randomness. It does not pick samples, batch them, parallelise
//! over them or judge the outcome: the caller does (eval), and every attack
//! result is verified against its budget by [`project::check_budget`] before
//! it is returned.
//!
//! Randomness is per sample: `rngs[i]` belongs to sample `i` alone and is
//! seeded from (run seed, sample id) by [`sample_rng`], so an adversarial
//! image does not depend on thread scheduling, batch size or the other
//! samples in its batch. The uniform and Gaussian draws are made here from
//! the raw ChaCha8 stream (not through `rand`'s distributions, whose values
//! may change between versions), with `libm` for the transcendental
//! functions, so a seed means the same noise on every platform and version.

pub mod apgd;
pub mod fgsm;
pub mod minimal_eps;
pub mod noise;
pub mod pgd;
pub mod project;
pub mod square;

#[cfg(test)]
pub(crate) mod testkit;

pub use crate::error::AttackError;
pub use crate::model::grad::engine::LossGrad;
pub use crate::model::grad::{Loss, LossKind};
pub use project::check_budget;
pub use rand_chacha::ChaCha8Rng;

use crate::error::Error;
use crate::model::Classifier;
use ndarray::{Array2, ArrayD, ArrayView1, Axis, Zip};
use rand_chacha::rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// What an attack sees of the model: logits, and per-sample objectives with
/// their exact input gradient. `Sync` so one model serves every worker.
pub trait Objective: Sync {
    /// Logits `[n, classes]` for a batch `[n, ...]`: the predictions the
    /// evaluation reports, so attacks decide "fooled?" on these. For a
    /// [`Classifier`] they are [`Classifier::verdict_logits`]: the gradient
    /// engine's forward pass, whose argmax is tract's because every near-tie
    /// is left to tract.
    fn logits(&self, x: &ArrayD<f32>) -> Result<Array2<f32>, Error>;

    /// Per-sample objectives (to maximise, see [`Loss`]) and ∂(Σ objectives)/∂x.
    /// Because the objectives are summed, sample i's gradient is its own.
    fn loss_and_grad(&self, x: ArrayD<f32>, classes: &[usize], loss: Loss) -> Result<LossGrad<f32>, Error>;
}

impl Objective for Classifier {
    fn logits(&self, x: &ArrayD<f32>) -> Result<Array2<f32>, Error> {
        self.verdict_logits(x)
    }

    fn loss_and_grad(&self, x: ArrayD<f32>, classes: &[usize], loss: Loss) -> Result<LossGrad<f32>, Error> {
        Classifier::loss_and_grad(self, x, classes, loss)
    }
}

/// The norm of the threat model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// Every pixel moves by at most ε.
    Linf,
    /// The perturbation's Euclidean norm (over the whole sample) is at most ε.
    L2,
}

impl Norm {
    pub fn as_str(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        }
    }
}

impl std::fmt::Display for Norm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an attack may do: the ball it must stay in, the valid input range,
/// and the knobs of the iterative attacks (ignored by those without them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub norm: Norm,
    /// Radius of the ball around each clean sample, in input units.
    pub eps: f32,
    /// Gradient steps per restart (PGD).
    pub steps: usize,
    /// Step length α (PGD): per pixel for L∞, in L2 norm for L2.
    pub step_size: f32,
    /// Independent runs per sample; the worst case is kept (PGD). At least 1.
    pub restarts: usize,
    /// Start from a random point of the ball rather than the clean image (PGD).
    pub random_start: bool,
    pub loss: Loss,
    /// The valid input range: every adversarial pixel is clipped to [lo, hi],
    /// and every clean pixel must already lie in it.
    pub lo: f32,
    pub hi: f32,
}

impl Budget {
    /// The CLI's defaults: 10 steps of ε/4, one restart, random start,
    /// untargeted cross-entropy, inputs in [0, 1].
    pub fn new(norm: Norm, eps: f32) -> Budget {
        Budget {
            norm,
            eps,
            steps: 10,
            step_size: eps / 4.0,
            restarts: 1,
            random_start: true,
            loss: Loss::CE,
            lo: 0.0,
            hi: 1.0,
        }
    }

    /// Rejects budgets no attack can honour. ε = 0 (and then α = 0) is valid:
    /// the trust checks run it to confirm it reproduces clean accuracy.
    pub fn validate(&self) -> Result<(), AttackError> {
        let bad = |m: String| Err(AttackError::Budget(m));
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad(format!("ε must be a finite number ≥ 0, got {}", self.eps));
        }
        if !(self.step_size.is_finite() && self.step_size >= 0.0) {
            return bad(format!("the step size must be a finite number ≥ 0, got {}", self.step_size));
        }
        if self.restarts == 0 {
            return bad("restarts must be at least 1".into());
        }
        if !(self.lo.is_finite() && self.hi.is_finite() && self.lo < self.hi) {
            return bad(format!("the valid input range [{}, {}] is empty or not finite", self.lo, self.hi));
        }
        Ok(())
    }
}

/// One attack algorithm. `x` is a batch `[n, ...]` of clean images inside
/// [`Budget::lo`, `Budget::hi`]; `classes[i]` is sample i's label
/// (untargeted) or target (targeted, per `budget.loss.targeted`); `rngs[i]`
/// is sample i's own generator, and an attack draws from it only for sample
/// i, in an order that does not depend on the rest of the batch. The result
/// has `x`'s shape and has passed [`check_budget`].
pub trait Attack: Sync {
    fn name(&self) -> &'static str;
    /// Whether the attack implements `norm`; `run` with another norm is an
    /// error ([`AttackError::unsupported_norm`]); the CLI can check first.
    fn supports(&self, norm: Norm) -> bool {
        let _ = norm;
        true
    }
    fn run(
        &self,
        model: &dyn Objective,
        x: &ArrayD<f32>,
        classes: &[usize],
        rngs: &mut [ChaCha8Rng],
        budget: &Budget,
    ) -> Result<ArrayD<f32>, Error>;
}

/// One restart of an iterative attack over the still-unfooled samples: per
/// sample its result, the objective that ranks it, and whether it fooled the model.
pub(crate) struct Restart {
    pub adv: ArrayD<f32>,
    pub objective: Vec<f32>,
    pub success: Vec<bool>,
}

/// Runs `once` up to `restarts` times and keeps, per sample, the worst case:
/// the first restart that fools the model, else the one with the highest
/// objective. Samples already fooled (`fooled`, then each restart's
/// successes) are not attacked again, and each draws only from its own rng.
/// Restart 0 always fills a sample's slot; a NaN objective never wins, and a
/// tie keeps the earlier restart.
pub(crate) fn worst_over_restarts(
    x: &ArrayD<f32>,
    classes: &[usize],
    rngs: &mut [ChaCha8Rng],
    restarts: usize,
    mut fooled: Vec<bool>,
    mut once: impl FnMut(&ArrayD<f32>, &[usize], &mut [&mut ChaCha8Rng]) -> Result<Restart, Error>,
) -> Result<ArrayD<f32>, Error> {
    let n = x.shape()[0];
    let mut best = x.clone();
    let mut best_objective = vec![f32::NEG_INFINITY; n];
    for restart in 0..restarts {
        let active: Vec<usize> = (0..n).filter(|&i| !fooled[i]).collect();
        if active.is_empty() {
            break;
        }
        let xa = x.select(Axis(0), &active);
        let ca: Vec<usize> = active.iter().map(|&i| classes[i]).collect();
        let mut ra: Vec<&mut ChaCha8Rng> = rngs.iter_mut().zip(&fooled).filter(|(_, f)| !**f).map(|(r, _)| r).collect();
        let run = once(&xa, &ca, &mut ra)?;
        for (k, &i) in active.iter().enumerate() {
            if restart == 0 || run.success[k] || run.objective[k] > best_objective[i] {
                best.index_axis_mut(Axis(0), i).assign(&run.adv.index_axis(Axis(0), k));
                best_objective[i] = run.objective[k];
            }
            fooled[i] = run.success[k];
        }
    }
    Ok(best)
}

/// Every attack: one line each.
pub fn registry() -> Vec<Box<dyn Attack>> {
    vec![
        Box::new(fgsm::Fgsm),
        Box::new(pgd::Pgd),
        Box::new(noise::Noise),
        Box::new(apgd::Apgd::CE),
        Box::new(apgd::Apgd::DLR),
        Box::new(square::Square),
    ]
}

/// Names of the registered attacks, in registry order.
pub fn names() -> Vec<&'static str> {
    registry().iter().map(|a| a.name()).collect()
}

/// The attack called `name`, or an error listing the known ones.
pub fn by_name(name: &str) -> Result<Box<dyn Attack>, AttackError> {
    registry()
        .into_iter()
        .find(|a| a.name() == name)
        .ok_or_else(|| AttackError::Unknown { name: name.to_string(), known: names().join(", ") })
}

/// Sample `sample_id`'s generator for a run seeded with `seed`: ChaCha8 keyed
/// by sha256(seed as 8 little-endian bytes ‖ id as UTF-8). The seed has a
/// fixed width, so distinct (seed, id) pairs hash distinct byte strings.
pub fn sample_rng(seed: u64, sample_id: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(sample_id.as_bytes());
    let key: [u8; 32] = h.finalize().into();
    ChaCha8Rng::from_seed(key)
}

/// The sign as `torch.sign` defines it: ±1 for non-zero values, the zero
/// itself for ±0 and NaN for NaN. Rust's `f32::signum(0.0)` is 1.0: it would
/// move pixels whose gradient is exactly zero (clipped or saturated regions,
/// dead ReLUs) and break agreement with PyTorch. NaN stays NaN so a broken
/// gradient surfaces as a budget-check failure instead of a silent no-op.
pub fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        v
    }
}

/// Index of the largest logit; ties go to the lowest index as `torch.argmax`.
pub fn argmax(z: ArrayView1<f32>) -> usize {
    let mut best = 0;
    for (k, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = k;
        }
    }
    best
}

/// Whether logits `z` are a success for the attacker: untargeted, the
/// prediction differs from the label; targeted, it is the target.
pub fn is_success(z: ArrayView1<f32>, class: usize, targeted: bool) -> bool {
    (argmax(z) == class) == targeted
}

/// Uniform in [0, 1) with 24 random bits: exact in f32, so the value depends
/// only on the ChaCha8 stream.
pub(crate) fn uniform01(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A standard normal draw by Box–Muller in f64 (one of the pair is used, so
/// each draw consumes exactly two u64 and the stream position is easy to
/// reason about). u1 lies in (0, 1], so the logarithm is finite.
pub(crate) fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1 = ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / 9_007_199_254_740_992.0);
    let u2 = (rng.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0);
    (libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(std::f64::consts::TAU * u2)) as f32
}

/// Common preconditions of every attack: a valid budget, one class and one
/// generator per sample, clean pixels finite and inside the valid range.
/// Returns `x` in standard layout, so per-sample loops and random fills
/// visit pixels in one fixed order.
pub(crate) fn prepare(
    attack: &'static str,
    x: &ArrayD<f32>,
    classes: &[usize],
    rngs: usize,
    budget: &Budget,
) -> Result<ArrayD<f32>, AttackError> {
    budget.validate()?;
    let n = x.shape().first().copied().unwrap_or(0);
    if x.ndim() < 2 || classes.len() != n || rngs != n {
        return Err(AttackError::Batch {
            attack,
            reason: format!(
                "a batch of shape {:?} needs one class and one generator per sample; got {} classes and {rngs} generators",
                x.shape(),
                classes.len()
            ),
        });
    }
    for (sample, xs) in x.outer_iter().enumerate() {
        for (pixel, &value) in xs.iter().enumerate() {
            if !(value >= budget.lo && value <= budget.hi) {
                return Err(AttackError::InputRange { attack, sample, pixel, value, lo: budget.lo, hi: budget.hi });
            }
        }
    }
    Ok(x.as_standard_layout().into_owned())
}

/// The ascent direction of one gradient step: sign(g) for L∞ (the steepest
/// ascent under an L∞ constraint), g/(‖g‖₂ + 1e-10) per sample for L2 as
/// torchattacks' PGDL2 (the 1e-10 keeps a zero gradient at zero).
/// torchattacks takes a batch-mean loss, so its gradient is ours / n and its
/// guard is effectively n·1e-10; we keep 1e-10 so a sample's step does not
/// depend on its batch. The step lengths differ by a relative
/// (n − 1)·1e-10/‖g‖: nothing unless the gradient all but vanishes.
pub(crate) fn ascent_direction(
    attack: &'static str,
    g: &ArrayD<f32>,
    like: &ArrayD<f32>,
    norm: Norm,
) -> Result<ArrayD<f32>, AttackError> {
    if g.shape() != like.shape() {
        return Err(AttackError::Batch {
            attack,
            reason: format!(
                "the model returned a gradient of shape {:?} for an input of shape {:?}",
                g.shape(),
                like.shape()
            ),
        });
    }
    let g = g.as_standard_layout().into_owned();
    Ok(match norm {
        Norm::Linf => g.mapv(sign),
        Norm::L2 => {
            let norms = project::l2_norms(&g);
            let mut d = g;
            for (mut row, norm) in d.axis_iter_mut(Axis(0)).zip(norms) {
                let denom = norm as f32 + 1e-10;
                row.mapv_inplace(|v| v / denom);
            }
            d
        }
    })
}

/// x ← x + α·d, elementwise in f32 as PyTorch does (`adv + alpha * grad`).
pub(crate) fn add_scaled(x: &mut ArrayD<f32>, alpha: f32, d: &ArrayD<f32>) {
    Zip::from(x).and(d).for_each(|x, &d| *x += alpha * d);
}

#[cfg(test)]
mod tests {
    use super::testkit::{cnn, synthetic_batch};
    use super::*;
    use ndarray::{Axis, Slice, array};
    use rayon::prelude::*;

    #[test]
    fn sign_of_zero_is_zero_and_nan_stays_nan() {
        assert_eq!(sign(0.0), 0.0);
        assert_eq!(sign(-0.0), 0.0);
        assert_eq!(sign(1e-30), 1.0);
        assert_eq!(sign(-3.0), -1.0);
        assert!(sign(f32::NAN).is_nan());
        assert_eq!(sign(f32::INFINITY), 1.0);
    }

    #[test]
    fn argmax_ties_go_to_the_lowest_index() {
        assert_eq!(argmax(array![1.0f32, 3.0, 3.0].view()), 1);
        assert!(is_success(array![0.0f32, 1.0].view(), 0, false));
        assert!(!is_success(array![0.0f32, 1.0].view(), 1, false));
        assert!(is_success(array![0.0f32, 1.0].view(), 1, true));
    }

    #[test]
    fn sample_rngs_depend_on_seed_and_id_only() {
        let draw = |seed, id| {
            let mut r = sample_rng(seed, id);
            (0..4).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(0, "a.png"), draw(0, "a.png"));
        assert_ne!(draw(0, "a.png"), draw(0, "b.png"));
        assert_ne!(draw(0, "a.png"), draw(1, "a.png"));
    }

    /// Box–Muller draws have mean ≈ 0 and variance ≈ 1: with 20 000 draws
    /// the standard errors are 0.007 (mean) and 0.01 (variance), so 0.05 is
    /// five of them and more. Uniform draws stay in [0, 1).
    #[test]
    fn random_draws_have_the_right_distribution() {
        let mut r = sample_rng(7, "x");
        let z: Vec<f64> = (0..20_000).map(|_| standard_normal(&mut r) as f64).collect();
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        assert!((0..10_000).map(|_| uniform01(&mut r)).all(|u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn registry_names_are_unique_and_found() {
        let names = names();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for n in &names {
            assert_eq!(by_name(n).unwrap().name(), *n);
        }
        let err = by_name("cw").err().unwrap().to_string();
        assert!(err.contains("fgsm") && err.contains("pgd") && err.contains("noise"), "{err}");
    }

    #[test]
    fn budgets_and_batches_are_validated() {
        let model = testkit::Linear::three_class();
        let x = ArrayD::from_elem(ndarray::IxDyn(&[1, 3]), 0.5f32);
        let mut rngs = vec![sample_rng(0, "s")];
        let attack = pgd::Pgd;
        let b = Budget { restarts: 0, ..Budget::new(Norm::Linf, 0.1) };
        assert!(matches!(attack.run(&model, &x, &[0], &mut rngs, &b), Err(Error::Attack(AttackError::Budget(_)))));
        let b = Budget::new(Norm::Linf, f32::NAN);
        assert!(matches!(attack.run(&model, &x, &[0], &mut rngs, &b), Err(Error::Attack(AttackError::Budget(_)))));
        let b = Budget::new(Norm::Linf, 0.1);
        assert!(matches!(
            attack.run(&model, &x, &[0, 1], &mut rngs, &b),
            Err(Error::Attack(AttackError::Batch { .. }))
        ));
        let mut bad = x.clone();
        bad[[0, 2]] = 1.5;
        match attack.run(&model, &bad, &[0], &mut rngs, &b) {
            Err(Error::Attack(AttackError::InputRange { sample: 0, pixel: 2, .. })) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    /// ε = 0 must give back the clean images bit for bit (the trust check
    /// "ε = 0 reproduces clean accuracy" relies on it), for every attack and
    /// both norms, random start included.
    #[test]
    fn zero_eps_returns_the_clean_images() {
        let model = testkit::Linear::three_class();
        let x = ndarray::Array::from_shape_fn((3, 1, 2, 2), |(n, _, i, j)| (n + i * 2 + j) as f32 / 6.0).into_dyn();
        for norm in [Norm::Linf, Norm::L2] {
            let b = Budget::new(norm, 0.0);
            for attack in registry().into_iter().filter(|a| a.supports(norm)) {
                let mut rngs: Vec<_> = (0..3).map(|i| sample_rng(1, &i.to_string())).collect();
                let adv = attack.run(&model, &x, &[0, 1, 2], &mut rngs, &b).unwrap();
                assert!(adv.iter().zip(&x).all(|(a, b)| a.to_bits() == b.to_bits()), "{} {norm}", attack.name());
            }
        }
    }

    fn bits(a: &ArrayD<f32>) -> Vec<u32> {
        a.iter().map(|v| v.to_bits()).collect()
    }

    /// The engine's gradient of a sample is bitwise the same alone or inside
    /// a batch, for every committed model: Conv runs per sample, and the
    /// Gemm/MatMul products go through matrixmultiply, whose blocking splits
    /// the batch (M) axis and the reduction (K) axis at fixed offsets that do
    /// not depend on M, so one row's sum is formed in the same order at any
    /// batch size. The attacks' batch-independence below rests on this.
    #[test]
    fn gradients_do_not_depend_on_the_batch() {
        let x = synthetic_batch();
        let n = x.shape()[0];
        let classes: Vec<usize> = (0..n).map(|i| i % 2).collect();
        for name in ["pneumonia_cnn", "pneumonia_resnet", "pneumonia_mixed_ops"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("models/{name}.onnx"));
            let model = Classifier::load(&path).unwrap();
            let all = model.loss_and_grad(x.clone(), &classes, Loss::CE).unwrap();
            for i in 0..n {
                let xi = x.slice_axis(Axis(0), Slice::from(i..i + 1)).to_owned();
                let one = model.loss_and_grad(xi, &classes[i..i + 1], Loss::CE).unwrap();
                let row = all.grad.slice_axis(Axis(0), Slice::from(i..i + 1)).to_owned();
                assert_eq!(bits(&one.grad), bits(&row), "{name} sample {i}");
                assert_eq!(one.losses[0].to_bits(), all.losses[i].to_bits(), "{name} sample {i}");
            }
        }
    }

    /// Same seeds → bitwise-identical adversarial images whether the samples
    /// are attacked as one batch, one by one, in uneven chunks, or spread over
    /// a rayon pool of 1 or 2 threads. Random start and restarts are on, so
    /// every source of randomness and the restart bookkeeping are exercised.
    #[test]
    fn results_do_not_depend_on_batching_or_threads() {
        let model = cnn();
        let x = synthetic_batch();
        let n = x.shape()[0];
        let ids: Vec<String> = (0..n).map(|i| format!("case_{i}.png")).collect();
        let classes: Vec<usize> = Objective::logits(model, &x).unwrap().outer_iter().map(|z| argmax(z)).collect();
        let rngs = || ids.iter().map(|id| sample_rng(42, id)).collect::<Vec<_>>();
        let budgets = [
            Budget { steps: 4, restarts: 2, ..Budget::new(Norm::Linf, 4.0 / 255.0) },
            Budget { steps: 3, restarts: 2, step_size: 0.25, ..Budget::new(Norm::L2, 0.5) },
        ];
        // Runs `attack` over `chunks` of the batch, each chunk with its own rngs.
        let run_chunks = |attack: &dyn Attack, b: &Budget, chunks: &[std::ops::Range<usize>]| -> Vec<u32> {
            let mut all = rngs();
            let parts: Vec<ArrayD<f32>> = chunks
                .iter()
                .map(|r| {
                    let xs = x.slice_axis(Axis(0), Slice::from(r.clone())).to_owned();
                    attack.run(model, &xs, &classes[r.clone()], &mut all[r.clone()], b).unwrap()
                })
                .collect();
            parts.iter().flat_map(bits).collect()
        };
        let run_pool = |attack: &dyn Attack, b: &Budget, threads: usize| -> Vec<u32> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let parts: Vec<ArrayD<f32>> = pool.install(|| {
                (0..n)
                    .into_par_iter()
                    .map(|i| {
                        let mut rng = [sample_rng(42, &ids[i])];
                        let xs = x.slice_axis(Axis(0), Slice::from(i..i + 1)).to_owned();
                        attack.run(model, &xs, &classes[i..i + 1], &mut rng, b).unwrap()
                    })
                    .collect()
            });
            parts.iter().flat_map(bits).collect()
        };
        for b in &budgets {
            for attack in registry().into_iter().filter(|a| a.supports(b.norm)) {
                let attack = attack.as_ref();
                let batch = run_chunks(attack, b, std::slice::from_ref(&(0..n)));
                let single: Vec<_> = (0..n).map(|i| i..i + 1).collect();
                assert_eq!(batch, run_chunks(attack, b, &single), "{} {}: one by one", attack.name(), b.norm);
                assert_eq!(batch, run_chunks(attack, b, &[0..2, 2..n]), "{} {}: chunks", attack.name(), b.norm);
                assert_eq!(batch, run_pool(attack, b, 1), "{} {}: 1 thread", attack.name(), b.norm);
                assert_eq!(batch, run_pool(attack, b, 2), "{} {}: 2 threads", attack.name(), b.norm);
            }
        }
    }
}
