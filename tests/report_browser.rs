//! report.html in a real browser: headless Chromium (Debian's `chromium`
//! package, installed by `.ci/run`) loads the page written by `advscan
//! attack`, and the DOM it builds must hold every section, the charts and
//! the gallery images. Without chromium this test fails rather than pass
//! silently: a report nobody checked in a browser is not checked.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run `chromium` ({e}): the browser test needs Debian's chromium package; \
             .ci/run installs it (apt-get install -y chromium)"
        ),
    }
}

#[test]
fn report_loads_in_headless_chromium_with_charts_and_gallery() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo_data(tmp.path(), 6);
    let out = tmp.path().join("out");
    let o = advscan(&[
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm,pgd,noise",
        "--eps",
        "2/255,8/255",
        "--min-eps",
        "--gallery",
        "3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = out.join("report.html");
    assert!(page.exists());

    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let o = chromium(&tmp.path().join("profile"), &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && !dom.trim().is_empty(), "chromium failed: {}", String::from_utf8_lossy(&o.stderr));
    for s in advscan::report::html::SECTIONS {
        assert!(dom.contains(s), "section '{s}' missing from the rendered DOM");
    }
    assert!(dom.matches("<svg").count() >= 4, "robustness, flip, confidence and minimal-ε charts");
    assert_eq!(dom.matches("src=\"data:image/png;base64,").count(), 3 * 3, "3 gallery samples × 3 images");

    // The screenshot is for a human (kept when ADVSCAN_SCREENSHOT names a file);
    // here it must at least be produced.
    let shot = std::env::var_os("ADVSCAN_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("report.png"));
    let o = chromium(
        &tmp.path().join("profile"),
        &["--hide-scrollbars", "--window-size=1200,4200", &format!("--screenshot={}", shot.display()), &url],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "no screenshot");
}
