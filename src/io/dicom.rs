//! DICOM files into pixel values in physical units. This module owns reading a
//! DICOM file (with or without the 128-byte preamble, any transfer syntax the
//! enabled dicom-rs codecs decode), turning the stored integers into numbers
//! (masking to BitsStored, sign extension, 1-bit unpacking, planar
//! configuration, YBR → RGB as pydicom's `convert_color_space`) and applying
//! the modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence), in
//! f64, exactly as `pydicom.pixels.apply_modality_lut` does. It records what the
//! file says about units, photometric interpretation and the VOI window, and it
//! refuses images over a pixel budget from the header alone, before any pixel
//! data is decoded, and files whose element headers declare more bytes than
//! the file holds, before dicom-rs allocates them (`check_declared_lengths`).
//!
//! It does not window, invert MONOCHROME1, resize or normalise: that is
//! `preprocess.rs`, which reads [`DicomImage::photometric`] and
//! [`DicomImage::voi_window`]. Per-frame functional groups (enhanced
//! multi-frame rescale) are not read, as pydicom's `apply_modality_lut` does not
//! read them either; PALETTE COLOR, YBR_PARTIAL_* native data and floating-point
//! pixel data are refused with a reason. The JPEG, JPEG-LS and JPEG 2000
//! codecs of dicom-rs are called one frame at a time; RLE is decoded here
//! (dicom-rs stops at 16 bits); the whole decode runs under `catch_unwind`, so
//! a malformed file is an error, never a panic. `tests/pydicom_corpus.rs`
//! checks every result against pydicom on pydicom's own test files.

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use dicom_core::DicomValue;
use dicom_core::header::HasLength;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::{Codec, TransferSyntaxIndex};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::error::DecodeError;

/// One DICOM file decoded. Values are physical (after the modality LUT), not
/// windowed, MONOCHROME1 NOT inverted.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomImage {
    pub path: PathBuf,
    pub rows: usize,
    pub columns: usize,
    /// 1 (grey) or 3 (colour; YBR_* converted to RGB).
    pub samples_per_pixel: usize,
    /// One entry per frame, each channel-first (samples_per_pixel × rows ×
    /// columns), row-major, values after the modality LUT computed in f64 then
    /// cast to f32 (HU for CT).
    pub frames: Vec<Vec<f32>>,
    /// PhotometricInterpretation as in the file (MONOCHROME1, MONOCHROME2,
    /// RGB, YBR_FULL, ...).
    pub photometric: String,
    /// 1 when absent (or when only one of slope and intercept is present:
    /// like pydicom, the rescale is applied only when both are).
    pub rescale_slope: f64,
    /// 0 when absent.
    pub rescale_intercept: f64,
    /// Unit of the values: "HU" for CT (Modality CT, or RescaleType HU), else
    /// RescaleType (or ModalityLUTType) if present, else "US" (unspecified).
    pub units: String,
    pub modality: Option<String>,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub pixel_signed: bool,
    /// The stored integers representable with bits_stored and the sign (e.g.
    /// -32768..=32767, 0..=4095).
    pub stored_range: (i64, i64),
    /// The file's first VOI window (WindowCenter, WindowWidth), if present.
    pub voi_window: Option<(f64, f64)>,
    pub transfer_syntax_uid: String,
    /// Human name of the transfer syntax (e.g. "Explicit VR Little Endian").
    pub transfer_syntax_name: String,
}

/// Transfer syntaxes this build decodes, for the README and error messages.
/// A unit test checks each one has a decoder in the dicom-rs registry.
pub const SUPPORTED_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    ("1.2.840.10008.1.2.2", "Explicit VR Big Endian"),
    ("1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian"),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)"),
    ("1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)"),
    ("1.2.840.10008.1.2.4.70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction"),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless Only"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000"),
];

/// True when the bytes at offset 128 are "DICM" (files without a .dcm
/// extension).
pub fn has_dicom_preamble(path: &Path) -> bool {
    let mut head = [0u8; 132];
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_exact(&mut head).is_ok() && bytes_have_preamble(&head),
        Err(_) => false,
    }
}

fn bytes_have_preamble(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM")
}

/// Decode one DICOM file into physical values, refusing images over
/// `max_pixels` (rows × columns × frames, from the header) before any pixel
/// data is decoded. The file is read whole (dicom-rs keeps the whole data set
/// in memory anyway) and handed to [`decode_bytes`].
pub fn decode(path: &Path, max_pixels: u64) -> Result<DicomImage, DecodeError> {
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Io { path: path.to_path_buf(), source })?;
    decode_bytes(&bytes, path, max_pixels)
}

/// [`decode`] on the bytes of a file; `path` only names it in errors and in
/// [`DicomImage::path`]. The fuzz targets (`fuzz/`) enter here.
pub fn decode_bytes(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<DicomImage, DecodeError> {
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, path, max_pixels))) {
        Ok(result) => result,
        Err(payload) => Err(corrupt(
            path,
            format!("the DICOM decoder failed on malformed data ({})", crate::error::panic_message(&*payload)),
        )),
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> DecodeError {
    DecodeError::Unsupported { path: path.to_path_buf(), reason: reason.into() }
}

/// JPEG-LS, decoded when built with `--features jpeg-ls` (CharLS, needs cmake).
pub const JPEG_LS_TRANSFER_SYNTAXES: &[(&str, &str)] =
    &[("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"), ("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless")];

/// Every transfer syntax this build decodes.
pub fn supported_transfer_syntaxes() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let jpeg_ls = if cfg!(feature = "jpeg-ls") { JPEG_LS_TRANSFER_SYNTAXES } else { &[] };
    SUPPORTED_TRANSFER_SYNTAXES.iter().chain(jpeg_ls)
}

fn supported_list() -> String {
    let mut list = supported_transfer_syntaxes().map(|(_, name)| *name).collect::<Vec<_>>().join(", ");
    if !cfg!(feature = "jpeg-ls") {
        list.push_str(" (JPEG-LS needs a build with --features jpeg-ls)");
    }
    list
}

/// The header values the decoder needs, read and checked before any pixel data.
struct Geometry {
    rows: usize,
    columns: usize,
    samples: usize,
    frames: usize,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    planar: bool,
    photometric: String,
}

type Obj = InMemDicomObject;

fn text(obj: &Obj, tag: dicom_core::Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string();
    if s.is_empty() { None } else { Some(s) }
}

fn int(path: &Path, obj: &Obj, tag: dicom_core::Tag, name: &str) -> Result<Option<i64>, DecodeError> {
    let Some(el) = obj.get(tag) else { return Ok(None) };
    if el.is_empty() {
        return Ok(None);
    }
    el.to_int::<i64>().map(Some).map_err(|e| corrupt(path, format!("{name} is not an integer: {e}")))
}

fn float(obj: &Obj, tag: dicom_core::Tag) -> Option<f64> {
    let el = obj.get(tag)?;
    el.to_multi_float64().ok()?.first().copied().filter(|v| v.is_finite())
}

fn required(path: &Path, obj: &Obj, tag: dicom_core::Tag, name: &str) -> Result<i64, DecodeError> {
    int(path, obj, tag, name)?.ok_or_else(|| corrupt(path, format!("the {name} attribute is missing")))
}

fn read_header(path: &Path, obj: &Obj) -> Result<Geometry, DecodeError> {
    let rows = required(path, obj, tags::ROWS, "Rows")?;
    let columns = required(path, obj, tags::COLUMNS, "Columns")?;
    if rows <= 0 || columns <= 0 || rows > 65535 || columns > 65535 {
        return Err(corrupt(path, format!("Rows = {rows} and Columns = {columns} do not describe an image")));
    }
    let bits_allocated = required(path, obj, tags::BITS_ALLOCATED, "BitsAllocated")?;
    if ![1, 8, 16, 32].contains(&bits_allocated) {
        return Err(unsupported(path, format!("BitsAllocated = {bits_allocated}; advscan reads 1, 8, 16 or 32")));
    }
    let bits_stored = int(path, obj, tags::BITS_STORED, "BitsStored")?.unwrap_or(bits_allocated);
    if bits_stored < 1 || bits_stored > bits_allocated {
        return Err(corrupt(
            path,
            format!("BitsStored = {bits_stored} is inconsistent with BitsAllocated = {bits_allocated}"),
        ));
    }
    let signed = match int(path, obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation")?.unwrap_or(0) {
        0 => false,
        1 => true,
        other => return Err(corrupt(path, format!("PixelRepresentation = {other} (must be 0 or 1)"))),
    };
    let samples = int(path, obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?.unwrap_or(1);
    if samples != 1 && samples != 3 {
        return Err(unsupported(path, format!("SamplesPerPixel = {samples}; advscan reads 1 (grey) or 3 (colour)")));
    }
    let frames = int(path, obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames")?.unwrap_or(1);
    if frames < 0 || frames > i64::from(u32::MAX) {
        return Err(corrupt(path, format!("NumberOfFrames = {frames}")));
    }
    // pydicom treats NumberOfFrames 0 as 1 as well.
    let frames = frames.max(1);
    let planar = int(path, obj, tags::PLANAR_CONFIGURATION, "PlanarConfiguration")?.unwrap_or(0) == 1;
    let photometric = text(obj, tags::PHOTOMETRIC_INTERPRETATION)
        .unwrap_or_else(|| if samples == 3 { "RGB".to_string() } else { "MONOCHROME2".to_string() });
    Ok(Geometry {
        rows: rows as usize,
        columns: columns as usize,
        samples: samples as usize,
        frames: frames as usize,
        bits_allocated: bits_allocated as u16,
        bits_stored: bits_stored as u16,
        signed,
        planar,
        photometric,
    })
}

fn open(bytes: &[u8], path: &Path) -> Result<DefaultDicomObject, DecodeError> {
    if bytes.is_empty() {
        return Err(corrupt(path, "empty file (0 bytes), not a DICOM file"));
    }
    let preamble = bytes_have_preamble(bytes);
    // Without the marker, random bytes or another format (a PNG named .dcm)
    // fail this walk first: say what the file is not, as dicom-rs's error below does.
    // The meta group follows "DICM", at 132 with the preamble, else at 4.
    let meta_start = if preamble {
        132
    } else if bytes.starts_with(b"DICM") {
        4
    } else {
        0
    };
    check_declared_lengths(bytes, meta_start).map_err(|why| {
        if preamble {
            corrupt(path, format!("not a readable DICOM file ({why})"))
        } else {
            corrupt(
                path,
                format!("not a DICOM file: no \"DICM\" marker at byte 128 and no readable file meta group ({why})"),
            )
        }
    })?;
    let options =
        OpenFileOptions::new().read_preamble(if preamble { ReadPreamble::Always } else { ReadPreamble::Never });
    options.from_reader(bytes).map_err(|e| {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            source = s.source();
        }
        if reason.contains("ransfer syntax") && !reason.contains("issing") {
            unsupported(path, format!("cannot read the data set: {reason}; advscan decodes {}", supported_list()))
        } else if !preamble {
            corrupt(
                path,
                format!("not a DICOM file: no \"DICM\" marker at byte 128 and no readable file meta group ({reason})"),
            )
        } else {
            corrupt(path, format!("not a readable DICOM file ({reason})"))
        }
    })
}

/// Undefined length (0xFFFFFFFF): a sequence, an item or encapsulated pixel
/// data ending in a delimiter.
const UNDEFINED: u32 = u32::MAX;

/// How the data set after the file meta group is encoded.
#[derive(Clone, Copy)]
struct Encoding {
    explicit: bool,
    big_endian: bool,
}

/// A cursor over the data set's element headers, checking every declared
/// length against the bytes that are left.
struct LengthWalk<'a> {
    bytes: &'a [u8],
    enc: Encoding,
}

/// One element or item header: tag, VR (explicit syntaxes), value length,
/// and where the value starts.
struct Header {
    group: u16,
    element: u16,
    vr: [u8; 2],
    len: u32,
    value: usize,
}

/// dicom-rs allocates (and zero-fills) an element's declared length before
/// reading its value, so a file of a few hundred bytes declaring a 4 GB
/// element costs 4 GB of memory before our pixel limit can look at the
/// header. This walks every element and item header dicom-rs could read
/// (file meta group, data set, sequence items, pixel data fragments) and
/// refuses a defined length longer than the bytes left in the file, or one
/// that is not a whole number of its VR's values.
///
/// The walk must not fall out of step with dicom-rs on malformed files (a
/// header it does not check is a header dicom-rs may allocate for), so
/// wherever a header could be read two ways it follows both: an item may be
/// entered (a data set inside) or skipped (a value), and the data set may
/// start where the meta group's elements end or where its group length
/// says. Every position is visited once, so the walk is linear in the file
/// size. Pixel data fragments are always skipped (their bytes are JPEG, not
/// headers). A deflated data set is compressed, so only its meta group is
/// walked: the deflated syntax remains unguarded.
fn check_declared_lengths(bytes: &[u8], start: usize) -> Result<(), String> {
    let meta = LengthWalk { bytes, enc: Encoding { explicit: true, big_endian: false } };
    let mut pos = start;
    let mut syntax = String::new();
    let mut by_group_length = None;
    while let Some(h) = meta.header(pos) {
        if h.group != 0x0002 {
            break;
        }
        let end = meta.value_end(&h, bytes.len())?;
        match h.element {
            0x0000 if h.len == 4 => {
                let length = meta.u32_at(h.value, false).unwrap_or(0) as usize;
                by_group_length = Some(end.saturating_add(length));
            }
            0x0010 => {
                syntax = String::from_utf8_lossy(&bytes[h.value..end]).trim_end_matches(['\0', ' ']).to_string();
            }
            _ => {}
        }
        pos = end;
    }
    let enc = match syntax.as_str() {
        DEFLATED => {
            // dicom-rs inflates the data set and then trusts its lengths like
            // any other's: inflate it here (capped) and walk it the same way.
            use std::io::Read as _;
            let mut inflated = Vec::new();
            let mut inflater =
                flate2::read::DeflateDecoder::new(bytes.get(pos..).unwrap_or_default()).take(MAX_INFLATED_BYTES + 1);
            inflater.read_to_end(&mut inflated).map_err(|e| format!("the deflated data set does not inflate: {e}"))?;
            if inflated.len() as u64 > MAX_INFLATED_BYTES {
                return Err(format!("the deflated data set inflates to more than {} MiB", MAX_INFLATED_BYTES >> 20));
            }
            return walk_data_set(&inflated, Encoding { explicit: true, big_endian: false }, 0, None);
        }
        "1.2.840.10008.1.2" => Encoding { explicit: false, big_endian: false },
        "1.2.840.10008.1.2.2" => Encoding { explicit: true, big_endian: true },
        _ => Encoding { explicit: true, big_endian: false },
    };
    walk_data_set(bytes, enc, pos, by_group_length)
}

/// Deflated Explicit VR Little Endian.
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// A deflated data set larger than this is refused (a deflate bomb); real
/// ones are far smaller, as deflate is used for non-image objects and small images.
const MAX_INFLATED_BYTES: u64 = 512 << 20;

/// Walks the data set at `pos` (and at `alt`, where the meta group's
/// declared length says it starts, if different), checking every declared
/// length against the bytes left.
fn walk_data_set(bytes: &[u8], enc: Encoding, pos: usize, alt: Option<usize>) -> Result<(), String> {
    let walk = LengthWalk { bytes, enc };
    // (position, inside encapsulated pixel data)
    let mut todo: Vec<(usize, bool)> = vec![(pos, false)];
    todo.extend(alt.filter(|&p| p != pos && p < bytes.len()).map(|p| (p, false)));
    let mut seen = std::collections::HashSet::new();
    while let Some((pos, fragments)) = todo.pop() {
        if !seen.insert((pos, fragments)) {
            continue;
        }
        let Some(h) = walk.header(pos) else { continue };
        let item = (h.group, h.element) == (0xFFFE, 0xE000);
        if fragments {
            match (h.group, h.element) {
                (0xFFFE, 0xE000) => todo.push((walk.value_end(&h, bytes.len())?, true)),
                // The sequence delimiter ends the fragments; anything else is
                // malformed: read on as elements, as a lenient parser might.
                _ => todo.push((h.value, false)),
            }
            continue;
        }
        if h.group == 0xFFFE && !item {
            // A delimiter: 8 bytes, no value.
            todo.push((h.value, false));
            continue;
        }
        if h.len == UNDEFINED {
            // A sequence, an item of undefined length, or encapsulated pixel
            // data (whose items are fragments, not data sets).
            let pixel_data = (h.group, h.element) == (0x7FE0, 0x0010);
            let binary = matches!(&h.vr, b"OB" | b"OW");
            if pixel_data || binary {
                todo.push((h.value, true));
            }
            // dicom-rs reads an undefined-length value that is not Pixel Data
            // as a sequence of data-set items, whatever its VR (found by
            // fuzzing: an OB of undefined length): follow that reading too.
            if !pixel_data {
                todo.push((h.value, false));
            }
            continue;
        }
        let end = walk.value_end(&h, bytes.len())?;
        if item || &h.vr == b"SQ" || (!walk.enc.explicit && is_sequence(h.group, h.element)) {
            // Entered: a data set (or items) inside.
            todo.push((h.value, false));
        }
        // Skipped whole, as a value.
        todo.push((end, false));
    }
    Ok(())
}

impl LengthWalk<'_> {
    fn u16_at(&self, at: usize, big_endian: bool) -> Option<u16> {
        let b: [u8; 2] = self.bytes.get(at..at + 2)?.try_into().ok()?;
        Some(if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    fn u32_at(&self, at: usize, big_endian: bool) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// The header at `pos`, or `None` when the bytes end inside it.
    fn header(&self, pos: usize) -> Option<Header> {
        let be = self.enc.big_endian;
        let group = self.u16_at(pos, be)?;
        let element = self.u16_at(pos + 2, be)?;
        // Items and delimiters have no VR in any syntax; the meta group is
        // always little endian.
        let be = be && group != 0x0002;
        if group == 0xFFFE || !self.enc.explicit {
            return Some(Header { group, element, vr: *b"  ", len: self.u32_at(pos + 4, be)?, value: pos + 8 });
        }
        let vr: [u8; 2] = self.bytes.get(pos + 4..pos + 6)?.try_into().ok()?;
        // dicom-rs reads a VR it does not know as UN, with a 4-byte length.
        let known = dicom_core::VR::from_binary(vr).is_some();
        let long = !known
            || matches!(
                &vr,
                b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV"
            );
        Some(if long {
            Header { group, element, vr, len: self.u32_at(pos + 8, be)?, value: pos + 12 }
        } else {
            Header { group, element, vr, len: u32::from(self.u16_at(pos + 6, be)?), value: pos + 8 }
        })
    }

    /// End of a defined-length value, refused when it runs past `end`, or
    /// when it is not a whole number of its VR's fixed-size values: dicom-rs
    /// reads `length / size` values and would go on reading the next header
    /// from the leftover bytes, out of step with this walk.
    fn value_end(&self, h: &Header, end: usize) -> Result<usize, String> {
        let vr = if self.enc.explicit || h.group == 0x0002 { Some(h.vr) } else { dictionary_vr(h.group, h.element) };
        if let Some(size) = vr.and_then(fixed_value_size)
            && h.len != UNDEFINED
            && !(h.len as usize).is_multiple_of(size)
        {
            return Err(format!(
                "element ({:04X},{:04X}) declares {} bytes, not a whole number of its {size}-byte values",
                h.group, h.element, h.len
            ));
        }
        let value_end = h.value.saturating_add(h.len as usize);
        if value_end > end {
            return Err(format!(
                "element ({:04X},{:04X}) declares {} bytes where only {} are left",
                h.group,
                h.element,
                h.len,
                end.saturating_sub(h.value)
            ));
        }
        Ok(value_end)
    }
}

/// Implicit VR carries no VR: a defined-length sequence is known from the
/// dictionary, as dicom-rs knows it.
fn is_sequence(group: u16, element: u16) -> bool {
    dictionary_vr(group, element) == Some(*b"SQ")
}

/// The VR the standard dictionary gives a tag (what dicom-rs reads an
/// implicit-VR element as), when it is a single VR.
fn dictionary_vr(group: u16, element: u16) -> Option<[u8; 2]> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    match dicom_dictionary_std::StandardDataDictionary.by_tag(dicom_core::Tag(group, element))?.vr() {
        VirtualVr::Exact(vr) => vr.to_string().as_bytes().try_into().ok(),
        _ => None,
    }
}

/// Bytes per value of the VRs dicom-rs reads as arrays of fixed-size numbers.
fn fixed_value_size(vr: [u8; 2]) -> Option<usize> {
    match &vr {
        b"OW" | b"SS" | b"US" => Some(2),
        b"AT" | b"FL" | b"OF" | b"OL" | b"SL" | b"UL" => Some(4),
        b"FD" | b"OD" | b"OV" | b"SV" | b"UV" => Some(8),
        _ => None,
    }
}

pub(crate) fn stored_range(bits_stored: u16, signed: bool) -> (i64, i64) {
    let bs = u32::from(bits_stored.clamp(1, 63));
    if signed { (-(1i64 << (bs - 1)), (1i64 << (bs - 1)) - 1) } else { (0, (1i64 << bs) - 1) }
}

/// Stored integer of a sample whose raw container value is `raw`: the bits
/// above BitsStored are masked away (they may carry overlays or junk), then
/// the sign bit is extended for signed data.
fn stored_value(raw: u64, bits_stored: u16, signed: bool) -> i64 {
    let bs = u32::from(bits_stored);
    let masked = if bs >= 64 { raw } else { raw & ((1u64 << bs) - 1) };
    if signed && bs < 64 && masked & (1u64 << (bs - 1)) != 0 { masked as i64 - (1i64 << bs) } else { masked as i64 }
}

/// Read `count` samples of `bytes_per` little-endian bytes each.
fn read_samples(src: &[u8], bytes_per: usize, count: usize, h: &Geometry) -> Vec<i64> {
    src.chunks_exact(bytes_per)
        .take(count)
        .map(|c| {
            let mut raw = 0u64;
            for (i, b) in c.iter().enumerate() {
                raw |= u64::from(*b) << (8 * i);
            }
            stored_value(raw, h.bits_stored, h.signed)
        })
        .collect()
}

/// Interleaved (pixel-major) samples → channel-first.
fn to_channel_first(samples: Vec<i64>, channels: usize, pixels: usize) -> Vec<i64> {
    if channels == 1 {
        return samples;
    }
    let mut out = vec![0i64; samples.len()];
    for p in 0..pixels {
        for c in 0..channels {
            out[c * pixels + p] = samples[p * channels + c];
        }
    }
    out
}

/// YBR_FULL → RGB exactly as pydicom's `convert_color_space` (float32 matrix
/// product, +0.5, floor, clip to [0, 255]); `frame` is channel-first.
fn ybr_full_to_rgb(frame: &mut [i64], pixels: usize) {
    let m: [[f32; 3]; 3] = [
        [1.0, 1.0, 1.0],
        [0.0, (-0.114f64 * 1.772 / 0.587) as f32, 1.772],
        [1.402, (-0.299f64 * 1.402 / 0.587) as f32, 0.0],
    ];
    for p in 0..pixels {
        let v = [frame[p] as f32, frame[pixels + p] as f32 - 128.0, frame[2 * pixels + p] as f32 - 128.0];
        for c in 0..3 {
            let x = v[0] * m[0][c] + v[1] * m[1][c] + v[2] * m[2][c];
            frame[c * pixels + p] = ((x + 0.5).floor()).clamp(0.0, 255.0) as i64;
        }
    }
}

/// The stored integers of every frame, channel-first, colour already RGB.
fn native_frames(path: &Path, h: &Geometry, raw: &[u8]) -> Result<Vec<Vec<i64>>, DecodeError> {
    let pixels = h.rows * h.columns;
    if h.bits_allocated == 1 {
        let per_frame = pixels * h.samples;
        let need = (per_frame * h.frames).div_ceil(8);
        if raw.len() < need {
            return Err(truncated(path, raw.len(), need));
        }
        let bit = |i: usize| i64::from((raw[i / 8] >> (i % 8)) & 1);
        return Ok((0..h.frames)
            .map(|f| to_channel_first((0..per_frame).map(|i| bit(f * per_frame + i)).collect(), h.samples, pixels))
            .collect());
    }
    let bytes_per = usize::from(h.bits_allocated / 8);
    let ybr422 = h.samples == 3 && h.photometric == "YBR_FULL_422";
    if h.samples == 3 && (h.photometric.starts_with("YBR") && h.photometric != "YBR_FULL" && !ybr422) {
        return Err(unsupported(path, format!("uncompressed {} colour data is not supported", h.photometric)));
    }
    if h.samples == 3 && h.photometric.starts_with("YBR") && h.bits_allocated != 8 {
        return Err(unsupported(
            path,
            format!("{} with {} bits allocated is not supported", h.photometric, h.bits_allocated),
        ));
    }
    // YBR_FULL_422 stores Y0 Y1 Cb Cr per pair of pixels: two samples per pixel.
    let samples_per_frame = if ybr422 { pixels * 2 } else { pixels * h.samples };
    let frame_bytes = samples_per_frame * bytes_per;
    let need = frame_bytes * h.frames;
    if raw.len() < need {
        return Err(truncated(path, raw.len(), need));
    }
    let mut frames = Vec::with_capacity(h.frames);
    for f in 0..h.frames {
        let src = &raw[f * frame_bytes..(f + 1) * frame_bytes];
        let samples = read_samples(src, bytes_per, samples_per_frame, h);
        let mut frame = if ybr422 {
            let mut out = vec![0i64; pixels * 3];
            for pair in 0..pixels / 2 {
                let s = &samples[pair * 4..pair * 4 + 4];
                for k in 0..2 {
                    let p = pair * 2 + k;
                    out[p] = s[k];
                    out[pixels + p] = s[2];
                    out[2 * pixels + p] = s[3];
                }
            }
            out
        } else if h.planar {
            samples
        } else {
            to_channel_first(samples, h.samples, pixels)
        };
        if h.samples == 3 && h.photometric.starts_with("YBR_FULL") {
            ybr_full_to_rgb(&mut frame, pixels);
        }
        frames.push(frame);
    }
    Ok(frames)
}

fn truncated(path: &Path, got: usize, need: usize) -> DecodeError {
    corrupt(
        path,
        format!(
            "the pixel data is {got} bytes, shorter than the {need} bytes Rows × Columns × SamplesPerPixel × BitsAllocated × NumberOfFrames declare"
        ),
    )
}

fn encapsulated_frames(
    path: &Path,
    obj: &DefaultDicomObject,
    h: &Geometry,
    ts: &dicom_encoding::TransferSyntax,
) -> Result<Vec<Vec<i64>>, DecodeError> {
    let Codec::EncapsulatedPixelData(Some(reader), _) = ts.codec() else {
        return Err(unsupported(
            path,
            format!(
                "transfer syntax {} ({}) cannot be decoded by this build; advscan decodes {}",
                ts.name(),
                ts.uid(),
                supported_list()
            ),
        ));
    };
    if h.bits_allocated != 8 && h.bits_allocated != 16 {
        return Err(unsupported(
            path,
            format!("compressed pixel data with BitsAllocated = {} is not supported", h.bits_allocated),
        ));
    }
    let pixels = h.rows * h.columns;
    let bytes_per = usize::from(h.bits_allocated / 8);
    let frame_bytes = pixels * h.samples * bytes_per;
    // The JPEG family's decoders hand back RGB whatever the file's colour space.
    let mut frames = Vec::with_capacity(h.frames);
    for f in 0..h.frames {
        let mut buf = Vec::with_capacity(frame_bytes);
        reader
            .decode_frame(obj, f as u32, &mut buf)
            .map_err(|e| corrupt(path, format!("cannot decode frame {f} ({}): {e}", ts.name())))?;
        if buf.len() < frame_bytes {
            return Err(corrupt(
                path,
                format!("frame {f} decoded to {} bytes, fewer than the {frame_bytes} the header declares", buf.len()),
            ));
        }
        let samples = read_samples(&buf[..frame_bytes], bytes_per, pixels * h.samples, h);
        frames.push(to_channel_first(samples, h.samples, pixels));
    }
    Ok(frames)
}

const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// The compressed bytes of each frame: one fragment per frame, all fragments
/// for a single frame, or grouped by the basic offset table.
fn frame_fragments<'a>(
    path: &Path,
    fragments: &'a [Vec<u8>],
    offsets: &[u32],
    frames: usize,
) -> Result<Vec<std::borrow::Cow<'a, [u8]>>, DecodeError> {
    use std::borrow::Cow;
    if fragments.len() == frames {
        return Ok(fragments.iter().map(|f| Cow::Borrowed(&f[..])).collect());
    }
    if frames == 1 {
        return Ok(vec![Cow::Owned(fragments.concat())]);
    }
    if offsets.len() != frames {
        return Err(corrupt(
            path,
            format!("{} fragments for {frames} frames and no usable offset table", fragments.len()),
        ));
    }
    // Offsets count from the first fragment's item header (8 bytes per item).
    let mut starts = Vec::with_capacity(fragments.len());
    let mut at = 0u64;
    for f in fragments {
        starts.push(at);
        at += f.len() as u64 + 8;
    }
    let mut out = Vec::with_capacity(frames);
    for k in 0..frames {
        let lo = u64::from(offsets[k]);
        let hi = offsets.get(k + 1).map_or(u64::MAX, |&o| u64::from(o));
        let parts: Vec<u8> = fragments
            .iter()
            .zip(&starts)
            .filter(|(_, s)| **s >= lo && **s < hi)
            .flat_map(|(f, _)| f.iter().copied())
            .collect();
        out.push(Cow::Owned(parts));
    }
    Ok(out)
}

/// DICOM RLE (PS3.5 Annex G), decoded here rather than by dicom-rs so that 32-bit
/// samples work too: per frame a 64-byte header (segment count, 15 offsets),
/// then one PackBits segment per byte plane, most significant byte first,
/// sample by sample. Returns stored values, channel-first.
fn rle_frames(path: &Path, h: &Geometry, fragments: &[Vec<u8>], offsets: &[u32]) -> Result<Vec<Vec<i64>>, DecodeError> {
    let pixels = h.rows * h.columns;
    let bytes_per = usize::from(h.bits_allocated.div_ceil(8));
    if h.bits_allocated == 1 {
        return Err(unsupported(path, "RLE with 1 bit allocated is not supported"));
    }
    if h.samples == 3 && h.photometric.starts_with("YBR") && (h.photometric != "YBR_FULL" || h.bits_allocated != 8) {
        return Err(unsupported(
            path,
            format!("RLE {} colour data with {} bits is not supported", h.photometric, h.bits_allocated),
        ));
    }
    let segments = h.samples * bytes_per;
    let mut out = Vec::with_capacity(h.frames);
    for (f, data) in frame_fragments(path, fragments, offsets, h.frames)?.iter().enumerate() {
        let bad = |why: String| corrupt(path, format!("RLE frame {f}: {why}"));
        if data.len() < 64 {
            return Err(bad(format!("{} bytes, shorter than the 64-byte RLE header", data.len())));
        }
        let word =
            |i: usize| u32::from_le_bytes([data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]]) as usize;
        let count = word(0);
        if count != segments {
            return Err(bad(format!("{count} segments, the header declares {segments} (samples × bytes per sample)")));
        }
        let mut values = vec![0u64; pixels * h.samples];
        for seg in 0..segments {
            let start = word(seg + 1);
            let end = if seg + 1 < segments { word(seg + 2) } else { data.len() };
            if start < 64 || start > end || end > data.len() {
                return Err(bad(format!("segment {seg} offsets {start}..{end} outside the {} bytes", data.len())));
            }
            let plane = packbits(&data[start..end], pixels)
                .ok_or_else(|| bad(format!("segment {seg} decodes to fewer than {pixels} bytes")))?;
            let (sample, byte) = (seg / bytes_per, seg % bytes_per);
            let shift = 8 * (bytes_per - 1 - byte);
            for (v, b) in values[sample * pixels..(sample + 1) * pixels].iter_mut().zip(&plane) {
                *v |= u64::from(*b) << shift;
            }
        }
        let mut frame: Vec<i64> = values.into_iter().map(|v| stored_value(v, h.bits_stored, h.signed)).collect();
        if h.samples == 3 && h.photometric == "YBR_FULL" {
            ybr_full_to_rgb(&mut frame, pixels);
        }
        out.push(frame);
    }
    Ok(out)
}

/// PackBits: a header byte n ≥ 0 copies the next n + 1 bytes, -127..=-1
/// repeats the next byte 1 - n times, -128 does nothing. `None` when the
/// segment yields fewer than `len` bytes; extra bytes (padding) are dropped.
fn packbits(src: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len && i < src.len() {
        let n = src[i] as i8;
        i += 1;
        if n >= 0 {
            let run = src.get(i..i + n as usize + 1)?;
            out.extend_from_slice(run);
            i += n as usize + 1;
        } else if n != -128 {
            let b = *src.get(i)?;
            out.extend(std::iter::repeat_n(b, 1 + (-(n as i16)) as usize));
            i += 1;
        }
    }
    if out.len() < len {
        return None;
    }
    out.truncate(len);
    Some(out)
}

/// The JPEG decoder takes a three-component JPEG with no JFIF or Adobe marker
/// and no telling component identifiers for YCbCr and converts it to RGB. In
/// DICOM the Photometric Interpretation RGB says the components are already
/// RGB (no colour transform was applied), which is how pydicom reads them: an
/// Adobe APP14 marker with transform 0, inserted after SOI, tells the decoder.
/// Only done when fragments map one-to-one to frames, so the offset table
/// stays valid.
fn mark_jpeg_rgb(obj: &mut DefaultDicomObject, frames: usize) {
    let Some(DicomValue::PixelSequence(seq)) = obj.get(tags::PIXEL_DATA).map(|e| e.value()) else { return };
    let fragments = seq.fragments();
    if (fragments.len() != 1 && fragments.len() != frames) || !fragments.iter().any(|f| needs_rgb_marker(f)) {
        return;
    }
    const ADOBE_RGB: [u8; 16] = [0xFF, 0xEE, 0x00, 0x0E, b'A', b'd', b'o', b'b', b'e', 0x00, 0x64, 0, 0, 0, 0, 0];
    let patched: Vec<Vec<u8>> = fragments
        .iter()
        .map(|f| {
            if needs_rgb_marker(f) {
                let mut out = Vec::with_capacity(f.len() + ADOBE_RGB.len());
                out.extend_from_slice(&f[..2]);
                out.extend_from_slice(&ADOBE_RGB);
                out.extend_from_slice(&f[2..]);
                out
            } else {
                f.clone()
            }
        })
        .collect();
    let offset_table = seq.offset_table().to_vec();
    let value = DicomValue::from(dicom_core::value::PixelFragmentSequence::new(offset_table, patched));
    obj.put(dicom_core::DataElement::new(tags::PIXEL_DATA, dicom_core::VR::OB, value));
}

/// True for a JPEG stream whose colour space jpeg-decoder would guess as
/// YCbCr: three components, no JFIF or Adobe marker, component identifiers
/// other than the conventional (1, 2, 3), (1, 34, 35), "RGB" or "rgb".
fn needs_rgb_marker(jpeg: &[u8]) -> bool {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        return false;
    }
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return false;
        }
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        let body = jpeg.get(i + 4..(i + 2 + len).min(jpeg.len())).unwrap_or(&[]);
        match marker {
            0xE0 if body.starts_with(b"JFIF") => return false,
            0xEE if body.starts_with(b"Adobe") => return false,
            0xC0..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                // SOF: precision(1) height(2) width(2) components(1), then 3 bytes per component.
                if body.get(5) != Some(&3) {
                    return false;
                }
                let ids = [body.get(6), body.get(9), body.get(12)];
                let ids = ids.map(|b| b.copied().unwrap_or(0));
                return !matches!(ids, [1, 2, 3] | [1, 34, 35] | [82, 71, 66] | [114, 103, 98]);
            }
            0xDA | 0xD9 => return false,
            _ => {}
        }
        i += 2 + len;
    }
    false
}

/// The Modality LUT Sequence's first item, as pydicom applies it: values below
/// the first mapped value take entry 0, values past the end the last entry.
struct ModalityLut {
    first_map: i64,
    data: Vec<f64>,
    lut_type: Option<String>,
}

fn modality_lut(path: &Path, obj: &Obj) -> Result<Option<ModalityLut>, DecodeError> {
    let Some(el) = obj.get(tags::MODALITY_LUT_SEQUENCE) else { return Ok(None) };
    let Some(item) = el.items().and_then(|items| items.first()) else { return Ok(None) };
    let bad = |why: &str| corrupt(path, format!("Modality LUT Sequence: {why}"));
    let desc = item
        .get(tags::LUT_DESCRIPTOR)
        .and_then(|d| d.to_multi_int::<i64>().ok())
        .filter(|d| d.len() == 3)
        .ok_or_else(|| bad("LUTDescriptor missing or not three numbers"))?;
    let entries = if desc[0] == 0 { 65536 } else { desc[0] as usize };
    // The descriptor's first mapped value is US or SS; as unsigned, values
    // over 32767 mean negative numbers when the pixel data is signed.
    let first_map = desc[1];
    let bits = desc[2];
    let data = item
        .get(tags::LUT_DATA)
        .and_then(|d| d.to_multi_int::<i64>().ok())
        .ok_or_else(|| bad("LUTData missing or not integers"))?;
    if data.len() < entries {
        return Err(bad(&format!("LUTData has {} entries, the descriptor declares {entries}", data.len())));
    }
    // pydicom casts the table to uint{bits}.
    let mask = if bits <= 8 { 0xff } else { 0xffff };
    let data = data[..entries].iter().map(|v| (v & mask) as f64).collect();
    Ok(Some(ModalityLut { first_map, data, lut_type: text(item, tags::MODALITY_LUT_TYPE) }))
}

fn decode_inner(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<DicomImage, DecodeError> {
    let mut obj = open(bytes, path)?;
    let ts_uid = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']).to_string();
    let ts = TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| {
        unsupported(path, format!("unknown transfer syntax {ts_uid}; advscan decodes {}", supported_list()))
    })?;
    let h = read_header(path, &obj)?;
    let total = (h.rows as u64) * (h.columns as u64) * (h.frames as u64);
    if total > max_pixels {
        return Err(DecodeError::TooLarge {
            path: path.to_path_buf(),
            width: h.columns as u64,
            height: h.rows as u64,
            frames: h.frames as u64,
            pixels: total,
            limit: max_pixels,
        });
    }
    if h.samples == 1 && h.photometric != "MONOCHROME1" && h.photometric != "MONOCHROME2" {
        return Err(unsupported(
            path,
            format!("PhotometricInterpretation {} with one sample per pixel is not supported", h.photometric),
        ));
    }
    let jpeg_family =
        ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"];
    if h.samples == 3 && h.photometric == "RGB" && jpeg_family.contains(&ts.uid()) {
        mark_jpeg_rgb(&mut obj, h.frames);
    }
    let Some(pixel_data) = obj.get(tags::PIXEL_DATA) else {
        let hint = if obj.get(tags::FLOAT_PIXEL_DATA).is_some() || obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some() {
            " (it has floating-point pixel data, which advscan does not read)"
        } else {
            ""
        };
        return Err(corrupt(path, format!("no Pixel Data element (7FE0,0010){hint}")));
    };
    let stored = match pixel_data.value() {
        DicomValue::Primitive(p) => {
            // dicom-rs keeps OW values as native-endian u16; bytes read as OB
            // from a big-endian file are still in file order.
            let big_endian = ts.endianness() == dicom_encoding::Endianness::Big;
            let mut bytes = p.to_bytes().into_owned();
            if big_endian && matches!(p, dicom_core::PrimitiveValue::U8(_)) && h.bits_allocated > 8 {
                let n = usize::from(h.bits_allocated / 8);
                bytes.chunks_exact_mut(n).for_each(|c| c.reverse());
            } else if big_endian && matches!(p, dicom_core::PrimitiveValue::U16(_)) && h.bits_allocated == 32 {
                // 32-bit samples read as OW: each half is in native order, but
                // the big-endian file put the high half first.
                bytes.chunks_exact_mut(4).for_each(|c| c.rotate_left(2));
            }
            native_frames(path, &h, &bytes)?
        }
        DicomValue::PixelSequence(seq) if ts.uid() == RLE_LOSSLESS => {
            rle_frames(path, &h, seq.fragments(), seq.offset_table())?
        }
        DicomValue::PixelSequence(_) => encapsulated_frames(path, &obj, &h, ts)?,
        DicomValue::Sequence(_) => return Err(corrupt(path, "Pixel Data is a sequence, not pixel values")),
    };

    let slope = float(&obj, tags::RESCALE_SLOPE);
    let intercept = float(&obj, tags::RESCALE_INTERCEPT);
    let lut = if h.samples == 1 { modality_lut(path, &obj)? } else { None };
    let (rescale_slope, rescale_intercept) = match (slope, intercept) {
        (Some(s), Some(i)) if h.samples == 1 && lut.is_none() => (s, i),
        _ => (1.0, 0.0),
    };
    let frames: Vec<Vec<f32>> = stored
        .into_iter()
        .map(|frame| match &lut {
            Some(l) => {
                let last = l.data.len() as i64 - 1;
                // Saturating: the descriptor's first mapped value is read as any integer VR the file chose.
                frame.iter().map(|&v| l.data[v.saturating_sub(l.first_map).clamp(0, last) as usize] as f32).collect()
            }
            None if rescale_slope != 1.0 || rescale_intercept != 0.0 => {
                frame.iter().map(|&v| (v as f64 * rescale_slope + rescale_intercept) as f32).collect()
            }
            None => frame.iter().map(|&v| v as f32).collect(),
        })
        .collect();

    let modality = text(&obj, tags::MODALITY);
    let rescale_type = text(&obj, tags::RESCALE_TYPE).or_else(|| lut.as_ref().and_then(|l| l.lut_type.clone()));
    let units = if h.samples == 3 {
        "US".to_string()
    } else if modality.as_deref() == Some("CT") || rescale_type.as_deref() == Some("HU") {
        "HU".to_string()
    } else {
        rescale_type.unwrap_or_else(|| "US".to_string())
    };
    let voi_window = match (obj.get(tags::WINDOW_CENTER), obj.get(tags::WINDOW_WIDTH)) {
        (Some(c), Some(w)) => match (c.to_multi_float64(), w.to_multi_float64()) {
            (Ok(c), Ok(w)) => c.first().copied().zip(w.first().copied()),
            _ => None,
        },
        _ => None,
    };
    Ok(DicomImage {
        path: path.to_path_buf(),
        rows: h.rows,
        columns: h.columns,
        samples_per_pixel: h.samples,
        frames,
        photometric: h.photometric,
        rescale_slope,
        rescale_intercept,
        units,
        modality,
        bits_allocated: h.bits_allocated,
        bits_stored: h.bits_stored,
        pixel_signed: h.signed,
        stored_range: stored_range(h.bits_stored, h.signed),
        voi_window,
        transfer_syntax_name: ts.name().to_string(),
        transfer_syntax_uid: ts_uid,
    })
}

#[cfg(test)]
mod tests {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::uids;
    use dicom_object::FileMetaTableBuilder;

    use super::*;

    const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

    /// A grey image with the given stored 16-bit words (one frame after another).
    fn grey16(rows: u16, cols: u16, frames: u32, signed: bool, bits_stored: u16, words: Vec<u16>) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(CT_IMAGE_STORAGE)));
        obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4.5")));
        obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)));
        obj.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")));
        obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)));
        obj.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)));
        obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)));
        obj.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits_stored)));
        obj.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits_stored - 1)));
        obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(u16::from(signed))));
        if frames > 1 {
            obj.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from(frames.to_string())));
        }
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(words.into())));
        obj
    }

    fn write(obj: InMemDicomObject, dir: &Path, name: &str) -> PathBuf {
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .media_storage_sop_class_uid(CT_IMAGE_STORAGE)
                    .media_storage_sop_instance_uid("1.2.3.4.5"),
            )
            .expect("file meta");
        let path = dir.join(name);
        file.write_to_file(&path).expect("write DICOM");
        path
    }

    #[test]
    fn int16_ct_with_intercept_minus_1024_gives_exact_hounsfield_units() {
        let dir = tempfile::tempdir().unwrap();
        let stored: [i16; 4] = [-2000, 0, 1024, 3071];
        let mut obj = grey16(2, 2, 1, true, 16, stored.iter().map(|&v| v as u16).collect());
        obj.put(DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CT")));
        obj.put(DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("-1024")));
        obj.put(DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("1")));
        obj.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, PrimitiveValue::from("-600")));
        obj.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, PrimitiveValue::from("1500")));
        let path = write(obj, dir.path(), "ct_int16_rescale_-1024.dcm");
        let img = decode(&path, 100).unwrap();
        assert_eq!(img.frames, vec![vec![-3024.0, -1024.0, 0.0, 2047.0]]);
        assert_eq!(img.units, "HU");
        assert_eq!((img.rescale_slope, img.rescale_intercept), (1.0, -1024.0));
        assert_eq!(img.stored_range, (-32768, 32767));
        assert!(img.pixel_signed);
        assert_eq!(img.voi_window, Some((-600.0, 1500.0)));
        assert_eq!(img.transfer_syntax_name, "Explicit VR Little Endian");
        assert!(has_dicom_preamble(&path));
    }

    #[test]
    fn unsigned_12_bit_in_16_allocated_masks_junk_high_bits() {
        let dir = tempfile::tempdir().unwrap();
        // High nibble set as an overlay or junk would set it; only the low 12 bits are the value.
        let words = vec![0xF000, 0x1FFF, 0xA123, 0x0800];
        let path = write(grey16(2, 2, 1, false, 12, words), dir.path(), "mr_uint12_junk_high_bits.dcm");
        let img = decode(&path, 100).unwrap();
        assert_eq!(img.frames[0], vec![0.0, 4095.0, 291.0, 2048.0]);
        assert_eq!(img.stored_range, (0, 4095));
        assert_eq!(img.units, "US");
    }

    #[test]
    fn signed_12_bit_in_16_allocated_is_sign_extended_from_bit_11() {
        let dir = tempfile::tempdir().unwrap();
        let words = vec![0x0FFF, 0x0800, 0xF7FF, 0x0001];
        let path = write(grey16(2, 2, 1, true, 12, words), dir.path(), "ct_int12.dcm");
        let img = decode(&path, 100).unwrap();
        assert_eq!(img.frames[0], vec![-1.0, -2048.0, 2047.0, 1.0]);
        assert_eq!(img.stored_range, (-2048, 2047));
    }

    #[test]
    fn monochrome1_is_recorded_and_not_inverted() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = grey16(1, 2, 1, false, 16, vec![10, 60000]);
        obj.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME1")));
        let path = write(obj, dir.path(), "cr_monochrome1.dcm");
        let img = decode(&path, 100).unwrap();
        assert_eq!(img.photometric, "MONOCHROME1");
        assert_eq!(img.frames[0], vec![10.0, 60000.0]);
    }

    #[test]
    fn multi_frame_file_yields_one_entry_per_frame() {
        let dir = tempfile::tempdir().unwrap();
        let words: Vec<u16> = (0..3 * 2 * 3).collect();
        let path = write(grey16(2, 3, 3, false, 16, words), dir.path(), "multiframe_3x2x3.dcm");
        let img = decode(&path, 100).unwrap();
        assert_eq!(img.frames.len(), 3);
        assert_eq!(img.frames[2], vec![12.0, 13.0, 14.0, 15.0, 16.0, 17.0]);
        assert_eq!((img.rows, img.columns, img.samples_per_pixel), (2, 3, 1));
    }

    #[test]
    fn modality_lut_sequence_maps_and_clamps_like_pydicom() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = grey16(1, 4, 1, false, 16, vec![0, 10, 12, 500]);
        let mut item = InMemDicomObject::new_empty();
        item.put(DataElement::new(tags::LUT_DESCRIPTOR, VR::US, PrimitiveValue::U16(vec![3u16, 10, 16].into())));
        item.put(DataElement::new(tags::LUT_DATA, VR::US, PrimitiveValue::U16(vec![100u16, 200, 300].into())));
        item.put(DataElement::new(tags::MODALITY_LUT_TYPE, VR::LO, PrimitiveValue::from("OD")));
        obj.put(DataElement::new(
            tags::MODALITY_LUT_SEQUENCE,
            VR::SQ,
            DicomValue::new_sequence(vec![item], dicom_core::Length::UNDEFINED),
        ));
        let path = write(obj, dir.path(), "modality_lut_sequence.dcm");
        let img = decode(&path, 100).unwrap();
        assert_eq!(img.frames[0], vec![100.0, 100.0, 300.0, 300.0]);
        assert_eq!(img.units, "OD");
    }

    #[test]
    fn missing_pixel_data_is_an_error_naming_the_element() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = grey16(2, 2, 1, false, 16, vec![0; 4]);
        obj.remove_element(tags::PIXEL_DATA);
        let path = write(obj, dir.path(), "no_pixel_data.dcm");
        let err = decode(&path, 100).unwrap_err().to_string();
        assert!(err.contains("no_pixel_data.dcm") && err.contains("no Pixel Data"), "{err}");
    }

    #[test]
    fn truncated_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(grey16(64, 64, 1, false, 16, vec![7; 64 * 64]), dir.path(), "truncated.dcm");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
        let err = decode(&path, 1 << 20).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("truncated.dcm"), "{err}");
    }

    #[test]
    fn pixel_data_shorter_than_the_header_declares_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(grey16(4, 4, 2, false, 16, vec![1; 20]), dir.path(), "short_pixel_data.dcm");
        let err = decode(&path, 100).unwrap_err().to_string();
        assert!(err.contains("shorter than the 64 bytes"), "{err}");
    }

    #[test]
    fn empty_and_non_dicom_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.dcm");
        std::fs::write(&empty, b"").unwrap();
        let err = decode(&empty, 100).unwrap_err().to_string();
        assert!(err.contains("empty file"), "{err}");
        let text = dir.path().join("notes.dcm");
        std::fs::write(&text, b"this is not a DICOM file at all, just some words in a text file").unwrap();
        let err = decode(&text, 100).unwrap_err().to_string();
        assert!(err.contains("not a DICOM file"), "{err}");
        assert!(!has_dicom_preamble(&text));
    }

    #[test]
    fn image_over_the_pixel_limit_is_refused_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(grey16(4, 4, 2, false, 16, vec![0; 32]), dir.path(), "too_large.dcm");
        match decode(&path, 31) {
            Err(DecodeError::TooLarge { pixels: 32, limit: 31, .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(decode(&path, 32).is_ok());
    }

    #[test]
    fn every_listed_transfer_syntax_has_a_decoder_in_this_build() {
        for (uid, name) in supported_transfer_syntaxes() {
            let ts = TransferSyntaxRegistry.get(uid).unwrap_or_else(|| panic!("{name} ({uid}) not registered"));
            assert!(ts.can_decode_all() || matches!(ts.codec(), Codec::None | Codec::Dataset(Some(_))), "{name}");
        }
    }

    #[test]
    fn packbits_decodes_literal_and_repeat_runs() {
        // literal of 2 bytes, repeat 0x07 three times, no-op, literal 1 byte, then padding ignored.
        let src = [1u8, 0xAA, 0xBB, 0xFE, 0x07, 0x80, 0x00, 0x42, 0x00];
        assert_eq!(packbits(&src, 6), Some(vec![0xAA, 0xBB, 7, 7, 7, 0x42]));
        assert_eq!(packbits(&src, 9), None);
    }
}
