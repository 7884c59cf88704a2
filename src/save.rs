//! `--save-adversarial`: writes an adversarial scan back in its own format,
//! under the report folder, never beside the input. PNG and JPEG inputs are
//! written as PNG at the source's bit depth and channels; DICOM as a new
//! derived instance of the source frame (`io::dicom_write::write_derived`).
//! The pixel values are the quantised adversarial image's stored values, so
//! reading the file back gives exactly the image whose prediction was
//! recorded. File names follow the sample id (`/` → `__`, frame `#k` →
//! `_frame_k`), or its short hash with `--anonymize`.

use std::path::{Path, PathBuf};

use image::ImageEncoder as _;
use ndarray::ArrayView3;

use crate::dataset::Sample;
use crate::error::Error;
use crate::scan::Scan;

/// Writes `adv` (attack units, the scan's shape, already quantised) and
/// returns the path written.
pub fn write_adversarial(
    dir: &Path,
    sample: &Sample,
    scan: &Scan,
    adv: ArrayView3<f32>,
    description: &str,
    anonymize: bool,
) -> Result<PathBuf, Error> {
    let stem = if anonymize {
        crate::report::anonymize::short_id(&sample.id)
    } else {
        // `normal/scan.dcm#2` → `normal__scan_frame_2`.
        let (file, frame) = sample.id.split_once('#').unwrap_or((&sample.id, ""));
        let file = Path::new(file).with_extension("");
        let frame = if frame.is_empty() { String::new() } else { format!("_frame_{frame}") };
        format!("{}{frame}", file.to_string_lossy().replace(['/', '\\'], "__"))
    };
    let stored: Vec<i64> = adv.iter().map(|&v| scan.intensity.stored(v)).collect();
    let out_err = |path: &Path, reason: String| Error::Output { path: path.to_path_buf(), reason };
    if scan.record.format == "dicom" {
        let path = dir.join(format!("{stem}.dcm"));
        let stored: Vec<i32> = stored.iter().map(|&v| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32).collect();
        let frame = scan.record.frame.map_or(0, |k| k - 1);
        crate::io::dicom_write::write_derived(&sample.path, frame, &stored, &path, description, anonymize)?;
        return Ok(path);
    }
    let path = dir.join(format!("{stem}.png"));
    let [channels, height, width] = scan.record.size;
    // Interleave channel-first values into pixels.
    let pixel_order = (0..height * width).flat_map(|p| (0..channels).map(move |c| c * height * width + p));
    let color_type = match (channels, scan.record.bits) {
        (1, 8) => image::ExtendedColorType::L8,
        (3, 8) => image::ExtendedColorType::Rgb8,
        (1, 16) => image::ExtendedColorType::L16,
        (3, 16) => image::ExtendedColorType::Rgb16,
        (c, b) => return Err(out_err(&path, format!("cannot write a {c}-channel {b}-bit PNG"))),
    };
    let bytes: Vec<u8> = if scan.record.bits == 8 {
        pixel_order.map(|k| stored[k].clamp(0, 255) as u8).collect()
    } else {
        // `PngEncoder::write_image` takes 16-bit samples in native endianness
        // and writes them big-endian itself.
        pixel_order.flat_map(|k| (stored[k].clamp(0, 65535) as u16).to_ne_bytes()).collect()
    };
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&bytes, width as u32, height as u32, color_type)
        .map_err(|e| out_err(&path, e.to_string()))?;
    crate::report::write_atomic(&path, &png)?;
    Ok(path)
}
