//! The committed fixtures are exactly what the project's own generator writes.

mod common;

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
