//! FGSM (Goodfellow et al. 2015): one gradient step of length ε from the
//! clean image. L∞ is torchattacks' `FGSM` operation for operation:
//! `clamp(x + ε·sign(∇), lo, hi)`. torchattacks has no L2 FGSM; ours is one
//! step of its `PGDL2` with α = ε from the clean image,
//! `clamp(x + ε·∇/(‖∇‖₂ + 1e-10), lo, hi)`, whose δ already lies in the ball
//! (PGDL2's projection would be a no-op up to rounding, which
//! [`check_budget`](super::check_budget) allows for). Uses no randomness and
//! ignores steps, step size, restarts and random start.

use super::{Attack, Budget, ChaCha8Rng, Objective, add_scaled, ascent_direction, prepare, project};
use crate::error::Error;
use ndarray::ArrayD;

pub struct Fgsm;

impl Attack for Fgsm {
    fn name(&self) -> &'static str {
        "fgsm"
    }

    fn run(
        &self,
        model: &dyn Objective,
        x: &ArrayD<f32>,
        classes: &[usize],
        rngs: &mut [ChaCha8Rng],
        budget: &Budget,
    ) -> Result<ArrayD<f32>, Error> {
        let x = prepare(self.name(), x, classes, rngs.len(), budget)?;
        let g = model.loss_and_grad(x.clone(), classes, budget.loss)?.grad;
        let d = ascent_direction(self.name(), &g, &x, budget.norm)?;
        let mut adv = x.clone();
        add_scaled(&mut adv, budget.eps, &d);
        project::clip_range(&mut adv, budget.lo, budget.hi);
        project::check_budget(self.name(), &x, &adv, budget)?;
        Ok(adv)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Linear, cnn, synthetic_batch};
    use super::super::{Loss, Norm, sample_rng};
    use super::*;
    use ndarray::array;

    fn rngs(n: usize) -> Vec<ChaCha8Rng> {
        (0..n).map(|i| sample_rng(0, &i.to_string())).collect()
    }

    /// Two classes, margin loss, label 0: the objective z₁ − z₀ is linear in
    /// x with ∇ = w₁ − w₀ = [1, −2, 3, −0.5, 0, 0.7] everywhere. With ε = 0.1,
    /// pixel 4 (∇ = 0) must not move; pixels 2 and 5 step past 1 and pixel 3
    /// below 0, and are clipped.
    #[test]
    fn linf_step_is_x_plus_eps_sign_grad_clipped() {
        let model = Linear::two_class([1.0, -2.0, 3.0, -0.5, 0.0, 0.7]);
        let x = array![[[[0.5f32, 0.5, 1.0], [0.0, 0.3, 0.99]]]].into_dyn();
        let b = Budget { loss: Loss::MARGIN, ..Budget::new(Norm::Linf, 0.1) };
        let adv = Fgsm.run(&model, &x, &[0], &mut rngs(1), &b).unwrap();
        let e = 0.1f32;
        let expected = array![[[[0.5 + e, 0.5 - e, 1.0], [0.0, 0.3, 1.0]]]].into_dyn();
        assert_eq!(adv, expected);
        assert_eq!(adv[[0, 0, 1, 1]].to_bits(), 0.3f32.to_bits(), "a zero-gradient pixel moved");
    }

    /// Targeted towards class 0: the objective is the negated margin
    /// −(z₁ − z₀), so every pixel steps the other way.
    #[test]
    fn targeted_steps_the_other_way() {
        let model = Linear::two_class([1.0, -2.0, 3.0, -0.5, 0.0, 0.7]);
        let x = array![[0.5f32, 0.5, 0.5, 0.5, 0.5, 0.5]].into_dyn();
        let loss = Loss { targeted: true, ..Loss::MARGIN };
        let b = Budget { loss, ..Budget::new(Norm::Linf, 0.1) };
        let adv = Fgsm.run(&model, &x, &[0], &mut rngs(1), &b).unwrap();
        assert_eq!(adv, array![[0.4f32, 0.6, 0.4, 0.6, 0.5, 0.4]].into_dyn());
    }

    /// L2: ∇ = [3, 4, 0] has norm 5, so x moves by ε·[0.6, 0.8, 0]; the
    /// per-element f32 roundings (÷, ×, +) stay below 1e-7.
    #[test]
    fn l2_step_is_eps_along_the_normalised_gradient() {
        let model = Linear::two_class([3.0, 4.0, 0.0]);
        let x = array![[0.5f32, 0.5, 0.5]].into_dyn();
        let b = Budget { loss: Loss::MARGIN, ..Budget::new(Norm::L2, 0.2) };
        let adv = Fgsm.run(&model, &x, &[0], &mut rngs(1), &b).unwrap();
        for (a, want) in adv.iter().zip([0.62f32, 0.66, 0.5]) {
            assert!((a - want).abs() < 1e-7, "{adv}");
        }
    }

    /// On the real CNN: every pixel moves by ε or not at all, unless clipped.
    /// The moved distance is recomputed in f32 as fl(x + ε) − x, which is off
    /// by at most half an ulp of a value below 1 (6e-8), hence 1e-7.
    #[test]
    fn cnn_fgsm_moves_every_free_pixel_by_eps() {
        let model = cnn();
        let x = synthetic_batch();
        let n = x.shape()[0];
        let classes: Vec<usize> = vec![0; n];
        let b = Budget::new(Norm::Linf, 8.0 / 255.0);
        let adv = Fgsm.run(model, &x, &classes, &mut rngs(n), &b).unwrap();
        let mut moved = 0;
        for (&a, &c) in adv.iter().zip(x.iter()) {
            let d = a - c;
            let clipped = a == 0.0 || a == 1.0;
            assert!(clipped || d == 0.0 || (d.abs() - b.eps).abs() < 1e-7, "moved by {d}");
            moved += usize::from(d != 0.0);
        }
        assert!(moved > adv.len() / 2, "only {moved} of {} pixels moved", adv.len());
    }
}
