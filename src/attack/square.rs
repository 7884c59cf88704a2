//! The Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020),
//! L∞, untargeted and targeted: a gradient-free random search that needs
//! only [`Objective::logits`], so it runs on any model tract can run,
//! including ones with ops the gradient engine cannot differentiate, and it
//! is the trust checks' probe for gradient masking.
//!
//! For square, `budget.steps` is the query budget per sample: the
//! initialisation is query 1 and each of the `steps − 1` iterations one more
//! query (the reference implementation's `n_iters`); the CLI defaults it to
//! 1000 for square. Step size, restarts, random start and the loss kind are
//! ignored (the attack has its own loss, below); `loss.targeted` is honoured.
//!
//! As the paper and its reference code (`square_attack`, `attack.py`):
//! - loss on the logits: untargeted the margin z_y − max_{j≠y} z_j,
//!   targeted the cross-entropy of the target (the reference's choice), both
//!   minimised;
//! - initialisation by vertical stripes: x + ε·s with one sign per channel
//!   and column, clipped;
//! - each iteration: a square of side s = round(√(p·h·w)) (at least 1, at
//!   most min(h, w) − 1) at a uniform position (`randint(0, h − s)`,
//!   exclusive as numpy's), whose pixels become x ± ε with one sign per
//!   channel, redrawn while the square would not change the current image;
//!   clipped; accepted if the loss decreases (or the new image already
//!   succeeds, as AutoAttack's port);
//! - p follows `p_selection` with p_init = 0.8, its iteration counter
//!   rescaled to the query budget as `int(it / n_iters · 10000)` (halving at
//!   10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10 000);
//! - a sample stops as soon as it succeeds; each query batches only the
//!   samples still unbroken; samples that are a success on the clean image
//!   are returned unchanged.
//!
//! Differences: "succeeds" is `is_success` on the logits (the evaluation's
//! argmax, ties to the lowest index) rather than margin ≤ 0, so the attack
//! stops exactly when the evaluation will count a flip; the position and
//! signs are drawn per sample from its own generator (AutoAttack's port
//! shares one square across the batch; the reference draws per image, as
//! here); the redraw of an unchanged square gives up after
//! [`MAX_REDRAWS`] draws (the reference loops forever when ε = 0 or every
//! sign is clipped away) and then spends the query on the unchanged image.

use super::{Attack, Budget, ChaCha8Rng, Norm, Objective, is_success, prepare, project};
use crate::error::{AttackError, Error};
use ndarray::{Array2, ArrayD, Axis, s};
use rand_chacha::rand_core::Rng;

pub struct Square;

const NAME: &str = "square";
/// The initial share of the image a square covers (the paper's L∞ choice).
pub const P_INIT: f32 = 0.8;
/// Sign redraws for a square that would change nothing (see the module doc).
pub const MAX_REDRAWS: usize = 16;

/// The reference's `p_selection`: the square's share of the image at
/// iteration `it` of `n_iters`, halved at fixed fractions of the budget.
pub fn p_selection(p_init: f32, it: usize, n_iters: usize) -> f32 {
    let it = (it as f64 / n_iters.max(1) as f64 * 10000.0) as usize;
    let halvings = match it {
        0..=10 => 0,
        11..=50 => 1,
        51..=200 => 2,
        201..=500 => 3,
        501..=1000 => 4,
        1001..=2000 => 5,
        2001..=4000 => 6,
        4001..=6000 => 7,
        6001..=8000 => 8,
        _ => 9,
    };
    p_init / (1u32 << halvings) as f32
}

/// Side of the square for share `p` of an h×w image:
/// round(√(p·h·w)), at least 1 and at most min(h, w) − 1 (the reference's
/// `min(max(s, 1), h − 1)`; a 1-pixel-wide image gets 1).
pub fn side(p: f32, h: usize, w: usize) -> usize {
    let s = ((p as f64) * (h * w) as f64).sqrt().round() as usize;
    s.clamp(1, (h.min(w).saturating_sub(1)).max(1))
}

fn random_sign(rng: &mut ChaCha8Rng) -> f32 {
    if rng.next_u32() >> 31 == 1 { 1.0 } else { -1.0 }
}

/// Uniform in [0, m), m ≥ 1; the modulo bias is below 2⁻⁴⁰ for image sizes.
fn random_below(rng: &mut ChaCha8Rng, m: usize) -> usize {
    (rng.next_u64() % m.max(1) as u64) as usize
}

/// (margin, loss) per row: untargeted margin z_y − max_{j≠y} z_j and loss =
/// margin; targeted margin max_{j≠t} z_j − z_t and loss = lse(z) − z_t. In f64.
fn margin_and_loss(z: &Array2<f32>, classes: &[usize], targeted: bool) -> Vec<(f64, f64)> {
    z.outer_iter()
        .zip(classes)
        .map(|(z, &c)| {
            let other =
                z.iter().enumerate().filter(|&(k, _)| k != c).fold(f64::NEG_INFINITY, |m, (_, &v)| m.max(v as f64));
            let zc = z[c] as f64;
            if targeted {
                let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
                (other - zc, lse - zc)
            } else {
                (zc - other, zc - other)
            }
        })
        .collect()
}

impl Attack for Square {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supports(&self, norm: Norm) -> bool {
        norm == Norm::Linf
    }

    fn run(
        &self,
        model: &dyn Objective,
        x: &ArrayD<f32>,
        classes: &[usize],
        rngs: &mut [ChaCha8Rng],
        budget: &Budget,
    ) -> Result<ArrayD<f32>, Error> {
        let x = prepare(NAME, x, classes, rngs.len(), budget)?;
        if budget.norm != Norm::Linf {
            return Err(AttackError::unsupported_norm(NAME, budget.norm.as_str()).into());
        }
        if x.ndim() != 4 {
            let reason = format!("needs images of shape [n, channels, height, width], got {:?}", x.shape());
            return Err(AttackError::Batch { attack: NAME, reason }.into());
        }
        let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (eps, lo, hi, targeted) = (budget.eps, budget.lo, budget.hi, budget.loss.targeted);
        if budget.steps == 0 || n == 0 {
            return Ok(x);
        }
        let logits = |a: &ArrayD<f32>| -> Result<Array2<f32>, Error> {
            let z = model.logits(a)?;
            if z.nrows() != a.shape()[0] || z.ncols() < 2 {
                let reason = format!("the model returned logits of shape {:?} for {} samples", z.dim(), a.shape()[0]);
                return Err(AttackError::Batch { attack: NAME, reason }.into());
            }
            Ok(z)
        };
        let clean = logits(&x)?;
        let mut done: Vec<bool> = clean.outer_iter().zip(classes).map(|(z, &k)| is_success(z, k, targeted)).collect();
        let mut best = x.clone();
        let first: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
        if first.is_empty() {
            return Ok(x);
        }
        // Query 1: vertical stripes, one sign per (channel, column).
        for &i in &first {
            let rng = &mut rngs[i];
            let signs: Vec<f32> = (0..c * w).map(|_| random_sign(rng)).collect();
            // `best` starts as x, so this is clip(x + ε·s).
            let mut row = best.index_axis_mut(Axis(0), i);
            for (ix, v) in row.indexed_iter_mut() {
                *v = (*v + eps * signs[ix[0] * w + ix[2]]).clamp(lo, hi);
            }
        }
        let mut loss_min = vec![f64::INFINITY; n];
        let z = logits(&best.select(Axis(0), &first))?;
        let ca: Vec<usize> = first.iter().map(|&i| classes[i]).collect();
        for (k, (&i, (_, l))) in first.iter().zip(margin_and_loss(&z, &ca, targeted)).enumerate() {
            loss_min[i] = l;
            done[i] = is_success(z.row(k), classes[i], targeted);
        }
        for it in 0..budget.steps - 1 {
            let active: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
            if active.is_empty() {
                break;
            }
            let sq = side(p_selection(P_INIT, it, budget.steps), h, w);
            let mut cand = best.select(Axis(0), &active);
            for (k, &i) in active.iter().enumerate() {
                let rng = &mut rngs[i];
                let (top, left) = (random_below(rng, h - sq), random_below(rng, w - sq));
                let xw = x.slice(s![i, .., top..top + sq, left..left + sq]);
                let bw = best.slice(s![i, .., top..top + sq, left..left + sq]);
                let mut signs = vec![0f32; c];
                for _ in 0..MAX_REDRAWS {
                    signs.iter_mut().for_each(|v| *v = random_sign(rng));
                    let changes = xw
                        .indexed_iter()
                        .zip(bw.iter())
                        .any(|((ix, &xv), &bv)| ((xv + eps * signs[ix.0]).clamp(lo, hi) - bv).abs() >= 1e-7);
                    if changes {
                        break;
                    }
                }
                let mut cw = cand.slice_mut(s![k, .., top..top + sq, left..left + sq]);
                for ((ix, v), &xv) in cw.indexed_iter_mut().zip(xw.iter()) {
                    *v = (xv + eps * signs[ix.0]).clamp(lo, hi);
                }
            }
            let z = logits(&cand)?;
            let ca: Vec<usize> = active.iter().map(|&i| classes[i]).collect();
            for (k, (&i, (_, l))) in active.iter().zip(margin_and_loss(&z, &ca, targeted)).enumerate() {
                let success = is_success(z.row(k), classes[i], targeted);
                if l < loss_min[i] || success {
                    best.index_axis_mut(Axis(0), i).assign(&cand.index_axis(Axis(0), k));
                    loss_min[i] = loss_min[i].min(l);
                }
                done[i] = success;
            }
        }
        project::check_budget(NAME, &x, &best, budget)?;
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::super::noise::Noise;
    use super::super::testkit::{Linear, cnn, rngs, synthetic_batch};
    use super::super::{Loss, argmax, check_budget};
    use super::*;
    use ndarray::{Array, IxDyn};

    /// The reference schedule at 10 000 queries, and its rescaling: with
    /// 1000 queries, iteration 100 counts as 1000 (p_init/16) and 101 as
    /// 1010 (p_init/32). On 28×28, p = 0.8 gives round(√627.2) = 25.
    #[test]
    fn p_selection_and_side_follow_the_reference() {
        assert_eq!(p_selection(0.8, 10, 10000), 0.8);
        assert_eq!(p_selection(0.8, 11, 10000), 0.4);
        assert_eq!(p_selection(0.8, 500, 10000), 0.1);
        assert_eq!(p_selection(0.8, 9000, 10000), 0.8 / 512.0);
        assert_eq!(p_selection(0.8, 100, 1000), 0.05);
        assert_eq!(p_selection(0.8, 101, 1000), 0.025);
        assert_eq!(side(0.8, 28, 28), 25);
        assert_eq!(side(0.8 / 512.0, 28, 28), 1);
        assert_eq!(side(1.0, 5, 5), 4);
        assert_eq!(side(0.8, 1, 7), 1);
    }

    #[test]
    fn l2_is_refused() {
        let x = ArrayD::from_elem(IxDyn(&[1, 1, 3, 3]), 0.5f32);
        assert!(!Square.supports(Norm::L2) && Square.supports(Norm::Linf));
        let r = Square.run(&Linear::three_class(), &x, &[0], &mut rngs(1, 0), &Budget::new(Norm::L2, 0.1));
        assert!(matches!(r, Err(Error::Attack(AttackError::Batch { attack: "square", .. }))));
    }

    #[test]
    fn results_stay_within_ball_and_range() {
        let lin = Linear::three_class();
        let x = Array::from_shape_fn(IxDyn(&[4, 2, 5, 5]), |ix| {
            ((ix[0] * 9 + ix[1] + ix[2] * 3 + ix[3]) % 10) as f32 / 9.0
        });
        for targeted in [false, true] {
            let b = Budget { steps: 200, loss: Loss { targeted, ..Loss::CE }, ..Budget::new(Norm::Linf, 0.1) };
            for seed in 0..3 {
                let adv = Square.run(&lin, &x, &[0, 1, 2, 0], &mut rngs(4, seed), &b).unwrap();
                check_budget("square", &x, &adv, &b).unwrap();
                assert!((&adv - &x).iter().any(|d| d.abs() > 0.0));
            }
        }
    }

    /// A linear 2-class model on 8×8 with Σg = 0 and x = 0.5 − 0.05·sign(g):
    /// the margin is g·x = −0.05·‖g‖₁, so the minimal flipping L∞ ε is 0.05
    /// (the corner x + ε·sign(g)). At ε = 0.08 the corner flips with room to
    /// spare; random search with no gradient finds a flip within 300
    /// queries. Targeted towards class 1 it is the same flip.
    #[test]
    fn flips_a_flippable_linear_sample_without_gradients() {
        let g: Vec<f64> =
            (0..64).map(|p| if (p / 8 + p % 8) % 3 == 0 { 2.0 } else { -1.0 } * (1.0 + (p % 5) as f64 * 0.1)).collect();
        let mean = g.iter().sum::<f64>() / 64.0;
        let g: Vec<f64> = g.iter().map(|v| v - mean).collect();
        let model = Linear::two_class(&g);
        let x = Array::from_shape_fn(IxDyn(&[1, 1, 8, 8]), |ix| 0.5 - 0.05 * g[ix[2] * 8 + ix[3]].signum() as f32);
        assert_eq!(argmax(model.logits(&x).unwrap().row(0)), 0);
        for (class, targeted) in [(0, false), (1, true)] {
            let b = Budget { steps: 300, loss: Loss { targeted, ..Loss::CE }, ..Budget::new(Norm::Linf, 0.08) };
            let adv = Square.run(&model, &x, &[class], &mut rngs(1, 5), &b).unwrap();
            assert_eq!(argmax(model.logits(&adv).unwrap().row(0)), 1, "targeted {targeted}");
        }
    }

    /// On the CNN at ε = 8/255 with 300 queries, square flips at least as
    /// many synthetic inputs as sign noise of the same size (which flips
    /// none of them, see noise.rs), and its results pass the budget check.
    #[test]
    fn cnn_square_flips_at_least_as_many_as_noise() {
        let model = cnn();
        let x = synthetic_batch();
        let n = x.shape()[0];
        let clean: Vec<usize> = Objective::logits(model, &x).unwrap().outer_iter().map(|z| argmax(z)).collect();
        let b = Budget { steps: 300, ..Budget::new(Norm::Linf, 8.0 / 255.0) };
        let flips = |adv: &ArrayD<f32>| {
            Objective::logits(model, adv)
                .unwrap()
                .outer_iter()
                .zip(&clean)
                .filter(|(z, c)| argmax(z.view()) != **c)
                .count()
        };
        let noise = Noise.run(model, &x, &clean, &mut rngs(n, 0), &b).unwrap();
        let square = Square.run(model, &x, &clean, &mut rngs(n, 0), &b).unwrap();
        check_budget("square", &x, &square, &b).unwrap();
        let (fn_, fs) = (flips(&noise), flips(&square));
        assert!(fs >= fn_ && fs >= 1, "square flipped {fs}, noise {fn_} of {n}");
    }
}
