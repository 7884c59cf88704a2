//! The random-noise baseline: a perturbation of the full budget in a random
//! direction, which an adversarial attack must beat by far (a model that
//! flips as often under noise is fragile, not attacked). L∞: x + ε·s with an
//! independent fair sign s ∈ {−1, +1} per pixel (a corner of the ball, as
//! far from x as FGSM goes); L2: x + ε·z/‖z‖₂ with z standard Gaussian (a
//! uniformly random direction on the sphere). Clipped to [lo, hi]. Uses no
//! gradient, so it runs on any model; ignores steps, step size, restarts,
//! random start and the loss.

use super::{Attack, Budget, ChaCha8Rng, Norm, Objective, prepare, project, standard_normal};
use crate::error::Error;
use ndarray::{ArrayD, Axis};
use rand_chacha::rand_core::Rng;

pub struct Noise;

impl Attack for Noise {
    fn name(&self) -> &'static str {
        "noise"
    }

    fn run(
        &self,
        _model: &dyn Objective,
        x: &ArrayD<f32>,
        classes: &[usize],
        rngs: &mut [ChaCha8Rng],
        budget: &Budget,
    ) -> Result<ArrayD<f32>, Error> {
        let x = prepare(self.name(), x, classes, rngs.len(), budget)?;
        let mut adv = x.clone();
        for (mut row, rng) in adv.axis_iter_mut(Axis(0)).zip(rngs.iter_mut()) {
            match budget.norm {
                Norm::Linf => {
                    for v in row.iter_mut() {
                        let s = if rng.next_u32() >> 31 == 1 { 1.0 } else { -1.0 };
                        *v += budget.eps * s;
                    }
                }
                Norm::L2 => {
                    let z: Vec<f32> = (0..row.len()).map(|_| standard_normal(rng)).collect();
                    let norm = z.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt() as f32;
                    let scale = if norm > 0.0 { budget.eps / norm } else { 0.0 };
                    for (v, z) in row.iter_mut().zip(z) {
                        *v += z * scale;
                    }
                }
            }
        }
        project::clip_range(&mut adv, budget.lo, budget.hi);
        project::check_budget(self.name(), &x, &adv, budget)?;
        Ok(adv)
    }
}

#[cfg(test)]
mod tests {
    use super::super::pgd::Pgd;
    use super::super::testkit::{cnn, rngs, synthetic_batch};
    use super::super::{argmax, is_success};
    use super::*;
    use ndarray::IxDyn;

    /// Away from the range's edges, L∞ noise moves every pixel by exactly ε
    /// (x = 0.5 and ε a power of two make x ± ε exact) with both signs about
    /// equally often (7056 fair signs: the share of + has a standard error of
    /// 0.006, so ±0.05 is generous); L2 noise has norm ε up to f32 rounding.
    #[test]
    fn noise_spends_the_whole_budget() {
        let x = ArrayD::from_elem(IxDyn(&[9, 1, 28, 28]), 0.5f32);
        let model = super::super::testkit::Linear::three_class();
        let b = Budget::new(Norm::Linf, 0.125);
        let adv = Noise.run(&model, &x, &[0; 9], &mut rngs(9, 0), &b).unwrap();
        let d = &adv - &x;
        assert!(d.iter().all(|&v| v.abs() == 0.125));
        let plus = d.iter().filter(|&&v| v > 0.0).count() as f64 / d.len() as f64;
        assert!((plus - 0.5).abs() < 0.05, "share of + signs {plus}");
        let b = Budget::new(Norm::L2, 2.0);
        let adv = Noise.run(&model, &x, &[0; 9], &mut rngs(9, 0), &b).unwrap();
        for r in super::super::project::l2_norms(&(&adv - &x)) {
            assert!((r - 2.0).abs() < 1e-5, "radius {r}");
        }
    }

    /// The baseline an attack must beat: on the synthetic inputs at
    /// ε = 8/255 (L∞), PGD-10 flips the three less confident clean predictions
    /// (its CE ends at 1.8–4.4, past ln 2) while sign noise of the same size
    /// flips none (its CE stays ≤ 0.35). Noise results also pass the budget check.
    #[test]
    fn cnn_noise_flips_far_fewer_than_pgd() {
        let model = cnn();
        let x = synthetic_batch();
        let n = x.shape()[0];
        let clean: Vec<usize> = Objective::logits(model, &x).unwrap().outer_iter().map(|z| argmax(z)).collect();
        let b = Budget::new(Norm::Linf, 8.0 / 255.0);
        let flips = |adv: &ArrayD<f32>| {
            Objective::logits(model, adv)
                .unwrap()
                .outer_iter()
                .zip(&clean)
                .filter(|(z, c)| is_success(z.view(), **c, false))
                .count()
        };
        let noise = Noise.run(model, &x, &clean, &mut rngs(n, 0), &b).unwrap();
        super::super::check_budget("noise", &x, &noise, &b).unwrap();
        let pgd = Pgd.run(model, &x, &clean, &mut rngs(n, 0), &b).unwrap();
        let (fn_, fp) = (flips(&noise), flips(&pgd));
        assert!(fp >= 3 && fn_ == 0, "noise flipped {fn_}, PGD {fp} of {n}");
    }
}
