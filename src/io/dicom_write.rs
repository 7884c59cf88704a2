//! Writing DICOM files: synthetic CT (and radiograph-like) instances built from
//! scratch for the project's fixtures ([`write_ct_slice`]), and derived
//! instances of one frame of a real file with new pixel values, e.g. an
//! adversarial scan ([`write_derived`]), optionally de-identified with the
//! attributes of the DICOM PS3.15 Basic Application Level Confidentiality
//! Profile that are commonly present. This module owns the UIDs advscan mints,
//! the RLE Lossless encoder (dicom-rs 0.10 decodes RLE but has no encoder) and
//! the de-identification rules. It does not decode pixel data (that is
//! `dicom.rs`'s job) and never modifies a source file.
//!
//! UIDs are UUID-derived (`2.25.<decimal UUID>`, PS3.5 B.2): advscan has no
//! registered OID root, and `2.25` is the registration-free one. The UUID is
//! name-based (version 8 layout) from SHA-256 of an advscan namespace string and
//! what the UID stands for (a fixture seed, a source UID), so fixtures are
//! reproducible bit for bit and a source UID always maps to the same new UID.

use std::path::Path;

use dicom_core::header::Header;
use dicom_core::value::{C, DataSetSequence, PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use sha2::{Digest, Sha256};

use crate::error::{DecodeError, Error};

/// The root of every UID advscan writes: UUID-derived UIDs (see the module docs).
pub const UID_ROOT: &str = "2.25";
/// (0002,0012) of every file advscan writes.
pub const IMPLEMENTATION_VERSION_NAME: &str = "ADVSCAN_0_1";
/// The fixed dates and time of the synthetic fixtures.
const FIXTURE_DATE: &str = "20000101";
const FIXTURE_TIME: &str = "120000";

/// A UID `2.25.N` where N is a version-8 UUID from SHA-256 of `parts`.
pub fn advscan_uid(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(b"advscan uid v1");
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8 (custom)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    format!("{UID_ROOT}.{}", u128::from_be_bytes(b))
}

fn implementation_class_uid() -> String {
    advscan_uid(&[b"implementation class"])
}

/// The transfer syntax a fixture is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteSyntax {
    ExplicitVrLittleEndian,
    ImplicitVrLittleEndian,
    /// Retired in DICOM, still met in archives.
    ExplicitVrBigEndian,
    /// Encapsulated, one fragment per frame, encoded by [`rle_encode_frame`].
    RleLossless,
}

impl WriteSyntax {
    pub fn uid(self) -> &'static str {
        match self {
            WriteSyntax::ExplicitVrLittleEndian => uids::EXPLICIT_VR_LITTLE_ENDIAN,
            WriteSyntax::ImplicitVrLittleEndian => uids::IMPLICIT_VR_LITTLE_ENDIAN,
            #[allow(deprecated)] // retired, but still read by everyone
            WriteSyntax::ExplicitVrBigEndian => uids::EXPLICIT_VR_BIG_ENDIAN,
            WriteSyntax::RleLossless => uids::RLE_LOSSLESS,
        }
    }
}

/// What kind of instance [`write_ct_slice`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceKind {
    /// CT Image Storage, one frame of Hounsfield units; stored = HU + 1024,
    /// RescaleIntercept −1024, lung window.
    Ct,
    /// Multi-frame Grayscale Word Secondary Capture (CT Image Storage cannot
    /// hold several frames): HU frames, stored = HU + 1024 unsigned (that IOD
    /// requires PixelRepresentation 0), RescaleIntercept −1024, RescaleType HU.
    MultiFrameCt,
    /// Secondary Capture of a radiograph-like image, MONOCHROME1: `frames[0]`
    /// holds the stored values themselves (0 ..= 2^BitsStored − 1, high = dark).
    RadiographMonochrome1,
}

/// A synthetic instance to write. `frames` are row-major `rows`×`cols`.
#[derive(Debug, Clone)]
pub struct CtSliceSpec {
    pub kind: SliceKind,
    pub rows: usize,
    pub cols: usize,
    /// HU per frame ([`SliceKind::Ct`] takes exactly one), or stored values
    /// for [`SliceKind::RadiographMonochrome1`].
    pub frames: Vec<Vec<i16>>,
    pub syntax: WriteSyntax,
    /// 16 or 12 (then HU + 1024 must fit in 0..=4095).
    pub bits_stored: u16,
    /// PixelRepresentation 1 (two's complement) for [`SliceKind::Ct`];
    /// ignored by the other kinds, which are unsigned.
    pub signed: bool,
    /// (row, column) spacing in mm.
    pub pixel_spacing: [f64; 2],
    /// Determines every UID of the instance.
    pub seed: u64,
    pub instance_number: u32,
}

impl CtSliceSpec {
    /// A single-frame CT slice, int16 signed, explicit VR little endian, 0.7 mm pixels.
    pub fn ct(size: usize, hu: Vec<i16>, seed: u64) -> CtSliceSpec {
        CtSliceSpec {
            kind: SliceKind::Ct,
            rows: size,
            cols: size,
            frames: vec![hu],
            syntax: WriteSyntax::ExplicitVrLittleEndian,
            bits_stored: 16,
            signed: true,
            pixel_spacing: [0.7, 0.7],
            seed,
            instance_number: 1,
        }
    }
}

/// Rescale intercept of the HU kinds: stored = HU + 1024.
pub const HU_OFFSET: i32 = 1024;

fn out_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Output { path: path.to_path_buf(), reason: reason.into() }
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn put_u16(obj: &mut InMemDicomObject, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

/// Write a synthetic instance described by `spec` to `path`.
pub fn write_ct_slice(path: &Path, spec: &CtSliceSpec) -> Result<(), Error> {
    let n = spec.rows * spec.cols;
    if spec.frames.is_empty() || spec.frames.iter().any(|f| f.len() != n) {
        return Err(out_err(path, format!("every frame must have {}×{} values", spec.rows, spec.cols)));
    }
    if spec.kind == SliceKind::Ct && spec.frames.len() != 1 {
        return Err(out_err(path, "CT Image Storage holds one frame; use SliceKind::MultiFrameCt"));
    }
    if !(8..=16).contains(&spec.bits_stored) {
        return Err(out_err(path, format!("BitsStored {} is not in 8..=16", spec.bits_stored)));
    }
    let signed = spec.kind == SliceKind::Ct && spec.signed;
    let (lo, hi) = if signed {
        (-(1i32 << (spec.bits_stored - 1)), (1i32 << (spec.bits_stored - 1)) - 1)
    } else {
        (0, (1i32 << spec.bits_stored) - 1)
    };
    let offset = if spec.kind == SliceKind::RadiographMonochrome1 { 0 } else { HU_OFFSET };
    let mut stored = Vec::with_capacity(n * spec.frames.len());
    for &v in spec.frames.iter().flatten() {
        let s = v as i32 + offset;
        if s < lo || s > hi {
            return Err(out_err(path, format!("stored value {s} does not fit BitsStored {}", spec.bits_stored)));
        }
        stored.push(s as u16); // two's complement when signed
    }

    let seed = spec.seed.to_le_bytes();
    let uid = |what: &[u8]| advscan_uid(&[b"fixture", what, &seed]);
    let (sop_class, modality) = match spec.kind {
        SliceKind::Ct => (uids::CT_IMAGE_STORAGE, "CT"),
        SliceKind::MultiFrameCt => (uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE, "CT"),
        SliceKind::RadiographMonochrome1 => (uids::SECONDARY_CAPTURE_IMAGE_STORAGE, "DX"),
    };
    let mut obj = InMemDicomObject::new_empty();
    put_str(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    let image_type = match spec.kind {
        SliceKind::Ct => "ORIGINAL\\PRIMARY\\AXIAL",
        _ => "DERIVED\\SECONDARY",
    };
    put_str(&mut obj, tags::IMAGE_TYPE, VR::CS, image_type);
    put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &uid(b"sop"));
    for tag in [tags::STUDY_DATE, tags::SERIES_DATE, tags::CONTENT_DATE] {
        put_str(&mut obj, tag, VR::DA, FIXTURE_DATE);
    }
    for tag in [tags::STUDY_TIME, tags::SERIES_TIME, tags::CONTENT_TIME] {
        put_str(&mut obj, tag, VR::TM, FIXTURE_TIME);
    }
    put_str(&mut obj, tags::ACCESSION_NUMBER, VR::SH, "");
    put_str(&mut obj, tags::MODALITY, VR::CS, modality);
    if spec.kind != SliceKind::Ct {
        put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "SYN");
    }
    put_str(&mut obj, tags::MANUFACTURER, VR::LO, "advscan synthetic phantom");
    put_str(&mut obj, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    put_str(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, "synthetic fixture, no patient data");
    put_str(&mut obj, tags::PATIENT_NAME, VR::PN, "Synthetic^Phantom");
    put_str(&mut obj, tags::PATIENT_ID, VR::LO, "SYNTH-0001");
    put_str(&mut obj, tags::PATIENT_BIRTH_DATE, VR::DA, "");
    put_str(&mut obj, tags::PATIENT_SEX, VR::CS, "O");
    if spec.kind == SliceKind::Ct {
        put_str(&mut obj, tags::SLICE_THICKNESS, VR::DS, "1");
        put_str(&mut obj, tags::KVP, VR::DS, "120");
    }
    if spec.kind == SliceKind::RadiographMonochrome1 {
        put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
    }
    if spec.kind != SliceKind::RadiographMonochrome1 {
        put_str(&mut obj, tags::PATIENT_POSITION, VR::CS, "HFS");
        // Type 2C; dciodvfy wants it present (empty: a chest is unpaired), warning only.
        put_str(&mut obj, tags::LATERALITY, VR::CS, "");
    }
    put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &uid(b"study"));
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &uid(b"series"));
    put_str(&mut obj, tags::STUDY_ID, VR::SH, "1");
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, "1");
    if spec.kind == SliceKind::Ct {
        put_str(&mut obj, tags::ACQUISITION_NUMBER, VR::IS, "1");
    }
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, &spec.instance_number.to_string());
    put_str(&mut obj, tags::PATIENT_ORIENTATION, VR::CS, if spec.kind == SliceKind::Ct { "" } else { "L\\F" });
    if spec.kind == SliceKind::Ct {
        put_str(&mut obj, tags::IMAGE_POSITION_PATIENT, VR::DS, "-44.8\\-44.8\\0");
        put_str(&mut obj, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0");
        put_str(&mut obj, tags::FRAME_OF_REFERENCE_UID, VR::UI, &uid(b"frame of reference"));
        put_str(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    }
    put_u16(&mut obj, tags::SAMPLES_PER_PIXEL, 1);
    let photometric = if spec.kind == SliceKind::RadiographMonochrome1 { "MONOCHROME1" } else { "MONOCHROME2" };
    put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric);
    if spec.kind == SliceKind::MultiFrameCt {
        put_str(&mut obj, tags::NUMBER_OF_FRAMES, VR::IS, &spec.frames.len().to_string());
        obj.put(DataElement::new(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::from(tags::PAGE_NUMBER_VECTOR),
        ));
        let pages: Vec<String> = (1..=spec.frames.len()).map(|i| i.to_string()).collect();
        put_str(&mut obj, tags::PAGE_NUMBER_VECTOR, VR::IS, &pages.join("\\"));
    }
    put_u16(&mut obj, tags::ROWS, spec.rows as u16);
    put_u16(&mut obj, tags::COLUMNS, spec.cols as u16);
    let spacing = format!("{}\\{}", spec.pixel_spacing[0], spec.pixel_spacing[1]);
    match spec.kind {
        SliceKind::Ct | SliceKind::MultiFrameCt => put_str(&mut obj, tags::PIXEL_SPACING, VR::DS, &spacing),
        SliceKind::RadiographMonochrome1 => put_str(&mut obj, tags::NOMINAL_SCANNED_PIXEL_SPACING, VR::DS, &spacing),
    }
    put_u16(&mut obj, tags::BITS_ALLOCATED, 16);
    put_u16(&mut obj, tags::BITS_STORED, spec.bits_stored);
    put_u16(&mut obj, tags::HIGH_BIT, spec.bits_stored - 1);
    put_u16(&mut obj, tags::PIXEL_REPRESENTATION, signed as u16);
    match spec.kind {
        SliceKind::Ct | SliceKind::MultiFrameCt => {
            put_str(&mut obj, tags::WINDOW_CENTER, VR::DS, "-600");
            put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, "1500");
            put_str(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
            put_str(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
            put_str(&mut obj, tags::RESCALE_TYPE, VR::LO, "HU");
            put_str(&mut obj, tags::WINDOW_CENTER_WIDTH_EXPLANATION, VR::LO, "LUNG");
        }
        SliceKind::RadiographMonochrome1 => {
            let top = (1u32 << spec.bits_stored) as f64;
            put_str(&mut obj, tags::WINDOW_CENTER, VR::DS, &format!("{}", top / 2.0));
            put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, &format!("{top}"));
        }
    }
    if spec.kind == SliceKind::MultiFrameCt {
        put_str(&mut obj, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
    }
    if spec.kind == SliceKind::RadiographMonochrome1 {
        put_str(&mut obj, tags::PRESENTATION_LUT_SHAPE, VR::CS, "INVERSE");
    }
    if spec.kind != SliceKind::Ct {
        put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    }
    if spec.syntax == WriteSyntax::RleLossless {
        let fragments: Vec<Vec<u8>> = stored.chunks(n).map(|f| rle_encode_frame(f, spec.rows, spec.cols)).collect();
        put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PixelFragmentSequence::new(Vec::<u32>::new(), fragments)));
    } else {
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(C::from_vec(stored))));
    }
    write_file(obj, spec.syntax.uid(), path)
}

fn write_file(obj: InMemDicomObject, syntax: &str, path: &Path) -> Result<(), Error> {
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(syntax)
        .implementation_class_uid(implementation_class_uid())
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    let file = obj.with_meta(meta).map_err(|e| out_err(path, format!("cannot build the file meta group: {e}")))?;
    // Write to memory first so a failure never leaves half a file behind.
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|e| out_err(path, format!("cannot encode the DICOM file: {e}")))?;
    std::fs::write(path, bytes).map_err(|e| out_err(path, format!("cannot write: {e}")))
}

/// One frame of 16-bit stored values as an RLE Lossless fragment (PS3.5
/// Annex G): a 64-byte header, then two PackBits segments, most significant
/// bytes first; each row is encoded on its own, and each segment padded to
/// even length.
pub fn rle_encode_frame(frame: &[u16], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(frame.len(), rows * cols, "RLE frame size");
    let mut segments = [Vec::new(), Vec::new()];
    let mut plane = vec![0u8; cols];
    for (s, seg) in segments.iter_mut().enumerate() {
        let shift = if s == 0 { 8 } else { 0 };
        for row in frame.chunks(cols) {
            for (p, &v) in plane.iter_mut().zip(row) {
                *p = (v >> shift) as u8;
            }
            packbits(&plane, seg);
        }
        if seg.len() % 2 == 1 {
            seg.push(0x80); // a no-op header byte
        }
    }
    let mut out = Vec::with_capacity(64 + segments[0].len() + segments[1].len());
    out.extend_from_slice(&2u32.to_le_bytes());
    let mut offset = 64u32;
    for seg in &segments {
        out.extend_from_slice(&offset.to_le_bytes());
        offset += seg.len() as u32;
    }
    out.resize(64, 0);
    for seg in &segments {
        out.extend_from_slice(seg);
    }
    out
}

/// PackBits: runs of 3 to 128 equal bytes as (1 − n, byte), anything else as
/// literal blocks of up to 128 bytes (n − 1, bytes…).
fn packbits(data: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    let mut literal_start = 0;
    let flush = |out: &mut Vec<u8>, from: usize, to: usize| {
        for chunk in data[from..to].chunks(128) {
            out.push((chunk.len() - 1) as u8);
            out.extend_from_slice(chunk);
        }
    };
    while i < data.len() {
        let mut run = 1;
        while i + run < data.len() && run < 128 && data[i + run] == data[i] {
            run += 1;
        }
        if run >= 3 {
            flush(out, literal_start, i);
            out.push((1i16 - run as i16) as i8 as u8);
            out.push(data[i]);
            i += run;
            literal_start = i;
        } else {
            i += run;
        }
    }
    flush(out, literal_start, data.len());
}

fn read_source(source: &Path) -> Result<dicom_object::DefaultDicomObject, Error> {
    dicom_object::open_file(source)
        .map_err(|e| Error::Decode(DecodeError::Corrupt { path: source.to_path_buf(), reason: e.to_string() }))
}

fn int_attr(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

fn str_attr(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    Some(obj.get(tag)?.to_str().ok()?.trim_end_matches([' ', '\0']).to_string())
}

/// The description advscan records in (0012,0063) DeidentificationMethod.
/// (LO: at most 64 characters; the code sequence names the profile in full.)
pub const DEIDENTIFICATION_METHOD: &str = "advscan: PS3.15 Basic Profile (common attributes)";

/// Write a derived instance of frame `frame` (0-based) of `source` to `out`,
/// with the stored pixel values `stored` (one frame, sample-major: all of
/// sample 0 row by row, then sample 1…; written interleaved with
/// PlanarConfiguration 0). Every other attribute of the source is kept except:
/// new SOP Instance and Series Instance UIDs, ImageType DERIVED\SECONDARY (its
/// further values kept), DerivationDescription, a SourceImageSequence naming the
/// source (and frame), NumberOfFrames 1 and only that frame's per-frame
/// functional group, RGB for a YBR source (the stored values are RGB), no
/// Smallest/Largest Image Pixel Value, native pixel data in explicit VR little
/// endian, and a new file meta group. With `anonymize`, see
/// [`anonymize_in_place`].
///
/// The UIDs are hashed from the source's UIDs, the frame, the description and
/// the pixel values, so the same call writes the same file, and derived frames
/// of one source series with one description share one new series.
pub fn write_derived(
    source: &Path,
    frame: usize,
    stored: &[i32],
    out: &Path,
    derivation_description: &str,
    anonymize: bool,
) -> Result<(), Error> {
    let file = read_source(source)?;
    let mut obj = file.into_inner();
    let bad = |reason: String| Err(Error::Decode(DecodeError::Unsupported { path: source.to_path_buf(), reason }));
    let (Some(rows), Some(cols)) = (int_attr(&obj, tags::ROWS), int_attr(&obj, tags::COLUMNS)) else {
        return bad("no Rows/Columns: not an image".into());
    };
    let samples = int_attr(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let bits_allocated = int_attr(&obj, tags::BITS_ALLOCATED).unwrap_or(16);
    let bits_stored = int_attr(&obj, tags::BITS_STORED).unwrap_or(bits_allocated);
    let signed = int_attr(&obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1;
    let frames = int_attr(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    let (rows, cols, samples) = (rows as usize, cols as usize, samples as usize);
    if frame as i64 >= frames {
        return Err(out_err(out, format!("frame {frame} asked, the source has {frames} frame(s)")));
    }
    if stored.len() != samples * rows * cols {
        return Err(out_err(
            out,
            format!("{} stored values given, one frame has {samples}×{rows}×{cols}", stored.len()),
        ));
    }
    if !matches!(bits_allocated, 8 | 16) || !(1..=bits_allocated).contains(&bits_stored) {
        return bad(format!("BitsAllocated {bits_allocated} / BitsStored {bits_stored} not supported for writing"));
    }
    let (lo, hi) = if signed {
        (-(1i64 << (bits_stored - 1)), (1i64 << (bits_stored - 1)) - 1)
    } else {
        (0, (1i64 << bits_stored) - 1)
    };
    if let Some(v) = stored.iter().find(|&&v| (v as i64) < lo || (v as i64) > hi) {
        return Err(out_err(out, format!("stored value {v} outside [{lo}, {hi}] (BitsStored {bits_stored})")));
    }

    let src_sop = str_attr(&obj, tags::SOP_INSTANCE_UID).unwrap_or_default();
    let src_class = str_attr(&obj, tags::SOP_CLASS_UID).unwrap_or_default();
    let src_series = str_attr(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let pixel_hash = {
        let mut h = Sha256::new();
        for v in stored {
            h.update(v.to_le_bytes());
        }
        h.finalize()
    };
    let frame_bytes = (frame as u64).to_le_bytes();
    let new_sop = advscan_uid(&[
        b"derived sop",
        src_sop.as_bytes(),
        &frame_bytes,
        derivation_description.as_bytes(),
        &pixel_hash,
    ]);
    let new_series = advscan_uid(&[b"derived series", src_series.as_bytes(), derivation_description.as_bytes()]);

    // Pixel module: interleave the samples, write native.
    let n = rows * cols;
    let interleaved: Vec<i32> = (0..n * samples).map(|i| stored[(i % samples) * n + i / samples]).collect();
    let pixel = if bits_allocated == 8 {
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(interleaved.iter().map(|&v| v as u8).collect::<Vec<u8>>()),
        )
    } else {
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(interleaved.iter().map(|&v| v as u16).collect()))
    };
    obj.put(pixel);
    if samples > 1 {
        put_u16(&mut obj, tags::PLANAR_CONFIGURATION, 0);
    }
    if str_attr(&obj, tags::PHOTOMETRIC_INTERPRETATION).is_some_and(|p| p.starts_with("YBR")) {
        put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    }
    obj.remove_element(tags::SMALLEST_IMAGE_PIXEL_VALUE);
    obj.remove_element(tags::LARGEST_IMAGE_PIXEL_VALUE);
    obj.remove_element(tags::PIXEL_DATA_PROVIDER_URL);
    obj.remove_element(tags::EXTENDED_OFFSET_TABLE);
    obj.remove_element(tags::EXTENDED_OFFSET_TABLE_LENGTHS);

    // One frame left.
    if obj.get(tags::NUMBER_OF_FRAMES).is_some() {
        put_str(&mut obj, tags::NUMBER_OF_FRAMES, VR::IS, "1");
        keep_one_frame(&mut obj, frame, frames as usize);
    }

    let mut image_type = vec!["DERIVED".to_string(), "SECONDARY".to_string()];
    if let Some(e) = obj.get(tags::IMAGE_TYPE)
        && let Ok(values) = e.to_multi_str()
    {
        image_type.extend(values.iter().skip(2).map(|v| v.trim().to_string()));
    }
    put_str(&mut obj, tags::IMAGE_TYPE, VR::CS, &image_type.join("\\"));
    put_str(&mut obj, tags::DERIVATION_DESCRIPTION, VR::ST, derivation_description);

    let mut reference = InMemDicomObject::new_empty();
    put_str(&mut reference, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &src_class);
    // The source's own UID; with `anonymize`, mapped below like every instance UID.
    put_str(&mut reference, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &src_sop);
    if frames > 1 {
        put_str(&mut reference, tags::REFERENCED_FRAME_NUMBER, VR::IS, &(frame + 1).to_string());
    }
    obj.put(DataElement::new(tags::SOURCE_IMAGE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![reference])));

    if anonymize {
        anonymize_in_place(&mut obj, &mut |uid: &str| advscan_uid(&[b"anonymized", uid.as_bytes()]));
    }
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &new_sop);
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &new_series);
    if anonymize {
        put_str(&mut obj, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
        put_str(&mut obj, tags::DEIDENTIFICATION_METHOD, VR::LO, DEIDENTIFICATION_METHOD);
        let mut code = InMemDicomObject::new_empty();
        put_str(&mut code, tags::CODE_VALUE, VR::SH, "113100");
        put_str(&mut code, tags::CODING_SCHEME_DESIGNATOR, VR::SH, "DCM");
        put_str(&mut code, tags::CODE_MEANING, VR::LO, "Basic Application Confidentiality Profile");
        obj.put(DataElement::new(
            tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![code]),
        ));
    }
    write_file(obj, uids::EXPLICIT_VR_LITTLE_ENDIAN, out)
}

/// Keep only frame `frame` in the per-frame attributes of a multi-frame source:
/// the Per-frame Functional Groups item and the vectors the Frame Increment
/// Pointer names (one value per frame).
fn keep_one_frame(obj: &mut InMemDicomObject, frame: usize, frames: usize) {
    if let Some(items) = obj.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|e| e.items())
        && let Some(item) = items.get(frame)
    {
        let item = item.clone();
        obj.put(DataElement::new(
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
    }
    let pointers: Vec<Tag> = match obj.get(tags::FRAME_INCREMENT_POINTER).map(|e| e.value().clone()) {
        Some(dicom_core::value::Value::Primitive(PrimitiveValue::Tags(t))) => t.to_vec(),
        _ => Vec::new(),
    };
    for tag in pointers {
        let Some(e) = obj.get(tag) else { continue };
        let vr = e.vr();
        if e.value().multiplicity() as usize != frames {
            continue;
        }
        match e.value().to_multi_str() {
            Ok(values) if matches!(vr, VR::IS | VR::DS | VR::CS | VR::LO | VR::SH) => {
                let v = values[frame].trim().to_string();
                put_str(obj, tag, vr, &v);
            }
            _ => {
                obj.remove_element(tag);
            }
        }
    }
    // Type 1C, only present when NumberOfFrames > 1 (dciodvfy checks it).
    obj.remove_element(tags::FRAME_INCREMENT_POINTER);
}

/// Attributes the Basic Profile replaces with an empty value (Z; they are
/// type 2 in common IODs).
const EMPTY: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::CONTENT_DATE,
    tags::CONTENT_TIME,
];

/// Text attributes kept by de-identification: technical, not identifying
/// (everything else with VR LO, SH, ST, LT, UT, UC or PN is removed, since
/// free text is where identifying details hide).
const KEEP_TEXT: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    tags::MANUFACTURER,
    tags::MANUFACTURER_MODEL_NAME,
    tags::CONVOLUTION_KERNEL,
    tags::RESCALE_TYPE,
    tags::WINDOW_CENTER_WIDTH_EXPLANATION,
    tags::DERIVATION_DESCRIPTION,
    tags::POSITION_REFERENCE_INDICATOR,
    tags::LOSSY_IMAGE_COMPRESSION_METHOD,
    tags::CONTRAST_BOLUS_AGENT,
    tags::BODY_PART_EXAMINED,
];

/// Sequences kept by de-identification (image-describing); every other
/// sequence is removed, since references and requests carry identifiers.
const KEEP_SEQUENCES: &[Tag] = &[
    tags::SOURCE_IMAGE_SEQUENCE,
    tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
    tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
    tags::MODALITY_LUT_SEQUENCE,
    tags::VOILUT_SEQUENCE,
    tags::ANATOMIC_REGION_SEQUENCE,
    tags::ICON_IMAGE_SEQUENCE,
];

/// Text attributes also kept inside the items of kept sequences: the parts of a
/// coded entry (e.g. the anatomy of an AnatomicRegionSequence).
const KEEP_CODE_TEXT: &[Tag] = &[
    tags::CODE_VALUE,
    tags::CODING_SCHEME_DESIGNATOR,
    tags::CODING_SCHEME_VERSION,
    tags::CODE_MEANING,
    tags::LONG_CODE_VALUE,
];

/// DICOM-defined UIDs (SOP classes, transfer syntaxes, coding schemes,
/// well-known frames of reference) all lie under this root: they name no
/// instance, so de-identification keeps them.
const DICOM_UID_ROOT: &str = "1.2.840.10008.";

/// UID attributes that name a class, not an instance: kept whatever their
/// root (a private SOP class is not patient data).
const CLASS_UIDS: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::REFERENCED_SOP_CLASS_UID,
    tags::RELATED_GENERAL_SOP_CLASS_UID,
    tags::ORIGINAL_SPECIALIZED_SOP_CLASS_UID,
    tags::CODING_SCHEME_UID,
];

/// Whether de-identification keeps an attribute. `nested`: inside an item of a
/// kept sequence, whose own sequences describe the image too and where coded
/// entries keep their text.
fn keep_when_anonymized(tag: Tag, vr: VR, nested: bool) -> bool {
    if tag.group() % 2 == 1 {
        return false; // private
    }
    if !nested && EMPTY.contains(&tag) {
        return true;
    }
    match vr {
        // UN: an attribute this reader does not know, so cannot vouch for.
        VR::PN | VR::DA | VR::DT | VR::TM | VR::UN => false,
        VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC => {
            KEEP_TEXT.contains(&tag) || (nested && KEEP_CODE_TEXT.contains(&tag))
        }
        VR::SQ => nested || KEEP_SEQUENCES.contains(&tag),
        _ => true,
    }
}

/// Applies [`keep_when_anonymized`] to `obj` and, recursively, to the items of
/// the sequences it keeps, and replaces every instance UID (VR UI, not a
/// [`CLASS_UIDS`] attribute, not under [`DICOM_UID_ROOT`]) through `uid_map`.
fn scrub(obj: &mut InMemDicomObject, nested: bool, uid_map: &mut dyn FnMut(&str) -> String) {
    let remove: Vec<Tag> =
        obj.iter().filter(|e| !keep_when_anonymized(e.tag(), e.vr(), nested)).map(|e| e.tag()).collect();
    for tag in remove {
        obj.remove_element(tag);
    }
    let uids: Vec<(Tag, Vec<String>)> = obj
        .iter()
        .filter(|e| e.vr() == VR::UI && !CLASS_UIDS.contains(&e.tag()))
        .filter_map(|e| {
            Some((
                e.tag(),
                e.value().to_multi_str().ok()?.iter().map(|v| v.trim_end_matches([' ', '\0']).to_string()).collect(),
            ))
        })
        .collect();
    for (tag, values) in uids {
        let mapped: Vec<String> = values
            .iter()
            .map(|v| if v.is_empty() || v.starts_with(DICOM_UID_ROOT) { v.clone() } else { uid_map(v) })
            .collect();
        if mapped != values {
            put_str(obj, tag, VR::UI, &mapped.join("\\"));
        }
    }
    let sequences: Vec<(Tag, Vec<InMemDicomObject>)> =
        obj.iter().filter_map(|e| Some((e.tag(), e.items()?.to_vec()))).collect();
    for (tag, mut items) in sequences {
        for item in &mut items {
            scrub(item, true, uid_map);
        }
        obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
    }
}

/// De-identify a data set with the DICOM PS3.15 Basic Application Level
/// Confidentiality Profile's rules for the commonly present attributes:
/// patient and study identifiers emptied (Z), every other person name, date,
/// time and date-time removed (X), free text removed except technical
/// attributes ([`KEEP_TEXT`]), sequences removed except image-describing ones
/// ([`KEEP_SEQUENCES`], whose items get the same rules), private and unknown
/// (UN) attributes removed, and every instance UID (U: Study, Series, SOP,
/// Frame of Reference, Irradiation Event, referenced instances…) replaced
/// through `uid_map` (consistent across files), at any depth. The caller sets
/// the new SOP/Series UIDs and PatientIdentityRemoved.
pub fn anonymize_in_place(obj: &mut InMemDicomObject, uid_map: &mut dyn FnMut(&str) -> String) {
    scrub(obj, false, uid_map);
    for tag in [
        tags::INSTITUTION_NAME,
        tags::INSTITUTION_ADDRESS,
        tags::STATION_NAME,
        tags::DEVICE_SERIAL_NUMBER,
        tags::PATIENT_AGE,
        tags::PATIENT_SIZE,
        tags::PATIENT_WEIGHT,
        tags::SOFTWARE_VERSIONS,
        tags::REQUEST_ATTRIBUTES_SEQUENCE,
        tags::PATIENT_IDENTITY_REMOVED,
        tags::DEIDENTIFICATION_METHOD,
    ] {
        obj.remove_element(tag);
    }
    for &tag in EMPTY {
        if let Some(e) = obj.get(tag) {
            let vr = e.vr();
            put_str(obj, tag, vr, "");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

    fn stored_values(path: &Path, frame: u32) -> Vec<i32> {
        let obj = dicom_object::open_file(path).unwrap();
        let px = obj.decode_pixel_data().unwrap();
        px.to_vec_frame_with_options::<i32>(frame, &ConvertOptions::new().with_modality_lut(ModalityLutOption::None))
            .unwrap()
    }

    fn hu_frame(seed: u64, nodule: bool) -> Vec<i16> {
        crate::synthetic::ct_slice(32, seed, nodule)
    }

    #[test]
    fn uids_are_valid_and_deterministic() {
        let a = advscan_uid(&[b"x"]);
        assert_eq!(a, advscan_uid(&[b"x"]));
        assert_ne!(a, advscan_uid(&[b"y"]));
        assert!(a.len() <= 64 && a.starts_with("2.25.") && a.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    }

    #[test]
    fn written_slices_read_back_with_the_same_stored_values() {
        let tmp = tempfile::tempdir().unwrap();
        for syntax in [
            WriteSyntax::ExplicitVrLittleEndian,
            WriteSyntax::ImplicitVrLittleEndian,
            WriteSyntax::ExplicitVrBigEndian,
            WriteSyntax::RleLossless,
        ] {
            for (bits, signed) in [(16, true), (16, false), (12, false)] {
                let hu = hu_frame(7, true);
                let mut spec = CtSliceSpec::ct(32, hu.clone(), 7);
                spec.syntax = syntax;
                spec.bits_stored = bits;
                spec.signed = signed;
                let path = tmp.path().join(format!("{syntax:?}_{bits}_{signed}.dcm"));
                write_ct_slice(&path, &spec).unwrap();
                let got = stored_values(&path, 0);
                let want: Vec<i32> = hu.iter().map(|&v| v as i32 + HU_OFFSET).collect();
                assert_eq!(got, want, "{syntax:?} bits {bits} signed {signed}");
                // and the modality LUT gives HU back
                let obj = dicom_object::open_file(&path).unwrap();
                let hu_back: Vec<f32> = obj.decode_pixel_data().unwrap().to_vec().unwrap();
                assert!(hu_back.iter().zip(&hu).all(|(a, &b)| *a == b as f32), "{syntax:?}");
            }
        }
    }

    #[test]
    fn multiframe_and_monochrome1_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let frames: Vec<Vec<i16>> = (0..3).map(|i| hu_frame(20 + i, false)).collect();
        for syntax in [WriteSyntax::ExplicitVrLittleEndian, WriteSyntax::RleLossless] {
            let spec = CtSliceSpec {
                kind: SliceKind::MultiFrameCt,
                frames: frames.clone(),
                syntax,
                ..CtSliceSpec::ct(32, vec![], 3)
            };
            let path = tmp.path().join(format!("mf_{syntax:?}.dcm"));
            write_ct_slice(&path, &spec).unwrap();
            for (i, f) in frames.iter().enumerate() {
                let want: Vec<i32> = f.iter().map(|&v| v as i32 + HU_OFFSET).collect();
                assert_eq!(stored_values(&path, i as u32), want);
            }
        }
        let xr: Vec<i16> = (0..32 * 32).map(|i| (i * 4 % 4096) as i16).collect();
        let spec = CtSliceSpec {
            kind: SliceKind::RadiographMonochrome1,
            frames: vec![xr.clone()],
            bits_stored: 12,
            signed: false,
            ..CtSliceSpec::ct(32, vec![], 4)
        };
        let path = tmp.path().join("xr.dcm");
        write_ct_slice(&path, &spec).unwrap();
        assert_eq!(stored_values(&path, 0), xr.iter().map(|&v| v as i32).collect::<Vec<_>>());
    }

    #[test]
    fn rle_round_trips_runs_literals_and_long_rows() {
        // Long runs (> 128), alternating literals, and runs crossing rows.
        let (rows, cols) = (5, 300);
        let frame: Vec<u16> = (0..rows * cols)
            .map(|i| {
                if i % cols < 150 {
                    7
                } else if i % 2 == 0 {
                    (i * 37 % 30000) as u16
                } else {
                    0xFF00
                }
            })
            .collect();
        let enc = rle_encode_frame(&frame, rows, cols);
        assert_eq!(enc.len() % 2, 0);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("rle.dcm");
        let mut spec = CtSliceSpec::ct(0, vec![], 1);
        spec.rows = rows;
        spec.cols = cols;
        spec.frames = vec![frame.iter().map(|&v| (v as i16 as i32 - HU_OFFSET) as i16).collect()];
        spec.signed = true;
        spec.syntax = WriteSyntax::RleLossless;
        write_ct_slice(&path, &spec).unwrap();
        let want: Vec<i32> = frame.iter().map(|&v| v as i16 as i32).collect();
        assert_eq!(stored_values(&path, 0), want);
    }

    #[test]
    fn fixtures_are_bit_for_bit_reproducible() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = CtSliceSpec::ct(32, hu_frame(1, true), 1);
        write_ct_slice(&tmp.path().join("a.dcm"), &spec).unwrap();
        write_ct_slice(&tmp.path().join("b.dcm"), &spec).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("a.dcm")).unwrap(), std::fs::read(tmp.path().join("b.dcm")).unwrap());
    }

    /// A source with identifying details everywhere the profile looks.
    fn identifying_source(dir: &Path, syntax: WriteSyntax, frames: usize) -> std::path::PathBuf {
        let src = dir.join(format!("src_{syntax:?}_{frames}.dcm"));
        let spec = CtSliceSpec {
            kind: if frames > 1 { SliceKind::MultiFrameCt } else { SliceKind::Ct },
            frames: (0..frames).map(|i| hu_frame(i as u64, true)).collect(),
            syntax,
            ..CtSliceSpec::ct(32, vec![], 9)
        };
        write_ct_slice(&src, &spec).unwrap();
        let mut obj = dicom_object::open_file(&src).unwrap();
        for (tag, vr, v) in [
            (tags::PATIENT_NAME, VR::PN, "Doe^Janet"),
            (tags::PATIENT_ID, VR::LO, "MRN99887766"),
            (tags::PATIENT_BIRTH_DATE, VR::DA, "19610413"),
            (tags::ACCESSION_NUMBER, VR::SH, "ACC5551234"),
            (tags::INSTITUTION_NAME, VR::LO, "St Elsewhere Hospital"),
            (tags::STUDY_DESCRIPTION, VR::LO, "Chest CT for Janet"),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN, "House^Gregory"),
            (tags::OPERATORS_NAME, VR::PN, "Tech^Tina"),
            (tags::STUDY_DATE, VR::DA, "20190704"),
            (tags::ACQUISITION_DATE_TIME, VR::DT, "20190704101112"),
            (tags::ISSUER_OF_PATIENT_ID, VR::LO, "OTHERID4242"),
            (tags::PATIENT_ADDRESS, VR::LO, "12 Secret Lane"),
        ] {
            put_str(&mut obj, tag, vr, v);
        }
        obj.put(DataElement::new(Tag(0x0009, 0x0010), VR::LO, PrimitiveValue::from("PRIVCREATOR")));
        obj.put(DataElement::new(Tag(0x0009, 0x1001), VR::LO, PrimitiveValue::from("PrivateSecret77")));
        obj.write_to_file(&src).unwrap();
        src
    }

    #[test]
    fn derived_instance_has_new_uids_and_derived_secondary() {
        let tmp = tempfile::tempdir().unwrap();
        let src = identifying_source(tmp.path(), WriteSyntax::RleLossless, 3);
        let before = std::fs::read(&src).unwrap();
        let stored: Vec<i32> = (0..32 * 32).map(|i| i % 2000).collect();
        let out = tmp.path().join("derived.dcm");
        write_derived(&src, 1, &stored, &out, "advscan PGD eps 4/255", false).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), before, "the source must not change");
        let s = dicom_object::open_file(&src).unwrap();
        let d = dicom_object::open_file(&out).unwrap();
        assert_eq!(d.meta().transfer_syntax().trim_end_matches('\0'), uids::EXPLICIT_VR_LITTLE_ENDIAN);
        for tag in [tags::SOP_INSTANCE_UID, tags::SERIES_INSTANCE_UID] {
            assert_ne!(str_attr(&s, tag), str_attr(&d, tag));
        }
        assert_eq!(str_attr(&s, tags::STUDY_INSTANCE_UID), str_attr(&d, tags::STUDY_INSTANCE_UID));
        assert_eq!(str_attr(&d, tags::PATIENT_NAME).as_deref(), Some("Doe^Janet"));
        assert_eq!(str_attr(&d, tags::IMAGE_TYPE).as_deref(), Some("DERIVED\\SECONDARY"));
        assert_eq!(str_attr(&d, tags::DERIVATION_DESCRIPTION).as_deref(), Some("advscan PGD eps 4/255"));
        assert_eq!(str_attr(&d, tags::NUMBER_OF_FRAMES).as_deref(), Some("1"));
        assert_eq!(str_attr(&d, tags::PAGE_NUMBER_VECTOR).as_deref(), Some("2"));
        assert_eq!(
            d.meta().media_storage_sop_instance_uid().trim_end_matches('\0'),
            str_attr(&d, tags::SOP_INSTANCE_UID).unwrap()
        );
        assert_eq!(stored_values(&out, 0), stored);
        // Same call, same file.
        let again = tmp.path().join("again.dcm");
        write_derived(&src, 1, &stored, &again, "advscan PGD eps 4/255", false).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
        // Wrong sizes and frames are errors, not files.
        assert!(write_derived(&src, 3, &stored, &tmp.path().join("x.dcm"), "d", false).is_err());
        assert!(write_derived(&src, 0, &stored[1..], &tmp.path().join("x.dcm"), "d", false).is_err());
        assert!(!tmp.path().join("x.dcm").exists());
    }

    #[test]
    fn anonymize_removes_every_identifying_string() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = [
            "Doe",
            "Janet",
            "MRN99887766",
            "19610413",
            "ACC5551234",
            "Elsewhere",
            "House",
            "Tech^Tina",
            "20190704",
            "OTHERID4242",
            "Secret",
            "PRIVCREATOR",
            "Synthetic^Phantom",
            "SYNTH-0001",
            "20000101",
        ];
        for frames in [1, 3] {
            let src = identifying_source(tmp.path(), WriteSyntax::ExplicitVrLittleEndian, frames);
            let s = dicom_object::open_file(&src).unwrap();
            let src_bytes = std::fs::read(&src).unwrap();
            let stored = stored_values(&src, 0);
            let out = tmp.path().join(format!("anon_{frames}.dcm"));
            write_derived(&src, 0, &stored, &out, "advscan FGSM", true).unwrap();
            let bytes = std::fs::read(&out).unwrap();
            for secret in secrets {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} left in the file");
            }
            for tag in [tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID, tags::SOP_INSTANCE_UID] {
                let uid = str_attr(&s, tag).unwrap();
                assert!(!bytes.windows(uid.len()).any(|w| w == uid.as_bytes()), "{tag} kept");
            }
            let d = dicom_object::open_file(&out).unwrap();
            assert_eq!(str_attr(&d, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"));
            assert!(str_attr(&d, tags::DEIDENTIFICATION_METHOD).is_some());
            assert_eq!(stored_values(&out, 0), stored);
            // Consistent replacement: a second frame of the same source lands in the same study.
            let out2 = tmp.path().join(format!("anon_{frames}_b.dcm"));
            write_derived(&src, frames - 1, &stored, &out2, "advscan FGSM", true).unwrap();
            let d2 = dicom_object::open_file(&out2).unwrap();
            assert_eq!(str_attr(&d, tags::STUDY_INSTANCE_UID), str_attr(&d2, tags::STUDY_INSTANCE_UID));
            assert_eq!(str_attr(&d, tags::SERIES_INSTANCE_UID), str_attr(&d2, tags::SERIES_INSTANCE_UID));
            assert_eq!(std::fs::read(&src).unwrap(), src_bytes);
        }
    }

    /// The rules below the top level: instance UIDs replaced at any depth,
    /// class and DICOM-defined UIDs kept, coded entries of kept sequences kept,
    /// dates inside them and unknown (UN) attributes removed.
    #[test]
    fn anonymize_maps_instance_uids_at_any_depth_and_keeps_class_uids() {
        let item = |elements: Vec<(Tag, VR, &str)>| {
            let mut o = InMemDicomObject::new_empty();
            for (tag, vr, v) in elements {
                put_str(&mut o, tag, vr, v);
            }
            o
        };
        let seq = |tag: Tag, items: Vec<InMemDicomObject>| DataElement::new(tag, VR::SQ, DataSetSequence::from(items));
        let mut obj = item(vec![
            (tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
            (tags::IRRADIATION_EVENT_UID, VR::UI, "1.2.3.4"),
            // A well-known frame of reference (Talairach) is not an instance.
            (tags::FRAME_OF_REFERENCE_UID, VR::UI, "1.2.840.10008.1.4.1.1"),
        ]);
        obj.put(DataElement::new(Tag(0x0018, 0x9FF0), VR::UN, PrimitiveValue::from(vec![1u8, 2])));
        let code = item(vec![
            (tags::CODE_VALUE, VR::SH, "T-D3000"),
            (tags::CODING_SCHEME_DESIGNATOR, VR::SH, "SRT"),
            (tags::CODE_MEANING, VR::LO, "Chest"),
        ]);
        obj.put(seq(tags::ANATOMIC_REGION_SEQUENCE, vec![code]));
        let mut shared = InMemDicomObject::new_empty();
        shared.put(seq(
            tags::REFERENCED_IMAGE_SEQUENCE,
            vec![item(vec![
                (tags::REFERENCED_SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
                (tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, "1.2.3.5"),
            ])],
        ));
        shared.put(seq(
            tags::FRAME_CONTENT_SEQUENCE,
            vec![item(vec![(tags::FRAME_ACQUISITION_DATE_TIME, VR::DT, "20190704101112")])],
        ));
        obj.put(seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]));

        anonymize_in_place(&mut obj, &mut |u: &str| format!("9.{u}"));

        assert_eq!(str_attr(&obj, tags::SOP_CLASS_UID).as_deref(), Some(uids::CT_IMAGE_STORAGE));
        assert_eq!(str_attr(&obj, tags::IRRADIATION_EVENT_UID).as_deref(), Some("9.1.2.3.4"));
        assert_eq!(str_attr(&obj, tags::FRAME_OF_REFERENCE_UID).as_deref(), Some("1.2.840.10008.1.4.1.1"));
        assert!(obj.get(Tag(0x0018, 0x9FF0)).is_none(), "UN removed");
        let first =
            |o: &InMemDicomObject, tag: Tag| o.get(tag).and_then(|e| e.items()).and_then(|i| i.first()).cloned();
        let code = first(&obj, tags::ANATOMIC_REGION_SEQUENCE).expect("anatomic region kept");
        assert_eq!(str_attr(&code, tags::CODE_MEANING).as_deref(), Some("Chest"));
        assert_eq!(str_attr(&code, tags::CODE_VALUE).as_deref(), Some("T-D3000"));
        let shared = first(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).expect("functional groups kept");
        let reference = first(&shared, tags::REFERENCED_IMAGE_SEQUENCE).expect("nested sequence kept");
        assert_eq!(str_attr(&reference, tags::REFERENCED_SOP_INSTANCE_UID).as_deref(), Some("9.1.2.3.5"));
        assert_eq!(str_attr(&reference, tags::REFERENCED_SOP_CLASS_UID).as_deref(), Some(uids::CT_IMAGE_STORAGE));
        let content = first(&shared, tags::FRAME_CONTENT_SEQUENCE).expect("nested sequence kept");
        assert!(content.get(tags::FRAME_ACQUISITION_DATE_TIME).is_none(), "dates removed inside kept sequences");
    }
}
