//! Decoding files into images: one file per format. `png.rs` reads PNG (and
//! JPEG, through the same `image` crate) into a [`DecodedImage`] in [0, 1];
//! DICOM comes later as `dicom.rs` and plugs in through [`InputKind`] and
//! [`decode`]. This folder turns bytes into pixels and says what it did; it does
//! not find files (that is `dataset.rs`) and it does not resize, window or
//! normalise (that is `preprocess.rs`, apart from the exact channel adaptation
//! in [`png::to_model_input`] that PNG input needs today).

pub mod png;

use std::path::Path;

use crate::error::DecodeError;

pub use png::{ChannelConversion, DecodedImage, ModelInput, to_model_input};

/// Refuse images with more pixels than this unless told otherwise: 100
/// megapixels is far above any radiograph and well below what would exhaust
/// memory as f32.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// The file formats advscan reads, known from the file's extension. The seam
/// for DICOM: a `Dicom` variant here, its extensions in [`InputKind::from_path`],
/// and its decoder in [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Png,
    Jpeg,
}

impl InputKind {
    /// The kind a file's extension (case-insensitive) names, or `None` for a
    /// file advscan does not read.
    pub fn from_path(path: &Path) -> Option<InputKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(InputKind::Png),
            "jpg" | "jpeg" => Some(InputKind::Jpeg),
            _ => None,
        }
    }
}

/// The extensions [`InputKind::from_path`] accepts, for messages.
pub const SUPPORTED_EXTENSIONS: &str = "png, jpg, jpeg";

/// Decode one input file, whatever its format, refusing images over
/// `max_pixels` before their pixel data is read.
pub fn decode(path: &Path, max_pixels: u64) -> Result<DecodedImage, DecodeError> {
    match InputKind::from_path(path) {
        Some(InputKind::Png | InputKind::Jpeg) => png::decode(path, max_pixels),
        None => Err(DecodeError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("unsupported file extension; advscan reads {SUPPORTED_EXTENSIONS}"),
        }),
    }
}
