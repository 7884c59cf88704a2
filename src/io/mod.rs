//! Files in and out, one file per format. `png.rs` reads PNG (and JPEG,
//! through the same `image` crate) into a [`DecodedImage`] in [0, 1];
//! `dicom.rs` reads DICOM into physical values (HU for CT); `dicom_write.rs`
//! writes DICOM (fixtures, and derived adversarial instances). This folder
//! turns bytes into pixels and says what it did; it does not find files (that
//! is `dataset.rs`), it does not choose attack units (`scan.rs`) and it does
//! not window, resize or normalise (`preprocess.rs`).

pub mod dicom;
pub mod dicom_write;
pub mod png;

use std::path::Path;

use crate::error::DecodeError;

pub use png::DecodedImage;

/// Refuse images with more pixels than this unless told otherwise: 100
/// megapixels is far above any radiograph and well below what would exhaust
/// memory as f32.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// The file formats advscan reads, known from the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Png,
    Jpeg,
    Dicom,
}

impl InputKind {
    /// The kind a file's extension (case-insensitive) names, or `None` for a
    /// file advscan does not read.
    pub fn from_path(path: &Path) -> Option<InputKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(InputKind::Png),
            "jpg" | "jpeg" => Some(InputKind::Jpeg),
            "dcm" | "dicom" => Some(InputKind::Dicom),
            _ => None,
        }
    }
}

/// The extensions [`InputKind::from_path`] accepts, for messages.
pub const SUPPORTED_EXTENSIONS: &str = "png, jpg, jpeg, dcm, dicom";

/// Decode one PNG or JPEG file, refusing images over `max_pixels` before
/// their pixel data is read. DICOM goes through [`crate::scan::decode`],
/// which needs the model config's window.
pub fn decode(path: &Path, max_pixels: u64) -> Result<DecodedImage, DecodeError> {
    match InputKind::from_path(path) {
        Some(InputKind::Png | InputKind::Jpeg) => png::decode(path, max_pixels),
        Some(InputKind::Dicom) => Err(DecodeError::Unsupported {
            path: path.to_path_buf(),
            reason: "DICOM is decoded with its window, through scan::decode".into(),
        }),
        None => Err(DecodeError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("unsupported file extension; advscan reads {SUPPORTED_EXTENSIONS}"),
        }),
    }
}
