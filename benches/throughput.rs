//! Throughput of the kernels an attack is made of, per model, at batch
//! 1 and 16, on 1 and 2 threads:
//! - `forward`: tract's optimised plan (`Classifier::logits`), the reference
//!   runtime (issue 6's target: forward + backward ≤ 2× this);
//! - `verdict`: `Classifier::verdict_logits`, the predictions every attack
//!   and evaluation makes (our engine's forward pass, one sample at a time,
//!   tract at near-ties);
//! - `forward_backward`: our engine's forward pass plus the exact reverse pass
//!   for the cross-entropy loss (`Classifier::loss_and_grad`);
//! - `pgd_step`: one L∞ PGD step as the attack runs it (`Pgd::run` with
//!   `steps = 1`, no random start: gradient, sign, step, projection onto the
//!   ε-ball and [0, 1], and the budget check every attack result passes).
//!
//! Models: every committed `models/*.onnx` at its own input size, plus a
//! ResNet-18-shaped 224×224×3 classifier when one is found: the path in
//! `ADVSCAN_BENCH_RESNET18`, else `target/bench-models/resnet18_224.onnx`,
//! which `benches/peer/speed.py` writes (random weights; 45 MB, so it is not
//! committed). Without it the ResNet-18 cases are skipped with a message.
//!
//! Each iteration processes `IMAGES` (32) synthetic images (a smooth
//! deterministic pattern in [0, 1]; no data files), so divan's items/s is
//! images/s. Batch *b*: the images go through in chunks of *b*; threads *t*:
//! the size of the rayon pool, chunks spread over its workers. Every bench
//! stops after `MAX_SECONDS` even if it has fewer than 20 samples, which
//! keeps the ResNet-18 cases (about a second an iteration) and so the
//! whole suite to a few minutes.
//!
//! Run: `cargo bench --bench throughput`; figures go in benches/README.md.

use advscan::attack::pgd::Pgd;
use advscan::attack::{Attack, Budget, Norm, sample_rng};
use advscan::model::Classifier;
use advscan::model::grad::Loss;
use divan::counter::ItemsCount;
use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// The binary's allocator (src/main.rs), so that these figures are what `advscan attack` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Per-bench time cap in seconds (divan's `max_time`).
const MAX_SECONDS: u64 = 4;

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
    "ct_nodule_cnn/b1/t1",
    "ct_nodule_cnn/b16/t1",
    "ct_nodule_cnn/b1/t2",
    "ct_nodule_cnn/b16/t2",
    "resnet18_224/b1/t1",
    "resnet18_224/b16/t1",
    "resnet18_224/b1/t2",
    "resnet18_224/b16/t2",
];

const RESNET18: &str = "resnet18_224";

/// Images per iteration: two chunks of 16, so batch 16 keeps both workers
/// busy at t2 (on ResNet-18 too, where that is about a second per iteration).
const IMAGES: usize = 32;

fn model_path(name: &str) -> Option<PathBuf> {
    if name != RESNET18 {
        return Some(PathBuf::from(format!("{}/models/{name}.onnx", env!("CARGO_MANIFEST_DIR"))));
    }
    let path = std::env::var_os("ADVSCAN_BENCH_RESNET18").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(format!("{}/target/bench-models/resnet18_224.onnx", env!("CARGO_MANIFEST_DIR")))
    });
    if path.exists() {
        Some(path)
    } else {
        static SAID: OnceLock<()> = OnceLock::new();
        SAID.get_or_init(|| {
            eprintln!(
                "skipping {RESNET18}: {} not found (run benches/peer/speed.py once, or set ADVSCAN_BENCH_RESNET18)",
                path.display()
            )
        });
        None
    }
}

fn model(name: &str) -> Option<&'static Classifier> {
    static MODELS: OnceLock<Mutex<HashMap<String, Option<&'static Classifier>>>> = OnceLock::new();
    let mut map = MODELS.get_or_init(Default::default).lock().unwrap();
    *map.entry(name.to_string()).or_insert_with(|| {
        let path = model_path(name)?;
        let loaded = Classifier::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Some(Box::leak(Box::new(loaded)))
    })
}

struct Setup {
    model: &'static Classifier,
    images: ArrayD<f32>,
    n: usize,
    batch: usize,
    pool: rayon::ThreadPool,
}

impl Setup {
    /// Start index of every chunk of `batch` images.
    fn starts(&self) -> Vec<usize> {
        (0..self.n).step_by(self.batch).collect()
    }

    fn chunk(&self, start: usize) -> ArrayD<f32> {
        let end = (start + self.batch).min(self.n);
        self.images.slice_axis(Axis(0), (start..end).into()).to_owned()
    }
}

/// `None` (the bench is skipped) when the model is absent: only ResNet-18 may be.
fn setup(case: &str) -> Option<Setup> {
    let parts: Vec<&str> = case.split('/').collect();
    let model = model(parts[0])?;
    let batch: usize = parts[1][1..].parse().unwrap();
    let threads: usize = parts[2][1..].parse().unwrap();
    let n = IMAGES;
    let mut shape = vec![n];
    shape.extend(model.sample_shape());
    let len: usize = shape.iter().product();
    let images =
        ArrayD::from_shape_vec(IxDyn(&shape), (0..len).map(|i| ((i as f32 * 0.37).sin() + 1.0) / 2.0).collect())
            .unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    Some(Setup { model, images, n, batch, pool })
}

#[divan::bench(args = CASES, sample_count = 20, max_time = MAX_SECONDS)]
fn forward(bencher: divan::Bencher, case: &str) {
    let Some(s) = setup(case) else { return };
    bencher.counter(ItemsCount::new(s.n)).bench(|| s.pool.install(|| s.model.logits(&s.images, s.batch).unwrap()));
}

#[divan::bench(args = CASES, sample_count = 20, max_time = MAX_SECONDS)]
fn verdict(bencher: divan::Bencher, case: &str) {
    let Some(s) = setup(case) else { return };
    let starts = s.starts();
    bencher.counter(ItemsCount::new(s.n)).bench(|| {
        s.pool.install(|| starts.par_iter().map(|&i| s.model.verdict_logits(&s.chunk(i)).unwrap().sum()).sum::<f32>())
    });
}

#[divan::bench(args = CASES, sample_count = 20, max_time = MAX_SECONDS)]
fn forward_backward(bencher: divan::Bencher, case: &str) {
    let Some(s) = setup(case) else { return };
    let starts = s.starts();
    bencher.counter(ItemsCount::new(s.n)).bench(|| {
        s.pool.install(|| {
            starts
                .par_iter()
                .map(|&i| {
                    let x = s.chunk(i);
                    let m = x.shape()[0];
                    s.model.loss_and_grad(x, &vec![1; m], Loss::CE).unwrap().grad.sum()
                })
                .sum::<f32>()
        })
    });
}

#[divan::bench(args = CASES, sample_count = 20, max_time = MAX_SECONDS)]
fn pgd_step(bencher: divan::Bencher, case: &str) {
    let Some(s) = setup(case) else { return };
    let starts = s.starts();
    let budget = Budget { steps: 1, random_start: false, ..Budget::new(Norm::Linf, 8.0 / 255.0) };
    bencher.counter(ItemsCount::new(s.n)).bench(|| {
        s.pool.install(|| {
            starts
                .par_iter()
                .map(|&i| {
                    let x = s.chunk(i);
                    let m = x.shape()[0];
                    // No random start: the generators are required but never drawn from.
                    let mut rngs: Vec<_> = (0..m).map(|k| sample_rng(0, &format!("{}", i + k))).collect();
                    Pgd.run(s.model, &x, &vec![1; m], &mut rngs, &budget).unwrap().sum()
                })
                .sum::<f32>()
        })
    });
}

fn main() {
    divan::main();
}
