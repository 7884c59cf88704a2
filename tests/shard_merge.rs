//! `advscan attack --shard K/N` and `advscan merge` through the real binary:
//! three shards merged give the results.json of one unsharded run with the
//! same seed (apart from timing), including the skipped-file list, the
//! gallery, the minimal-ε summary and the trust checks; a missing, duplicate
//! or foreign shard is refused; bad `--shard` values are usage errors.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The demo scans plus one broken file, in a temporary folder.
fn data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for entry in std::fs::read_dir(repo().join("fixtures/demo_xray_png")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, data.join(path.file_name().unwrap())).unwrap();
    }
    // First in the listing (sorted by name), so shard 1/3 skips it.
    std::fs::write(data.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    data
}

fn attack(data: &Path, out: &Path, seed: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm,pgd",
        "--steps",
        "3",
        "--eps",
        "2/255,8/255",
        "--min-eps",
        "--gallery",
        "3",
        "--seed",
        seed,
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    advscan(&args)
}

fn merge(inputs: &[&Path], out: &Path) -> Output {
    let mut args = vec!["merge"];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--out", out.to_str().unwrap()]);
    advscan(&args)
}

fn results(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap()
}

/// Drops what legitimately differs between a merged and a single run: wall times.
fn untimed(mut r: Value) -> Value {
    r.as_object_mut().unwrap().remove("timing");
    for run in r["runs"].as_array_mut().unwrap() {
        run.as_object_mut().unwrap().remove("seconds");
    }
    r
}

/// The first path where two JSON values differ, with both values.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{at}.{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

#[test]
fn merged_shards_equal_a_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let single = tmp.path().join("single");
    let o = attack(&data, &single, "5", &[]);
    assert_eq!(o.status.code(), Some(2), "one skipped input: {}", text(&o.stderr));

    let shards: Vec<PathBuf> = (1..=3).map(|k| tmp.path().join(format!("shard{k}"))).collect();
    for (k, dir) in shards.iter().enumerate() {
        let spec = format!("{}/3", k + 1);
        // --threads never changes a result, so a shard may use another count.
        let mut extra = vec!["--shard", spec.as_str()];
        if k == 1 {
            extra = vec!["--shard", spec.as_str(), "--threads", "1"];
        }
        let o = attack(&data, dir, "5", &extra);
        let expected = if k == 0 { 2 } else { 0 };
        assert_eq!(o.status.code(), Some(expected), "shard {spec}: {}", text(&o.stderr));
        let r = results(dir);
        assert_eq!(r["settings"]["shard"], serde_json::json!({"index": k + 1, "count": 3}));
        for s in r["samples"].as_array().unwrap() {
            assert_eq!(s["index"].as_u64().unwrap() % 3, k as u64, "round-robin on the listing");
        }
    }
    // The broken file is listing index 0: shard 1 records it, the others do not see it.
    assert_eq!(results(&shards[0])["data"]["skipped"].as_array().unwrap().len(), 1);
    assert_eq!(results(&shards[1])["data"]["skipped"].as_array().unwrap().len(), 0);

    let merged = tmp.path().join("merged");
    // Any order of the inputs.
    let o = merge(&[&shards[2], &shards[0], &shards[1]], &merged);
    assert_eq!(o.status.code(), Some(2), "the merged run has a skipped input: {}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stderr).contains("1 input(s) skipped"), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("robust acc"), "prints the summary table: {}", text(&o.stdout));
    for f in ["report.html", "summary.md", "junit.xml"] {
        assert!(merged.join(f).is_file(), "merge writes {f}");
    }

    let (a, b) = (untimed(results(&single)), untimed(results(&merged)));
    assert_eq!(a["samples"].as_array().unwrap().len(), 16);
    assert_eq!(a["gallery"].as_array().unwrap().len(), 3);
    assert!(a["min_eps"].is_object() && a["settings"].get("shard").is_none());
    if let Some(d) = first_difference(&a, &b, "") {
        panic!("merged results differ from the single run at {d}");
    }
    assert_eq!(a, b);
    // --policy gates the merged results; the skipped input still outranks a failed gate.
    let policy =
        write(tmp.path(), "policy.toml", b"[[require]]\nmax_flip_rate = 0.0\nattack = \"pgd\"\neps = \"8/255\"\n");
    let o = advscan(&[
        "merge",
        shards[0].to_str().unwrap(),
        shards[1].to_str().unwrap(),
        shards[2].to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--out",
        tmp.path().join("gated").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("FAIL flip rate of pgd ε=8/255 ≤ 0"), "{}", text(&o.stdout));
    assert!(std::fs::read_to_string(tmp.path().join("gated/junit.xml")).unwrap().contains("<failure"));
    // Timing of a merge is the sum over the shards.
    let evals = |d: &Path| results(d)["timing"]["gradient_evals"].as_u64().unwrap();
    assert_eq!(evals(&merged), shards.iter().map(|d| evals(d)).sum::<u64>());

    // A missing shard, a duplicate one, an unsharded result, a shard of another run.
    let o = merge(&[&shards[0], &shards[1]], &tmp.path().join("m1"));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("shard(s) 3/3 missing"), "{}", text(&o.stderr));

    let o = merge(&[&shards[0], &shards[1], &shards[1], &shards[2]], &tmp.path().join("m2"));
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("shard 2/3 is given twice") && e.contains("shard2"), "{e}");

    let o = merge(&[&single, &shards[1]], &tmp.path().join("m3"));
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("single") && e.contains("not the result of a sharded run"), "{e}");

    let other_seed = tmp.path().join("seed6_shard3");
    let o = attack(&data, &other_seed, "6", &["--shard", "3/3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = merge(&[&shards[0], &shards[1], &other_seed], &tmp.path().join("m4"));
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("seed6_shard3") && e.contains("settings.seed is 6 here but 5 there"), "{e}");
    assert!(!tmp.path().join("m4/results.json").exists(), "nothing written on a refused merge");
}

#[test]
fn bad_shard_specs_are_usage_errors() {
    for spec in ["0/3", "4/3", "1/0", "2", "a/3"] {
        let o = advscan(&["attack", "--model", "m.onnx", "--data", ".", "--shard", spec, "--out", "/tmp/x"]);
        assert_eq!(o.status.code(), Some(2), "{spec}");
        let e = text(&o.stderr);
        assert!(e.contains("--shard") && e.contains(spec), "{spec}: {e}");
    }
    let o = advscan(&["attack", "--model", "m.onnx", "--data", ".", "--shard", "4/3", "--out", "/tmp/x"]);
    assert!(text(&o.stderr).contains("between 1 and N = 3"), "{}", text(&o.stderr));
    let o = advscan(&["merge", "--out", "/tmp/x"]);
    assert_eq!(o.status.code(), Some(2), "merge needs inputs");
}
