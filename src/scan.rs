//! A decoded scan in the attack's own units, and the arithmetic of those
//! units: what one attack unit is in the file's physical units (HU for CT),
//! which values the file format can store (for quantisation after an attack),
//! and ε given in HU, grey levels or model-input scale.
//!
//! The attack variable `x` is the image in its own pixel grid, divided by a
//! per-scan `unit_scale` in physical units: the window width for greyscale
//! DICOM (so 1 HU = 1/width), 2^bits − 1 for PNG and colour DICOM (so x is the
//! familiar [0, 1] image). The window then only shifts and clips, and one
//! attack unit is one full display range: an ε of `2/255` means two grey levels
//! of an 8-bit display, whatever the file. This module converts; it does not
//! decode (that is `io/`) and it does not resize or normalise (`preprocess.rs`).

use std::path::Path;

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::DecodeError;
use crate::io::InputKind;
use crate::io::dicom::DicomImage;
use crate::io::png::DecodedImage;

/// How stored integers map to physical values: `physical = slope · stored + intercept`,
/// with `stored` in `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Storage {
    pub slope: f64,
    pub intercept: f64,
    pub min: i64,
    pub max: i64,
}

impl Storage {
    /// The stored integer nearest to a physical value, clamped to what the
    /// file can hold.
    pub fn stored(&self, physical: f64) -> i64 {
        let s = ((physical - self.intercept) / self.slope).round();
        if s.is_nan() { self.min } else { (s as i64).clamp(self.min, self.max) }
    }

    pub fn physical(&self, stored: i64) -> f64 {
        self.slope * stored as f64 + self.intercept
    }

    /// The physical range the file can represent.
    pub fn physical_range(&self) -> (f64, f64) {
        let (a, b) = (self.physical(self.min), self.physical(self.max));
        (a.min(b), a.max(b))
    }
}

/// The map between attack units and the file's values, for one scan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intensity {
    /// Physical units per attack unit.
    pub unit_scale: f64,
    /// Physical value shown as black (the window's lower edge; 0 for PNG).
    pub window_low: f64,
    /// MONOCHROME1: high values are displayed dark.
    pub invert: bool,
    pub storage: Storage,
    /// HU per attack unit when ε may be given in HU: the window width of a CT
    /// scan, or of the model config's window for a PNG exported in it.
    pub hu_per_unit: Option<f64>,
}

impl Intensity {
    /// The valid range of the attack variable: what the file can store.
    pub fn bounds(&self) -> (f32, f32) {
        let (lo, hi) = self.storage.physical_range();
        ((lo / self.unit_scale) as f32, (hi / self.unit_scale) as f32)
    }

    /// Whether the valid range `bounds()` reaches outside the window
    /// `[offset, offset + 1]`, so that windowing clips (`PipelineSpec::clip`).
    pub fn window_clips(&self) -> bool {
        let (lo, hi) = self.bounds();
        let offset = self.offset();
        lo < offset || hi > offset + 1.0
    }

    /// The window's lower edge in attack units (`PipelineSpec::offset`).
    pub fn offset(&self) -> f32 {
        (self.window_low / self.unit_scale) as f32
    }

    /// Round an attack-unit image to the values the file can store.
    pub fn quantize(&self, x: f32) -> f32 {
        let stored = self.storage.stored(x as f64 * self.unit_scale);
        (self.storage.physical(stored) / self.unit_scale) as f32
    }

    /// The storable value nearest to `adv` that stays within `eps` (L∞) of
    /// the clean value `clean`, which is itself storable. Plain rounding can
    /// overshoot the ball by up to half a level (an 8-bit lung-window PNG
    /// has 5.9 HU per level, so a 5 HU perturbation cannot be stored at all);
    /// the quantised figures must describe images that respect ε.
    pub fn quantize_within(&self, adv: f32, clean: f32, eps: f32) -> f32 {
        let within = |v: f32| (v - clean).abs() <= eps * (1.0 + 1e-5) + 1e-7;
        let rounded = self.quantize(adv);
        if within(rounded) {
            return rounded;
        }
        let s = self.stored(adv);
        [s - 1, s + 1, self.stored(clean)]
            .into_iter()
            .map(|k| (self.storage.physical(k.clamp(self.storage.min, self.storage.max)) / self.unit_scale) as f32)
            .filter(|&v| within(v))
            .min_by(|a, b| (a - adv).abs().total_cmp(&(b - adv).abs()))
            .unwrap_or(clean)
    }

    /// The stored integer of an attack-unit value, for writing the file back.
    pub fn stored(&self, x: f32) -> i64 {
        self.storage.stored(x as f64 * self.unit_scale)
    }

    /// Key for grouping scans that can share a batch.
    pub fn key(&self) -> [u64; 6] {
        [
            self.unit_scale.to_bits(),
            self.window_low.to_bits(),
            self.invert as u64,
            self.storage.slope.to_bits(),
            self.storage.intercept.to_bits(),
            (self.storage.min as u64) ^ ((self.storage.max as u64).rotate_left(32)),
        ]
    }
}

/// What decoding applied to a scan, recorded per sample in results.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// `dicom`, `png` or `jpeg`.
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_syntax: Option<String>,
    pub photometric: String,
    pub bits: u16,
    pub size: [usize; 3],
    /// Physical unit of the values: `HU`, a DICOM rescale type, or `level` (PNG stored levels).
    pub units: String,
    /// `[slope, intercept]` of the modality LUT (DICOM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescale: Option<[f64; 2]>,
    /// `[centre, width]` in physical units and where it came from (`config` or `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<([f64; 2], String)>,
    /// 1-based frame of a multi-frame file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<usize>,
}

/// One decoded image (or one frame) in attack units.
#[derive(Debug, Clone)]
pub struct Scan {
    pub data: Array3<f32>,
    pub intensity: Intensity,
    pub record: ScanRecord,
}

/// A PNG or JPEG, whose levels are already a display image: x = level / (2^bits − 1).
pub fn from_png(img: DecodedImage, format: &str, config: &ModelConfig) -> Scan {
    let max_level = ((1u32 << img.bit_depth) - 1) as f64;
    let shape = (img.channels, img.height, img.width);
    let record = ScanRecord {
        format: format.into(),
        transfer_syntax: None,
        photometric: if img.channels == 3 { "RGB" } else { "grey" }.into(),
        bits: img.bit_depth.into(),
        size: [img.channels, img.height, img.width],
        units: "level".into(),
        rescale: None,
        window: None,
        frame: None,
    };
    let data = Array3::from_shape_vec(shape, img.data).expect("decoder returns channels × height × width values");
    Scan {
        data,
        intensity: Intensity {
            unit_scale: max_level,
            window_low: 0.0,
            invert: false,
            storage: Storage { slope: 1.0, intercept: 0.0, min: 0, max: max_level as i64 },
            hu_per_unit: config.window_for("HU").map(|(_, width)| width),
        },
        record,
    }
}

/// Every frame of a DICOM file. Greyscale needs a window: the config's, or
/// the file's own when the config says so (or has none).
pub fn from_dicom(img: DicomImage, config: &ModelConfig) -> Result<Vec<Scan>, DecodeError> {
    let path = img.path.clone();
    let colour = img.samples_per_pixel == 3;
    let (unit_scale, window_low, window) = if colour {
        (((1u64 << img.bits_stored.min(32)) - 1) as f64, 0.0, None)
    } else {
        let configured = config.window_for(&img.units);
        let from_file = config.window.use_file_voi || configured.is_none();
        let chosen = if from_file {
            img.voi_window.map(|w| (w, "file")).or(configured.map(|w| (w, "config")))
        } else {
            configured.map(|w| (w, "config"))
        };
        let Some(((centre, width), source)) = chosen else {
            return Err(no_window(&path));
        };
        if !(width > 0.0 && width.is_finite() && centre.is_finite()) {
            return Err(DecodeError::Corrupt {
                path,
                reason: format!("window width {width} is not a positive number"),
            });
        }
        // DICOM's LINEAR_EXACT VOI function: y = (x − c)/w + 0.5.
        (width, centre - width / 2.0, Some(([centre, width], source.to_string())))
    };
    let invert = img.photometric.eq_ignore_ascii_case("MONOCHROME1");
    let storage = Storage {
        slope: if colour { 1.0 } else { img.rescale_slope },
        intercept: if colour { 0.0 } else { img.rescale_intercept },
        min: img.stored_range.0,
        max: img.stored_range.1,
    };
    let hu = img.units.eq_ignore_ascii_case("HU");
    let intensity =
        Intensity { unit_scale, window_low, invert, storage, hu_per_unit: (hu && !colour).then_some(unit_scale) };
    let channels = img.samples_per_pixel;
    let multi = img.frames.len() > 1;
    let shape = (channels, img.rows, img.columns);
    img.frames
        .into_iter()
        .enumerate()
        .map(|(k, frame)| {
            let values: Vec<f32> = frame.iter().map(|&v| (v as f64 / unit_scale) as f32).collect();
            let data = Array3::from_shape_vec(shape, values).map_err(|_| DecodeError::Corrupt {
                path: path.clone(),
                reason: format!("frame {} does not hold {channels}×{}×{} values", k + 1, shape.1, shape.2),
            })?;
            Ok(Scan {
                data,
                intensity,
                record: ScanRecord {
                    format: "dicom".into(),
                    transfer_syntax: Some(img.transfer_syntax_name.clone()),
                    photometric: img.photometric.clone(),
                    bits: img.bits_stored,
                    size: [channels, shape.1, shape.2],
                    units: img.units.clone(),
                    rescale: (!colour).then_some([img.rescale_slope, img.rescale_intercept]),
                    window: window.clone(),
                    frame: multi.then_some(k + 1),
                },
            })
        })
        .collect()
}

/// Decode any input file into its scans (one per frame), refusing images
/// over `max_pixels` before their pixel data is read.
pub fn decode(path: &Path, max_pixels: u64, config: &ModelConfig) -> Result<Vec<Scan>, DecodeError> {
    match InputKind::from_path(path) {
        Some(InputKind::Dicom) => from_dicom(crate::io::dicom::decode(path, max_pixels)?, config),
        Some(kind @ (InputKind::Png | InputKind::Jpeg)) => {
            Ok(vec![from_png(crate::io::png::decode(path, max_pixels)?, image_format(kind), config)])
        }
        None => Err(unsupported_extension(path)),
    }
}

/// [`decode`] on the bytes of a file; `path` names it and its extension
/// picks the decoder, as for a file. The fuzz targets (`fuzz/`) enter here.
pub fn decode_bytes(
    bytes: &[u8],
    path: &Path,
    max_pixels: u64,
    config: &ModelConfig,
) -> Result<Vec<Scan>, DecodeError> {
    match InputKind::from_path(path) {
        Some(InputKind::Dicom) => from_dicom(crate::io::dicom::decode_bytes(bytes, path, max_pixels)?, config),
        Some(kind @ (InputKind::Png | InputKind::Jpeg)) => {
            Ok(vec![from_png(crate::io::png::decode_bytes(bytes, path, max_pixels)?, image_format(kind), config)])
        }
        None => Err(unsupported_extension(path)),
    }
}

fn image_format(kind: InputKind) -> &'static str {
    if kind == InputKind::Png { "png" } else { "jpeg" }
}

fn unsupported_extension(path: &Path) -> DecodeError {
    DecodeError::Unsupported {
        path: path.to_path_buf(),
        reason: format!("unsupported file extension; advscan reads {}", crate::io::SUPPORTED_EXTENSIONS),
    }
}

fn no_window(path: &Path) -> DecodeError {
    DecodeError::Unsupported {
        path: path.to_path_buf(),
        reason: "a greyscale DICOM needs a window to become a display image: the model config has no [window] \
                 and the file has no WindowCenter/WindowWidth"
            .into(),
    }
}

/// The unit an ε was given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpsUnit {
    /// The model-input scale: one unit is the full display range.
    Model,
    /// Hounsfield units.
    Hu,
    /// Grey levels of an 8-bit display: 1gl = 1/255 of the display range.
    Gl,
}

impl EpsUnit {
    pub fn suffix(self) -> &'static str {
        match self {
            EpsUnit::Model => "",
            EpsUnit::Hu => "HU",
            EpsUnit::Gl => "gl",
        }
    }

    /// One unit of `self` in attack units for a scan, or why it has none.
    pub fn per_unit(self, intensity: &Intensity) -> Result<f64, String> {
        match self {
            EpsUnit::Model => Ok(1.0),
            EpsUnit::Gl => Ok(1.0 / 255.0),
            EpsUnit::Hu => intensity.hu_per_unit.map(|w| 1.0 / w).ok_or_else(|| {
                "ε is given in HU, but this image has no Hounsfield scale (not a CT DICOM, and no \
                 [window] in the model config to relate its grey levels to HU)"
                    .to_string()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct() -> Intensity {
        Intensity {
            unit_scale: 1500.0,
            window_low: -1350.0,
            invert: false,
            storage: Storage { slope: 1.0, intercept: -1024.0, min: -32768, max: 32767 },
            hu_per_unit: Some(1500.0),
        }
    }

    #[test]
    fn ct_quantisation_rounds_to_whole_hu_and_clamps_to_int16() {
        let i = ct();
        // 40.4 HU stores as 1064 → 40 HU; 40.6 HU → 41 HU.
        assert_eq!(i.quantize(40.4 / 1500.0) * 1500.0, 40.0);
        assert!((i.quantize(40.6 / 1500.0) * 1500.0 - 41.0).abs() < 1e-3);
        assert_eq!(i.stored(40.0 / 1500.0), 1064);
        let (lo, hi) = i.bounds();
        assert_eq!((lo as f64 * 1500.0).round(), -32768.0 - 1024.0);
        assert_eq!((hi as f64 * 1500.0).round(), 32767.0 - 1024.0);
        assert_eq!(i.stored(1e9), 32767);
    }

    #[test]
    fn quantisation_never_leaves_the_eps_ball() {
        // An 8-bit PNG in a 1500 HU window: one level is 1500/255 ≈ 5.88 HU.
        let png = Intensity {
            unit_scale: 255.0,
            window_low: 0.0,
            invert: false,
            storage: Storage { slope: 1.0, intercept: 0.0, min: 0, max: 255 },
            hu_per_unit: Some(1500.0),
        };
        let clean = 100.0 / 255.0;
        let eps = 5.0 / 1500.0; // 5 HU in attack units: 0.85 of a level (1/255)
        // +5 HU rounds up to the next level (+5.88 HU), outside the ball: stays at the clean level.
        assert_eq!(png.quantize(clean + eps), 101.0 / 255.0);
        assert_eq!(png.quantize_within(clean + eps, clean, eps), clean);
        // With ε of 1.5 levels, +1.4 levels rounds to +1, inside: kept.
        let eps = 1.5 / 255.0;
        assert_eq!(png.quantize_within(clean + 1.4 / 255.0, clean, eps), 101.0 / 255.0);
        // +1.5 levels rounds to +2 (outside), so the nearest level inside is +1.
        assert_eq!(png.quantize_within(clean + 1.5 / 255.0, clean, eps), 101.0 / 255.0);
        // A CT at 1 HU per level never needs it: 5 HU stays 5 HU.
        let i = ct();
        let x = 40.0 / 1500.0;
        assert!((i.quantize_within(x + 5.0 / 1500.0, x, 5.0 / 1500.0) * 1500.0 - 45.0).abs() < 1e-3);
    }

    #[test]
    fn eps_units_convert_through_the_window_width() {
        let i = ct();
        // 15 HU in a 1500 HU window is 1% of the display range.
        assert!((EpsUnit::Hu.per_unit(&i).unwrap() * 15.0 - 0.01).abs() < 1e-12);
        assert_eq!(EpsUnit::Gl.per_unit(&i).unwrap(), 1.0 / 255.0);
        let png = Intensity { hu_per_unit: None, ..i };
        assert!(EpsUnit::Hu.per_unit(&png).unwrap_err().contains("no Hounsfield scale"));
    }
}
