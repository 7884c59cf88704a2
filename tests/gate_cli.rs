//! `advscan gate`, `attack --policy` and `report` through the real binary, on
//! the committed CNN and the synthetic chest images of
//! `advscan::synthetic::demo_set` (unlabelled, so flip-rate requirements).

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// Writes the demo set and runs one small attack; returns (tmp, results.json).
fn attacked(extra: &[&str]) -> (tempfile::TempDir, PathBuf, std::process::Output) {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo_data(tmp.path(), 6);
    let out = tmp.path().join("out");
    let mut args = vec![
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm,pgd,noise",
        "--eps",
        "2/255,8/255",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = advscan(&args);
    (tmp, out.join("results.json"), o)
}

fn policy(dir: &Path, text: &str) -> PathBuf {
    write(dir, "policy.toml", text.as_bytes())
}

fn gate(policy: &Path, results: &Path) -> std::process::Output {
    advscan(&["gate", "--policy", policy.to_str().unwrap(), results.to_str().unwrap()])
}

#[test]
fn gate_exit_codes_0_1_2() {
    let (tmp, results, o) = attacked(&[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let dir = tmp.path();

    // Flip rates are ≤ 1 and checks never fail on this model: passes.
    let pass = policy(dir, "[[require]]\nmax_flip_rate = 1.0\nattack = \"pgd\"\neps = \"8/255\"\n");
    let o = gate(&pass, &results);
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o.stdout), text(&o.stderr));

    // PGD at 8/255 flips some of these scans on this CNN, so a flip-rate limit of 0 fails.
    let fail = policy(dir, "[[require]]\nmax_flip_rate = 0.0\nattack = \"pgd\"\neps = \"8/255\"\n");
    let o = gate(&fail, &results);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}{}", text(&o.stderr));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL flip rate of pgd ε=8/255 ≤ 0: measured ") && l.ends_with(", limit 0")),
        "{stdout}"
    );
    let junit = std::fs::read_to_string(results.with_file_name("junit.xml")).unwrap();
    assert!(junit.contains("<failure message=\"measured "), "{junit}");

    // Missing results file.
    let o = gate(&pass, &dir.join("nope/results.json"));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("nope/results.json"), "{}", text(&o.stderr));

    // Malformed policy: names the file, the line and the key.
    let bad = policy(dir, "[[require]]\nmax_flip_rate = 0.5\nattack = \"pgd\"\nepsilon = \"8/255\"\n");
    let o = gate(&bad, &results);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("policy.toml:4: key 'epsilon'"), "{stderr}");

    // A requirement for a run that was not done is an error, not a pass.
    let unknown = policy(dir, "[[require]]\nmax_flip_rate = 1.0\nattack = \"apgd\"\neps = \"8/255\"\n");
    let o = gate(&unknown, &results);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("policy.toml:1") && stderr.contains("no such run"), "{stderr}");
}

#[test]
fn attack_with_policy_gates_in_one_step() {
    let tmp = tempfile::tempdir().unwrap();
    let p = policy(tmp.path(), "[[require]]\nmax_flip_rate = 0.0\nattack = \"pgd\"\neps = \"8/255\"\n");
    let (_t, results, o) = attacked(&["--policy", p.to_str().unwrap()]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}{}", text(&o.stderr));
    assert!(stdout.contains("FAIL flip rate of pgd ε=8/255 ≤ 0"), "{stdout}");
    assert!(results.exists());
    let summary = std::fs::read_to_string(results.with_file_name("summary.md")).unwrap();
    assert!(summary.contains("**Gate: FAILED**"), "{summary}");

    // A malformed policy is refused before the attack runs.
    let bad = policy(tmp.path(), "[[require]]\nmax_flip_rate = \"low\"\n");
    let (_t, results, o) = attacked(&["--policy", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("policy.toml:2: key 'max_flip_rate'"), "{}", text(&o.stderr));
    assert!(!results.exists());
}

#[test]
fn report_rebuilds_identical_outputs_and_junit_is_well_formed() {
    let (_tmp, results, o) = attacked(&[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (md, xml) = (results.with_file_name("summary.md"), results.with_file_name("junit.xml"));
    let (md0, xml0) = (std::fs::read_to_string(&md).unwrap(), std::fs::read_to_string(&xml).unwrap());
    let html = results.with_file_name("report.html");
    let html0 = std::fs::read(&html).unwrap();
    assert!(String::from_utf8_lossy(&html0).contains("data:image/png;base64,"), "default --gallery 8 shows images");
    std::fs::remove_file(&md).unwrap();
    std::fs::remove_file(&xml).unwrap();
    std::fs::remove_file(&html).unwrap();
    let o = advscan(&["report", results.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&md).unwrap(), md0);
    assert_eq!(std::fs::read_to_string(&xml).unwrap(), xml0);
    assert!(std::fs::read(&html).unwrap() == html0, "report.html rebuilt from results.json differs");

    // Put markup in a check's detail and fail it: junit.xml must escape it and count it.
    let mut r: advscan::report::json::Results = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    r.checks[0].status = advscan::report::json::Status::Fail;
    r.checks[0].detail = "logits <0 & >1".into();
    std::fs::write(&results, r.to_json()).unwrap();
    let p = policy(results.parent().unwrap(), "[[require]]\nno_failed_checks = true\n");
    let o = gate(&p, &results);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let xml = std::fs::read_to_string(&xml).unwrap();
    let cases = xml.matches("<testcase ").count();
    assert_eq!(cases, 1 + r.checks.len(), "{xml}");
    assert!(
        xml.contains(&format!(
            "<testsuites name=\"advscan models/pneumonia_cnn.onnx\" tests=\"{cases}\" failures=\"2\""
        )),
        "{xml}"
    );
    assert!(xml.contains("logits &lt;0 &amp; &gt;1") && !xml.contains("<0 &"), "{xml}");
    assert_eq!(xml.matches("<testcase").count(), xml.matches("</testcase>").count() + xml.matches("\"/>").count());
}

/// The CI examples run `advscan attack` with the example policy, and that
/// policy applies to the runs the CI command asks for.
#[test]
fn ci_examples_use_a_valid_policy() {
    let mut attack_args: Option<(String, String)> = None;
    for file in ["docs/ci/github-actions.yml", "docs/ci/gitlab-ci.yml"] {
        let ci = std::fs::read_to_string(repo().join(file)).unwrap();
        let line = ci.lines().find(|l| l.contains("advscan attack")).unwrap_or_else(|| panic!("{file}: no attack"));
        assert!(line.contains("--policy docs/policies/example.toml"), "{file}: {line}");
        assert!(line.contains("--out reports/ci") && line.contains("--min-eps"), "{file}: {line}");
        let value = |flag: &str| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words[words.iter().position(|w| *w == flag).unwrap() + 1].to_string()
        };
        attack_args = Some((value("--attack"), value("--eps")));
    }
    // Same attacks and ε as the CI command, on the small CNN so the test is quick.
    let (attack, eps) = attack_args.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = demo_data(tmp.path(), 4);
    let out = tmp.path().join("out");
    let o = advscan(&[
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--attack",
        &attack,
        "--eps",
        &eps,
        "--min-eps",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = gate(&repo().join("docs/policies/example.toml"), &out.join("results.json"));
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}{}", text(&o.stdout), text(&o.stderr));
}
