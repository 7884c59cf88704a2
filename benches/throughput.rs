//! Forward (tract) and forward + backward (our engine) throughput for each
//! committed model, at batch 1 and 16, on 1 and 2 threads. Each iteration
//! processes 32 images, so divan's items/s is images/s.
//! Run: `cargo bench --bench throughput`; figures go in benches/README.md.

use advscan::model::Classifier;
use advscan::model::grad::Loss;
use divan::counter::ItemsCount;
use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

const IMAGES: usize = 32;
const CASES: &[&str] = &[
    "pneumonia_cnn/b1/t1",
    "pneumonia_cnn/b16/t1",
    "pneumonia_cnn/b1/t2",
    "pneumonia_cnn/b16/t2",
    "pneumonia_resnet/b1/t1",
    "pneumonia_resnet/b16/t1",
    "pneumonia_resnet/b1/t2",
    "pneumonia_resnet/b16/t2",
    "pneumonia_mixed_ops/b1/t1",
    "pneumonia_mixed_ops/b16/t1",
    "pneumonia_mixed_ops/b1/t2",
    "pneumonia_mixed_ops/b16/t2",
];

struct Setup {
    model: &'static Classifier,
    images: ArrayD<f32>,
    batch: usize,
    pool: rayon::ThreadPool,
}

fn model(name: &str) -> &'static Classifier {
    static MODELS: OnceLock<Mutex<HashMap<String, &'static Classifier>>> = OnceLock::new();
    let mut map = MODELS.get_or_init(Default::default).lock().unwrap();
    map.entry(name.to_string()).or_insert_with(|| {
        let path = format!("{}/models/{name}.onnx", env!("CARGO_MANIFEST_DIR"));
        Box::leak(Box::new(Classifier::load(path.as_ref()).expect("committed model loads")))
    })
}

fn setup(case: &str) -> Setup {
    let parts: Vec<&str> = case.split('/').collect();
    let model = model(parts[0]);
    let batch: usize = parts[1][1..].parse().unwrap();
    let threads: usize = parts[2][1..].parse().unwrap();
    let mut shape = vec![IMAGES];
    shape.extend(model.sample_shape());
    // A smooth deterministic pattern in [0, 1]: no data files needed.
    let n: usize = shape.iter().product();
    let images =
        ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|i| ((i as f32 * 0.37).sin() + 1.0) / 2.0).collect()).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    Setup { model, images, batch, pool }
}

#[divan::bench(args = CASES, sample_count = 20)]
fn forward(bencher: divan::Bencher, case: &str) {
    let s = setup(case);
    bencher.counter(ItemsCount::new(IMAGES)).bench(|| s.pool.install(|| s.model.logits(&s.images, s.batch).unwrap()));
}

#[divan::bench(args = CASES, sample_count = 20)]
fn forward_backward(bencher: divan::Bencher, case: &str) {
    let s = setup(case);
    let starts: Vec<usize> = (0..IMAGES).step_by(s.batch).collect();
    bencher.counter(ItemsCount::new(IMAGES)).bench(|| {
        s.pool.install(|| {
            starts
                .par_iter()
                .map(|&i| {
                    let end = (i + s.batch).min(IMAGES);
                    let x = s.images.slice_axis(Axis(0), (i..end).into()).to_owned();
                    s.model.loss_and_grad(x, &vec![1; end - i], Loss::CE).unwrap().grad.sum()
                })
                .sum::<f32>()
        })
    });
}

fn main() {
    divan::main();
}
