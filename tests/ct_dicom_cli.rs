//! `advscan attack` and `advscan inspect` through the real binary on the
//! synthetic CT DICOM fixtures (`fixtures/demo_ct`, `fixtures/dicom_edge_cases`)
//! and `models/ct_nodule_cnn.onnx` with its `ct_nodule_cnn.model.toml`
//! (lung window −600/1500 HU, so 1 HU = 1/1500 attack units).
//!
//! Independent readers of the saved adversarial DICOM: dicom-object (in this
//! test), dciodvfy (no "Error" lines; required when `CI` is set) and pydicom
//! (when importable).

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const MODEL: &str = "models/ct_nodule_cnn.onnx";
/// The lung window width of `ct_nodule_cnn.model.toml`: HU per attack unit.
const WIDTH: f64 = 1500.0;

/// Copies the DICOM files of `fixtures/demo_ct` (class folders kept) into
/// `dir`, at most `per_class` per class (all when `None`); returns `dir`.
fn dicom_subset(dir: &Path, per_class: Option<usize>) -> PathBuf {
    for class in ["normal", "nodule"] {
        let src = repo().join("fixtures/demo_ct").join(class);
        std::fs::create_dir_all(dir.join(class)).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "expected DICOM files in {}", src.display());
        for f in files.iter().take(per_class.unwrap_or(usize::MAX)) {
            std::fs::copy(f, dir.join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
    dir.to_path_buf()
}

fn check<'a>(r: &'a Value, name: &str) -> &'a Value {
    arr(&r["checks"], "checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("expected a trust check '{name}' in {}", r["checks"]))
}

/// The run of `attack` at the ε labelled `label`.
fn run_of<'a>(r: &'a Value, attack: &str, label: &str) -> &'a Value {
    arr(&r["runs"], "runs")
        .iter()
        .find(|x| x["attack"] == attack && x["eps_label"] == label)
        .unwrap_or_else(|| panic!("expected a run {attack} at {label} in results.json"))
}

/// How many samples `attack` at `label` flipped, from the per-sample records.
fn flips(r: &Value, attack: &str, label: &str) -> usize {
    arr(&r["samples"], "samples")
        .iter()
        .filter(|s| {
            arr(&s["outcomes"], "outcomes")
                .iter()
                .any(|o| o["attack"] == attack && o["eps_label"] == label && o["flipped"] == true)
        })
        .count()
}

/// Every file under `root` (relative path → contents' sha256), and every folder.
fn tree(root: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, Vec<PathBuf>) {
    use sha2::{Digest, Sha256};
    let (mut files, mut dirs) = (BTreeMap::new(), Vec::new());
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                dirs.push(rel);
                todo.push(p);
            } else {
                files.insert(rel, Sha256::digest(std::fs::read(&p).unwrap()).to_vec());
            }
        }
    }
    dirs.sort();
    (files, dirs)
}

/// dciodvfy is required when `CI` is set; otherwise its absence is said loudly.
fn have_dciodvfy() -> bool {
    let ok = Command::new("dciodvfy").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "expected dciodvfy on PATH since CI is set (.ci/run installs dicom3tools)"
        );
        eprintln!("\n!!!!!!!! SKIPPING the dciodvfy check: dciodvfy is not installed !!!!!!!!\n");
    }
    ok
}

fn have_pydicom() -> bool {
    let ok = Command::new("python3").args(["-c", "import pydicom, numpy"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("\n!!!!!!!! SKIPPING the pydicom check: python3 with pydicom and numpy is not available !!!!!!!!\n");
    }
    ok
}

/// 1. ε in HU end to end on every fixture of `fixtures/demo_ct` (DICOM in
/// five encodings, a 3-frame file, lung-window PNGs).
#[test]
fn hu_eps_end_to_end_on_ct_dicom() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (o, r) = run(&[
        "attack",
        "--model",
        MODEL,
        "--data",
        "fixtures/demo_ct",
        "--attack",
        "fgsm,pgd",
        "--eps",
        "5HU,20HU",
        "--steps",
        "3",
        "--gallery",
        "2",
        "--save-adversarial",
        "3",
        "--min-eps",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "expected exit 0 (nothing skipped): {}", text(&o.stderr));
    assert_eq!(arr(&r["data"]["skipped"], "data.skipped").len(), 0, "expected no skipped input: {}", r["data"]);

    // Every sample says how it was decoded.
    let samples = arr(&r["samples"], "samples");
    assert!(samples.len() >= 16, "expected at least the 16 fixture files as samples, got {}", samples.len());
    for s in samples {
        let scan = &s["scan"];
        assert!(scan.is_object(), "expected a scan record for {}, got {scan}", s["id"]);
        let format = scan["format"].as_str().unwrap_or_default();
        assert!(["dicom", "png"].contains(&format), "expected format dicom or png for {}: {scan}", s["id"]);
        if format == "dicom" {
            assert_eq!(scan["units"], "HU", "expected CT DICOM in HU for {}: {scan}", s["id"]);
            assert!(scan["transfer_syntax"].is_string(), "expected a transfer syntax for {}: {scan}", s["id"]);
            assert!(scan["rescale"].is_array(), "expected a rescale for {}: {scan}", s["id"]);
            assert_eq!(scan["window"][0], serde_json::json!([-600.0, 1500.0]), "expected the config's lung window");
        }
    }
    let syntaxes: std::collections::BTreeSet<&str> =
        samples.iter().filter_map(|s| s["scan"]["transfer_syntax"].as_str()).collect();
    for ts in ["Explicit VR Little Endian", "Implicit VR Little Endian", "Explicit VR Big Endian", "RLE Lossless"] {
        assert!(syntaxes.contains(ts), "expected a sample decoded from {ts}, got {syntaxes:?}");
    }

    // Multi-frame files: one sample per frame, `id#k` with frame k.
    let mut by_file: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for s in samples {
        let id = s["id"].as_str().unwrap();
        if let Some((file, _)) = id.split_once('#') {
            by_file.entry(file).or_default().push(s);
        } else {
            assert!(s["scan"]["frame"].is_null(), "expected no frame on single-frame sample {id}");
        }
    }
    assert!(!by_file.is_empty(), "expected the multi-frame fixtures to give `#k` samples");
    for (file, frames) in &by_file {
        assert!(file.contains("multiframe"), "expected only the multi-frame files to be split, got {file}");
        assert_eq!(frames.len(), 3, "expected 3 frame samples for {file}");
        for (k, s) in frames.iter().enumerate() {
            assert_eq!(s["id"], format!("{file}#{}", k + 1), "expected ids ending #1..#3 in order");
            assert_eq!(s["scan"]["frame"], k + 1, "expected frame {} in the scan record of {}", k + 1, s["id"]);
        }
    }

    // ε in attack units is HU / window width, and bounds every perturbation.
    let runs = arr(&r["runs"], "runs");
    assert_eq!(runs.len(), 4, "expected 2 attacks × 2 ε runs");
    for run in runs {
        let label = run["eps_label"].as_str().unwrap();
        let hu: f64 = label.strip_suffix("HU").expect("labels as written").parse().unwrap();
        let eps = num(&run["eps"], "runs[].eps");
        assert!((eps - hu / WIDTH).abs() < 1e-7, "expected runs[].eps = {hu}/1500 for {label}, got {eps}");
        for key in ["flip_rate_quantized", "robust_accuracy_quantized"] {
            assert!(run[key].is_number(), "expected runs[].{key} measured (labelled data), got {}", run[key]);
        }
    }
    let mut checked = 0;
    for s in samples {
        let outcomes = arr(&s["outcomes"], "outcomes");
        assert_eq!(outcomes.len(), 4, "expected one outcome per run for {}", s["id"]);
        for o in outcomes {
            let eps = num(&run_of(&r, o["attack"].as_str().unwrap(), o["eps_label"].as_str().unwrap())["eps"], "eps");
            let linf = num(&o["linf"], "linf");
            assert!(linf <= eps + 1e-6, "expected L∞ {linf} ≤ ε {eps} (+1e-6) for {} {}", s["id"], o);
            assert!(o["pred_quantized"].is_number(), "expected pred_quantized in {o}");
            checked += 1;
        }
    }
    assert!(checked > 0, "expected outcomes to check");

    // More HU, at least as many flips (PGD); and the attack does flip some.
    let (small, large) = (flips(&r, "pgd", "5HU"), flips(&r, "pgd", "20HU"));
    assert!(large >= small, "expected PGD at 20HU to flip at least as many samples as at 5HU: {large} < {small}");
    assert!(large > 0, "expected PGD at 20HU to flip at least one CT sample");

    // The saved files read back to the recorded predictions.
    assert_eq!(check(&r, "adversarial_round_trip")["status"], "pass", "expected the round trip to pass");
    let round_trips: Vec<&Value> =
        samples.iter().map(|s| &s["check_data"]["round_trip"]).filter(|v| !v.is_null()).collect();
    assert_eq!(round_trips.len(), 3, "expected 3 samples with a round-trip record (--save-adversarial 3)");
    assert!(round_trips.iter().all(|v| **v == true), "expected every round trip true: {round_trips:?}");
    let saved = std::fs::read_dir(out.join("adversarial")).unwrap().count();
    assert_eq!(saved, 3, "expected 3 files in DIR/adversarial");
    assert!(r["settings"]["min_eps"] == true, "expected --min-eps recorded in settings");
    assert!(
        samples.iter().any(|s| s["min_eps"].is_number()),
        "expected a minimal ε for at least one sample flipped within 20HU"
    );
}

/// 2. `--eps 15HU` and `--eps 0.01` are the same budget in a 1500 HU window.
/// FGSM has no randomness; PGD takes a random start seeded by (seed, attack,
/// ε label, sample), so the labels would differ: `--no-random-start` makes it
/// deterministic too. Then both runs must agree exactly, sample by sample.
#[test]
fn eps_in_hu_and_in_model_units_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dicom_subset(&tmp.path().join("data"), Some(4));
    let mut seen = Vec::new();
    for eps in ["15HU", "0.01"] {
        let out = tmp.path().join(format!("out_{eps}"));
        let (o, r) = run(&[
            "attack",
            "--model",
            MODEL,
            "--data",
            data.to_str().unwrap(),
            "--attack",
            "fgsm,pgd",
            "--eps",
            eps,
            "--steps",
            "3",
            "--no-random-start",
            "--gallery",
            "0",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "expected exit 0 for --eps {eps}: {}", text(&o.stderr));
        seen.push(r);
    }
    let (hu, model) = (&seen[0], &seen[1]);
    let n = arr(&hu["samples"], "samples").len();
    assert!(n >= 8, "expected at least 8 DICOM samples, got {n}");
    assert_eq!(n, arr(&model["samples"], "samples").len(), "expected the same samples in both runs");
    for attack in ["fgsm", "pgd"] {
        let (a, b) = (run_of(hu, attack, "15HU"), run_of(model, attack, "0.01"));
        assert_eq!(a["eps"], b["eps"], "expected identical ε in attack units for {attack}");
        assert!((num(&a["eps"], "eps") - 0.01).abs() < 1e-7, "expected 15HU = 0.01 attack units");
        for key in ["step_size", "flip_rate", "flip_rate_quantized", "robust_accuracy", "robust_accuracy_quantized"] {
            assert_eq!(a[key], b[key], "expected the same {key} for {attack} at 15HU and 0.01");
        }
    }
    for (s, t) in arr(&hu["samples"], "samples").iter().zip(arr(&model["samples"], "samples")) {
        assert_eq!(s["id"], t["id"], "expected the same sample order");
        for (o, p) in arr(&s["outcomes"], "outcomes").iter().zip(arr(&t["outcomes"], "outcomes")) {
            for key in ["attack", "eps", "pred", "pred_quantized", "flipped", "confidence", "linf", "l2"] {
                assert_eq!(o[key], p[key], "expected the same {key} for {} at 15HU and 0.01", s["id"]);
            }
        }
    }
    assert!(flips(hu, "pgd", "15HU") > 0, "expected 15HU to flip some sample (else the comparison is weak)");
}

/// 3. The saved adversarial DICOM: a derived instance with a new UID, its
/// derivation described, pixels within ε HU of the source, valid for
/// dciodvfy and readable by pydicom.
#[test]
fn saved_adversarial_dicom_is_a_valid_derived_instance_within_eps() {
    use dicom_dictionary_std::tags;
    let tmp = tempfile::tempdir().unwrap();
    let data = dicom_subset(&tmp.path().join("data"), None);
    let out = tmp.path().join("out");
    let (o, r) = run(&[
        "attack",
        "--model",
        MODEL,
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "pgd",
        "--eps",
        "20HU",
        "--steps",
        "3",
        "--gallery",
        "0",
        "--save-adversarial",
        "3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "expected exit 0: {}", text(&o.stderr));
    assert_eq!(check(&r, "adversarial_round_trip")["status"], "pass", "expected the round trip to pass");
    let mut saved: Vec<PathBuf> =
        std::fs::read_dir(out.join("adversarial")).unwrap().map(|e| e.unwrap().path()).collect();
    saved.sort();
    assert_eq!(saved.len(), 3, "expected 3 saved files: {saved:?}");
    let dciodvfy = have_dciodvfy();
    let pydicom = have_pydicom();
    for path in &saved {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".dcm"), "expected DICOM inputs to be saved as .dcm, got {name}");
        // `normal__scan_frame_2.dcm` ← `normal/scan.dcm`, frame 2.
        let stem = name.strip_suffix(".dcm").unwrap();
        let (file, frame) = match stem.rsplit_once("_frame_") {
            Some((f, k)) => (f, k.parse::<usize>().unwrap()),
            None => (stem, 1),
        };
        let source = data.join(format!("{}.dcm", file.replace("__", "/")));
        assert!(source.is_file(), "expected {name} to name its source {}", source.display());

        let adv = dicom_object::open_file(path).unwrap_or_else(|e| panic!("expected dicom-object to read {name}: {e}"));
        let src = dicom_object::open_file(&source).unwrap();
        let s = |obj: &dicom_object::DefaultDicomObject, tag| {
            obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|v| v.trim_end_matches('\0').trim().to_string())
        };
        let image_type: Vec<String> = adv
            .element(tags::IMAGE_TYPE)
            .unwrap()
            .to_multi_str()
            .unwrap()
            .iter()
            .map(|v| v.trim().to_string())
            .collect();
        assert!(
            image_type.iter().any(|v| v == "DERIVED") && image_type.iter().any(|v| v == "SECONDARY"),
            "expected ImageType DERIVED\\SECONDARY in {name}, got {image_type:?}"
        );
        let (new_uid, old_uid) = (s(&adv, tags::SOP_INSTANCE_UID), s(&src, tags::SOP_INSTANCE_UID));
        assert!(new_uid.as_ref().is_some_and(|u| !u.is_empty()), "expected a SOP Instance UID in {name}");
        assert_ne!(new_uid, old_uid, "expected {name} to have a new SOP Instance UID");
        let description = s(&adv, tags::DERIVATION_DESCRIPTION).unwrap_or_default();
        assert!(
            description.contains("pgd") && description.contains("20HU"),
            "expected DerivationDescription to name the attack and ε, got '{description}'"
        );

        // Pixels: within 20 HU of the source frame, and not all equal to it.
        let a = advscan::io::dicom::decode(path, advscan::io::DEFAULT_MAX_PIXELS).unwrap();
        let b = advscan::io::dicom::decode(&source, advscan::io::DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(a.frames.len(), 1, "expected one frame in {name}");
        assert_eq!(a.units, "HU", "expected {name} to stay in HU");
        let (got, want) = (&a.frames[0], &b.frames[frame - 1]);
        assert_eq!(got.len(), want.len(), "expected the source frame's size in {name}");
        assert!(!got.is_empty(), "expected pixels in {name}");
        let max = got.iter().zip(want).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(max <= 20.0 + 1e-3, "expected max |ΔHU| ≤ 20 in {name}, got {max}");
        assert!(max > 0.0, "expected {name} to differ from its source somewhere");

        if dciodvfy {
            let o = Command::new("dciodvfy").arg(path).output().unwrap();
            let report = format!("{}{}", text(&o.stdout), text(&o.stderr));
            let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
            assert!(errors.is_empty(), "expected no dciodvfy errors for {name}:\n{}", errors.join("\n"));
        }
        if pydicom {
            // pydicom's stored values through the modality LUT equal our HU.
            let hu = path.with_extension("f32");
            let script = "import sys, numpy, pydicom\n\
                          ds = pydicom.dcmread(sys.argv[1])\n\
                          a = ds.pixel_array.astype('float64') * float(ds.RescaleSlope) + float(ds.RescaleIntercept)\n\
                          a.astype('<f4').ravel().tofile(sys.argv[2])\n";
            let o = Command::new("python3").args(["-c", script]).arg(path).arg(&hu).output().unwrap();
            assert!(o.status.success(), "expected pydicom to read {name}: {}", text(&o.stderr));
            let bytes = std::fs::read(&hu).unwrap();
            let theirs: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            assert!(&theirs == got, "expected pydicom's HU for {name} to equal advscan's");
        }
    }
}

/// 4. A run never writes into or modifies its inputs, even with --save-adversarial.
#[test]
fn inputs_are_never_modified() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for class in ["normal", "nodule"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for e in std::fs::read_dir(repo().join("fixtures/demo_ct").join(class)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, data.join(class).join(p.file_name().unwrap())).unwrap();
        }
    }
    let before = tree(&data);
    assert!(before.0.len() >= 16, "expected the 16 fixture files in the copy, got {}", before.0.len());
    let out = tmp.path().join("out");
    let (o, r) = run(&[
        "attack",
        "--model",
        MODEL,
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm,pgd",
        "--eps",
        "20HU",
        "--steps",
        "3",
        "--gallery",
        "2",
        "--save-adversarial",
        "3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "expected exit 0: {}", text(&o.stderr));
    assert!(r.is_object(), "expected results.json to be written");
    assert_eq!(std::fs::read_dir(out.join("adversarial")).unwrap().count(), 3, "expected 3 saved files");
    let after = tree(&data);
    assert_eq!(
        before.0.keys().collect::<Vec<_>>(),
        after.0.keys().collect::<Vec<_>>(),
        "expected no file added to or removed from the input tree"
    );
    assert_eq!(before.1, after.1, "expected no folder added to or removed from the input tree");
    for (path, hash) in &before.0 {
        assert_eq!(Some(hash), after.0.get(path), "expected {} unchanged (sha256)", path.display());
    }
}

/// 5. Broken files are skipped with a reason naming them; a radiograph has no
/// HU, so it is skipped for ε in HU but evaluated for ε in grey levels.
#[test]
fn dicom_edge_cases_are_skipped_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for e in std::fs::read_dir(repo().join("fixtures/dicom_edge_cases")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, data.join(p.file_name().unwrap())).unwrap();
    }
    let valid = "ct_int16_rescale_-1024_explicit_le_01.dcm";
    std::fs::copy(repo().join("fixtures/demo_ct/normal").join(valid), data.join(valid)).unwrap();
    let radiograph = "xr_monochrome1_12bit_sc.dcm";

    let out = tmp.path().join("out_hu");
    let (o, r) = fgsm_run(MODEL, &data, &out, "5HU");
    assert_eq!(o.status.code(), Some(2), "expected exit 2 (inputs skipped): {}", text(&o.stderr));
    let skipped = arr(&r["data"]["skipped"], "data.skipped");
    let reason = |file: &str| -> String {
        let s = skipped
            .iter()
            .find(|s| s["path"].as_str().is_some_and(|p| p.ends_with(file)))
            .unwrap_or_else(|| panic!("expected {file} in data.skipped: {skipped:?}"));
        let why = s["reason"].as_str().unwrap().to_string();
        assert!(why.contains(file), "expected the reason for {file} to name it: {why}");
        why
    };
    assert_eq!(skipped.len(), 4, "expected exactly the 3 broken files and the radiograph skipped: {skipped:?}");
    let why = reason("broken_truncated.dcm");
    assert!(why.contains("not a readable DICOM"), "expected the truncated DICOM to be called unreadable: {why}");
    let why = reason("broken_wrong_header.dcm");
    assert!(why.contains("not a DICOM file") && why.contains("DICM"), "expected the missing DICM marker: {why}");
    let why = reason("broken_truncated.png");
    assert!(why.contains("not a decodable image") && why.contains("end of file"), "expected a truncated PNG: {why}");
    let why = reason(radiograph);
    assert!(why.contains("Hounsfield"), "expected the radiograph's reason to mention Hounsfield: {why}");
    let samples = arr(&r["samples"], "samples");
    assert_eq!(samples.len(), 1, "expected only the valid CT file evaluated");
    assert_eq!(samples[0]["id"], valid, "expected the valid CT file evaluated");
    assert_eq!(samples[0]["scan"]["units"], "HU", "expected the valid file in HU");
    assert!(text(&o.stderr).contains("4 input(s) skipped"), "expected stderr to count the skipped inputs");

    // ε in grey levels needs no HU: the MONOCHROME1 radiograph is evaluated.
    let out = tmp.path().join("out_gl");
    let (o, r) = run(&[
        "attack",
        "--model",
        MODEL,
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm",
        "--eps",
        "2gl",
        "--gallery",
        "0",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "expected exit 2 (the 3 broken files): {}", text(&o.stderr));
    let skipped = arr(&r["data"]["skipped"], "data.skipped");
    assert_eq!(skipped.len(), 3, "expected only the 3 broken files skipped: {skipped:?}");
    let samples = arr(&r["samples"], "samples");
    let xr = samples
        .iter()
        .find(|s| s["id"] == radiograph)
        .unwrap_or_else(|| panic!("expected the radiograph evaluated with ε in gl: {samples:?}"));
    assert_eq!(xr["scan"]["photometric"], "MONOCHROME1", "expected the scan record to say MONOCHROME1");
    assert_ne!(xr["scan"]["units"], "HU", "expected the radiograph not in HU");
    // The config's lung window is in HU (`units = "HU"`), so the radiograph
    // keeps its own VOI window (2048/4096), and the record says so.
    assert_eq!(
        xr["scan"]["window"],
        serde_json::json!([[2048.0, 4096.0], "file"]),
        "expected the radiograph windowed with its own VOI window, recorded as such"
    );
    let inverted = arr(&r["data"]["preprocessing"], "preprocessing")
        .iter()
        .flat_map(|p| arr(&p["steps"], "steps"))
        .any(|s| s.as_str().is_some_and(|s| s.contains("MONOCHROME1")));
    assert!(inverted, "expected a preprocessing step inverting MONOCHROME1: {}", r["data"]["preprocessing"]);
    assert!((num(&r["runs"][0]["eps"], "eps") - 2.0 / 255.0).abs() < 1e-7, "expected 2gl = 2/255 attack units");
    for o in arr(&xr["outcomes"], "outcomes") {
        assert!(num(&o["linf"], "linf") <= 2.0 / 255.0 + 1e-6, "expected L∞ ≤ 2/255 on the radiograph: {o}");
    }
}

/// 6. Model config errors name the file, line and key; without a config the
/// defaults are stated and DICOM files use their own VOI window.
#[test]
fn model_config_errors_and_missing_config() {
    let tmp = tempfile::tempdir().unwrap();
    let bad =
        write(tmp.path(), "bad.model.toml", b"[input]\nsize = [64, 64]\n\n[window]\ncenter = -600.0\nwidht = 1500.0\n");
    let out = tmp.path().join("out_bad");
    let (o, r) = run(&[
        "attack",
        "--model",
        MODEL,
        "--data",
        "fixtures/demo_ct",
        "--eps",
        "5HU",
        "--model-config",
        bad.to_str().unwrap(),
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "expected exit 2 for an unknown config key: {stderr}");
    assert!(
        stderr.contains(&format!("{}:6:", bad.display())) && stderr.contains("widht"),
        "expected stderr to name the file, line 6 and the key 'widht': {stderr}"
    );
    assert!(r.is_null(), "expected no results.json when the config is refused");

    // A config that contradicts the model's input is refused, not ignored.
    for (name, body, says) in [
        ("size.model.toml", "[input]\nsize = [32, 32]\n", "input.size is [32, 32] but the model takes 64×64"),
        ("channels.model.toml", "[input]\nchannels = 3\n", "input.channels is 3 but the model takes 1 channel(s)"),
    ] {
        let cfg = write(tmp.path(), name, body.as_bytes());
        let out = tmp.path().join(format!("out_{name}"));
        let o = advscan(&[
            "attack",
            "--model",
            MODEL,
            "--data",
            "fixtures/demo_ct",
            "--eps",
            "5HU",
            "--model-config",
            cfg.to_str().unwrap(),
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "expected exit 2 for {name}: {stderr}");
        assert!(stderr.contains(says), "expected stderr to say '{says}': {stderr}");
    }

    // The model alone, without its .model.toml.
    let model = tmp.path().join("ct_nodule_cnn.onnx");
    std::fs::copy(repo().join(MODEL), &model).unwrap();
    let o = advscan(&["inspect", model.to_str().unwrap()]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "expected inspect to succeed without a config: {}", text(&o.stderr));
    assert!(
        stdout.contains("none found") && stdout.contains("default: window: none set"),
        "expected inspect to say no config was found and list the defaults: {stdout}"
    );
    let o = advscan(&["inspect", model.to_str().unwrap(), "--json"]);
    let j: Value = serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON");
    assert!(j["config_path"].is_null(), "expected config_path null without a config: {}", j["config_path"]);

    let data = dicom_subset(&tmp.path().join("data"), Some(2));
    let out = tmp.path().join("out_default");
    let (o, r) = run(&[
        "attack",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm",
        "--eps",
        "5HU",
        "--gallery",
        "0",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "expected exit 0 on DICOM with their own window: {stderr}");
    assert!(
        stderr.contains("no model config beside") && stderr.contains("defaults used"),
        "expected stderr to state that defaults were used (also when stderr is not a terminal): {stderr}"
    );
    assert!(r["model"]["config_path"].is_null(), "expected results.json model.config_path null");
    // Without class names the folders normal/ and nodule/ are not labels; the notes say so.
    assert_eq!(r["data"]["labelled"], 0, "expected no labels without the config's class names");
    let notes = arr(&r["data"]["notes"], "data.notes");
    assert!(
        notes.iter().any(|n| n.as_str().is_some_and(|n| n.contains("unknown label 'nodule'"))),
        "expected data.notes to explain that 'nodule' is not a class without a config: {notes:?}"
    );
    let samples = arr(&r["samples"], "samples");
    assert!(!samples.is_empty(), "expected samples evaluated");
    for s in samples {
        assert_eq!(
            s["scan"]["window"],
            serde_json::json!([[-600.0, 1500.0], "file"]),
            "expected {} windowed by its own VOI (−600/1500), recorded as from the file",
            s["id"]
        );
    }
    let eps = num(&r["runs"][0]["eps"], "eps");
    assert!((eps - 5.0 / WIDTH).abs() < 1e-7, "expected 5HU through the file's 1500 HU width, got {eps}");
    let steps: Vec<&str> = arr(&r["data"]["preprocessing"], "preprocessing")
        .iter()
        .flat_map(|p| arr(&p["steps"], "steps"))
        .filter_map(Value::as_str)
        .collect();
    assert!(!steps.is_empty(), "expected preprocessing steps recorded");
    assert!(
        !steps.iter().any(|s| s.contains("normalise")),
        "expected no normalisation without a config (the default mean 0, std 1): {steps:?}"
    );
}

/// 7. `inspect --json` shows the config found beside the model and its window.
#[test]
fn inspect_shows_the_ct_model_config() {
    let o = advscan(&["inspect", MODEL, "--json"]);
    assert!(o.status.success(), "expected inspect to succeed: {}", text(&o.stderr));
    let j: Value = serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON");
    let path = j["config_path"].as_str().unwrap_or_default();
    assert!(path.ends_with("ct_nodule_cnn.model.toml"), "expected config_path ending ct_nodule_cnn.model.toml: {path}");
    let w = &j["config"]["window"];
    assert_eq!(w["center"], -600.0, "expected window center −600: {w}");
    assert_eq!(w["width"], 1500.0, "expected window width 1500: {w}");
    assert_eq!(j["config"]["input"]["size"], serde_json::json!([64, 64]), "expected input.size [64, 64]");
}

/// 3b. Lung-window PNGs are saved as PNG at their own bit depth (8 and 16):
/// read back they give the recorded prediction, and differ from the source
/// by at most ε (20 HU = 20/1500 of the 8- or 16-bit range) plus half a
/// storage level.
#[test]
fn saved_adversarial_png_keeps_depth_and_stays_within_eps() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut sources = Vec::new();
    for class in ["normal", "nodule"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for e in std::fs::read_dir(repo().join("fixtures/demo_ct").join(class)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "png") {
                std::fs::copy(&p, data.join(class).join(p.file_name().unwrap())).unwrap();
                sources.push(format!("{class}/{}", p.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    sources.sort();
    assert_eq!(sources.len(), 4, "expected 4 lung-window PNG fixtures (8- and 16-bit): {sources:?}");
    let out = tmp.path().join("out");
    let (o, r) = run(&[
        "attack",
        "--model",
        MODEL,
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "pgd",
        "--eps",
        "20HU",
        "--steps",
        "3",
        "--gallery",
        "0",
        "--save-adversarial",
        "4",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "expected exit 0: {}", text(&o.stderr));
    let round_trip = check(&r, "adversarial_round_trip");
    assert_eq!(round_trip["status"], "pass", "expected every saved PNG to read back to its prediction: {round_trip}");
    let mut depths = std::collections::BTreeSet::new();
    for id in &sources {
        let saved = out.join("adversarial").join(id.replace('/', "__"));
        let (a, b) = (image::open(&saved), image::open(data.join(id)));
        let (a, b) = (a.unwrap_or_else(|e| panic!("expected {} to decode: {e}", saved.display())), b.unwrap());
        let (got, want, max): (Vec<f64>, Vec<f64>, f64) = match (&a, &b) {
            (image::DynamicImage::ImageLuma8(x), image::DynamicImage::ImageLuma8(y)) => {
                (x.pixels().map(|p| p.0[0] as f64).collect(), y.pixels().map(|p| p.0[0] as f64).collect(), 255.0)
            }
            (image::DynamicImage::ImageLuma16(x), image::DynamicImage::ImageLuma16(y)) => {
                (x.pixels().map(|p| p.0[0] as f64).collect(), y.pixels().map(|p| p.0[0] as f64).collect(), 65535.0)
            }
            _ => panic!("expected {id} saved as grey PNG at its source depth, got {:?} vs {:?}", a.color(), b.color()),
        };
        depths.insert(max as u32);
        assert_eq!(got.len(), want.len(), "expected the source's size for {id}");
        let hu = got.iter().zip(&want).map(|(p, q)| (p - q).abs() / max * WIDTH).fold(0.0, f64::max);
        // Quantisation rounds to the nearest storable level, so the saved
        // image may exceed ε by up to half a level (1 level = 1500/255 HU at
        // 8 bits, 1500/65535 HU at 16 bits).
        let bound = 20.0 + 0.5 * WIDTH / max + 1e-6;
        assert!(
            hu <= bound,
            "expected the saved {id} within 20 HU + half a level ({bound}) of its source, got {hu} HU"
        );
        assert!(hu > 0.0, "expected the saved {id} to differ from its source");
    }
    assert_eq!(depths.len(), 2, "expected both 8- and 16-bit PNGs checked: {depths:?}");
}
