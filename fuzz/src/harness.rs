//! What each fuzz target does with its bytes, shared by the cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`) and the stable regression test
//! (`tests/fuzz_regressions.rs`, which includes this file by path), so a
//! crash input replays through exactly the code that found it.
//!
//! Each entry point runs the bytes through the library the way `advscan
//! attack` / `advscan inspect` would, and checks invariants the run path
//! relies on. A clean `Err` is a correct answer to bad bytes; a panic (ours,
//! or an invariant below) is a bug. Panics that the library itself contains
//! with `catch_unwind` (the DICOM decoder, tract's tensor loader) are
//! recorded by [`PanicWatch`]: a contained panic raised in advscan's own code
//! is still a bug (the `catch_unwind` hides it, it does not excuse it) and is
//! re-raised; one raised inside a dependency is what the containment is for
//! and is only counted.

use std::cell::RefCell;
use std::path::Path;
use std::sync::OnceLock;

use advscan::config::ModelConfig;
use advscan::preprocess::{Pipeline, PipelineSpec, ResizeFilter};
use advscan::scan::Scan;
use ndarray::Axis;

/// Pixel budget for the fuzzed decoders (rows × columns × frames): far above
/// the tiny seeds, small enough that a header claiming a huge image is
/// refused and the fuzzer spends its time on parsing, not allocating.
pub const MAX_PIXELS: u64 = 4_000_000;

/// The CT model's config (lung window in HU, bilinear to 64×64, one channel,
/// mean 0.5 std 0.5): the preprocessing the committed CT demo really runs.
const CT_CONFIG: &str = include_str!("../../models/ct_nodule_cnn.model.toml");

fn ct_config() -> &'static ModelConfig {
    static CONFIG: OnceLock<ModelConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        ModelConfig::parse(CT_CONFIG, Path::new("models/ct_nodule_cnn.model.toml"))
            .expect("the committed CT model config parses")
    })
}

/// Defaults (no window, so a greyscale DICOM uses its own VOI window).
fn default_config() -> &'static ModelConfig {
    static CONFIG: OnceLock<ModelConfig> = OnceLock::new();
    CONFIG.get_or_init(ModelConfig::default)
}

thread_local! {
    /// Panics raised on this thread since the last [`PanicWatch::take`]:
    /// (source location, message).
    static PANICS: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

/// Records panics instead of printing (or, under libFuzzer, aborting) at the
/// panic site, so that panics the library contains can be classified.
/// Uncontained panics still unwind to the caller: libfuzzer-sys turns them
/// into a crash, the test harness into a failure.
pub struct PanicWatch;

impl PanicWatch {
    /// Replaces the process's panic hook (once).
    pub fn install() {
        static ONCE: OnceLock<()> = OnceLock::new();
        ONCE.get_or_init(|| {
            std::panic::set_hook(Box::new(|info| {
                let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                // Print each panic site once: whether this panic is
                // contained is only known after it unwinds, and a
                // dependency's contained panic may repeat on every input.
                static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
                if let Ok(mut seen) = SEEN.lock()
                    && !seen.contains(&location)
                {
                    seen.push(location.clone());
                    eprintln!("panic at {location}: {message}");
                }
                PANICS.with(|p| p.borrow_mut().push((location, message)));
            }));
        });
    }

    fn take() -> Vec<(String, String)> {
        PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()))
    }

    /// True for a source location inside a dependency or the standard
    /// library (crates.io sources live under `~/.cargo/registry`, std under
    /// `/rustc/<hash>`); anything else is advscan's own code.
    fn in_dependency(location: &str) -> bool {
        location.contains("/.cargo/registry/") || location.contains("/.cargo/git/") || location.starts_with("/rustc/")
    }

    /// After an entry point returned: re-raises a contained panic from
    /// advscan's own code; returns how many contained panics came from
    /// dependencies.
    pub fn check() -> usize {
        let panics = PanicWatch::take();
        if let Some((location, message)) = panics.iter().find(|(l, _)| !PanicWatch::in_dependency(l)) {
            panic!("advscan code panicked at {location} (contained by catch_unwind, still a bug): {message}");
        }
        panics.len()
    }
}

/// What one input produced, for the regression test to report.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Scans (frames) decoded, or the error text.
    pub decoded: Result<usize, String>,
    /// Model inputs computed (scan × pipeline pairs the run path accepts).
    pub samples: usize,
    /// Panics raised inside dependencies and contained by the library.
    pub contained_panics: usize,
}

impl Default for Outcome {
    fn default() -> Outcome {
        Outcome { decoded: Err("not decoded".into()), samples: 0, contained_panics: 0 }
    }
}

/// The model input of one scan under `config` at `dst`, as `run.rs` builds
/// it (spec from the scan's intensity, `Pipeline::new` refusing what it
/// cannot honour), with the invariants the attack relies on checked.
/// Returns whether the pipeline accepted the scan.
fn preprocess(scan: &Scan, config: &ModelConfig, dst: [usize; 3], filter: ResizeFilter) -> bool {
    let shape = scan.data.shape();
    assert_eq!(shape.len(), 3, "a scan is C × H × W");
    assert!(matches!(shape[0], 1 | 3), "a scan has 1 or 3 channels, got {shape:?}");
    assert!((shape[1] * shape[2]) as u64 <= MAX_PIXELS, "scan {shape:?} is over the pixel limit");
    let intensity = &scan.intensity;
    assert!(
        intensity.unit_scale.is_finite() && intensity.unit_scale > 0.0,
        "unit scale {} must be a positive number",
        intensity.unit_scale
    );
    // The arithmetic the attack and the writer apply to every pixel must
    // not panic, whatever the file declared.
    let (lo, hi) = intensity.bounds();
    for &v in [lo, hi, 0.0, 0.5, 1.0, f32::NAN].iter() {
        let q = intensity.quantize(v);
        let _ = intensity.quantize_within(q, q, 2.0 / 255.0);
        let _ = intensity.stored(v);
    }
    let (mean, std) = config.mean_std();
    let mean = if mean.len() == 1 || mean.len() == dst[0] { mean } else { vec![mean[0]] };
    let std = if std.len() == 1 || std.len() == dst[0] { std } else { vec![std[0]] };
    let spec = PipelineSpec {
        src: [shape[0], shape[1], shape[2]],
        offset: intensity.offset(),
        invert: intensity.invert,
        clip: intensity.window_clips(),
        dst,
        filter,
        mean: mean.clone(),
        std: std.clone(),
    };
    let Ok(pipeline) = Pipeline::new(spec) else { return false };
    let x = scan.data.clone().insert_axis(Axis(0)).into_dyn();
    pipeline.check_input(x.shape()).expect("a scan's own shape is the pipeline's input shape");
    let y = pipeline.forward(&x);
    assert_eq!(y.shape(), &pipeline.output_shape(1), "model input shape");
    // Window → [0, 1]; resize and channel mixing are convex combinations;
    // so every model input lies in [(0 − mean)/std, (1 − mean)/std].
    for (k, v) in y.iter().enumerate() {
        let c = k / (dst[1] * dst[2]);
        let (m, s) = (mean[c.min(mean.len() - 1)], std[c.min(std.len() - 1)]);
        let (a, b) = ((0.0 - m) / s, (1.0 - m) / s);
        let tol = 1e-4 * (a.abs() + b.abs() + 1.0);
        assert!(
            *v >= a.min(b) - tol && *v <= a.max(b) + tol,
            "model input {v} outside [{a}, {b}] (offset {}, invert {}, unit scale {}, data range {:?})",
            intensity.offset(),
            intensity.invert,
            intensity.unit_scale,
            scan.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x))),
        );
    }
    true
}

/// DICOM bytes → advscan's DICOM decoder → scans under the CT model config
/// and under defaults (the file's own VOI window) → a 1×64×64 model input.
/// (A window starting at exactly 0 once went unclipped: found here, fixed by
/// `PipelineSpec::clip`.)
pub fn dicom_to_sample(data: &[u8]) -> Outcome {
    PanicWatch::install();
    let path = Path::new("fuzz-input.dcm");
    let mut outcome = Outcome::default();
    let image = advscan::io::dicom::decode_bytes(data, path, MAX_PIXELS);
    outcome.contained_panics += PanicWatch::check();
    let image = match image {
        Ok(image) => image,
        Err(e) => {
            outcome.decoded = Err(e.to_string());
            return outcome;
        }
    };
    assert!(!image.frames.is_empty(), "a decoded DICOM has at least one frame");
    let mut decoded = Err(String::new());
    for config in [ct_config(), default_config()] {
        match advscan::scan::from_dicom(image.clone(), config) {
            Ok(scans) => {
                decoded = Ok(scans.len());
                for scan in &scans {
                    // The CT config's own preprocessing; the defaults'
                    // preprocessing at the CT model's size.
                    outcome.samples += usize::from(preprocess(scan, config, [1, 64, 64], config.resize()));
                }
            }
            Err(e) => {
                if decoded.is_err() {
                    decoded = Err(e.to_string());
                }
            }
        }
    }
    outcome.decoded = decoded;
    outcome.contained_panics += PanicWatch::check();
    outcome
}

/// PNG (or JPEG: the content decides) bytes → scan → the CT model's 1×64×64
/// input (bilinear, mean/std 0.5) and a 3×32×32 RGB input (area resize,
/// ImageNet normalisation), covering both channel conversions.
pub fn png_to_sample(data: &[u8]) -> Outcome {
    PanicWatch::install();
    let mut outcome = Outcome::default();
    let scans = advscan::scan::decode_bytes(data, Path::new("fuzz-input.png"), MAX_PIXELS, ct_config());
    outcome.contained_panics += PanicWatch::check();
    let scans = match scans {
        Ok(scans) => scans,
        Err(e) => {
            outcome.decoded = Err(e.to_string());
            return outcome;
        }
    };
    outcome.decoded = Ok(scans.len());
    let imagenet = ModelConfig::parse(
        "[normalize]\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n",
        Path::new("imagenet.model.toml"),
    )
    .expect("the ImageNet config parses");
    for scan in &scans {
        outcome.samples += usize::from(preprocess(scan, ct_config(), [1, 64, 64], ResizeFilter::Bilinear));
        outcome.samples += usize::from(preprocess(scan, &imagenet, [3, 32, 32], ResizeFilter::Area));
    }
    outcome.contained_panics += PanicWatch::check();
    outcome
}

/// ONNX bytes → what `advscan inspect` does: parse, check the graph, build
/// tract's optimised plan and the gradient engine, resolve the config, render
/// text and JSON. The model is named inside a directory that does not exist,
/// so no config file or external tensor data is ever found beside it.
pub fn onnx_inspect(data: &[u8]) -> Outcome {
    PanicWatch::install();
    let path = Path::new("/nonexistent-advscan-fuzz/model.onnx");
    let mut outcome = Outcome::default();
    let result = advscan::inspect::inspect_bytes(data, path, None);
    outcome.contained_panics += PanicWatch::check();
    match result {
        Ok(inspection) => {
            let _ = inspection.to_text();
            serde_json::to_string(&inspection).expect("an inspection serialises");
            outcome.decoded = Ok(inspection.nodes);
        }
        Err(e) => outcome.decoded = Err(e.to_string()),
    }
    outcome
}
