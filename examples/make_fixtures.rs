//! Writes the project's demo fixtures: `cargo run --example make_fixtures`.
//! The committed files must equal what this writes (tests/fixtures.rs).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let dir = root.join("demo_xray_png");
    std::fs::create_dir_all(&dir)?;
    for (name, img) in advscan::synthetic::demo_set(16) {
        img.save(dir.join(&name))?;
        println!("{}", dir.join(name).display());
    }
    for path in advscan::synthetic::write_demo_ct(&root)? {
        println!("{}", path.display());
    }
    Ok(())
}
