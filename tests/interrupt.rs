//! An interrupted `advscan attack` (Ctrl-C, SIGTERM, `kill -9`) leaves the
//! previous report exactly as it was, byte for byte, and Ctrl-C/SIGTERM stop
//! the run cleanly with a message and exit status 2.
//!
//! The interrupted run is made endless on purpose (PGD with 10⁷ steps), so
//! the signal always arrives mid-attack whatever the machine's speed; the
//! test waits for the run's staging folder to appear before signalling. The
//! timeouts only stop a hung test: no assertion depends on how fast anything is.

#![cfg(unix)]

mod common;

use common::repo;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn advscan_attack(out: &Path, steps: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_advscan"));
    cmd.current_dir(repo()).args(["--threads", "1", "attack", "--model", "models/pneumonia_cnn.onnx"]).args([
        "--data",
        "fixtures/demo_xray_png",
        "--attack",
        "pgd",
        "--eps",
        "2/255",
        "--steps",
        steps,
        "--quiet",
        "--out",
    ]);
    cmd.arg(out);
    cmd
}

/// A finished report in `out`; returns its results.json bytes.
fn previous_report(out: &Path) -> Vec<u8> {
    let o = advscan_attack(out, "2").output().expect("advscan runs");
    assert_eq!(o.status.code(), Some(0), "the first run should pass: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out.join("results.json")).expect("the first run wrote results.json")
}

/// Hidden staging folders of runs into `out`.
fn staging_dirs(out: &Path) -> Vec<PathBuf> {
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    let parent = out.parent().unwrap();
    std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!(".{name}.advscan-partial-")))
        .collect()
}

/// Starts an endless run into `out` and returns once it is attacking
/// (its staging folder exists, and then a moment more).
fn start_endless_run(out: &Path) -> Child {
    let mut child =
        advscan_attack(out, "10000000").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("advscan starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while staging_dirs(out).is_empty() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the endless run ended by itself ({status})");
        }
        assert!(Instant::now() < deadline, "the run never created its staging folder");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Loading, decoding and the clean pass come first; let it reach the attack.
    std::thread::sleep(Duration::from_millis(1500));
    child
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill runs").success();
    assert!(ok, "kill {sig} failed");
}

/// Waits for the child (at most two minutes, then kills it and fails).
fn wait(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("advscan did not stop within two minutes of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_clean_stop(sig: &str, name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let before = previous_report(&out);
    let child = start_endless_run(&out);
    signal(&child, sig);
    let (code, stderr) = wait(child);
    assert_eq!(code, Some(2), "an interrupted run exits with 2 (did not complete): {stderr}");
    assert!(stderr.contains(&format!("interrupted by {name}")), "expected a clear message naming {name}: {stderr}");
    assert!(stderr.contains("earlier report") && stderr.contains("unchanged"), "expected the report's fate: {stderr}");
    assert_eq!(std::fs::read(out.join("results.json")).unwrap(), before, "the previous results.json is untouched");
    assert!(out.join("report.html").is_file(), "the previous report.html is still there");
    assert!(staging_dirs(&out).is_empty(), "the staging folder is removed: {:?}", staging_dirs(&out));
}

#[test]
fn ctrl_c_stops_cleanly_and_keeps_the_previous_report() {
    check_clean_stop("-INT", "SIGINT");
}

#[test]
fn sigterm_stops_cleanly_and_keeps_the_previous_report() {
    check_clean_stop("-TERM", "SIGTERM");
}

#[test]
fn kill_9_mid_run_leaves_the_previous_report_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let before = previous_report(&out);
    let child = start_endless_run(&out);
    signal(&child, "-KILL");
    let (code, _) = wait(child);
    assert_eq!(code, None, "killed by a signal");
    let after = std::fs::read(out.join("results.json")).unwrap();
    assert_eq!(after, before, "the previous results.json is byte for byte what it was");
    serde_json::from_slice::<serde_json::Value>(&after).expect("and it is complete JSON");
    assert_eq!(staging_dirs(&out).len(), 1, "a killed run cannot remove its staging folder");
    // The next run into the same folder replaces the report and removes the dead run's staging.
    let o = advscan_attack(&out, "2").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(staging_dirs(&out).is_empty(), "the dead run's staging folder is removed");
}

#[test]
fn a_second_ctrl_c_ends_the_process_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let before = previous_report(&out);
    let child = start_endless_run(&out);
    signal(&child, "-INT");
    signal(&child, "-INT");
    let (code, _) = wait(child);
    assert_eq!(code, Some(2), "a forced stop also reports failure");
    assert_eq!(std::fs::read(out.join("results.json")).unwrap(), before);
}
