//! The committed fixtures are exactly what the project's own generator writes.

mod common;

use std::path::{Path, PathBuf};

#[test]
fn demo_fixtures_are_reproducible() {
    let dir = common::repo().join("fixtures/demo_xray_png");
    let tmp = tempfile::tempdir().unwrap();
    for (name, img) in advscan::synthetic::demo_set(16) {
        let fresh = tmp.path().join(&name);
        img.save(&fresh).unwrap();
        let committed = std::fs::read(dir.join(&name)).unwrap_or_else(|_| {
            panic!("fixtures/demo_xray_png/{name} missing: run `cargo run --example make_fixtures`")
        });
        assert_eq!(std::fs::read(&fresh).unwrap(), committed, "{name} differs from the generator's output");
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out.sort();
    out
}

#[test]
fn demo_ct_fixtures_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let written = advscan::synthetic::write_demo_ct(tmp.path()).unwrap();
    let fresh = files_under(tmp.path());
    // Both folders the generator writes, compared against the committed ones.
    let committed_root = common::repo().join("fixtures");
    let committed: Vec<PathBuf> =
        ["demo_ct", "dicom_edge_cases"].iter().flat_map(|d| files_under(&committed_root.join(d))).collect();
    assert_eq!(written.len(), fresh.len());
    let rel = |p: &Path, root: &Path| p.strip_prefix(root).unwrap().to_path_buf();
    let committed_files: Vec<PathBuf> = committed.iter().map(|p| rel(p, &committed_root)).collect();
    let fresh_files: Vec<PathBuf> = fresh.iter().map(|p| rel(p, tmp.path())).collect();
    assert_eq!(committed_files, fresh_files, "fixtures/demo_ct: run `cargo run --example make_fixtures`");
    let mut total = 0;
    for name in &fresh_files {
        let bytes = std::fs::read(tmp.path().join(name)).unwrap();
        total += bytes.len();
        assert!(
            std::fs::read(committed_root.join(name)).unwrap() == bytes,
            "fixtures/{} differs from the generator's output",
            name.display()
        );
    }
    assert!(total < 1_100_000, "the CT fixtures are {total} bytes; keep them near 1 MB");
}
