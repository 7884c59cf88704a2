//! The minimal flipping ε per sample (`--min-eps`): bisection over PGD.
//! Not an [`Attack`](super::Attack): it returns radii, not images.
//!
//! For each sample: if the clean image is already a success (prediction ≠
//! label, or = target when targeted) the answer is 0; otherwise PGD runs at
//! `eps_max` and the answer is `None` if it does not flip there; otherwise
//! [lo, hi] = [0, eps_max] is bisected, PGD at the midpoint deciding which
//! half keeps the boundary, until hi − lo ≤ `precision`, and `hi` is
//! returned.
//!
//! Precision semantics: the value returned is an ε at which PGD was seen to
//! flip the sample (an upper bound on the true minimal ε, up to PGD's
//! strength), and PGD failed at some ε at most `precision` below it (or the
//! bracket's 0). If flipping were monotone in ε for PGD, the reported value
//! would be within `precision` above PGD's minimal flipping ε. It is not
//! guaranteed to be (a stronger ball can lead PGD astray), so the statement
//! is about the bracket the bisection saw, nothing more.
//!
//! Every PGD evaluation uses the base budget (norm, steps, restarts, random
//! start, loss, range) at that ε with the step size scaled in proportion,
//! α = ε·(base.step_size / base.eps) — `--step-size eps/4` stays ε/4 at every
//! ε. Each evaluation gets a fresh generator from `rngs_factory(i)` (the
//! sample's own seeded generator, e.g. `sample_rng(seed, id)`), so a
//! sample's answer depends on its seed alone — not on the other samples or
//! the order of evaluations — and every ε sees the same random start
//! direction (common random numbers), which keeps the flip/no-flip relation
//! along the bisection as smooth as PGD allows. Samples are evaluated one by
//! one (each has its own ε); the caller parallelises over samples.

use super::{Budget, ChaCha8Rng, Objective, is_success, pgd::Pgd, prepare};
use crate::error::{AttackError, Error};
use ndarray::{ArrayD, Axis, Slice};

const NAME: &str = "min-eps";

/// Per sample, the smallest ε (to `precision`) at which PGD flips it; `None`
/// if PGD does not flip it at `eps_max`. See the module doc for what the
/// value guarantees. `rngs_factory(i)` must return sample i's freshly seeded
/// generator, the same on every call.
pub fn minimal_eps(
    model: &dyn Objective,
    x: &ArrayD<f32>,
    classes: &[usize],
    rngs_factory: &(dyn Fn(usize) -> ChaCha8Rng + Sync),
    base: &Budget,
    eps_max: f32,
    precision: f32,
) -> Result<Vec<Option<f32>>, Error> {
    let bad = |m: String| -> Result<Vec<Option<f32>>, Error> { Err(AttackError::Budget(m).into()) };
    if !(eps_max.is_finite() && eps_max > 0.0) {
        return bad(format!("the largest ε for --min-eps must be a finite number > 0, got {eps_max}"));
    }
    if !(precision.is_finite() && precision > 0.0) {
        return bad(format!("the --min-eps precision must be a finite number > 0, got {precision}"));
    }
    if base.eps.is_nan() || base.eps <= 0.0 {
        return bad(format!("--min-eps scales the step size with ε, so the base ε must be > 0, got {}", base.eps));
    }
    let x = prepare(NAME, x, classes, classes.len(), base)?;
    let n = x.shape()[0];
    let ratio = base.step_size / base.eps;
    let targeted = base.loss.targeted;
    let clean = model.logits(&x)?;
    let mut out = Vec::with_capacity(n);
    for (i, &class) in classes.iter().enumerate() {
        let xi = x.slice_axis(Axis(0), Slice::from(i..i + 1)).to_owned();
        if is_success(clean.row(i), class, targeted) {
            out.push(Some(0.0));
            continue;
        }
        let flips = |eps: f32| -> Result<bool, Error> {
            let b = Budget { eps, step_size: eps * ratio, ..*base };
            let adv = super::Attack::run(&Pgd, model, &xi, &[class], &mut [rngs_factory(i)], &b)?;
            let z = model.logits(&adv)?;
            Ok(is_success(z.row(0), class, targeted))
        };
        if !flips(eps_max)? {
            out.push(None);
            continue;
        }
        let (mut lo, mut hi) = (0f32, eps_max);
        while hi - lo > precision {
            let mid = lo + (hi - lo) / 2.0;
            // A precision below f32's resolution at this ε cannot be met:
            // stop at the finest bracket f32 can express.
            if mid <= lo || mid >= hi {
                break;
            }
            if flips(mid)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        out.push(Some(hi));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Linear;
    use super::super::{Loss, Norm, argmax, sample_rng};
    use super::*;
    use ndarray::Array;

    /// A linear 2-class model z = [0, g·x] with Σg = 0. The untargeted flip
    /// needs the margin |g·x| closed by a δ with |δ| ≤ ε, and the best δ
    /// is ε·sign(±g), moving g·x by ε·‖g‖₁: the minimal L∞ ε is
    /// |g·x| / ‖w₁ − w₀‖₁ = |g·x| / ‖g‖₁, as long as no clipping is active
    /// (x ∈ [0.4, 0.6] and ε ≤ 0.2 keep x ± ε inside [0, 1]). PGD (10 steps
    /// of ε/4, random start) reaches that corner for every ε, so bisection
    /// finds ε* to the precision: the answer is in [ε*, ε* + precision]
    /// (plus 1e-6 of f32 rounding of the logits at the tie).
    #[test]
    fn matches_the_closed_form_on_a_linear_model() {
        let pixels = 10;
        let g: Vec<f64> = (0..pixels).map(|p| ((p * 7 % 10) as f64 - 4.5) * 0.3).collect();
        let model = Linear::two_class(&g);
        let n = 5;
        let x =
            Array::from_shape_fn((n, pixels), |(i, p)| 0.4 + 0.2 * (((i * 3 + p * 5) % 11) as f32 / 10.0)).into_dyn();
        let classes: Vec<usize> = model.logits(&x).unwrap().outer_iter().map(|z| argmax(z)).collect();
        let base = Budget::new(Norm::Linf, 0.1);
        let precision = 1e-3;
        let factory = |i: usize| sample_rng(3, &format!("s{i}"));
        let got = minimal_eps(&model, &x, &classes, &factory, &base, 0.2, precision).unwrap();
        let l1: f64 = g.iter().map(|v| v.abs()).sum();
        for (i, e) in got.iter().enumerate() {
            let gx: f64 = g.iter().zip(x.index_axis(Axis(0), i).iter()).map(|(g, &v)| g * v as f64).sum();
            let exact = gx.abs() / l1;
            let e = e.expect("flippable below 0.2") as f64;
            assert!(e >= exact - 1e-6 && e <= exact + precision as f64 + 1e-6, "sample {i}: {e} vs ε* = {exact}");
        }
        // The same sample alone gives the same answer (its own seed only).
        let one = minimal_eps(&model, &x.select(Axis(0), &[2]), &classes[2..3], &|_| factory(2), &base, 0.2, precision);
        assert_eq!(one.unwrap()[0], got[2]);
    }

    #[test]
    fn none_above_eps_max_zero_when_already_wrong() {
        let model = Linear::two_class([1.0, -1.0]);
        let x = ndarray::array![[0.5f32, 0.3], [0.3, 0.5]].into_dyn();
        // Sample 0: z₁ − z₀ = 0.2, label 1, ε* = 0.1 > 0.05 → None.
        // Sample 1: labelled 1 but predicted 0 → already wrong → 0.
        let base = Budget { loss: Loss::MARGIN, ..Budget::new(Norm::Linf, 0.04) };
        let got = minimal_eps(&model, &x, &[1, 1], &|i| sample_rng(0, &i.to_string()), &base, 0.05, 1e-3).unwrap();
        assert_eq!(got, vec![None, Some(0.0)]);
        let bad = minimal_eps(&model, &x, &[1, 1], &|i| sample_rng(0, &i.to_string()), &base, 0.05, 0.0);
        assert!(matches!(bad, Err(Error::Attack(AttackError::Budget(_)))));
    }
}
