//! `advscan attack` through the real binary on the committed CNN, with
//! synthetic PNG scans written by the test (smooth blobs, deterministic).

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

/// A smooth, deterministic 28×28 grey image: a few Gaussian blobs on a ramp.
fn blob_png(path: &Path, seed: u32) {
    let mut img = image::GrayImage::new(28, 28);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32, y as f32);
        let mut v = 0.25 + 0.01 * fy;
        for k in 0..3 {
            let s = (seed * 7 + k * 13) as f32;
            let (cx, cy) = (6.0 + (s * 1.7) % 16.0, 6.0 + (s * 2.3) % 16.0);
            v += 0.4 * (-((fx - cx).powi(2) + (fy - cy).powi(2)) / 30.0).exp();
        }
        p.0 = [(v.clamp(0.0, 1.0) * 255.0).round() as u8];
    }
    img.save(path).unwrap();
}

/// Class folders 0/ and 1/ with 6 images each, plus the given extra files.
fn dataset(dir: &Path) {
    for class in 0..2u32 {
        let d = dir.join(class.to_string());
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..6 {
            blob_png(&d.join(format!("scan_{i}.png")), class * 10 + i);
        }
    }
}

#[test]
fn writes_results_with_every_required_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data);
    let out = tmp.path().join("out");
    let (o, r) = run(&[
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--eps",
        "2/255,0.03",
        "--attack",
        "fgsm,pgd,noise",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for key in ["schema_version", "tool", "model", "data", "settings", "clean", "runs", "samples", "checks", "timing"] {
        assert!(!r[key].is_null(), "missing {key}");
    }
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["data"]["samples"], 12);
    assert_eq!(r["data"]["labelled"], 12);
    assert_eq!(r["runs"].as_array().unwrap().len(), 6, "3 attacks × 2 ε");
    let run0 = &r["runs"][0];
    for key in [
        "attack",
        "norm",
        "eps",
        "eps_label",
        "steps",
        "step_size",
        "restarts",
        "random_start",
        "robust_accuracy",
        "flip_rate",
        "attack_success_rate",
        "mean_confidence_drop",
        "per_class",
        "seconds",
    ] {
        assert!(run0.get(key).is_some(), "runs[] lacks {key}");
    }
    assert_eq!(run0["eps_label"], "2/255");
    assert!((run0["eps"].as_f64().unwrap() - 2.0 / 255.0).abs() < 1e-7);
    assert_eq!(r["runs"][1]["eps_label"], "0.03");
    let s0 = &r["samples"][0];
    assert_eq!(s0["id"], "0/scan_0.png", "ids are paths relative to --data");
    let o0 = &s0["outcomes"][0];
    assert!(o0["linf"].as_f64().unwrap() <= 2.0 / 255.0 + 1e-6, "perturbation within ε");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("robust acc") && stdout.contains("checks:"), "{stdout}");
}

/// Same seed → byte-identical runs (minus wall time) and samples, whatever
/// the thread count and batch size: randomness is seeded per sample.
#[test]
fn results_do_not_depend_on_threads_or_batch_size() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data);
    let mut seen: Vec<(Value, Value)> = Vec::new();
    for (threads, batch) in [("1", "1"), ("2", "5"), ("2", "16")] {
        let out = tmp.path().join(format!("out_{threads}_{batch}"));
        let (o, mut r) = run(&[
            "--threads",
            threads,
            "attack",
            "--model",
            "models/pneumonia_cnn.onnx",
            "--data",
            data.to_str().unwrap(),
            "--eps",
            "4/255",
            "--attack",
            "pgd,noise",
            "--restarts",
            "2",
            "--seed",
            "7",
            "--batch-size",
            batch,
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for run in r["runs"].as_array_mut().unwrap() {
            run.as_object_mut().unwrap().remove("seconds");
        }
        seen.push((r["runs"].clone(), r["samples"].clone()));
    }
    for s in &seen[1..] {
        assert_eq!(serde_json::to_string(&s.0).unwrap(), serde_json::to_string(&seen[0].0).unwrap());
        assert_eq!(serde_json::to_string(&s.1).unwrap(), serde_json::to_string(&seen[0].1).unwrap());
    }
}

#[test]
fn a_bad_scan_is_skipped_with_its_reason_and_the_run_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data);
    std::fs::write(data.join("0/truncated.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::write(data.join("1/zero_bytes.png"), b"").unwrap();
    let out = tmp.path().join("out");
    let (o, r) = run(&[
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--eps",
        "2/255",
        "--attack",
        "fgsm",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "skipped inputs show in the exit status");
    assert_eq!(r["data"]["samples"], 12);
    let skipped = r["data"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2);
    assert!(skipped.iter().any(|s| s["path"].as_str().unwrap().ends_with("truncated.png")));
    assert!(skipped.iter().all(|s| !s["reason"].as_str().unwrap().is_empty()));
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 input(s) skipped"));
}

#[test]
fn unknown_attack_and_bad_eps_are_clear_errors() {
    let o = advscan(&[
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        ".",
        "--attack",
        "bogus",
        "--out",
        "/tmp/x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown attack 'bogus'"));
    let o = advscan(&["attack", "--model", "m", "--data", ".", "--eps", "2/0", "--out", "/tmp/x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("divides by zero"));
}

/// A model whose gradient is masked by a rounding step: the gradient-free
/// square attack beats PGD, and the trust checks must say so.
#[test]
fn gradient_masking_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data);
    let model = write(tmp.path(), "masked_cnn.onnx", &gradient_masked_cnn());
    let out = tmp.path().join("out");
    let (o, r) = run(&[
        "attack",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--eps",
        "8/255,16/255",
        "--attack",
        "pgd,square,noise",
        "--queries",
        "300",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let check = |name: &str| r["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap();
    assert_eq!(check("no_gradient_masking")["status"], "warn", "{}", check("no_gradient_masking"));
    assert_eq!(check("gradients_finite")["status"], "warn", "{}", check("gradients_finite"));
    // The same data on the unmasked CNN raises neither warning.
    let out2 = tmp.path().join("out2");
    let (_, r2) = run(&[
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--eps",
        "8/255,16/255",
        "--attack",
        "pgd,square,noise",
        "--queries",
        "300",
        "--quiet",
        "--out",
        out2.to_str().unwrap(),
    ]);
    let check2 = |name: &str| r2["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap();
    assert_eq!(check2("gradients_finite")["status"], "pass");
    assert_eq!(check2("no_gradient_masking")["status"], "pass", "{}", check2("no_gradient_masking"));
}

/// With --anonymize no file or folder name of the inputs appears in any
/// report file; the key (`--ids-file`) maps the short ids back and must lie
/// outside the report folder.
#[test]
fn anonymize_keeps_input_names_out_of_every_report() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("PATIENT_DOE_JOHN");
    std::fs::create_dir_all(data.join("1")).unwrap();
    blob_png(&data.join("1/MRN4711_chest.png"), 3);
    blob_png(&data.join("jane_roe_followup.png"), 4);
    std::fs::write(data.join("MRN0815_broken.png"), b"not a png").unwrap();
    let out = tmp.path().join("out");
    let key = tmp.path().join("private/key.csv");
    let attack = |key: &std::path::Path| {
        run(&[
            "attack",
            "--model",
            "models/pneumonia_cnn.onnx",
            "--data",
            data.to_str().unwrap(),
            "--eps",
            "8/255",
            "--attack",
            "pgd",
            "--anonymize",
            "--ids-file",
            key.to_str().unwrap(),
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let inside = out.join("ids.csv");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_advscan"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["attack", "--model", "models/pneumonia_cnn.onnx", "--data", data.to_str().unwrap()])
        .args(["--eps", "8/255", "--anonymize", "--ids-file", inside.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("--ids-file must lie outside --out"), "{msg}");
    assert!(!out.exists(), "nothing is written when the key would land in the report");
    let (o, r) = attack(&key);
    assert_eq!(o.status.code(), Some(2), "one input skipped");
    assert_eq!(r["data"]["samples"], 2);
    let secrets = ["DOE_JOHN", "MRN4711", "jane_roe", "MRN0815"];
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for s in secrets {
            assert!(!bytes.contains(s), "{name} contains '{s}'");
        }
    }
    for s in [&o.stdout, &o.stderr] {
        let text = String::from_utf8_lossy(s);
        assert!(secrets.iter().all(|x| !text.contains(x)), "console output leaks a name: {text}");
    }
    let ids = std::fs::read_to_string(&key).unwrap();
    assert!(ids.starts_with("id,path\n"));
    for s in &r["samples"].as_array().unwrap()[..] {
        let id = s["id"].as_str().unwrap();
        assert!(id.starts_with("s-") && id.len() == 14, "{id}");
        assert!(ids.contains(&format!("\"{id}\",")), "{id} is mapped in ids.csv");
    }
    assert!(ids.contains("MRN4711_chest.png") && ids.contains("MRN0815_broken.png"));
}

/// `--out` at a folder of other files (here: the data itself) is refused
/// before anything is written; an advscan report folder is reused.
#[test]
fn out_must_be_new_empty_or_an_advscan_report() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data);
    let before: Vec<_> = std::fs::read_dir(data.join("0")).unwrap().map(|e| e.unwrap().file_name()).collect();
    let args = |out: &str| {
        vec![
            "attack".to_string(),
            "--model".into(),
            "models/pneumonia_cnn.onnx".into(),
            "--data".into(),
            data.to_str().unwrap().into(),
            "--attack".into(),
            "fgsm".into(),
            "--eps".into(),
            "2/255".into(),
            "--gallery".into(),
            "0".into(),
            "--out".into(),
            out.into(),
        ]
    };
    let into_data = data.join("0");
    let a = args(into_data.to_str().unwrap());
    let o = advscan(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "expected exit 2 for --out at the data folder: {err}");
    assert!(err.contains("not an advscan report"), "expected the refusal to say why: {err}");
    let after: Vec<_> = std::fs::read_dir(&into_data).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "expected nothing written into the refused folder");

    // A report folder is reused: the second run replaces the first's results.
    let out = tmp.path().join("out");
    let a = args(out.to_str().unwrap());
    for round in 0..2 {
        let o = advscan(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            o.status.code(),
            Some(0),
            "run {round} into the report folder: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
