//! Whole-model input gradients against PyTorch autograd on the same ONNX
//! file. The references in `fixtures/grad_ref/` come from
//! `models/make_grad_reference.py` (onnx2torch, float64 autograd, the final
//! Softmax removed so the loss is on the logits, as advscan does).
//!
//! Tolerances, and why:
//! - advscan's f64 engine against the f64 reference: relative L2 error
//!   ≤ 1e-8. Same maths in the same precision; only summation order differs
//!   (≈1e-15 per operation, compounded over ~10⁴-term sums and a few layers).
//! - advscan's f32 engine (the one attacks use) against the f64 reference:
//!   relative L2 error ≤ 1e-4 and cosine similarity ≥ 0.9999. f32 rounding
//!   (≈6e-8) accumulated over sums of up to ~10⁴ terms and ~20 layers gives
//!   ~1e-6–1e-5; 1e-4 leaves a margin while a wrong rule (a missing term,
//!   a transposed kernel) gives errors of order 1e-1 or more.
//! - Logits from tract and from our f32 forward against the reference: ≤ 1e-4
//!   absolute on logits of magnitude ≲ 10, for the same reason.

mod common;

use advscan::model::Classifier;
use advscan::model::grad::{Engine, Loss, LossKind};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn references() -> Vec<(String, Value)> {
    let dir = common::repo().join("fixtures/grad_ref");
    let mut refs: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures/grad_ref exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.display().to_string(), serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()))
        .collect();
    refs.sort_by(|a, b| a.0.cmp(&b.0));
    refs
}

#[test]
fn every_committed_model_has_a_reference() {
    let refs = references();
    for entry in std::fs::read_dir(common::repo().join("models")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "onnx") {
            let rel = format!("models/{}", p.file_name().unwrap().to_string_lossy());
            assert!(refs.iter().any(|(_, r)| r["model"] == rel.as_str()), "{rel} has no fixtures/grad_ref entry");
        }
    }
}

const LOSSES: [(&str, LossKind, bool, &str); 3] = [
    ("grad_ce", LossKind::CrossEntropy, false, "label"),
    ("grad_margin", LossKind::Margin, false, "label"),
    ("grad_ce_targeted", LossKind::CrossEntropy, true, "target"),
];

#[test]
fn gradients_match_pytorch_autograd() {
    for (file, r) in references() {
        let model_path = common::repo().join(r["model"].as_str().unwrap());
        let model = Classifier::load(&model_path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            model.sha256(),
            r["model_sha256"].as_str().unwrap(),
            "{file} is stale: rerun models/make_grad_reference.py"
        );
        assert_eq!(model.softmax_stripped(), r["softmax_stripped"].as_bool().unwrap(), "{file}");
        let engine64 = Engine::<f64>::new(model.graph()).unwrap();
        let mut session = model.session().unwrap();
        let (mut worst32, mut worst64) = (0f64, 0f64);
        for case in r["cases"].as_array().unwrap() {
            let name = format!("{file} / {}", case["name"].as_str().unwrap());
            let shape: Vec<usize> =
                case["input_shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            let x64 = ArrayD::from_shape_vec(IxDyn(&shape), floats(&case["input"])).unwrap();
            let x32 = x64.mapv(|v| v as f32);
            let ref_logits = floats(&case["logits"]);

            let tract_logits: Vec<f64> = session.logits(x32.clone()).unwrap().iter().map(|&v| v as f64).collect();
            for (a, b) in tract_logits.iter().zip(&ref_logits) {
                assert!((a - b).abs() <= 1e-4, "{name}: tract logit {a} vs reference {b}");
            }
            for (key, kind, targeted, class_key) in LOSSES {
                let class = case[class_key].as_u64().unwrap() as usize;
                let loss = Loss { kind, targeted };
                let reference = floats(&case[key]);

                let g64 = engine64.loss_and_grad(x64.clone(), &[class], loss).unwrap();
                let e64 = rel_l2(&g64.grad.iter().copied().collect::<Vec<_>>(), &reference);
                assert!(e64 <= 1e-8, "{name} {key}: f64 engine relative error {e64:e}");
                let loss_key = key.replace("grad_", "loss_");
                let ref_loss = case[&loss_key].as_f64().unwrap();
                assert!((g64.losses[0] - ref_loss).abs() <= 1e-9 * (1.0 + ref_loss.abs()), "{name} {loss_key}");

                let g32 = model.loss_and_grad(x32.clone(), &[class], loss).unwrap();
                let ours: Vec<f64> = g32.grad.iter().map(|&v| v as f64).collect();
                let e32 = rel_l2(&ours, &reference);
                let cos = cosine(&ours, &reference);
                worst32 = worst32.max(e32);
                worst64 = worst64.max(e64);
                assert!(e32 <= 1e-4 && cos >= 0.9999, "{name} {key}: f32 engine relative error {e32:e}, cosine {cos}");
                for (a, b) in g32.logits.iter().zip(&ref_logits) {
                    assert!((*a as f64 - b).abs() <= 1e-4, "{name}: engine logit {a} vs reference {b}");
                }
            }
        }
        eprintln!("{file}: worst relative L2 error f32 {worst32:.2e}, f64 {worst64:.2e}");
    }
}

/// Per-sample losses are summed, so a sample's gradient must not depend on
/// the other samples in its batch: one batch of all cases gives the same
/// gradients as each case alone (up to f32 summation order in batched GEMMs).
#[test]
fn a_samples_gradient_does_not_depend_on_its_batch() {
    for (file, r) in references() {
        let model = Classifier::load(&common::repo().join(r["model"].as_str().unwrap())).unwrap();
        let cases = r["cases"].as_array().unwrap();
        let sample: Vec<usize> = model.sample_shape().to_vec();
        let mut batch_shape = vec![cases.len()];
        batch_shape.extend(&sample);
        let data: Vec<f32> = cases.iter().flat_map(|c| floats(&c["input"])).map(|v| v as f32).collect();
        let batch = ArrayD::from_shape_vec(IxDyn(&batch_shape), data).unwrap();
        let labels: Vec<usize> = cases.iter().map(|c| c["label"].as_u64().unwrap() as usize).collect();
        let together = model.loss_and_grad(batch.clone(), &labels, Loss::CE).unwrap();
        for (i, &label) in labels.iter().enumerate() {
            let one = batch.slice_axis(ndarray::Axis(0), (i..i + 1).into()).to_owned();
            let alone = model.loss_and_grad(one, &[label], Loss::CE).unwrap();
            let a: Vec<f64> = alone.grad.iter().map(|&v| v as f64).collect();
            let b: Vec<f64> = together.grad.index_axis(ndarray::Axis(0), i).iter().map(|&v| v as f64).collect();
            let e = rel_l2(&b, &a);
            assert!(e <= 1e-5, "{file} case {i}: batched vs alone relative difference {e:e}");
        }
    }
}
