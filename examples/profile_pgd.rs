//! Profiling harness for issue 6: runs PGD-10 (L∞, ε = 8/255, no random
//! start) on `COUNT` synthetic images of one model, one image per attack
//! call as `advscan attack` does at its default batch size, and prints the
//! attack's images/s. Also times tract's forward (`Classifier::logits`)
//! and one `loss_and_grad` (our forward + backward) per image, so the
//! backward-to-forward cost ratio can be read off.
//!
//! ```sh
//! cargo run --release --example profile_pgd -- MODEL.onnx [COUNT] [THREADS] [BATCH] [MODE]
//! ```
//!
//! MODE is `all` (default), `pgd` (only the attack: what callgrind should
//! measure), `grad` (only loss_and_grad) or `fwd` (only tract's forward).
//! THREADS sizes the rayon pool (default 1); samples are spread over it in
//! chunks of BATCH, one independent attack per chunk, as `run.rs` does.
//! Images are deterministic pseudo-random pixels in [0, 1]; labels are 0.

use advscan::attack::{Attack, Budget, Loss, Norm, Objective, pgd::Pgd, sample_rng};
use advscan::model::Classifier;
use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;
use std::time::Instant;

/// The binary's allocator (src/main.rs), so that this measures what `advscan attack` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: profile_pgd MODEL.onnx [COUNT] [THREADS] [BATCH] [MODE]")?;
    let count: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let threads: usize = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let batch: usize = args.get(4).map_or(Ok(1), |s| s.parse())?;
    let mode = args.get(5).map_or("all", String::as_str);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;

    let model = Classifier::load(std::path::Path::new(path))?;
    let mut shape = vec![count];
    shape.extend_from_slice(model.sample_shape());
    // A fixed linear congruential fill: the same images on every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    let x = ArrayD::from_shape_vec(IxDyn(&shape), data)?;
    let starts: Vec<usize> = (0..count).step_by(batch.max(1)).collect();
    let chunk = |s: usize| x.slice_axis(Axis(0), (s..(s + batch).min(count)).into()).to_owned();
    println!("model {path}: {count} images of {:?}, {threads} thread(s), batch {batch}", model.sample_shape());

    if mode == "all" || mode == "fwd" {
        let t = Instant::now();
        pool.install(|| {
            starts.par_iter().try_for_each(|&s| model.session().and_then(|mut ss| ss.logits(chunk(s))).map(|_| ()))
        })?;
        let dt = t.elapsed().as_secs_f64();
        println!("forward (tract)        {:>9.1} img/s  {:>8.3} ms/img", count as f64 / dt, dt * 1e3 / count as f64);
    }
    if mode == "all" || mode == "grad" {
        let t = Instant::now();
        pool.install(|| {
            starts.par_iter().try_for_each(|&s| {
                let c = chunk(s);
                let classes = vec![0; c.shape()[0]];
                model.loss_and_grad(c, &classes, Loss::CE).map(|_| ())
            })
        })?;
        let dt = t.elapsed().as_secs_f64();
        println!("loss_and_grad (engine) {:>9.1} img/s  {:>8.3} ms/img", count as f64 / dt, dt * 1e3 / count as f64);
    }
    if mode == "all" || mode == "pgd" {
        let mut budget = Budget::new(Norm::Linf, 8.0 / 255.0);
        budget.random_start = false;
        let t = Instant::now();
        pool.install(|| {
            starts.par_iter().try_for_each(|&s| {
                let c = chunk(s);
                let n = c.shape()[0];
                let classes = vec![0; n];
                let mut rngs: Vec<_> = (0..n).map(|i| sample_rng(0, &format!("{}", s + i))).collect();
                let objective: &dyn Objective = &model;
                Pgd.run(objective, &c, &classes, &mut rngs, &budget).map(|_| ())
            })
        })?;
        let dt = t.elapsed().as_secs_f64();
        println!("PGD-10                 {:>9.1} img/s  {:>8.3} ms/img", count as f64 / dt, dt * 1e3 / count as f64);
    }
    Ok(())
}
