//! Verdict logits (`Classifier::verdict_logits`): the gradient engine's
//! forward pass over the whole batch, with every near-tie left to tract. What
//! must hold on every committed model, on clean and adversarial images:
//! the argmax is tract's, a row is exactly the engine's or exactly tract's
//! as the near-tie rule says, and a row does not depend on its batch.

mod common;
use advscan::attack::{Attack, Budget, Norm, pgd::Pgd, sample_rng};
use advscan::model::Classifier;
use advscan::model::onnx::{NEAR_TIE, is_near_tie, relative_gap};
use common::*;
use ndarray::{Array2, ArrayD, Axis, IxDyn, concatenate};

fn argmax(z: &[f32]) -> usize {
    (0..z.len()).fold(0, |best, j| if z[j] > z[best] { j } else { best })
}

fn bits(z: &Array2<f32>) -> Vec<u32> {
    z.iter().map(|v| v.to_bits()).collect()
}

/// `n` deterministic pseudo-random images in [0, 1] for `model`.
fn images(model: &Classifier, n: usize, seed: u64) -> ArrayD<f32> {
    let mut shape = vec![n];
    shape.extend_from_slice(model.sample_shape());
    let mut state = seed;
    ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    })
}

#[test]
fn verdicts_are_tracts_argmax_and_exactly_one_runtimes_logits() {
    let mut budget = Budget::new(Norm::Linf, 8.0 / 255.0);
    budget.steps = 5;
    budget.random_start = false;
    for name in ["pneumonia_cnn", "pneumonia_resnet", "pneumonia_mixed_ops", "ct_nodule_cnn"] {
        let model = Classifier::load(&repo().join(format!("models/{name}.onnx"))).unwrap();
        let clean = images(&model, 6, 0x9e37_79b9_7f4a_7c15);
        // PGD pushes the images towards the decision boundary: where near-ties live.
        let mut rngs: Vec<_> = (0..6).map(|i| sample_rng(1, &i.to_string())).collect();
        let adv = Pgd.run(&model, &clean, &[0, 1, 0, 1, 0, 1], &mut rngs, &budget).unwrap();
        let x = concatenate(Axis(0), &[clean.view(), adv.view()]).unwrap();

        let verdict = model.verdict_logits(&x).unwrap();
        let tract = model.session().unwrap().logits(x.clone()).unwrap();
        let engine = model.verdict_logits_within(&x, 0.0).unwrap();
        assert_eq!(bits(&model.verdict_logits_within(&x, f32::INFINITY).unwrap()), bits(&tract), "{name}");
        for k in 0..x.shape()[0] {
            let (v, t, e) = (verdict.row(k).to_vec(), tract.row(k).to_vec(), engine.row(k).to_vec());
            assert_eq!(argmax(&v), argmax(&t), "{name} row {k}: {v:?} vs tract {t:?}");
            let want = if is_near_tie(&e, NEAR_TIE) { &t } else { &e };
            assert_eq!(
                v.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                "{name} row {k}"
            );
            // The run's engine_matches_tract limit; the committed models measure ~1e-6.
            let gap = relative_gap(&e, &t);
            assert!(gap <= NEAR_TIE / 8.0, "{name} row {k}: engine and tract differ by {gap:e}");
            // One sample alone gives the same bits as in the batch.
            let alone = model.verdict_logits(&x.slice_axis(Axis(0), (k..k + 1).into()).to_owned()).unwrap();
            assert_eq!(bits(&alone), v.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), "{name} row {k}");
        }
    }
}

/// The linear model of `tiny_classifier`: logits
/// z0 = 0.5a + b − 0.25c + 2d + 0.1 and z1 = −0.5a − b + 0.25c − 0.1 for the
/// image [a, b, c, d]. a = b = c = 0 and d = −0.1 + δ give z0 − z1 = 2δ
/// (relative to max(1, |z|) = 1): a tie at δ = 0, clear of NEAR_TIE at δ = 0.01.
#[test]
fn a_near_tie_is_decided_by_tract() {
    let dir = tempfile::tempdir().unwrap();
    let model = Classifier::load(&write(dir.path(), "tiny.onnx", &tiny_classifier(None))).unwrap();
    let x = |d: f32| ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![0.0, 0.0, 0.0, d]).unwrap();
    for (delta, tie) in [(0.0f32, true), (1e-4, true), (-1e-4, true), (0.01, false), (-0.01, false)] {
        let xi = x(-0.1 + delta);
        let engine = model.verdict_logits_within(&xi, 0.0).unwrap();
        assert_eq!(is_near_tie(&engine.row(0).to_vec(), NEAR_TIE), tie, "δ = {delta}: {engine:?}");
        let verdict = model.verdict_logits(&xi).unwrap();
        let tract = model.session().unwrap().logits(xi.clone()).unwrap();
        assert_eq!(bits(&verdict), bits(if tie { &tract } else { &engine }), "δ = {delta}");
        if delta != 0.0 {
            assert_eq!(argmax(&verdict.row(0).to_vec()), if delta > 0.0 { 0 } else { 1 }, "δ = {delta}");
        }
    }
}
