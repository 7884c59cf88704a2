//! Patient data never leaves advscan's inputs (issue 7, "Patient data").
//!
//! The fixtures are synthetic CT slices (`advscan::io::dicom_write`) given the
//! identifying attributes of a real export: a distinctive patient name, ID,
//! birth date, accession number, institution, study description, other patient
//! IDs, referring physician, operator, address, study ID and date, private
//! attributes, and Study/Series/SOP/Frame of Reference/Irradiation Event UIDs
//! under a root no advscan UID can have. The patient's name is also in the data
//! folder's name, a sub-folder's name and every file name (file names are
//! identifiers too), and a lung-window PNG carries name and ID in a `tEXt` chunk.
//! The two-frame file also has functional groups holding a date-time, a
//! comment with the name and a referenced instance UID.
//!
//! What is asserted:
//! - `attack --anonymize --save-adversarial N --policy` (every sample saved,
//!   reports and gate): no distinctive string, in any of the encodings of
//!   [`encodings`], is in any byte or any name of any file under `--out`
//!   (recursively, including the PNGs embedded in report.html and the saved
//!   PNG and DICOM), nor on stdout/stderr — no exception. The re-identification
//!   key (`--ids-file`) is written outside `--out`: it holds the input file
//!   names (so the patient's name) and must hold nothing else of the patient.
//!   No PNG written has a text or EXIF chunk.
//! - The saved DICOM follow the PS3.15 Basic Application Level Confidentiality
//!   Profile for the attributes the fixtures carry: PatientIdentityRemoved YES,
//!   DeidentificationMethod (and code 113100), Z attributes present and empty,
//!   X attributes and private attributes gone, U attributes (instance UIDs)
//!   replaced consistently (one new study for one source study) and SOP Class
//!   kept; inside the kept functional groups, dates and comments removed,
//!   UIDs replaced, the image-describing sequences kept.
//! - Without `--anonymize`, the reports (everything but the saved DICOM, which
//!   are derived instances of the same patient by design) carry no DICOM or PNG
//!   metadata of the patient: only the file names, which do appear (the sample
//!   ids), showing the scan looks at the right bytes.
//! - Every needle is found by the same scan in the inputs, so a misspelt needle
//!   or a broken scanner fails the test instead of passing it (the dates in
//!   other notations excepted: they are looked for in case a report reformats).

mod common;
use base64::Engine as _;
use common::*;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

const MODEL: &str = "models/ct_nodule_cnn.onnx";
/// Side of the fixture slices (the model resizes to 64×64 itself).
const SIZE: usize = 64;

const PATIENT_NAME: &str = "Zyxwvut^Qwertyuiop";
/// In file and folder names: `^` as is, as `_`, and the components swapped.
const NAME_IN_PATHS: [&str; 3] = ["Zyxwvut^Qwertyuiop", "Zyxwvut_Qwertyuiop", "Qwertyuiop Zyxwvut"];
const PATIENT_ID: &str = "PID-8F3A2C71";
const BIRTH_DATE: &str = "19230417";
const ACCESSION: &str = "ACC-55D1E9";
const INSTITUTION: &str = "Sankt Ottokar Klinikum";
const STUDY_DESCRIPTION: &str = "Thorax Spiral Quux";
const OTHER_PATIENT_IDS: &str = "OPID-7C4B19E2";
const OTHER_ID_IN_SEQUENCE: &str = "OPIDSEQ-2B7D40";
const REFERRING_PHYSICIAN: &str = "Vranckx^Hieronymus";
const OPERATOR: &str = "Oyelaran^Tobiah";
const ADDRESS: &str = "Quarkweg 17, Ottokarstadt";
const STUDY_ID: &str = "STU-6E2A91";
const STUDY_DATE: &str = "20210913";
const PRIVATE_VALUE: &str = "PRIV-7E11-SECRET";
/// No advscan UID can start so (they are `2.25.…`): any UID of the fixtures.
const UID_ROOT: &str = "1.2.826.0.1.3680043.99999";

/// (0010,1000) OtherPatientIDs: retired (dicom-rs marks its constant
/// deprecated), still met in archives, and removed (X) by PS3.15.
const OTHER_PATIENT_IDS_TAG: Tag = Tag(0x0010, 0x1000);

fn uid(n: u32) -> String {
    format!("{UID_ROOT}.{n}")
}

/// The needles that name the patient through file names: allowed in the
/// `--ids-file` key (with --anonymize) and in the reports' sample ids (without).
fn name_needles() -> Vec<&'static str> {
    vec![PATIENT_NAME, "Zyxwvut", "Qwertyuiop"]
}

/// The needles that only the files' contents carry (DICOM attributes, PNG text).
fn attribute_needles() -> Vec<&'static str> {
    vec![
        PATIENT_ID,
        BIRTH_DATE,
        "1923-04-17",
        "17.04.1923",
        "04/17/1923",
        ACCESSION,
        INSTITUTION,
        "Ottokar",
        STUDY_DESCRIPTION,
        "Spiral Quux",
        OTHER_PATIENT_IDS,
        OTHER_ID_IN_SEQUENCE,
        REFERRING_PHYSICIAN,
        "Vranckx",
        "Hieronymus",
        OPERATOR,
        "Oyelaran",
        "Quarkweg",
        STUDY_ID,
        STUDY_DATE,
        "2021-09-13",
        PRIVATE_VALUE,
        UID_ROOT,
    ]
}

/// The byte strings a needle may hide as: itself (matched ignoring ASCII case,
/// see [`contains`]), UTF-16 in both byte orders, and base64 at each of the
/// three alignments (the characters that depend only on the needle).
fn encodings(needle: &str) -> Vec<(String, Vec<u8>, bool)> {
    let b = needle.as_bytes();
    let mut out = vec![
        ("ascii".to_string(), b.to_vec(), true),
        ("utf-16le".into(), needle.encode_utf16().flat_map(u16::to_le_bytes).collect(), true),
        ("utf-16be".into(), needle.encode_utf16().flat_map(u16::to_be_bytes).collect(), true),
    ];
    for shift in 0..3usize {
        let mut padded = vec![0u8; shift];
        padded.extend_from_slice(b);
        let enc = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&padded);
        // Skip the characters that mix in the prefix; drop the last partial one.
        let start = (shift * 4).div_ceil(3);
        let full = (padded.len() * 8) / 6;
        if full > start + 4 {
            out.push((format!("base64/{shift}"), enc.as_bytes()[start..full].to_vec(), false));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8], ignore_case: bool) -> bool {
    if needle.is_empty() || hay.len() < needle.len() {
        return false;
    }
    if ignore_case {
        hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
    } else {
        hay.windows(needle.len()).any(|w| w == needle)
    }
}

/// Which needles (and in which encoding) occur in `bytes`.
fn found_in(bytes: &[u8], needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for n in needles {
        for (how, enc, ignore_case) in encodings(n) {
            if contains(bytes, &enc, ignore_case) {
                hits.push(format!("'{n}' ({how})"));
            }
        }
    }
    hits
}

/// Every file under `root`, recursively, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() { todo.push(p) } else { files.push(p) }
        }
    }
    files.sort();
    files
}

/// The PNGs a report embeds as `data:image/png;base64,…` URIs, decoded.
fn embedded_pngs(text: &[u8]) -> Vec<Vec<u8>> {
    let marker = b"data:image/png;base64,";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.windows(marker.len()).position(|w| w == marker) {
        let tail = &rest[at + marker.len()..];
        let len = tail.iter().position(|c| !(c.is_ascii_alphanumeric() || b"+/=".contains(c))).unwrap_or(tail.len());
        let png = base64::engine::general_purpose::STANDARD
            .decode(&tail[..len])
            .unwrap_or_else(|e| panic!("an embedded PNG is not valid base64: {e}"));
        out.push(png);
        rest = &tail[len..];
    }
    out
}

/// The chunk types of a PNG, in order.
fn png_chunks(png: &[u8]) -> Vec<String> {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "expected a PNG signature");
    let mut chunks = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        chunks.push(String::from_utf8_lossy(&png[at + 4..at + 8]).into_owned());
        at += 12 + len;
    }
    chunks
}

/// Metadata chunks that can carry text about the patient.
const TEXT_CHUNKS: [&str; 4] = ["tEXt", "zTXt", "iTXt", "eXIf"];

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A lung-window 8-bit PNG of a synthetic slice with a `tEXt` chunk naming the patient.
fn png_with_text(path: &Path, seed: u64) {
    let hu = advscan::synthetic::ct_slice(SIZE, seed, true);
    let px = advscan::synthetic::lung_window(&hu, 255.0).iter().map(|&v| v as u8).collect();
    let img = image::GrayImage::from_raw(SIZE as u32, SIZE as u32, px).unwrap();
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let mut data = b"Comment\0".to_vec();
    data.extend_from_slice(format!("Patient {PATIENT_NAME}, ID {PATIENT_ID}, born {BIRTH_DATE}").as_bytes());
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    let mut typed = b"tEXt".to_vec();
    typed.extend_from_slice(&data);
    chunk.extend_from_slice(&typed);
    chunk.extend_from_slice(&crc32(&typed).to_be_bytes());
    let ihdr_end = 8 + 12 + 13; // signature, then IHDR (length, type, 13 bytes, CRC)
    png.splice(ihdr_end..ihdr_end, chunk);
    std::fs::write(path, &png).unwrap();
    // The chunk is well-formed: the image still decodes.
    image::open(path).expect("the PNG with a tEXt chunk decodes");
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// Gives a fixture written by `write_ct_slice` the identifying attributes of a
/// real export (one patient, one study; `series` and `sop` pick the instance).
fn identify(path: &Path, series: u32, sop: u32) {
    let mut file = dicom_object::open_file(path).unwrap();
    let obj: &mut InMemDicomObject = &mut file;
    for (tag, vr, value) in [
        (tags::PATIENT_NAME, VR::PN, PATIENT_NAME),
        (tags::PATIENT_ID, VR::LO, PATIENT_ID),
        (tags::PATIENT_BIRTH_DATE, VR::DA, BIRTH_DATE),
        (tags::PATIENT_SEX, VR::CS, "F"),
        (tags::PATIENT_AGE, VR::AS, "098Y"),
        (tags::PATIENT_ADDRESS, VR::LO, ADDRESS),
        (tags::ISSUER_OF_PATIENT_ID, VR::LO, INSTITUTION),
        (OTHER_PATIENT_IDS_TAG, VR::LO, OTHER_PATIENT_IDS),
        (tags::ACCESSION_NUMBER, VR::SH, ACCESSION),
        (tags::INSTITUTION_NAME, VR::LO, INSTITUTION),
        (tags::STUDY_DESCRIPTION, VR::LO, STUDY_DESCRIPTION),
        (tags::SERIES_DESCRIPTION, VR::LO, STUDY_DESCRIPTION),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN, REFERRING_PHYSICIAN),
        (tags::OPERATORS_NAME, VR::PN, OPERATOR),
        (tags::PERFORMING_PHYSICIAN_NAME, VR::PN, REFERRING_PHYSICIAN),
        (tags::STUDY_ID, VR::SH, STUDY_ID),
        (tags::STUDY_DATE, VR::DA, STUDY_DATE),
        (tags::SERIES_DATE, VR::DA, STUDY_DATE),
        (tags::ACQUISITION_DATE, VR::DA, STUDY_DATE),
        (tags::CONTENT_DATE, VR::DA, STUDY_DATE),
        (tags::STUDY_INSTANCE_UID, VR::UI, &uid(1)),
        (tags::SERIES_INSTANCE_UID, VR::UI, &uid(10 + series)),
        (tags::SOP_INSTANCE_UID, VR::UI, &uid(100 + sop)),
        (tags::FRAME_OF_REFERENCE_UID, VR::UI, &uid(2)),
        (tags::IRRADIATION_EVENT_UID, VR::UI, &uid(200 + sop)),
        (Tag(0x0011, 0x0010), VR::LO, "QUUX MEDICAL PRIVATE"),
        (Tag(0x0011, 0x1001), VR::LO, PRIVATE_VALUE),
    ] {
        put(obj, tag, vr, value);
    }
    let mut other = InMemDicomObject::new_empty();
    put(&mut other, tags::PATIENT_ID, VR::LO, OTHER_ID_IN_SEQUENCE);
    put(&mut other, tags::ISSUER_OF_PATIENT_ID, VR::LO, INSTITUTION);
    obj.put(DataElement::new(tags::OTHER_PATIENT_I_DS_SEQUENCE, VR::SQ, DataSetSequence::from(vec![other])));
    if str_attr(obj, tags::NUMBER_OF_FRAMES).is_some() {
        functional_groups(obj);
    }
    let sop_uid = uid(100 + sop);
    file.update_meta(|m| m.media_storage_sop_instance_uid = sop_uid);
    file.write_to_file(path).unwrap();
}

/// Enhanced-style functional groups for a 2-frame fixture (advscan's reader
/// does not use them): per frame an acquisition date-time and a comment, shared
/// a reference to another instance and the pixel measures (image-describing,
/// so they must survive de-identification).
fn functional_groups(obj: &mut InMemDicomObject) {
    let sq = |items: Vec<InMemDicomObject>| DataSetSequence::from(items);
    let per_frame = (0..2)
        .map(|k| {
            let mut content = InMemDicomObject::new_empty();
            put(&mut content, tags::FRAME_ACQUISITION_DATE_TIME, VR::DT, &format!("{STUDY_DATE}08152{k}"));
            content.put(DataElement::new(tags::FRAME_ACQUISITION_NUMBER, VR::US, PrimitiveValue::from(1u16)));
            put(&mut content, tags::FRAME_COMMENTS, VR::LT, &format!("frame {k} of {PATIENT_NAME}"));
            let mut item = InMemDicomObject::new_empty();
            item.put(DataElement::new(tags::FRAME_CONTENT_SEQUENCE, VR::SQ, sq(vec![content])));
            item
        })
        .collect();
    let mut reference = InMemDicomObject::new_empty();
    put(&mut reference, tags::REFERENCED_SOP_CLASS_UID, VR::UI, dicom_dictionary_std::uids::CT_IMAGE_STORAGE);
    put(&mut reference, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &uid(300));
    let mut measures = InMemDicomObject::new_empty();
    put(&mut measures, tags::PIXEL_SPACING, VR::DS, "0.7\\0.7");
    let mut shared = InMemDicomObject::new_empty();
    shared.put(DataElement::new(tags::REFERENCED_IMAGE_SEQUENCE, VR::SQ, sq(vec![reference])));
    shared.put(DataElement::new(tags::PIXEL_MEASURES_SEQUENCE, VR::SQ, sq(vec![measures])));
    obj.put(DataElement::new(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, VR::SQ, sq(vec![shared])));
    obj.put(DataElement::new(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, VR::SQ, sq(per_frame)));
}

/// The identified data set: `tmp/<name> export/{normal,nodule}/<name>/…`.
/// Returns (data root, the source DICOM files).
fn identified_data(tmp: &Path) -> (PathBuf, Vec<PathBuf>) {
    use advscan::io::dicom_write::{CtSliceSpec, SliceKind, WriteSyntax, write_ct_slice};
    use advscan::synthetic::ct_slice;
    let root = tmp.join(format!("{PATIENT_NAME} export"));
    let (normal, nodule) = (root.join("normal").join(NAME_IN_PATHS[0]), root.join("nodule").join(NAME_IN_PATHS[1]));
    std::fs::create_dir_all(&normal).unwrap();
    std::fs::create_dir_all(&nodule).unwrap();
    let specs = [
        (normal.join(format!("{}_1.dcm", NAME_IN_PATHS[0])), CtSliceSpec::ct(SIZE, ct_slice(SIZE, 71, false), 71)),
        (
            normal.join(format!("{}_2.dcm", NAME_IN_PATHS[1])),
            CtSliceSpec {
                syntax: WriteSyntax::ImplicitVrLittleEndian,
                ..CtSliceSpec::ct(SIZE, ct_slice(SIZE, 72, false), 72)
            },
        ),
        (
            nodule.join(format!("{}_3.dcm", NAME_IN_PATHS[2])),
            CtSliceSpec { syntax: WriteSyntax::RleLossless, ..CtSliceSpec::ct(SIZE, ct_slice(SIZE, 73, true), 73) },
        ),
        (
            nodule.join(format!("{}_4_multiframe.dcm", NAME_IN_PATHS[0])),
            CtSliceSpec {
                kind: SliceKind::MultiFrameCt,
                frames: vec![ct_slice(SIZE, 74, true), ct_slice(SIZE, 75, true)],
                signed: false,
                ..CtSliceSpec::ct(SIZE, Vec::new(), 74)
            },
        ),
    ];
    let mut sources = Vec::new();
    for (i, (path, spec)) in specs.into_iter().enumerate() {
        write_ct_slice(&path, &spec).unwrap();
        let series = if spec.kind == SliceKind::MultiFrameCt { 2 } else { 1 };
        identify(&path, series, i as u32);
        sources.push(path);
    }
    png_with_text(&nodule.join(format!("{}_lung.png", NAME_IN_PATHS[0])), 76);
    (root, sources)
}

/// Samples of [`identified_data`]: three single-frame slices, the two frames
/// of the multi-frame file and the PNG.
const SAMPLES: usize = 6;

/// `advscan attack` on `data` with every report, every sample saved and a
/// policy (so junit.xml has gate content); `extra` appended.
fn attack(tmp: &Path, data: &Path, out: &Path, extra: &[&str]) -> (Output, Value) {
    let policy = write(
        tmp,
        "policy.toml",
        b"[[require]]\nmax_flip_rate = 1.0\nattack = \"pgd\"\neps = \"20HU\"\n\n[[require]]\nmax_flip_rate = 1.0\nattack = \"fgsm\"\neps = \"5HU\"\n",
    );
    let saved = SAMPLES.to_string();
    let mut args = vec![
        "attack",
        "--model",
        MODEL,
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm,pgd",
        "--eps",
        "5HU,20HU",
        "--steps",
        "3",
        "--save-adversarial",
        &saved,
        "--policy",
        policy.to_str().unwrap(),
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = advscan(&args);
    let results = std::fs::read(out.join("results.json"))
        .map(|b| serde_json::from_slice(&b).expect("results.json is JSON"))
        .unwrap_or(Value::Null);
    (o, results)
}

fn str_attr(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    Some(obj.get(tag)?.to_str().ok()?.trim_end_matches([' ', '\0']).to_string())
}

fn is_valid_uid(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')))
}

/// The positive control: every needle is found by the same scan in the inputs
/// (bytes or names), and the base64 encodings are found in a base64 text.
fn needles_are_findable(data: &Path) {
    let mut seen = BTreeSet::new();
    for f in files_under(data) {
        let mut bytes = std::fs::read(&f).unwrap();
        bytes.extend_from_slice(f.to_string_lossy().as_bytes());
        for n in name_needles().into_iter().chain(attribute_needles()) {
            if contains(&bytes, n.as_bytes(), true) {
                seen.insert(n);
            }
        }
    }
    // Dates in other notations are not in the inputs; they are searched for in case a report reformats one.
    let reformatted = ["1923-04-17", "17.04.1923", "04/17/1923", "2021-09-13"];
    for n in name_needles().into_iter().chain(attribute_needles()).filter(|n| !reformatted.contains(n)) {
        assert!(seen.contains(n), "expected the needle '{n}' in the fixtures: the scan would not find it either");
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("xy{PATIENT_ID}z"));
    assert!(found_in(b64.as_bytes(), &[PATIENT_ID]).iter().any(|h| h.contains("base64")), "base64 needles work");
    let utf16: Vec<u8> = format!("<{OPERATOR}>").encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert!(!found_in(&utf16, &[OPERATOR]).is_empty(), "UTF-16 needles work");
}

/// What the byte scan of one output file found: the file's own bytes, its
/// path below `out`, and the PNGs a report embeds.
fn leaks(out: &Path, file: &Path, needles: &[&str]) -> Vec<String> {
    let rel = file.strip_prefix(out).unwrap().to_string_lossy().into_owned();
    let bytes = std::fs::read(file).unwrap();
    let mut hits: Vec<String> = found_in(&bytes, needles).into_iter().map(|h| format!("{rel}: {h}")).collect();
    hits.extend(found_in(rel.as_bytes(), needles).into_iter().map(|h| format!("file name {rel}: {h}")));
    for (k, png) in embedded_pngs(&bytes).iter().enumerate() {
        hits.extend(found_in(png, needles).into_iter().map(|h| format!("{rel}, embedded PNG {k}: {h}")));
        let chunks = png_chunks(png);
        assert!(
            !chunks.iter().any(|c| TEXT_CHUNKS.contains(&c.as_str())),
            "expected no text chunk in {rel}'s embedded PNG {k}: {chunks:?}"
        );
    }
    hits
}

/// The functional groups of a saved frame of the multi-frame fixture: the
/// image-describing nested sequences kept, dates and comments removed inside
/// them, the referenced instance's UID replaced, one per-frame item left.
fn functional_groups_deidentified(d: &InMemDicomObject, shared: &[InMemDicomObject], src: &BTreeSet<String>, at: &str) {
    let first = |obj: &InMemDicomObject, tag: Tag| -> InMemDicomObject {
        obj.get(tag)
            .and_then(|e| e.items())
            .and_then(|i| i.first())
            .cloned()
            .unwrap_or_else(|| panic!("{at}: expected an item in {tag}"))
    };
    let shared = shared.first().unwrap_or_else(|| panic!("{at}: expected a shared functional group"));
    let measures = first(shared, tags::PIXEL_MEASURES_SEQUENCE);
    assert!(str_attr(&measures, tags::PIXEL_SPACING).is_some(), "{at}: expected the pixel measures kept");
    let reference = first(shared, tags::REFERENCED_IMAGE_SEQUENCE);
    let u = str_attr(&reference, tags::REFERENCED_SOP_INSTANCE_UID).unwrap_or_default();
    assert!(is_valid_uid(&u) && !src.contains(&u) && u != uid(300), "{at}: referenced instance UID {u} kept");
    let per_frame = d.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|e| e.items()).unwrap_or_default();
    assert_eq!(per_frame.len(), 1, "{at}: expected the saved frame's functional group only");
    let content = first(&per_frame[0], tags::FRAME_CONTENT_SEQUENCE);
    assert!(content.get(tags::FRAME_ACQUISITION_NUMBER).is_some(), "{at}: expected FrameAcquisitionNumber kept");
    assert!(
        content.get(tags::FRAME_ACQUISITION_DATE_TIME).is_none(),
        "{at}: expected FrameAcquisitionDateTime removed"
    );
    assert!(content.get(tags::FRAME_COMMENTS).is_none(), "{at}: expected FrameComments removed");
}

#[test]
fn anonymized_run_leaks_no_patient_data_into_any_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, sources) = identified_data(tmp.path());
    needles_are_findable(&data);
    let out = tmp.path().join("out");
    let key = tmp.path().join("key/ids.csv");
    let (o, r) = attack(tmp.path(), &data, &out, &["--anonymize", "--ids-file", key.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "expected a clean run that passes its policy: {}", text(&o.stderr));
    assert_eq!(r["data"]["samples"], SAMPLES, "expected every fixture to be a sample");

    let files = files_under(&out);
    let names: BTreeSet<String> =
        files.iter().map(|f| f.strip_prefix(&out).unwrap().to_string_lossy().into_owned()).collect();
    for want in ["results.json", "report.html", "summary.md", "junit.xml"] {
        assert!(names.contains(want), "expected {want} in --out, found {names:?}");
    }
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("<testcase"), "expected gate test cases in junit.xml: {junit}");
    let html = std::fs::read(out.join("report.html")).unwrap();
    assert!(!embedded_pngs(&html).is_empty(), "expected the gallery's PNGs in report.html");
    let saved: Vec<&PathBuf> = files.iter().filter(|f| f.starts_with(out.join("adversarial"))).collect();
    let dcm: Vec<&PathBuf> = saved.iter().copied().filter(|f| f.extension().is_some_and(|e| e == "dcm")).collect();
    let png: Vec<&PathBuf> = saved.iter().copied().filter(|f| f.extension().is_some_and(|e| e == "png")).collect();
    assert_eq!((dcm.len(), png.len()), (5, 1), "expected every sample saved (5 DICOM frames, 1 PNG): {saved:?}");

    // Every byte and every name under --out; the key, outside it, holds the file names only.
    let all: Vec<&str> = name_needles().into_iter().chain(attribute_needles()).collect();
    let mut found = Vec::new();
    for f in &files {
        found.extend(leaks(&out, f, &all));
    }
    found.extend(leaks(key.parent().unwrap(), &key, &attribute_needles()));
    for p in &png {
        let chunks = png_chunks(&std::fs::read(p).unwrap());
        assert!(!chunks.iter().any(|c| TEXT_CHUNKS.contains(&c.as_str())), "{}: {chunks:?}", p.display());
    }
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        found.extend(found_in(bytes, &all).into_iter().map(|h| format!("{stream}: {h}")));
    }
    assert!(
        found.is_empty(),
        "expected no patient data in the outputs of an --anonymize run, found:\n{}",
        found.join("\n")
    );
    let ids = std::fs::read_to_string(&key).unwrap();
    assert!(ids.contains("Zyxwvut"), "expected the key to map the short ids back to the input names: {ids}");

    // The saved DICOM, read back: PS3.15 Basic Profile behaviour.
    let src: Vec<DefaultDicomObject> = sources.iter().map(|s| dicom_object::open_file(s).unwrap()).collect();
    let src_uids: BTreeSet<String> = src
        .iter()
        .flat_map(|s| {
            [tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID, tags::SOP_INSTANCE_UID, tags::FRAME_OF_REFERENCE_UID]
                .map(|t| str_attr(s, t).unwrap())
        })
        .collect();
    let mut studies = BTreeSet::new();
    let mut frames_of_reference = BTreeSet::new();
    let mut multiframe = 0;
    for path in &dcm {
        let d = dicom_object::open_file(path).unwrap();
        let at = path.display();
        assert_eq!(str_attr(&d, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"), "{at}");
        assert!(str_attr(&d, tags::DEIDENTIFICATION_METHOD).is_some_and(|m| !m.is_empty()), "{at}");
        let code = d
            .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|items| items.first())
            .unwrap_or_else(|| panic!("expected a DeidentificationMethodCodeSequence in {at}"));
        assert_eq!(str_attr(code, tags::CODE_VALUE).as_deref(), Some("113100"), "{at}: Basic Profile code");
        assert_eq!(str_attr(code, tags::CODING_SCHEME_DESIGNATOR).as_deref(), Some("DCM"), "{at}");
        // Z: replaced by an empty value (they are type 2, so kept present).
        for (tag, name) in [
            (tags::PATIENT_NAME, "PatientName"),
            (tags::PATIENT_ID, "PatientID"),
            (tags::PATIENT_BIRTH_DATE, "PatientBirthDate"),
            (tags::PATIENT_SEX, "PatientSex"),
            (tags::ACCESSION_NUMBER, "AccessionNumber"),
            (tags::REFERRING_PHYSICIAN_NAME, "ReferringPhysicianName"),
            (tags::STUDY_ID, "StudyID"),
            (tags::STUDY_DATE, "StudyDate"),
            (tags::STUDY_TIME, "StudyTime"),
        ] {
            assert_eq!(str_attr(&d, tag).as_deref(), Some(""), "{at}: expected {name} present and empty (Z)");
        }
        // X: removed.
        for (tag, name) in [
            (tags::INSTITUTION_NAME, "InstitutionName"),
            (tags::STUDY_DESCRIPTION, "StudyDescription"),
            (tags::SERIES_DESCRIPTION, "SeriesDescription"),
            (OTHER_PATIENT_IDS_TAG, "OtherPatientIDs"),
            (tags::OTHER_PATIENT_I_DS_SEQUENCE, "OtherPatientIDsSequence"),
            (tags::ISSUER_OF_PATIENT_ID, "IssuerOfPatientID"),
            (tags::PATIENT_ADDRESS, "PatientAddress"),
            (tags::PATIENT_AGE, "PatientAge"),
            (tags::OPERATORS_NAME, "OperatorsName"),
            (tags::PERFORMING_PHYSICIAN_NAME, "PerformingPhysicianName"),
            (tags::SERIES_DATE, "SeriesDate"),
            (tags::ACQUISITION_DATE, "AcquisitionDate"),
        ] {
            assert!(d.get(tag).is_none(), "{at}: expected {name} removed (X)");
        }
        let private: Vec<Tag> = d.iter().map(|e| e.header().tag).filter(|t| t.group() % 2 == 1).collect();
        assert!(private.is_empty(), "{at}: expected no private attributes, found {private:?}");
        // U: every instance UID new, valid, not a source UID; SOP Class kept.
        for (tag, name) in [
            (tags::STUDY_INSTANCE_UID, "StudyInstanceUID"),
            (tags::SERIES_INSTANCE_UID, "SeriesInstanceUID"),
            (tags::SOP_INSTANCE_UID, "SOPInstanceUID"),
            (tags::FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID"),
        ] {
            let u = str_attr(&d, tag).unwrap_or_else(|| panic!("{at}: expected a {name}"));
            assert!(is_valid_uid(&u) && !src_uids.contains(&u), "{at}: expected a new valid {name}, got {u}");
        }
        if let Some(u) = str_attr(&d, tags::IRRADIATION_EVENT_UID) {
            assert!(is_valid_uid(&u) && !u.starts_with(UID_ROOT), "{at}: IrradiationEventUID {u} kept");
        }
        assert_eq!(
            d.meta().media_storage_sop_instance_uid().trim_end_matches('\0'),
            str_attr(&d, tags::SOP_INSTANCE_UID).unwrap(),
            "{at}: the file meta group names the new SOP instance"
        );
        let class = str_attr(&d, tags::SOP_CLASS_UID).unwrap();
        assert!(src.iter().any(|s| str_attr(s, tags::SOP_CLASS_UID).as_deref() == Some(&class)), "{at}: {class}");
        if let Some(shared) = d.get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE) {
            multiframe += 1;
            functional_groups_deidentified(&d, shared.items().expect("a sequence"), &src_uids, &at.to_string());
        }
        studies.insert(str_attr(&d, tags::STUDY_INSTANCE_UID).unwrap());
        frames_of_reference.extend(str_attr(&d, tags::FRAME_OF_REFERENCE_UID));
    }
    assert_eq!(multiframe, 2, "expected both frames of the multi-frame fixture saved with their functional groups");
    // One source study (and frame of reference) → one new one: the saved scans stay together.
    assert_eq!(studies.len(), 1, "expected one new study for the one source study: {studies:?}");
    assert!(frames_of_reference.len() <= 1, "expected one new frame of reference: {frames_of_reference:?}");
    let round_trip = r["checks"].as_array().unwrap().iter().find(|c| c["name"] == "adversarial_round_trip").cloned();
    assert_eq!(round_trip.map(|c| c["status"].clone()), Some(Value::from("pass")), "saved files read back");
}

#[test]
fn reports_without_anonymize_carry_file_names_but_no_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = identified_data(tmp.path());
    let out = tmp.path().join("out");
    let (o, r) = attack(tmp.path(), &data, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "expected a clean run that passes its policy: {}", text(&o.stderr));
    assert_eq!(r["data"]["samples"], SAMPLES);
    let mut found = Vec::new();
    let mut reports = Vec::new();
    for f in files_under(&out) {
        // A saved DICOM without --anonymize is a derived instance of the same
        // patient by design (checked below); everything else is a report.
        if f.extension().is_some_and(|e| e == "dcm") {
            continue;
        }
        found.extend(leaks(&out, &f, &attribute_needles()));
        reports.push(f);
    }
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        found.extend(found_in(bytes, &attribute_needles()).into_iter().map(|h| format!("{stream}: {h}")));
    }
    assert!(found.is_empty(), "expected no DICOM or PNG metadata in the reports, found:\n{}", found.join("\n"));
    assert!(reports.len() >= 5, "expected the four reports and a saved PNG: {reports:?}");
    // The file names are the sample ids: the reports do name the patient that way.
    let results = std::fs::read(out.join("results.json")).unwrap();
    assert!(contains(&results, b"Zyxwvut", false), "expected the sample ids (file names) in results.json");
    let dcm: Vec<PathBuf> = files_under(&out.join("adversarial"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "dcm"))
        .collect();
    assert_eq!(dcm.len(), 5, "expected every DICOM sample saved");
    for p in dcm {
        let d = dicom_object::open_file(&p).unwrap();
        assert_eq!(str_attr(&d, tags::PATIENT_ID).as_deref(), Some(PATIENT_ID), "{}: same patient", p.display());
        assert!(d.get(tags::PATIENT_IDENTITY_REMOVED).is_none(), "{}", p.display());
    }
}
