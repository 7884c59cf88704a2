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
