//! advscan's DICOM decoder against pydicom on pydicom's own test files (~170
//! files shipped inside the pydicom package: every transfer syntax, signed and
//! unsigned, multi-frame, colour, broken files). `tests/support/
//! pydicom_reference.py` writes what pydicom makes of each file (the array
//! after `apply_modality_lut`, or the error); this test decodes the same files
//! with `advscan::io::dicom::decode` and compares.
//!
//! Rules: no file may panic. Where both decode, shapes must be equal, and
//! values must be equal exactly (pydicom's f64 cast to f32) for lossless
//! transfer syntaxes. Lossy ones (JPEG baseline/extended, JPEG-LS
//! near-lossless, JPEG 2000) may differ by [`LOSSY_MAX_ABS_LEVELS`] stored
//! levels at most and [`LOSSY_MEAN_ABS_LEVELS`] on average: the standards fix
//! the bitstream, not the inverse transform's arithmetic, so two conforming
//! decoders (jpeg-decoder/openjp2/CharLS here, libjpeg/openjpeg in pydicom)
//! round differently. Every other deviation (a file pydicom decodes that
//! advscan refuses or decodes differently) must be listed in [`KNOWN`] with its
//! reason, and at least [`MIN_AGREEMENT`] of the files pydicom decodes must
//! decode in advscan too.
//!
//! pydicom is needed: without it the test is skipped loudly, unless `CI` is
//! set, where a missing pydicom fails (`.ci/run` installs it).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

use advscan::io::dicom;

/// JPEG-family decoders may disagree by a few levels on individual pixels
/// (IDCT and YCbCr → RGB rounding differ between jpeg-decoder and libjpeg);
/// measured on this corpus: at most 3 levels (examples_ybr_color.dcm) …
const LOSSY_MAX_ABS_LEVELS: f64 = 4.0;
/// … and 0.13 levels on average at worst (SC_rgb_dcmtk_+eb+cy+n1.dcm); the
/// lossy JPEG 2000 and JPEG-LS files match pydicom exactly.
const LOSSY_MEAN_ABS_LEVELS: f64 = 0.25;
/// Of the files pydicom decodes, the fraction advscan must decode as well.
const MIN_AGREEMENT: f64 = 0.9;

/// Files where advscan legitimately differs from pydicom: (file name relative
/// to pydicom's test_files, reason). A listed file that turns out to agree is
/// reported, so the list cannot go stale silently.
const KNOWN: &[(&str, &str)] = &[
    (
        "JPGExtended.dcm",
        "12-bit JPEG Extended (process 4): the pure-Rust jpeg-decoder behind dicom-rs decodes 8-bit DCT \
         JPEG only; advscan refuses the file with the decoder's error",
    ),
    (
        "SC_rgb_jpeg.dcm",
        "its data set is encoded implicit VR although its transfer syntax (JPEG Baseline) requires explicit \
         VR; pydicom guesses the encoding, dicom-rs refuses to parse it",
    ),
    (
        "examples_palette.dcm",
        "PALETTE COLOR: pydicom returns the palette indices, which are not physical values; advscan refuses \
         indexed colour rather than feed indices to a model",
    ),
];

#[derive(Default)]
struct Tally {
    equal: Vec<String>,
    within_tolerance: Vec<String>,
    skipped_by_advscan: Vec<(String, String)>,
    known: Vec<(String, String)>,
    pydicom_failed_advscan_ok: Vec<String>,
    both_failed: Vec<String>,
    no_pixel_data: Vec<String>,
    mismatches: Vec<(String, String)>,
    panics: Vec<(String, String)>,
}

fn python_has_pydicom() -> bool {
    Command::new("python3").args(["-c", "import pydicom, numpy"]).status().map(|s| s.success()).unwrap_or(false)
}

fn read_f64(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).expect("reference data written by the script");
    bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// Compare one decoded file with pydicom's values; Err says how they differ.
fn compare(img: &dicom::DicomImage, shape: &[usize], want: &[f64], lossy: bool) -> Result<bool, String> {
    let got_shape = [img.frames.len(), img.samples_per_pixel, img.rows, img.columns];
    if shape != got_shape {
        return Err(format!("shape {got_shape:?}, pydicom {shape:?}"));
    }
    let got: Vec<f32> = img.frames.iter().flatten().copied().collect();
    if got.len() != want.len() {
        return Err(format!("{} values, pydicom {}", got.len(), want.len()));
    }
    let mismatched = got.iter().zip(want).filter(|(g, w)| **g != **w as f32).count();
    if mismatched == 0 {
        return Ok(true);
    }
    // One stored level in output units: |slope| for grey, 1 for colour.
    let level = if img.rescale_slope != 0.0 { img.rescale_slope.abs() } else { 1.0 };
    let (mut max, mut sum, mut worst) = (0.0f64, 0.0f64, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (f64::from(*g) - w).abs() / level;
        sum += d;
        if d > max {
            max = d;
            worst = i;
        }
    }
    let mean = sum / got.len() as f64;
    let detail = format!(
        "{mismatched} of {} values differ; max {max:.3} levels (index {worst}: advscan {}, pydicom {}), mean {mean:.4} levels",
        got.len(),
        got[worst],
        want[worst]
    );
    if lossy && max <= LOSSY_MAX_ABS_LEVELS && mean <= LOSSY_MEAN_ABS_LEVELS {
        println!("    within tolerance: {detail}");
        Ok(false)
    } else {
        Err(detail)
    }
}

#[test]
fn advscan_decodes_pydicom_test_files_like_pydicom() {
    if !python_has_pydicom() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but `python3 -c 'import pydicom, numpy'` fails; .ci/run must install them");
        }
        eprintln!("\n\n!!!!!!!! SKIPPED pydicom_corpus: python3 cannot import pydicom and numpy !!!!!!!!");
        eprintln!("!!!!!!!! install them (python3 -m pip install pydicom numpy pylibjpeg ...) to run it !!!!!!!!\n\n");
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pydicom_reference.py");
    let status = Command::new("python3").arg(&script).arg(out.path()).status().expect("run python3");
    assert!(status.success(), "{} failed", script.display());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json")).expect("index.json")).expect("json");
    println!("pydicom reference: {}", index["versions"]);
    let files = index["files"].as_array().expect("files");
    assert!(files.len() >= 100, "expected ~170 corpus files, found {}", files.len());

    let known: BTreeMap<&str, &str> = KNOWN.iter().copied().collect();
    let mut t = Tally::default();
    let mut known_seen = Vec::new();
    for entry in files {
        let name = entry["name"].as_str().expect("name").to_string();
        let path = PathBuf::from(entry["path"].as_str().expect("path"));
        let status = entry["status"].as_str().expect("status");
        let result = catch_unwind(AssertUnwindSafe(|| dicom::decode(&path, advscan::io::DEFAULT_MAX_PIXELS)));
        let result = match result {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                t.panics.push((name, msg));
                continue;
            }
        };
        let reason = known.get(name.as_str()).copied();
        match (status, result) {
            ("ok", Ok(img)) => {
                let shape: Vec<usize> = entry["shape"]
                    .as_array()
                    .expect("shape")
                    .iter()
                    .map(|v| v.as_u64().expect("dim") as usize)
                    .collect();
                let want = read_f64(&out.path().join(entry["data"].as_str().expect("data")));
                let lossy = entry["lossy"].as_bool().unwrap_or(false);
                println!("{name} ({}):", img.transfer_syntax_name);
                match (compare(&img, &shape, &want, lossy), reason) {
                    (Ok(true), r) => {
                        if r.is_some() {
                            known_seen.push(name.clone());
                        }
                        t.equal.push(name)
                    }
                    (Ok(false), r) => {
                        if r.is_some() {
                            known_seen.push(name.clone());
                        }
                        t.within_tolerance.push(name)
                    }
                    (Err(why), Some(r)) => t.known.push((name, format!("{r} [{why}]"))),
                    (Err(why), None) => t.mismatches.push((name, why)),
                }
            }
            ("ok", Err(e)) => match reason {
                Some(r) => t.known.push((name, format!("{r} [advscan: {e}]"))),
                // JPEG-LS is decoded only by a build with `--features jpeg-ls`
                // (CharLS needs cmake); .ci/run runs this test with it too.
                None if !cfg!(feature = "jpeg-ls")
                    && advscan::io::dicom::JPEG_LS_TRANSFER_SYNTAXES
                        .iter()
                        .any(|(uid, _)| entry["transfer_syntax"].as_str() == Some(uid)) =>
                {
                    t.known.push((name, format!("JPEG-LS, not in this build [advscan: {e}]")))
                }
                None => t.skipped_by_advscan.push((name, e.to_string())),
            },
            ("no_pixel_data", _) => t.no_pixel_data.push(name),
            (_, Ok(_)) => t.pydicom_failed_advscan_ok.push(format!("{name} (pydicom: {})", entry["error"])),
            (_, Err(_)) => t.both_failed.push(name),
        }
    }

    let pydicom_ok =
        t.equal.len() + t.within_tolerance.len() + t.skipped_by_advscan.len() + t.known.len() + t.mismatches.len();
    println!("\n=== pydicom corpus: {} files ===", files.len());
    println!("{:<52} {:>5}", "decoded, equal to pydicom (exact f32)", t.equal.len());
    println!("{:<52} {:>5}", "decoded, lossy, within tolerance", t.within_tolerance.len());
    println!("{:<52} {:>5}", "known legitimate differences (listed)", t.known.len());
    println!("{:<52} {:>5}", "skipped by advscan, unlisted (FAIL)", t.skipped_by_advscan.len());
    println!("{:<52} {:>5}", "decoded but different, unlisted (FAIL)", t.mismatches.len());
    println!("{:<52} {:>5}", "panicked (FAIL)", t.panics.len());
    println!("{:<52} {:>5}", "undecodable by pydicom, decoded by advscan", t.pydicom_failed_advscan_ok.len());
    println!("{:<52} {:>5}", "undecodable by both", t.both_failed.len());
    println!("{:<52} {:>5}", "no pixel data (not images)", t.no_pixel_data.len());
    for (n, r) in &t.known {
        println!("  known: {n}: {r}");
    }
    for n in &t.pydicom_failed_advscan_ok {
        println!("  advscan only: {n}");
    }
    for n in &known_seen {
        println!("  listed in KNOWN but agrees now (remove it): {n}");
    }
    for (n, r) in &t.skipped_by_advscan {
        println!("  SKIPPED: {n}: {r}");
    }
    for (n, r) in &t.mismatches {
        println!("  MISMATCH: {n}: {r}");
    }
    for (n, r) in &t.panics {
        println!("  PANIC: {n}: {r}");
    }
    let agreed = t.equal.len() + t.within_tolerance.len();
    let fraction = agreed as f64 / pydicom_ok.max(1) as f64;
    println!("agreement: {agreed} of the {pydicom_ok} files pydicom decodes ({:.1}%)", 100.0 * fraction);

    assert!(t.panics.is_empty(), "decode panicked on {:?}", t.panics);
    assert!(t.mismatches.is_empty(), "values differ from pydicom: {:?}", t.mismatches);
    assert!(t.skipped_by_advscan.is_empty(), "pydicom decodes these, advscan does not: {:?}", t.skipped_by_advscan);
    assert!(known_seen.is_empty(), "listed in KNOWN but now agree: {known_seen:?}");
    assert!(fraction >= MIN_AGREEMENT, "only {agreed}/{pydicom_ok} agree, need {MIN_AGREEMENT}");
}
