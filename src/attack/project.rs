//! Keeping adversarial images admissible: projection of the perturbation onto
//! the ε-ball and of the image onto the valid range, in the order
//! torchattacks uses (δ = x_adv − x projected to the ball, then x + δ clipped
//! to [lo, hi]); and [`check_budget`], which verifies rather than assumes
//! that a result is admissible. Every attack calls it on its result, so an
//! attack bug becomes a typed error naming the sample, never a silently
//! inflated flip rate.
//!
//! Norms are accumulated in f64 in the samples' logical order: deterministic
//! and accurate (PyTorch's f32 reduction order cannot be matched bit for bit
//! anyway; the difference is a few f32 ulps of the step length).

use super::{Budget, Norm};
use crate::error::AttackError;
use ndarray::{ArrayD, Axis, Zip};

/// Per-sample Euclidean norms over all axes but the first, in f64.
pub fn l2_norms(a: &ArrayD<f32>) -> Vec<f64> {
    a.outer_iter().map(|s| s.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt()).collect()
}

/// Projects each sample's perturbation δ (axis 0 = batch) onto the ε-ball:
/// L∞ clamps every entry to [−ε, ε] (exact in f32); L2 scales δ by
/// min(1, ε/‖δ‖₂). A δ already inside the ball is left untouched, which also
/// keeps ε = 0 with δ = 0 free of 0/0 (torch's `eps / norm` would be NaN).
pub fn project_ball(delta: &mut ArrayD<f32>, norm: Norm, eps: f32) {
    match norm {
        Norm::Linf => delta.mapv_inplace(|d| d.clamp(-eps, eps)),
        Norm::L2 => {
            let norms = l2_norms(delta);
            for (mut row, n) in delta.axis_iter_mut(Axis(0)).zip(norms) {
                let n = n as f32;
                if n > eps {
                    let factor = eps / n;
                    row.mapv_inplace(|d| d * factor);
                }
            }
        }
    }
}

/// Clips to [lo, hi]. `f32::clamp` propagates NaN (where `max(lo).min(hi)`
/// would turn it into lo), so a NaN reaches [`check_budget`] and is reported.
pub fn clip_range(x: &mut ArrayD<f32>, lo: f32, hi: f32) {
    x.mapv_inplace(|v| v.clamp(lo, hi));
}

/// x_adv ← clip(x + Π_ball(x_adv − x)), torchattacks' PGD/PGDL2 projection.
/// Both arrays must have the same shape and standard layout.
pub fn project(x_adv: &mut ArrayD<f32>, x: &ArrayD<f32>, budget: &Budget) {
    let mut delta = &*x_adv - x;
    project_ball(&mut delta, budget.norm, budget.eps);
    Zip::from(x_adv).and(x).and(&delta).for_each(|a, &x, &d| *a = (x + d).clamp(budget.lo, budget.hi));
}

/// Verifies that every sample of `x_adv` is finite, inside [lo, hi] (exactly:
/// clipping is exact) and inside its ε-ball around `x`, up to the f32
/// rounding the last step `x + δ` necessarily makes. Distances are computed
/// in f64 from the f32 values, so the check itself adds no rounding of note.
///
/// Tolerances, with u = 2⁻²⁴ the unit roundoff and `f32::EPSILON` = 2u:
/// - L∞, per pixel: |x_adv − x| ≤ ε + 2u·max(|x|, |x_adv|). A projected δ
///   satisfies |δ| ≤ ε exactly, and fl(x + δ) is within u·|x_adv| of x + δ.
///   (x = 0.7, ε = 8/255 already exceeds ε by 3e-8 after rounding.)
/// - L2, per sample: ‖x_adv − x‖ ≤ ε·(1 + 8u) + 2u·‖x_adv‖. The scaled δ
///   carries a few roundings of relative size u (the norm cast to f32, ε/‖δ‖,
///   the product), and the pixel roundings of x + δ add at most u·‖x_adv‖.
///
/// Both bounds are far below any real attack bug (a missing projection
/// overshoots by a whole step, ≥ 1e-3), yet never flag a correct result.
pub fn check_budget(
    attack: &'static str,
    x: &ArrayD<f32>,
    x_adv: &ArrayD<f32>,
    budget: &Budget,
) -> Result<(), AttackError> {
    if x.shape() != x_adv.shape() {
        return Err(AttackError::Batch {
            attack,
            reason: format!("adversarial batch of shape {:?} for a clean batch of {:?}", x_adv.shape(), x.shape()),
        });
    }
    let (lo, hi, eps) = (budget.lo, budget.hi, budget.eps);
    let u2 = f32::EPSILON as f64;
    let norm = budget.norm.as_str();
    for (sample, (xs, xa)) in x.outer_iter().zip(x_adv.outer_iter()).enumerate() {
        let mut sq = 0f64;
        let mut adv_sq = 0f64;
        for (pixel, (&c, &a)) in xs.iter().zip(xa.iter()).enumerate() {
            if !a.is_finite() {
                return Err(AttackError::NotFinite { attack, sample, pixel, value: a });
            }
            if !(a >= lo && a <= hi) {
                return Err(AttackError::OutsideRange { attack, sample, pixel, value: a, lo, hi });
            }
            let d = (a as f64 - c as f64).abs();
            if budget.norm == Norm::Linf {
                let tolerance = u2 * (c.abs().max(a.abs()) as f64);
                if d > eps as f64 + tolerance {
                    return Err(AttackError::OutsideBall { attack, sample, norm, distance: d, eps, tolerance });
                }
            }
            sq += d * d;
            adv_sq += (a as f64) * (a as f64);
        }
        if budget.norm == Norm::L2 {
            let distance = sq.sqrt();
            let tolerance = eps as f64 * 4.0 * u2 + u2 * adv_sq.sqrt();
            if distance > eps as f64 + tolerance {
                return Err(AttackError::OutsideBall { attack, sample, norm, distance, eps, tolerance });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, IxDyn, array};

    fn budget(norm: Norm, eps: f32) -> Budget {
        Budget::new(norm, eps)
    }

    #[test]
    fn linf_projection_clamps_each_entry() {
        let mut d = array![[0.2f32, -0.3, 0.05, 0.0], [-0.1, 0.1, 0.11, -0.0999]].into_dyn();
        project_ball(&mut d, Norm::Linf, 0.1);
        assert_eq!(d, array![[0.1f32, -0.1, 0.05, 0.0], [-0.1, 0.1, 0.1, -0.0999]].into_dyn());
    }

    /// L2 scales only the samples outside the ball, onto its surface, keeping
    /// their direction; a sample inside is untouched.
    #[test]
    fn l2_projection_scales_per_sample() {
        let mut d = array![[3.0f32, 4.0, 0.0], [0.3, 0.0, -0.4], [0.0, 0.0, 0.0]].into_dyn();
        project_ball(&mut d, Norm::L2, 1.0);
        let norms = l2_norms(&d);
        // 3·(1/5) and 4·(1/5) round once each in f32: 1e-7 is ~2 ulps of 1.
        assert!((norms[0] - 1.0).abs() < 1e-7, "{norms:?}");
        assert!((d[[0, 0]] - 0.6).abs() < 1e-7 && (d[[0, 1]] - 0.8).abs() < 1e-7);
        assert_eq!(d.slice(ndarray::s![1, ..]), array![0.3f32, 0.0, -0.4]);
        let mut z = Array::zeros(IxDyn(&[1, 4]));
        project_ball(&mut z, Norm::L2, 0.0);
        assert!(z.iter().all(|&v| v == 0.0), "ε = 0 and δ = 0 must not give NaN");
    }

    #[test]
    fn project_clips_to_the_range_after_the_ball() {
        let x = array![[0.95f32, 0.05, 0.5]].into_dyn();
        let mut adv = array![[1.3f32, -0.2, 0.52]].into_dyn();
        project(&mut adv, &x, &budget(Norm::Linf, 0.1));
        // 0.95 + 0.1 → 1.0 (clipped); 0.05 − 0.1 → 0.0; 0.52 stays (δ within ε).
        assert_eq!(adv[[0, 0]], 1.0);
        assert_eq!(adv[[0, 1]], 0.0);
        assert_eq!(adv[[0, 2]], 0.5f32 + (0.52f32 - 0.5f32));
        check_budget("test", &x, &adv, &budget(Norm::Linf, 0.1)).unwrap();
    }

    #[test]
    fn nan_survives_clipping() {
        let mut x = array![[f32::NAN, 2.0]].into_dyn();
        clip_range(&mut x, 0.0, 1.0);
        assert!(x[[0, 0]].is_nan() && x[[0, 1]] == 1.0);
    }

    /// The rounding tolerance is needed (x + ε rounded exceeds ε for some x)
    /// and sufficient (every correctly projected result passes).
    #[test]
    fn tolerance_covers_exactly_the_rounding_of_x_plus_delta() {
        let eps = 8.0f32 / 255.0;
        let b = budget(Norm::Linf, eps);
        let mut exceeded = 0;
        for k in 0..=1000 {
            let x = (k as f32 / 1000.0) * (1.0 - eps);
            for s in [-1.0f32, 1.0] {
                let xa = array![[x]].into_dyn();
                let mut adv = array![[(x + s * eps).clamp(0.0, 1.0)]].into_dyn();
                if ((adv[[0, 0]] as f64) - x as f64).abs() > eps as f64 {
                    exceeded += 1;
                }
                check_budget("test", &xa, &adv, &b).unwrap();
                adv[[0, 0]] = (x + s * eps * 1.001).clamp(0.0, 1.0);
                // Unless the overshoot is clipped away at 0 or 1.
                if x > 1.001 * eps && x < 1.0 - 1.001 * eps {
                    assert!(check_budget("test", &xa, &adv, &b).is_err(), "x {x} s {s}");
                }
            }
        }
        assert!(exceeded > 0, "no case needed the tolerance: it is not justified");
        // L2: a δ on the sphere, rounded through x + δ, passes.
        let x = Array::from_shape_fn(IxDyn(&[1, 784]), |i| ((i[1] * 37) % 101) as f32 / 101.0 * 0.9 + 0.05);
        let mut adv = x.clone();
        let dir = Array::from_shape_fn(IxDyn(&[1, 784]), |i| if i[1] % 3 == 0 { 1.0f32 } else { -0.5 });
        adv.zip_mut_with(&dir, |a, &d| *a += d);
        let b2 = budget(Norm::L2, 0.5);
        project(&mut adv, &x, &b2);
        check_budget("test", &x, &adv, &b2).unwrap();
    }

    #[test]
    fn check_budget_names_the_offending_sample() {
        let x = array![[0.5f32, 0.5], [0.5, 0.5], [0.5, 0.5]].into_dyn();
        let b = budget(Norm::Linf, 0.1);
        let ok = array![[0.6f32, 0.4], [0.5, 0.5], [0.45, 0.55]].into_dyn();
        check_budget("t", &x, &ok, &b).unwrap();

        let far = array![[0.6f32, 0.4], [0.5, 0.5], [0.45, 0.62]].into_dyn();
        match check_budget("t", &x, &far, &b) {
            Err(AttackError::OutsideBall { sample: 2, norm: "linf", .. }) => {}
            other => panic!("{other:?}"),
        }
        let b2 = budget(Norm::L2, 0.1);
        // Sample 1 has L∞ distance 0.08 per pixel but L2 distance 0.113 > 0.1.
        let l2 = array![[0.55f32, 0.5], [0.58, 0.58], [0.5, 0.5]].into_dyn();
        match check_budget("t", &x, &l2, &b2) {
            Err(AttackError::OutsideBall { sample: 1, norm: "l2", .. }) => {}
            other => panic!("{other:?}"),
        }
        let b3 = Budget { lo: 0.45, ..budget(Norm::Linf, 0.1) };
        let low = array![[0.5f32, 0.5], [0.44, 0.5], [0.5, 0.5]].into_dyn();
        match check_budget("t", &x, &low, &b3) {
            Err(AttackError::OutsideRange { sample: 1, pixel: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
        let nan = array![[0.5f32, 0.5], [0.5, 0.5], [f32::NAN, 0.5]].into_dyn();
        match check_budget("t", &x, &nan, &b) {
            Err(AttackError::NotFinite { sample: 2, pixel: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
        let msg = check_budget("pgd", &x, &far, &b).unwrap_err().to_string();
        assert!(msg.contains("pgd") && msg.contains("sample 2"), "{msg}");
    }
}
