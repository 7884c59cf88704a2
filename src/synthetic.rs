//! Synthetic chest-radiograph-like images, deterministic from a seed: the
//! project's own fixtures (`fixtures/demo_xray_png/`, written by
//! `cargo run --example make_fixtures`) and test inputs. They only look like
//! radiographs (bright mediastinum and body, dark lung fields, rib shadows,
//! sometimes a hazy opacity); they carry no label and no patient data.

use image::GrayImage;

/// A small deterministic generator (splitmix64), so fixtures never depend
/// on a random-number crate's version.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A `size`×`size` 8-bit chest-like image; `opacity` adds a hazy blob in one lung.
pub fn chest_xray(size: u32, seed: u64, opacity: bool) -> GrayImage {
    let mut rng = SplitMix(seed);
    let s = size as f32;
    let tilt = (rng.next() - 0.5) * 0.1 * s;
    let lung_w = s * (0.17 + 0.04 * rng.next());
    let lung_h = s * (0.30 + 0.06 * rng.next());
    let (blob_x, blob_y) = (s * (0.3 + 0.4 * rng.next()), s * (0.4 + 0.2 * rng.next()));
    let mut img = GrayImage::new(size, size);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        // Body: bright, fading towards the edges.
        let r = ((fx - s / 2.0) / (0.48 * s)).powi(2) + ((fy - s / 2.0) / (0.55 * s)).powi(2);
        let mut v = if r < 1.0 { 0.72 - 0.2 * r } else { 0.08 };
        // Two dark lung fields either side of the mediastinum.
        for side in [-1.0f32, 1.0] {
            let cx = s / 2.0 + side * 0.22 * s + tilt;
            let cy = s * 0.48;
            let e = ((fx - cx) / lung_w).powi(2) + ((fy - cy) / lung_h).powi(2);
            if e < 1.0 {
                v -= 0.42 * (1.0 - e).sqrt();
                // Rib shadows: faint horizontal bands inside the lungs.
                v += 0.05 * ((fy / s * 18.0).sin()).max(0.0);
            }
        }
        if opacity {
            let d = ((fx - blob_x).powi(2) + (fy - blob_y).powi(2)) / (0.012 * s * s);
            v += 0.25 * (-d).exp();
        }
        v += 0.03 * (rng.next() - 0.5);
        p.0 = [(v.clamp(0.0, 1.0) * 255.0).round() as u8];
    }
    img
}

/// The demo set's file names and images: `count` images, every other one
/// with an opacity.
pub fn demo_set(count: usize) -> Vec<(String, GrayImage)> {
    (0..count)
        .map(|i| {
            let opacity = i % 2 == 1;
            let name = format!("synthetic_chest_{i:02}_{}.png", if opacity { "opacity" } else { "clear" });
            (name, chest_xray(28, 1000 + i as u64, opacity))
        })
        .collect()
}

/// Hounsfield units of the tissues [`ct_slice`] draws.
pub mod hu {
    pub const AIR: f32 = -1000.0;
    pub const SOFT_TISSUE: f32 = 40.0;
    pub const LUNG: f32 = -850.0;
    pub const VESSEL: f32 = 40.0;
    pub const BONE: f32 = 700.0;
    pub const NODULE: f32 = 30.0;
    /// Standard deviation of the Gaussian noise added everywhere.
    pub const NOISE_SIGMA: f32 = 15.0;
}

/// Uniform and Gaussian draws from ChaCha8, seeded once per slice.
struct CtRng(rand_chacha::ChaCha8Rng);

impl CtRng {
    fn new(seed: u64) -> CtRng {
        use rand_chacha::rand_core::SeedableRng;
        CtRng(rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        use rand_chacha::rand_core::Rng;
        (self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller; one value per call keeps the draw count fixed).
    fn gauss(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// One lung: an ellipse in pixel coordinates.
#[derive(Clone, Copy)]
struct Ellipse {
    cx: f32,
    cy: f32,
    a: f32,
    b: f32,
}

impl Ellipse {
    /// < 1 inside.
    fn r2(&self, x: f32, y: f32) -> f32 {
        ((x - self.cx) / self.a).powi(2) + ((y - self.cy) / self.b).powi(2)
    }
}

/// A vessel segment: a tube from (x0, y0) to (x1, y1) of half-width `w`.
struct Segment {
    x0: f32,
    y0: f32,
    x1: f32,
    y1: f32,
    w: f32,
}

/// Grows a branching vessel tree from the hilum outwards; widths taper with depth.
#[allow(clippy::too_many_arguments)] // one segment's geometry, spelled out
fn grow_vessels(rng: &mut CtRng, out: &mut Vec<Segment>, x: f32, y: f32, angle: f32, len: f32, w: f32, depth: u32) {
    let (x1, y1) = (x + len * angle.cos(), y + len * angle.sin());
    out.push(Segment { x0: x, y0: y, x1, y1, w });
    // Draws are made whatever the depth, so every slice consumes the same
    // number of random values (the nodule draw comes after the vessels).
    let spread = rng.range(0.3, 0.7);
    let shrink = rng.range(0.65, 0.8);
    if depth > 0 {
        grow_vessels(rng, out, x1, y1, angle - spread, len * shrink, w * 0.72, depth - 1);
        grow_vessels(rng, out, x1, y1, angle + spread, len * shrink, w * 0.72, depth - 1);
    }
}

/// A synthetic axial chest-CT slice in Hounsfield units, row-major
/// `size`×`size`, deterministic from `seed`: air outside the body, a soft-tissue
/// body ellipse, two lungs with thin branching vessels and vessel
/// cross-sections, ribs, sternum and spine at the edge, Gaussian noise
/// (σ = 15 HU) everywhere; with `nodule`, one small solid round nodule
/// (radius 3–6 px at size 128) inside a lung.
///
/// Both classes draw exactly the same random numbers: `ct_slice(n, s, true)`
/// and `ct_slice(n, s, false)` differ only where the nodule is, so nothing but
/// the nodule tells the classes apart.
pub fn ct_slice(size: usize, seed: u64, nodule: bool) -> Vec<i16> {
    let mut rng = CtRng::new(seed);
    let s = size as f32;
    let k = s / 128.0; // every length below is given at size 128
    let (cx, cy) = (s / 2.0 + rng.range(-2.0, 2.0) * k, s / 2.0 + rng.range(-2.0, 2.0) * k);
    let body = Ellipse { cx, cy, a: rng.range(54.0, 59.0) * k, b: rng.range(40.0, 44.0) * k };
    let lungs: Vec<Ellipse> = [-1.0f32, 1.0]
        .iter()
        .map(|&side| Ellipse {
            cx: cx + side * rng.range(23.0, 27.0) * k,
            cy: cy - rng.range(1.0, 4.0) * k,
            a: rng.range(17.0, 21.0) * k,
            b: rng.range(27.0, 31.0) * k,
        })
        .collect();

    // Bone: ribs along the body outline, sternum in front, vertebral body behind.
    let mut bones: Vec<(f32, f32, f32)> = Vec::new(); // (x, y, radius)
    let rib_phase = rng.range(0.0, 0.15);
    for i in 0..14 {
        // Angles around the body, skipping the front (sternum) and back (spine) gaps.
        let t = rib_phase + i as f32 / 14.0;
        let ang = std::f32::consts::TAU * t;
        let (dx, dy) = (ang.cos(), ang.sin());
        if dy.abs() > 0.93 {
            continue;
        }
        let rad = rng.range(2.0, 3.0) * k;
        bones.push((cx + dx * (body.a - 5.5 * k), cy + dy * (body.b - 5.0 * k), rad));
    }
    bones.push((cx, cy - body.b + 5.0 * k, rng.range(2.5, 3.5) * k));
    let spine = (cx, cy + body.b - 12.0 * k, rng.range(7.0, 8.5) * k);

    // Vessels: one tree per lung from the hilum, plus cross-sections (small dots).
    let mut segments = Vec::new();
    let mut dots: Vec<(f32, f32, f32)> = Vec::new();
    for (li, lung) in lungs.iter().enumerate() {
        let side = if li == 0 { -1.0f32 } else { 1.0 };
        let hx = lung.cx - side * lung.a * 0.75;
        let hy = lung.cy + rng.range(-4.0, 4.0) * k;
        for _ in 0..3 {
            let base = if side < 0.0 { std::f32::consts::PI } else { 0.0 };
            let angle = base + rng.range(-1.1, 1.1);
            let len = rng.range(8.0, 12.0) * k;
            grow_vessels(&mut rng, &mut segments, hx, hy, angle, len, 1.6 * k, 3);
        }
        for _ in 0..6 {
            let (r, t) = (rng.uniform().sqrt() * 0.85, rng.range(0.0, std::f32::consts::TAU));
            dots.push((lung.cx + r * lung.a * t.cos(), lung.cy + r * lung.b * t.sin(), rng.range(0.8, 1.8) * k));
        }
    }

    // The nodule's draw is made for both classes (see above).
    let nl = lungs[(rng.uniform() * 2.0) as usize % 2];
    let nr = rng.range(3.0, 6.0) * k;
    let (r, t) = (rng.uniform().sqrt(), rng.range(0.0, std::f32::consts::TAU));
    let reach = |half: f32| (half - nr - 2.0 * k).max(0.0) / half;
    let nodule_at = (nl.cx + r * reach(nl.a) * nl.a * t.cos(), nl.cy + r * reach(nl.b) * nl.b * t.sin());

    // Vessel opacity in [0, 1], rasterised segment by segment within their bounding boxes.
    let mut vessel = vec![0f32; size * size];
    let mut stamp = |x0: f32, y0: f32, x1: f32, y1: f32, w: f32| {
        let pad = w + 2.0 * k;
        let (xa, xb) =
            ((x0.min(x1) - pad).floor().max(0.0) as usize, ((x0.max(x1) + pad).ceil().max(0.0) as usize).min(size));
        let (ya, yb) =
            ((y0.min(y1) - pad).floor().max(0.0) as usize, ((y0.max(y1) + pad).ceil().max(0.0) as usize).min(size));
        let (vx, vy) = (x1 - x0, y1 - y0);
        let l2 = (vx * vx + vy * vy).max(1e-6);
        for y in ya..yb {
            for x in xa..xb {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = (((px - x0) * vx + (py - y0) * vy) / l2).clamp(0.0, 1.0);
                let d = ((px - x0 - t * vx).powi(2) + (py - y0 - t * vy).powi(2)).sqrt();
                // Partial-volume edge: full inside the radius, linear over one pixel.
                let v = (w + 0.5 - d).clamp(0.0, 1.0) * (w / (0.5 * k)).clamp(0.35, 1.0);
                let p = &mut vessel[y * size + x];
                *p = p.max(v);
            }
        }
    };
    for sgm in &segments {
        stamp(sgm.x0, sgm.y0, sgm.x1, sgm.y1, sgm.w);
    }
    for &(x, y, r) in &dots {
        stamp(x, y, x, y, r);
    }

    let mut out = Vec::with_capacity(size * size);
    for y in 0..size {
        for x in 0..size {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let mut v = hu::AIR;
            if body.r2(px, py) < 1.0 {
                v = hu::SOFT_TISSUE;
                if lungs.iter().any(|l| l.r2(px, py) < 1.0) {
                    let o = vessel[y * size + x];
                    v = hu::LUNG + (hu::VESSEL - hu::LUNG) * o;
                    if nodule {
                        let d = ((px - nodule_at.0).powi(2) + (py - nodule_at.1).powi(2)).sqrt();
                        let o = (nr + 0.5 - d).clamp(0.0, 1.0);
                        v = v.max(hu::LUNG + (hu::NODULE - hu::LUNG) * o);
                    }
                }
                for &(bx, by, br) in &bones {
                    let o = (br + 0.5 - ((px - bx).powi(2) + (py - by).powi(2)).sqrt()).clamp(0.0, 1.0);
                    v += (hu::BONE - v) * o;
                }
                let d = ((px - spine.0).powi(2) + (py - spine.1).powi(2)).sqrt();
                let o = (spine.2 + 0.5 - d).clamp(0.0, 1.0) * (d - spine.2 * 0.45 + 0.5).clamp(0.0, 1.0);
                v += (hu::BONE - v) * o;
            }
            v += hu::NOISE_SIGMA * rng.gauss();
            out.push(v.round().clamp(-1024.0, 3071.0) as i16);
        }
    }
    out
}

/// Class folders of `fixtures/demo_ct/`, in the order of
/// `models/ct_nodule_cnn.model.toml`'s `[classes] names`.
pub const CT_CLASSES: [&str; 2] = ["normal", "nodule"];

/// Side of the demo CT slices.
pub const DEMO_CT_SIZE: usize = 128;

/// The lung-window display image of a HU slice (window −600/1500), as a PNG
/// export of the scan would show it: `u = clip((HU + 1350) / 1500, 0, 1)`
/// scaled to `max` and rounded.
pub fn lung_window(hu: &[i16], max: f32) -> Vec<f32> {
    hu.iter().map(|&v| (((v as f32 + 1350.0) / 1500.0).clamp(0.0, 1.0) * max).round()).collect()
}

/// Writes the demo CT set under `root` (`cargo run --example make_fixtures`
/// writes into `fixtures/`): `demo_ct/` with, per class folder, DICOM slices
/// in several encodings and lung-window PNGs; `dicom_edge_cases/` with a
/// MONOCHROME1 radiograph-like image and deliberately broken files (kept out
/// of the demo so that the README's run ends cleanly). Returns the paths
/// written. Every file is a pure function of its name's seed, so the folders
/// are reproducible byte for byte (tests/fixtures.rs).
pub fn write_demo_ct(root: &std::path::Path) -> Result<Vec<std::path::PathBuf>, crate::error::Error> {
    let dir = &root.join("demo_ct");
    let edge = &root.join("dicom_edge_cases");
    use crate::io::dicom_write::{CtSliceSpec, SliceKind, WriteSyntax, write_ct_slice};
    let n = DEMO_CT_SIZE;
    let io_err = |path: &std::path::Path, e: &dyn std::fmt::Display| crate::error::Error::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut written = Vec::new();
    for (class, nodule) in [(CT_CLASSES[0], false), (CT_CLASSES[1], true)] {
        let cdir = dir.join(class);
        std::fs::create_dir_all(&cdir).map_err(|e| io_err(&cdir, &e))?;
        // File numbers run on across the classes so every seed is distinct.
        let base = if nodule { 10 } else { 0 };
        let seed = |i: u64| 5000 + base + i;
        let mut dicom = |name: String, spec: CtSliceSpec| -> Result<(), crate::error::Error> {
            let path = cdir.join(name);
            write_ct_slice(&path, &spec)?;
            written.push(path);
            Ok(())
        };
        let slice = |i: u64| ct_slice(n, seed(i), nodule);
        let i = base + 1;
        dicom(format!("ct_int16_rescale_-1024_explicit_le_{i:02}.dcm"), CtSliceSpec::ct(n, slice(1), seed(1)))?;
        let i = base + 2;
        let spec = CtSliceSpec { syntax: WriteSyntax::ImplicitVrLittleEndian, ..CtSliceSpec::ct(n, slice(2), seed(2)) };
        dicom(format!("ct_int16_rescale_-1024_implicit_le_{i:02}.dcm"), spec)?;
        let i = base + 3;
        let spec = CtSliceSpec { syntax: WriteSyntax::ExplicitVrBigEndian, ..CtSliceSpec::ct(n, slice(3), seed(3)) };
        dicom(format!("ct_int16_rescale_-1024_explicit_be_{i:02}.dcm"), spec)?;
        let i = base + 4;
        let spec = CtSliceSpec { bits_stored: 12, signed: false, ..CtSliceSpec::ct(n, slice(4), seed(4)) };
        dicom(format!("ct_uint16_bitsstored_12_rescale_-1024_{i:02}.dcm"), spec)?;
        let i = base + 5;
        let spec = CtSliceSpec { syntax: WriteSyntax::RleLossless, ..CtSliceSpec::ct(n, slice(5), seed(5)) };
        dicom(format!("ct_rle_lossless_{i:02}.dcm"), spec)?;
        let spec = CtSliceSpec {
            kind: SliceKind::MultiFrameCt,
            frames: vec![slice(6), slice(7), slice(8)],
            signed: false,
            ..CtSliceSpec::ct(n, Vec::new(), seed(6))
        };
        dicom(format!("ct_multiframe_3_sc_word_{:02}-{:02}.dcm", base + 6, base + 8), spec)?;

        for (i, bits) in [(base + 9, 8u32), (base + 10, 16)] {
            let path = cdir.join(format!("ct_lung_window_{bits}bit_{i:02}.png"));
            let hu = ct_slice(n, seed(i - base), nodule);
            let saved = if bits == 8 {
                let px = lung_window(&hu, 255.0).iter().map(|&v| v as u8).collect();
                image::GrayImage::from_raw(n as u32, n as u32, px).expect("size").save(&path)
            } else {
                let px = lung_window(&hu, 65535.0).iter().map(|&v| v as u16).collect();
                image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(n as u32, n as u32, px)
                    .expect("size")
                    .save(&path)
            };
            saved.map_err(|e| io_err(&path, &e))?;
            written.push(path);
        }
    }

    // A radiograph-like secondary capture, MONOCHROME1 (high stored = dark):
    // the chest radiograph generator's grey levels inverted into 12 bits.
    let xr = chest_xray(n as u32, 5100, false);
    let stored = xr.as_raw().iter().map(|&v| (4095 - (v as i32 * 4095 + 127) / 255) as i16).collect();
    let spec = CtSliceSpec {
        kind: SliceKind::RadiographMonochrome1,
        frames: vec![stored],
        bits_stored: 12,
        signed: false,
        pixel_spacing: [0.3, 0.3],
        ..CtSliceSpec::ct(n, Vec::new(), 5100)
    };
    std::fs::create_dir_all(edge).map_err(|e| io_err(edge, &e))?;
    let path = edge.join("xr_monochrome1_12bit_sc.dcm");
    write_ct_slice(&path, &spec)?;
    written.push(path);

    // Broken files: what a real export folder also contains.
    let valid = std::fs::read(&written[0]).map_err(|e| io_err(&written[0], &e))?;
    let mut broken = |name: &str, bytes: &[u8]| -> Result<(), crate::error::Error> {
        let path = edge.join(name);
        std::fs::write(&path, bytes).map_err(|e| io_err(&path, &e))?;
        written.push(path);
        Ok(())
    };
    // Cut in the middle of the pixel data (the last 2·n·n bytes).
    broken("broken_truncated.dcm", &valid[..valid.len() - n * n])?;
    let mut rng = SplitMix(77);
    let mut wrong = b"\x89PNG\r\n\x1a\n".to_vec();
    wrong.extend((0..4000).map(|_| (rng.next() * 256.0) as u8));
    broken("broken_wrong_header.dcm", &wrong)?;
    let png = std::fs::read(dir.join("nodule/ct_lung_window_8bit_19.png")).map_err(|e| io_err(dir, &e))?;
    broken("broken_truncated.png", &png[..png.len() / 2])?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_slices_are_deterministic_and_differ_only_at_the_nodule() {
        let (a, b) = (ct_slice(128, 42, false), ct_slice(128, 42, true));
        assert_eq!(a, ct_slice(128, 42, false));
        assert_ne!(a, ct_slice(128, 43, false));
        // Nodule radius ≤ 6 px (+ 1 px partial-volume edge): at most π·7² pixels change.
        let changed: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert!(!changed.is_empty() && changed.len() <= 160, "{} pixels changed", changed.len());
        for &i in &changed {
            assert!(b[i] > a[i], "the nodule only adds density");
        }
        // Plausible HU: air, lung, soft tissue and bone all present.
        let count = |lo: i16, hi: i16| a.iter().filter(|&&v| v >= lo && v < hi).count();
        assert!(count(-1100, -950) > 2000 && count(-900, -800) > 1500);
        assert!(count(0, 100) > 2000 && count(500, 900) > 50);
    }
}
