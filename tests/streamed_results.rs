//! `advscan attack` streams its per-sample records through a spill file and
//! computes every aggregate and the reports' digest record by record, without
//! holding the samples. These tests read a run's results.json back whole and
//! redo all of it in memory, the way `advscan merge` and the reports of a
//! hand-built `Results` do: the aggregates, the sample order, the serialised
//! text and the reports must come out the same, byte for byte.

mod common;

use advscan::report::json::Results;
use common::{repo, run, text};
use std::path::Path;

/// Reads `dir`'s results.json whole and checks that recomputing its
/// aggregates in memory and rendering its reports from it gives the files
/// the run wrote.
fn check_against_in_memory(dir: &Path) {
    let written = std::fs::read_to_string(dir.join("results.json")).unwrap();
    let mut r: Results = serde_json::from_str(&written).unwrap();
    assert_eq!(r.to_json(), written, "results.json is the serialisation of its records");
    let classes = r.runs[0].per_class[0].predicted_as.len();
    let streamed = r.clone();
    // Wipe what aggregate recomputes, so nothing is left over from the file.
    r.clean.accuracy = None;
    r.min_eps = None;
    r.checks.clear();
    for run in &mut r.runs {
        run.per_class.clear();
        run.flip_rate = -1.0;
    }
    advscan::eval::aggregate(&mut r, classes).unwrap();
    assert_eq!(r, streamed, "aggregates computed sample by sample = computed over the whole list");
    assert_eq!(r.to_json(), written);
    let summary = r.summary();
    let report = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(advscan::report::html::render(&summary, None), report("report.html"));
    assert_eq!(advscan::report::markdown::render(&summary, None), report("summary.md"));
    assert_eq!(advscan::report::junit::render(&summary, None), report("junit.xml"));
    // The spill files are gone from the committed report.
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The CT fixtures decode into several preprocessing groups (8- and 16-bit
/// PNG, DICOM with its rescale, a multi-frame file), so their batches finish
/// group by group, not in sample order: the records must still come out in
/// listing order, frames of a file in frame order.
#[test]
fn a_streamed_run_equals_its_in_memory_recomputation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let data = repo().join("fixtures/demo_ct");
    let (o, r) = run(&[
        "--threads",
        "2",
        "attack",
        "--model",
        "models/ct_nodule_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm,pgd",
        "--eps",
        "20HU,60HU",
        "--steps",
        "2",
        "--min-eps",
        "--gallery",
        "2",
        "--save-adversarial",
        "1",
        "--batch-size",
        "3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let samples = r["samples"].as_array().unwrap();
    let order: Vec<(u64, String)> =
        samples.iter().map(|s| (s["index"].as_u64().unwrap(), s["id"].as_str().unwrap().to_string())).collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.len().cmp(&b.1.len())).then(a.1.cmp(&b.1)));
    assert_eq!(order, sorted, "records in listing order");
    assert!(order.iter().any(|(_, id)| id.ends_with("#2")), "the multi-frame fixture is in the data");
    // The late check data reached the records: 4 directional probes, one read-back adversarial file.
    let has = |key: &str| samples.iter().filter(|s| !s["check_data"][key].is_null()).count();
    assert_eq!((has("directional"), has("round_trip")), (4, 1));
    check_against_in_memory(&out);
}

/// With --anonymize the records are renamed as they are streamed, and the
/// key lists every sample.
#[test]
fn an_anonymised_streamed_run_equals_its_in_memory_recomputation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let ids = tmp.path().join("ids.csv");
    let data = repo().join("fixtures/demo_xray_png");
    let (o, r) = run(&[
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "pgd,noise",
        "--eps",
        "2/255",
        "--steps",
        "2",
        "--anonymize",
        "--ids-file",
        ids.to_str().unwrap(),
        "--gallery",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let key = std::fs::read_to_string(&ids).unwrap();
    for s in r["samples"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        assert!(id.starts_with("s-") && key.contains(&format!("\"{id}\",\"synthetic_chest_")), "{id}");
    }
    check_against_in_memory(&out);
}
