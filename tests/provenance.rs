//! A procurement review must be able to prove which model and which scans a
//! report is about: results.json records the model's sha256 and the sha256
//! of the data manifest, and `manifest.sha256` beside it lists every file the
//! run read in `sha256sum` format, so `sha256sum -c` re-checks the data and
//! `sha256sum manifest.sha256` gives the recorded digest.

mod common;

use common::repo;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A few CT slices (DICOM and PNG, the 3-frame file among them) and one broken file.
fn data(dir: &Path) {
    for (class, files) in [
        ("normal", &["ct_int16_rescale_-1024_explicit_le_01.dcm", "ct_multiframe_3_sc_word_06-08.dcm"][..]),
        ("nodule", &["ct_int16_rescale_-1024_explicit_le_11.dcm", "ct_lung_window_8bit_19.png"][..]),
    ] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for f in files {
            std::fs::copy(repo().join("fixtures/demo_ct").join(class).join(f), dir.join(class).join(f))
                .unwrap_or_else(|e| panic!("fixture {class}/{f}: {e}"));
        }
    }
    std::fs::write(dir.join("normal/broken.dcm"), b"DICM? no").unwrap();
}

fn attack(data: &Path, out: &Path, extra: &[&str]) -> Value {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_advscan"))
        .current_dir(repo())
        .args(["attack", "--model", "models/ct_nodule_cnn.onnx", "--attack", "fgsm", "--eps", "10HU", "--quiet"])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "one broken file is skipped: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

#[test]
fn results_prove_which_model_and_which_scans_were_tested() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    data(&dir);
    let out = tmp.path().join("out");
    let r = attack(&dir, &out, &[]);

    let model = std::fs::read(repo().join("models/ct_nodule_cnn.onnx")).unwrap();
    assert_eq!(r["model"]["sha256"], sha256_hex(&model));

    let manifest = std::fs::read_to_string(out.join("manifest.sha256")).expect("manifest.sha256 beside results.json");
    assert_eq!(r["data"]["manifest_sha256"], sha256_hex(manifest.as_bytes()), "the digest is of the manifest file");
    let lines: Vec<(&str, &str)> = manifest.lines().map(|l| l.split_once("  ").expect("HASH  PATH")).collect();
    let paths: Vec<&str> = lines.iter().map(|(_, p)| *p).collect();
    // Every file read, the broken one included (it was read, then skipped), in path order.
    assert_eq!(
        paths,
        [
            "nodule/ct_int16_rescale_-1024_explicit_le_11.dcm",
            "nodule/ct_lung_window_8bit_19.png",
            "normal/broken.dcm",
            "normal/ct_int16_rescale_-1024_explicit_le_01.dcm",
            "normal/ct_multiframe_3_sc_word_06-08.dcm",
        ]
    );
    assert_eq!(r["data"]["manifest_files"], 5);
    for (hash, path) in &lines {
        assert_eq!(*hash, sha256_hex(&std::fs::read(dir.join(path)).unwrap()), "{path}");
    }
    // The reviewer's own tool agrees, where it exists.
    if let Ok(o) =
        std::process::Command::new("sha256sum").arg("-c").arg(out.join("manifest.sha256")).current_dir(&dir).output()
    {
        assert!(o.status.success(), "sha256sum -c: {}", String::from_utf8_lossy(&o.stdout));
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains(r["data"]["manifest_sha256"].as_str().unwrap()), "report.html shows the manifest digest");

    // --anonymize records the same digest but writes no manifest (its paths may be identifiers).
    let anon_out = tmp.path().join("anon");
    let anon = attack(&dir, &anon_out, &["--anonymize"]);
    assert_eq!(anon["data"]["manifest_sha256"], r["data"]["manifest_sha256"]);
    assert!(!anon_out.join("manifest.sha256").exists());

    // One changed byte in one scan changes the digest.
    let f = dir.join("normal/ct_int16_rescale_-1024_explicit_le_01.dcm");
    let mut bytes = std::fs::read(&f).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&f, bytes).unwrap();
    let changed = attack(&dir, &tmp.path().join("changed"), &[]);
    assert_ne!(changed["data"]["manifest_sha256"], r["data"]["manifest_sha256"]);
}
