//! Writes a synthetic training set for `models/train_ct_model.py`:
//! `cargo run --release --example make_ct_training_set -- OUT_DIR COUNT SEED`.
//! `OUT_DIR/hu.bin` holds COUNT slices of 128×128 Hounsfield units as raw
//! little-endian int16, slice after slice; `OUT_DIR/labels.txt` one label per
//! line (0 = normal, 1 = nodule), every other slice a nodule. Slice `i` uses
//! seed `SEED + i`, so sets with different seeds do not overlap as long as the
//! seed ranges do not. Not committed: the training script regenerates it.

use std::io::Write;

const SIZE: usize = 128;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, count, seed] = args.as_slice() else {
        return Err("usage: make_ct_training_set OUT_DIR COUNT SEED".into());
    };
    let (count, seed): (u64, u64) = (count.parse()?, seed.parse()?);
    let out = std::path::Path::new(out);
    std::fs::create_dir_all(out)?;
    let mut hu = std::io::BufWriter::new(std::fs::File::create(out.join("hu.bin"))?);
    let mut labels = String::new();
    for i in 0..count {
        let nodule = i % 2 == 1;
        for v in advscan::synthetic::ct_slice(SIZE, seed + i, nodule) {
            hu.write_all(&v.to_le_bytes())?;
        }
        labels.push_str(if nodule { "1\n" } else { "0\n" });
    }
    hu.flush()?;
    std::fs::write(out.join("labels.txt"), labels)?;
    println!("{}: {count} slices of {SIZE}×{SIZE}", out.display());
    Ok(())
}
