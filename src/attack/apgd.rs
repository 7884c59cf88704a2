//! Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial
//! robustness with an ensemble of diverse parameter-free attacks"), step for
//! step as AutoAttack's `APGDAttack.attack_single_run` for L∞ and L2. Two
//! registered attacks share this file: `apgd` (AutoAttack's apgd-ce: the
//! budget's loss, cross-entropy by default) and `apgd-dlr`.
//!
//! What matches AutoAttack:
//! - `budget.steps` iterations; the first step size is 2ε per sample (L∞ and
//!   L2, AutoAttack's `alpha = 2`); momentum 0.75 from the second step on
//!   (the first step has none), applied as
//!   x ← Π(xᵏ + 0.75·(Π(xᵏ + η·d) − xᵏ) + 0.25·(xᵏ − xᵏ⁻¹)), with
//!   d = sign(∇) (L∞) or ∇/‖∇‖₂ (L2) and Π the projection onto the ε-ball and
//!   the valid range (applied to both the plain step and the momentum step).
//! - Checkpoints after AutoAttack's integer schedule ([`checkpoints`]): first
//!   window ⌊0.22·N⌋, each next window 3%·N shorter, never below 6%·N — the
//!   paper's p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03,
//!   0.06) on the integer grid. At a checkpoint a sample halves its step size
//!   and restarts from its best point (and the gradient there) if (a) at most
//!   0.75·k of the k steps of the window increased the objective
//!   (AutoAttack's `t <= k * 0.75`; the paper says "fewer than"), or (b) its
//!   step size was not reduced at the previous checkpoint and its best
//!   objective has not improved since.
//! - The momentum term after a restart keeps AutoAttack's bookkeeping: it is
//!   the restart point minus the iterate before the last step.
//! - Random start as AutoAttack: L∞ x + ε·t/‖t‖∞ with t ~ U(−1, 1) per pixel
//!   (so some pixel sits on the ball's surface), L2 x + ε·t/‖t‖₂ with t
//!   standard Gaussian; clipped to the range. None with `!random_start`.
//! - Samples whose clean image is already a success are returned unchanged,
//!   as AutoAttack's `perturb` does.
//!
//! Differences, each a decision:
//! - A sample stops at its first iterate that the model gets wrong (decided
//!   on [`Objective::logits`], the predictions the evaluation reports) and
//!   that iterate is returned; AutoAttack keeps iterating and returns the
//!   last wrong one. Both are misclassified; stopping saves the work.
//!   A sample never fooled returns its best-objective iterate (AutoAttack's
//!   `x_best`) rather than the clean image.
//! - The oscillation count of the first window compares the first step with
//!   the starting point's objective; AutoAttack's indexing compares it with
//!   `loss_steps[-1]`, a row of zeros (always "an increase" for CE ≥ 0,
//!   never for DLR ≤ 0): an indexing accident, not a design.
//! - The L2 direction's guard is `ascent_direction`'s 1e-10 (AutoAttack
//!   1e-12) and the projection is `project::project` (δ onto the ball, then
//!   clip), which equals AutoAttack's `min(max(·, x − ε), x + ε)` up to f32
//!   rounding of x ± ε.
//! - Restarts (`budget.restarts`) follow pgd.rs: run again only on samples
//!   not yet fooled, keep the first success, else the highest best objective.
//!
//! apgd-dlr on a 2-class model: DLR = −(z_y − max_{j≠y} z_j)/(z_π1 − z_π3)
//! needs a third-largest logit z_π3 and is undefined with 2 classes (the
//! diagnostic models here are mostly binary). There `apgd-dlr` uses
//! `LossKind::Margin`, DLR's numerator: with 2 classes the denominator would
//! be a positive per-sample scale, which changes neither the ascent
//! direction under L∞ (a sign) nor under L2 (a normalised gradient) nor
//! which iterate is best, only the step-size checks' "did it increase" —
//! which is scale-invariant too. So margin is what DLR would be, if it were
//! defined. With ≥ 3 classes it is `LossKind::Dlr`.

use super::{
    Attack, Budget, ChaCha8Rng, Loss, LossKind, Norm, Objective, Restart, ascent_direction, is_success, prepare,
    project, standard_normal, uniform01, worst_over_restarts,
};
use crate::error::{AttackError, Error};
use ndarray::{ArrayD, Axis, Zip};

/// Auto-PGD with the budget's loss (`apgd`, cross-entropy by default) or
/// with DLR (`apgd-dlr`, margin on 2-class models; see the module doc).
pub struct Apgd {
    dlr: bool,
}

impl Apgd {
    pub const CE: Apgd = Apgd { dlr: false };
    pub const DLR: Apgd = Apgd { dlr: true };

    fn loss(&self, budget: &Budget, classes: usize) -> Loss {
        let kind = match (self.dlr, classes) {
            (false, _) => budget.loss.kind,
            (true, 0..=2) => LossKind::Margin,
            (true, _) => LossKind::Dlr,
        };
        Loss { kind, targeted: budget.loss.targeted }
    }
}

/// Momentum weight on the new step (AutoAttack's `a`); 1 − it on the last move.
const MOMENTUM: f32 = 0.75;
/// A checkpoint keeps the step size if more than this share of its window's
/// steps increased the objective (AutoAttack's `thr_decr`).
const RHO: f32 = 0.75;

/// The checkpoints of an `n`-step run, as the number of steps done when each
/// is checked: AutoAttack's `n_iter_2 = max(int(0.22·n), 1)` for the first
/// window, then windows shrinking by `max(int(0.03·n), 1)` down to
/// `max(int(0.06·n), 1)`. Computed in f64 as Python does
/// (`int(0.22 * 100)` is 22, from 22.000000000000004).
pub fn checkpoints(n: usize) -> Vec<usize> {
    let part = |f: f64| ((f * n as f64) as usize).max(1);
    let (first, decrease, min) = (part(0.22), part(0.03), part(0.06));
    let mut out = Vec::new();
    let (mut at, mut window) = (first, first);
    while at <= n {
        out.push(at);
        window = window.saturating_sub(decrease).max(min);
        at += window;
    }
    out
}

impl Attack for Apgd {
    fn name(&self) -> &'static str {
        if self.dlr { "apgd-dlr" } else { "apgd" }
    }

    fn run(
        &self,
        model: &dyn Objective,
        x: &ArrayD<f32>,
        classes: &[usize],
        rngs: &mut [ChaCha8Rng],
        budget: &Budget,
    ) -> Result<ArrayD<f32>, Error> {
        let name = self.name();
        let x = prepare(name, x, classes, rngs.len(), budget)?;
        let n = x.shape()[0];
        let targeted = budget.loss.targeted;
        let clean = model.logits(&x)?;
        if clean.nrows() != n {
            let reason = format!("the model returned {} logit rows for {n} samples", clean.nrows());
            return Err(AttackError::Batch { attack: name, reason }.into());
        }
        let loss = self.loss(budget, clean.ncols());
        // Already a success on the clean image: returned as is (AutoAttack).
        let fooled: Vec<bool> = clean.outer_iter().zip(classes).map(|(z, &c)| is_success(z, c, targeted)).collect();
        let best = worst_over_restarts(&x, classes, rngs, budget.restarts, fooled, |xa, ca, ra| {
            let run = apgd_once(name, model, xa, ca, ra, budget, loss)?;
            Ok(Restart { adv: run.adv, objective: run.best_objective, success: run.success })
        })?;
        project::check_budget(name, &x, &best, budget)?;
        Ok(best)
    }
}

/// One APGD run over a batch: per sample the first fooling iterate, else the
/// best-objective one, with that best objective and whether it fooled.
pub(crate) struct Run {
    pub adv: ArrayD<f32>,
    pub best_objective: Vec<f32>,
    pub success: Vec<bool>,
}

/// Objectives, gradients and "fooled?" of the evaluated rows.
type Evaluation = (Vec<f32>, ArrayD<f32>, Vec<bool>);

/// Evaluates rows `active` of `adv`: objectives, gradients and the logits
/// the evaluation reports.
fn evaluate(
    attack: &'static str,
    model: &dyn Objective,
    adv: &ArrayD<f32>,
    classes: &[usize],
    active: &[usize],
    loss: Loss,
) -> Result<Evaluation, Error> {
    let xa = adv.select(Axis(0), active);
    let ca: Vec<usize> = active.iter().map(|&i| classes[i]).collect();
    let lg = model.loss_and_grad(xa.clone(), &ca, loss)?;
    let z = model.logits(&xa)?;
    if lg.losses.len() != active.len() || z.nrows() != active.len() || lg.grad.shape() != xa.shape() {
        let reason = format!(
            "the model returned {} objectives, {} logit rows and a gradient of shape {:?} for a batch of shape {:?}",
            lg.losses.len(),
            z.nrows(),
            lg.grad.shape(),
            xa.shape()
        );
        return Err(AttackError::Batch { attack, reason }.into());
    }
    let success = z.outer_iter().zip(&ca).map(|(z, &c)| is_success(z, c, loss.targeted)).collect();
    Ok((lg.losses, lg.grad.as_standard_layout().into_owned(), success))
}

fn assign_row(dst: &mut ArrayD<f32>, i: usize, src: &ArrayD<f32>, k: usize) {
    dst.index_axis_mut(Axis(0), i).assign(&src.index_axis(Axis(0), k));
}

/// One APGD run from `x` (standard layout); `rngs[i]` is sample i's. Every
/// per-sample quantity (step size, checkpoint decisions, stop) depends on
/// that sample alone, so a sample's trajectory is the same in any batch.
pub(crate) fn apgd_once(
    attack: &'static str,
    model: &dyn Objective,
    x: &ArrayD<f32>,
    classes: &[usize],
    rngs: &mut [&mut ChaCha8Rng],
    b: &Budget,
    loss: Loss,
) -> Result<Run, Error> {
    let n = x.shape()[0];
    let all: Vec<usize> = (0..n).collect();
    let mut adv = x.clone();
    if b.random_start {
        random_start(&mut adv, x, rngs, b);
    }
    let (losses, mut grad, mut success) = evaluate(attack, model, &adv, classes, &all, loss)?;
    // `out` holds a sample's answer once it is fooled; until then x_best is.
    let mut out = adv.clone();
    let mut done = success.clone();
    let mut x_best = adv.clone();
    let mut grad_best = grad.clone();
    let mut loss_best = losses.clone();
    // history[i][t]: objective after t steps (t = 0 is the start).
    let mut history: Vec<Vec<f32>> = losses.iter().map(|&l| vec![l]).collect();
    let mut step = vec![2.0 * b.eps; n];
    let mut x_old = adv.clone();
    let marks = checkpoints(b.steps);
    let mut last_mark = 0;
    let mut loss_best_last = loss_best.clone();
    let mut reduced_last = vec![true; n];
    for it in 0..b.steps {
        let active: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
        if active.is_empty() {
            break;
        }
        let a = if it > 0 { MOMENTUM } else { 1.0 };
        let xa = x.select(Axis(0), &active);
        let cur = adv.select(Axis(0), &active);
        let old = x_old.select(Axis(0), &active);
        let d = ascent_direction(attack, &grad.select(Axis(0), &active), &cur, b.norm)?;
        // z = Π(xᵏ + η·d), then Π(xᵏ + a·(z − xᵏ) + (1 − a)·(xᵏ − xᵏ⁻¹)), in
        // AutoAttack's f32 operation order.
        let mut z = cur.clone();
        for ((mut row, d), &i) in z.axis_iter_mut(Axis(0)).zip(d.outer_iter()).zip(&active) {
            let eta = step[i];
            Zip::from(&mut row).and(&d).for_each(|v, &d| *v += eta * d);
        }
        project::project(&mut z, &xa, b);
        let mut next = cur.clone();
        Zip::from(&mut next).and(&z).and(&cur).and(&old).for_each(|v, &z, &c, &o| {
            *v = c + (z - c) * a + (c - o) * (1.0 - a);
        });
        project::project(&mut next, &xa, b);
        for (k, &i) in active.iter().enumerate() {
            assign_row(&mut x_old, i, &cur, k);
            assign_row(&mut adv, i, &next, k);
        }

        let (losses, g, succ) = evaluate(attack, model, &adv, classes, &active, loss)?;
        for (k, &i) in active.iter().enumerate() {
            assign_row(&mut grad, i, &g, k);
            history[i].push(losses[k]);
            if losses[k] > loss_best[i] {
                assign_row(&mut x_best, i, &next, k);
                assign_row(&mut grad_best, i, &g, k);
                loss_best[i] = losses[k];
            }
            if succ[k] {
                success[i] = true;
                done[i] = true;
                assign_row(&mut out, i, &next, k);
            }
        }

        if marks.contains(&(it + 1)) {
            let window = it + 1 - last_mark;
            last_mark = it + 1;
            for &i in active.iter().filter(|&&i| !done[i]) {
                let h = &history[i];
                let t = it + 1;
                let increases = (0..window).filter(|&c| h[t - c] > h[t - c - 1]).count();
                let oscillating = increases as f32 <= window as f32 * RHO;
                let stalled = !reduced_last[i] && loss_best_last[i] >= loss_best[i];
                let reduce = oscillating || stalled;
                reduced_last[i] = reduce;
                loss_best_last[i] = loss_best[i];
                if reduce {
                    step[i] /= 2.0;
                    assign_row(&mut adv, i, &x_best, i);
                    assign_row(&mut grad, i, &grad_best, i);
                }
            }
        }
    }
    for i in (0..n).filter(|&i| !success[i]) {
        assign_row(&mut out, i, &x_best, i);
    }
    Ok(Run { adv: out, best_objective: loss_best, success })
}

/// AutoAttack's random start, from each sample's own generator (pixels in
/// logical order), then projected. A zero draw (t = 0 everywhere)
/// leaves the sample at x instead of dividing by zero.
fn random_start(adv: &mut ArrayD<f32>, x: &ArrayD<f32>, rngs: &mut [&mut ChaCha8Rng], b: &Budget) {
    for (mut row, rng) in adv.axis_iter_mut(Axis(0)).zip(rngs.iter_mut()) {
        let t: Vec<f32> = match b.norm {
            Norm::Linf => (0..row.len()).map(|_| 2.0 * uniform01(rng) - 1.0).collect(),
            Norm::L2 => (0..row.len()).map(|_| standard_normal(rng)).collect(),
        };
        let scale = match b.norm {
            Norm::Linf => t.iter().fold(0f32, |m, v| m.max(v.abs())),
            Norm::L2 => t.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt() as f32,
        };
        let factor = if scale > 0.0 { b.eps / scale } else { 0.0 };
        for (v, t) in row.iter_mut().zip(t) {
            *v = (*v + t * factor).clamp(b.lo, b.hi);
        }
    }
    // ε·t/‖t‖ may round a hair past ε: one projection makes the ball exact.
    project::project(adv, x, b);
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Linear, cnn, rngs, synthetic_batch};
    use super::super::{argmax, check_budget, pgd::Pgd, sample_rng};
    use super::*;
    use ndarray::IxDyn;

    /// AutoAttack with n_iter = 100: n_iter_2 = 22, size_decr = 3,
    /// n_iter_min = 6, so windows 22, 19, 16, 13, 10, 7, 6, 6 and
    /// checkpoints after 22, 41, 57, 70, 80, 87, 93, 99 steps — the paper's
    /// p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99.
    #[test]
    fn checkpoints_match_autoattack() {
        assert_eq!(checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
        // n = 10: windows 2, 1, 1, …: int(0.22·10) = 2, int(0.03·10) = 0 → 1, int(0.06·10) = 0 → 1.
        assert_eq!(checkpoints(10), vec![2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(checkpoints(0), Vec::<usize>::new());
    }

    #[test]
    fn dlr_falls_back_to_margin_on_two_classes() {
        let b = Budget { loss: Loss { kind: LossKind::CrossEntropy, targeted: true }, ..Budget::new(Norm::Linf, 0.1) };
        assert_eq!(Apgd::DLR.loss(&b, 2), Loss { kind: LossKind::Margin, targeted: true });
        assert_eq!(Apgd::DLR.loss(&b, 3), Loss { kind: LossKind::Dlr, targeted: true });
        assert_eq!(Apgd::CE.loss(&b, 2).kind, LossKind::CrossEntropy);
    }

    /// Random starts, restarts and 30 steps of the 2ε-sized APGD steps on the
    /// linear 3-class model (CE and DLR) and the CNN, both norms: every result
    /// passes `check_budget` (also run inside the attack).
    #[test]
    fn results_stay_within_ball_and_range() {
        let lin = Linear::three_class();
        let x = ndarray::Array::from_shape_fn(IxDyn(&[4, 1, 3, 3]), |ix| {
            ((ix[0] * 9 + ix[2] * 3 + ix[3]) % 10) as f32 / 9.0
        });
        let cnn_x = synthetic_batch();
        for norm in [Norm::Linf, Norm::L2] {
            let eps = if norm == Norm::Linf { 8.0 / 255.0 } else { 0.5 };
            let b = Budget { steps: 30, restarts: 2, ..Budget::new(norm, eps) };
            for attack in [Apgd::CE, Apgd::DLR] {
                for seed in 0..3 {
                    let adv = attack.run(&lin, &x, &[0, 1, 2, 0], &mut rngs(4, seed), &b).unwrap();
                    check_budget("apgd", &x, &adv, &b).unwrap();
                }
            }
            let n = cnn_x.shape()[0];
            let adv = Apgd::CE.run(cnn(), &cnn_x, &vec![1; n], &mut rngs(n, 0), &b).unwrap();
            check_budget("apgd", &cnn_x, &adv, &b).unwrap();
        }
    }

    /// On a linear model the objective's maximiser over the L∞ ball is the
    /// corner x + ε·sign(w); APGD's first step (2ε, no momentum) lands on it
    /// and the margin objective can never exceed it, so the best objective
    /// is exactly the corner's.
    #[test]
    fn linear_model_reaches_the_corner() {
        // z₁ − z₀ = g·x = 0.27 > 0: label 1; the margin objective z₀ − z₁ =
        // −g·x is maximised at x − ε·sign(g), where it is −0.27 + 3.4ε.
        let g = [0.3, -1.0, 0.0, 2.0, -0.1];
        let model = Linear::two_class(g);
        let x = ndarray::array![[0.2f32, 0.5, 0.7, 0.4, 0.9]].into_dyn();
        let eps = 0.01f32;
        let b = Budget { random_start: false, steps: 20, loss: Loss::MARGIN, ..Budget::new(Norm::Linf, eps) };
        let run = apgd_once("apgd", &model, &x, &[1], &mut [&mut sample_rng(0, "a")], &b, Loss::MARGIN).unwrap();
        let corner: f64 =
            -g.iter().zip(x.iter()).map(|(g, &v)| g * (v - eps * super::super::sign(*g as f32)) as f64).sum::<f64>();
        assert!(!run.success[0]);
        assert!((run.best_objective[0] as f64 - corner).abs() < 1e-6, "{} vs {corner}", run.best_objective[0]);
        check_budget("apgd", &x, &run.adv, &b).unwrap();
    }

    /// APGD-CE against PGD (α = ε/4), both without random start, at the
    /// same 20 and 100 steps, ε = 8/255, on the CNN: every sample PGD flips
    /// APGD flips, and on the others APGD's returned (best) objective is ≥
    /// PGD's final one. Expected, not guaranteed (the loss is not concave):
    /// APGD returns the best of all its iterates while PGD returns its last,
    /// its first 2ε step lands on FGSM's corner, and its step-size halvings
    /// restart from the best point, so it explores widely, then refines.
    /// Measured and deliberately not asserted: at 10 steps every checkpoint
    /// window is a single step (2, 3, …, 10) and APGD trails PGD-10 on three
    /// of the six inputs (CE 0.091 vs 0.097, 0.44 vs 0.58, 0.0131 vs
    /// 0.0139); from 20 steps on it leads on all. The inputs are fixed: a
    /// deterministic check.
    #[test]
    fn cnn_apgd_is_at_least_as_strong_as_pgd() {
        let model = cnn();
        let x = synthetic_batch();
        let n = x.shape()[0];
        let classes: Vec<usize> = Objective::logits(model, &x).unwrap().outer_iter().map(|z| argmax(z)).collect();
        for steps in [20, 100] {
            let b = Budget { random_start: false, steps, ..Budget::new(Norm::Linf, 8.0 / 255.0) };
            let pgd = Pgd.run(model, &x, &classes, &mut rngs(n, 0), &b).unwrap();
            let apgd = Apgd::CE.run(model, &x, &classes, &mut rngs(n, 0), &b).unwrap();
            let lp = model.loss_and_grad(pgd.clone(), &classes, Loss::CE).unwrap().losses;
            let la = model.loss_and_grad(apgd.clone(), &classes, Loss::CE).unwrap().losses;
            let flipped = |a: &ArrayD<f32>| -> Vec<bool> {
                Objective::logits(model, a).unwrap().outer_iter().zip(&classes).map(|(z, &c)| argmax(z) != c).collect()
            };
            let (fp, fa) = (flipped(&pgd), flipped(&apgd));
            for i in 0..n {
                assert!(!fp[i] || fa[i], "{steps} steps, sample {i}: PGD flips, APGD does not");
                assert!(fa[i] || la[i] >= lp[i], "{steps} steps, sample {i}: APGD {} < PGD {}", la[i], lp[i]);
            }
            assert!(fa.iter().filter(|&&f| f).count() >= 3, "{fa:?}");
        }
    }
}
