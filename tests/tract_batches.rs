//! tract runs a model in batches of the size its plan was built for: the
//! model's own fixed batch (a short last chunk zero-padded) or 1 when the
//! batch axis is symbolic (`model::onnx::build_plan`). Either way every
//! sample gets its own logits, whatever the number of samples asked for.

mod common;
use advscan::model::Classifier;
use common::*;
use ndarray::{ArrayD, IxDyn};

/// `tiny_classifier`'s linear model (flatten → Gemm with W [4, 2], B [2])
/// with the batch axis fixed at `batch`, or symbolic when it is negative.
fn classifier(batch: i64) -> Vec<u8> {
    let w = float_tensor("W", &[4, 2], &[0.5, -0.5, 1.0, -1.0, -0.25, 0.25, 2.0, 0.0]);
    let b = float_tensor("B", &[2], &[0.1, -0.1]);
    model_bytes(
        vec![value_info("image", FLOAT, &[batch, 1, 2, 2])],
        vec![value_info("logits", FLOAT, &[batch, 2])],
        vec![node("Flatten", &["image"], &["flat"]), node("Gemm", &["flat", "W", "B"], &["logits"])],
        vec![w, b],
        13,
    )
}

#[test]
fn every_sample_gets_its_own_logits_for_any_count_and_plan_batch() {
    let dir = tempfile::tempdir().unwrap();
    let w = [0.5f32, -0.5, 1.0, -1.0, -0.25, 0.25, 2.0, 0.0];
    for batch in [-1, 1, 4] {
        let path = write(dir.path(), &format!("batch_{batch}.onnx"), &classifier(batch));
        let model = Classifier::load(&path).unwrap();
        // 1 … 9 samples: fewer than, exactly and more than a fixed batch of 4, with a short last chunk.
        for n in [1usize, 2, 4, 5, 9] {
            let x = ArrayD::from_shape_fn(IxDyn(&[n, 1, 2, 2]), |i| (i[0] * 4 + i[2] * 2 + i[3]) as f32 * 0.25 - 1.0);
            let got = model.session().unwrap().logits(x.clone()).unwrap();
            assert_eq!(got.dim(), (n, 2), "batch {batch}, {n} samples");
            for s in 0..n {
                let flat: Vec<f32> = x.index_axis(ndarray::Axis(0), s).iter().copied().collect();
                for (j, bias) in [0.1f32, -0.1].iter().enumerate() {
                    let want: f32 = (0..4).map(|k| flat[k] * w[k * 2 + j]).sum::<f32>() + bias;
                    // Four products of quarter-steps and small weights: tract's
                    // summation order can differ from ours by a rounding step.
                    assert!(
                        (got[[s, j]] - want).abs() < 1e-5,
                        "batch {batch}, {n} samples, row {s}: {} vs {want}",
                        got[[s, j]]
                    );
                }
            }
        }
    }
}

/// Verdicts on a model whose batch is fixed at 4 are tract's own (the
/// engine runs the samples asked for, which such a model does not accept);
/// on a symbolic or batch-1 model, the engine's where clear of a tie. Either
/// way every sample gets its logits, for any count.
#[test]
fn verdicts_run_on_every_plan_batch() {
    let dir = tempfile::tempdir().unwrap();
    for batch in [-1, 1, 4] {
        let path = write(dir.path(), &format!("batch_{batch}.onnx"), &classifier(batch));
        let model = Classifier::load(&path).unwrap();
        for n in [1usize, 5] {
            let x = ArrayD::from_shape_fn(IxDyn(&[n, 1, 2, 2]), |i| (i[0] * 4 + i[2] * 2 + i[3]) as f32 * 0.25 - 1.0);
            let verdict = model.verdict_logits(&x).unwrap_or_else(|e| panic!("batch {batch}, {n} samples: {e}"));
            let tract = model.session().unwrap().logits(x.clone()).unwrap();
            assert_eq!(verdict.dim(), (n, 2), "batch {batch}, {n} samples");
            if batch == 4 {
                assert_eq!(verdict, tract, "batch 4: tract's own");
            }
            // A linear model of quarter-steps: the two runtimes agree to rounding.
            for (v, t) in verdict.iter().zip(&tract) {
                assert!((v - t).abs() < 1e-5, "batch {batch}, {n} samples: {v} vs {t}");
            }
        }
    }
}
