//! Hostile input through the real binary (issue 7, "Bad input"): broken,
//! misnamed and malicious images, broken models and malformed policies and
//! model configs. Every hostile file is built here, in a tempdir, at test time.
//!
//! Images: one `advscan attack` over a folder of many bad files plus two good
//! ones per model, so the whole file runs in seconds. Each bad file must be
//! listed in results.json `data.skipped` with a one-line reason that names it
//! and says why; the run completes, the good files are evaluated, stderr says
//! "N input(s) skipped" and the exit status is 2.
//!
//! Models: each broken model is refused by `advscan attack` before any data
//! is read, with exit status 2 and one sentence naming the model file. A
//! model whose output is NaN for some images is built here too.
//!

mod common;
use common::*;
use prost::Message as _;
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use tract_onnx::pb;

const CT_MODEL: &str = "models/ct_nodule_cnn.onnx";
const GOOD_CT_DICOM: &str = "fixtures/demo_ct/normal/ct_int16_rescale_-1024_explicit_le_01.dcm";
const GOOD_CT_PNG: &str = "fixtures/demo_ct/nodule/ct_lung_window_8bit_19.png";

/// `data.skipped` as (path, reason) pairs.
fn skipped(r: &Value) -> Vec<(String, String)> {
    arr(&r["data"]["skipped"], "data.skipped")
        .iter()
        .map(|s| {
            (s["path"].as_str().unwrap_or_default().to_string(), s["reason"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// The one skipped entry for the file `name` (matched on the recorded path's
/// file name, so the entry names the file), checked to be a single line that
/// contains every one of `says`: its reason, or what is wrong.
fn check_skip(list: &[(String, String)], name: &str, says: &[&str]) -> Result<String, String> {
    // A sample dropped after decoding is recorded as "path (id)".
    let file_of = |p: &str| Path::new(p.split(" (").next().unwrap_or(p)).file_name().map(|f| f.to_owned());
    let hits: Vec<&(String, String)> = list.iter().filter(|(p, _)| file_of(p).is_some_and(|f| f == name)).collect();
    let [(_, reason)] = hits[..] else {
        return Err(format!("expected exactly one skipped entry for {name}, got {hits:?}"));
    };
    if reason.is_empty() || reason.contains('\n') {
        return Err(format!("expected a one-line reason for {name}: {reason:?}"));
    }
    match says.iter().find(|s| !reason.contains(*s)) {
        Some(s) => Err(format!("expected the reason for {name} to say '{s}': {reason}")),
        None => Ok(reason.clone()),
    }
}

fn skip_reason(list: &[(String, String)], name: &str, says: &[&str]) -> String {
    check_skip(list, name, says).unwrap_or_else(|e| panic!("{e}\nskipped: {list:#?}"))
}

/// The stderr summary line of a run that skipped inputs.
fn assert_skip_summary(o: &Output, count: usize) {
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "expected exit 2 when inputs are skipped: {stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with(&format!("advscan: {count} input(s) skipped; see data.skipped in "))),
        "expected the summary line '{count} input(s) skipped' on stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "expected no panic: {stderr}");
}

/// Deterministic noise (a 64-bit LCG), so a failure reproduces.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

// ---------------------------------------------------------------- PNG bytes

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A valid PNG signature and IHDR claiming `w`×`h` RGBA16, then a tiny IDAT:
/// decoding it would need w·h·8 bytes.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[16, 6, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

fn grey_png(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode PNG");
    bytes
}

// -------------------------------------------------------------- DICOM bytes

/// A valid 16×16 CT slice (int16, −700 HU) as bytes, explicit VR little endian.
fn ct_dicom_bytes(dir: &Path) -> Vec<u8> {
    ct_dicom_bytes_in(dir, advscan::io::dicom_write::WriteSyntax::ExplicitVrLittleEndian)
}

fn ct_dicom_bytes_in(dir: &Path, syntax: advscan::io::dicom_write::WriteSyntax) -> Vec<u8> {
    use advscan::io::dicom_write::{CtSliceSpec, write_ct_slice};
    let path = dir.join("template.dcm");
    let spec = CtSliceSpec { syntax, ..CtSliceSpec::ct(16, vec![-700; 256], 7) };
    write_ct_slice(&path, &spec).expect("write template DICOM");
    let bytes = std::fs::read(&path).expect("read template DICOM");
    std::fs::remove_file(&path).expect("remove template DICOM");
    bytes
}

/// The template with its data set edited by `edit` (through dicom-object).
fn edited_dicom(dir: &Path, edit: impl FnOnce(&mut dicom_object::DefaultDicomObject)) -> Vec<u8> {
    let path = dir.join("edit.dcm");
    std::fs::write(&path, ct_dicom_bytes(dir)).unwrap();
    let mut obj = dicom_object::open_file(&path).expect("template opens");
    edit(&mut obj);
    obj.write_to_file(&path).expect("edited DICOM writes");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

fn put_us(obj: &mut dicom_object::DefaultDicomObject, tag: dicom_core::Tag, v: u16) {
    obj.put(dicom_core::DataElement::new(tag, dicom_core::VR::US, dicom_core::PrimitiveValue::from(v)));
}

/// Rewrites the file meta group (explicit VR little endian after the 128-byte
/// preamble and "DICM") with its TransferSyntaxUID (0002,0010) replaced by
/// `ts`, or removed when `ts` is `None`; the group length is recomputed, the
/// data set bytes are kept as they are.
fn with_transfer_syntax(bytes: &[u8], ts: Option<&str>) -> Vec<u8> {
    assert_eq!(&bytes[128..132], b"DICM", "template has a preamble");
    let mut at = 132;
    let mut elements: Vec<Vec<u8>> = Vec::new();
    while at + 8 <= bytes.len() && bytes[at..at + 2] == [0x02, 0x00] {
        let element = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
        let vr = &bytes[at + 4..at + 6];
        let (header, len) = if [&b"OB"[..], b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"].contains(&vr) {
            (12, u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize)
        } else {
            (8, u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]) as usize)
        };
        let end = at + header + len;
        match element {
            0x0000 => {}
            0x0010 => {
                if let Some(uid) = ts {
                    let mut v = uid.as_bytes().to_vec();
                    if v.len() % 2 == 1 {
                        v.push(0);
                    }
                    let mut e = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I'];
                    e.extend_from_slice(&(v.len() as u16).to_le_bytes());
                    e.extend_from_slice(&v);
                    elements.push(e);
                }
            }
            _ => elements.push(bytes[at..end].to_vec()),
        }
        at = end;
    }
    let group: Vec<u8> = elements.concat();
    let mut out = bytes[..132].to_vec();
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out.extend_from_slice(&bytes[at..]);
    out
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes.windows(needle.len()).position(|w| w == needle).unwrap_or_else(|| panic!("expected {needle:?} in the file"))
}

/// The template with an undefined-length ReferencedImageSequence (0008,1140)
/// holding one undefined-length item, cut off in the middle of that item: no
/// item or sequence delimiter, no pixel data.
fn sequence_cut_short(dir: &Path) -> Vec<u8> {
    use dicom_core::{DataElement, DicomValue, Length, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let bytes = edited_dicom(dir, |obj| {
        let mut item = dicom_object::InMemDicomObject::new_empty();
        item.put(DataElement::new(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2"),
        ));
        item.put(DataElement::new(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4.5.6.7.8.9"),
        ));
        obj.put(DataElement::new(
            tags::REFERENCED_IMAGE_SEQUENCE,
            VR::SQ,
            DicomValue::new_sequence(vec![item], Length::UNDEFINED),
        ));
    });
    let sq = find(&bytes, &[0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    // 12 bytes of sequence header, 8 of item header (FFFE,E000, undefined length), then half an element.
    assert_eq!(&bytes[sq + 12..sq + 16], &[0xFE, 0xFF, 0x00, 0xE0], "an item follows the sequence header");
    bytes[..sq + 12 + 8 + 11].to_vec()
}

// ------------------------------------------------------------ image cases

/// A hostile file: its name, bytes, and what its skip reason must say.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    says: &'static [&'static str],
}

fn hostile_images(dir: &Path) -> Vec<Case> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let dcm = ct_dicom_bytes(dir);
    let png = grey_png(32, 32, |x, y| ((x * 7 + y * 3) % 256) as u8);
    let mut after_marker = vec![0u8; 128];
    after_marker.extend_from_slice(b"DICM");
    after_marker.extend_from_slice(&noise(2000, 3));
    let mut length_bomb = dcm.clone();
    // PixelData (7FE0,0010) OW: 4 reserved-and-length bytes after the VR; claim 4 GB − 16.
    let pd = find(&length_bomb, &[0xE0, 0x7F, 0x10, 0x00, b'O', b'W']);
    length_bomb[pd + 8..pd + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    vec![
        // PNG
        Case { name: "zero_bytes.png", bytes: Vec::new(), says: &["the file is empty (0 bytes)"] },
        Case { name: "truncated.png", bytes: png[..png.len() / 2].to_vec(), says: &["not a decodable image"] },
        Case { name: "random_bytes.png", bytes: noise(3000, 1), says: &["Invalid PNG signature"] },
        Case { name: "dicom_content.png", bytes: dcm.clone(), says: &["Invalid PNG signature"] },
        Case {
            name: "png_bomb_60000x60000.png",
            bytes: png_bomb(60000, 60000),
            says: &["60000×60000 pixels × 1 frame(s) = 3600000000 pixels", "over the limit of 100000000 pixels"],
        },
        // DICOM
        Case { name: "zero_bytes.dcm", bytes: Vec::new(), says: &["empty file (0 bytes)"] },
        Case { name: "truncated.dcm", bytes: dcm[..dcm.len() - 100].to_vec(), says: &["not a decodable image"] },
        Case { name: "truncated_in_meta.dcm", bytes: dcm[..150].to_vec(), says: &["not a decodable image"] },
        Case { name: "random_bytes.dcm", bytes: noise(3000, 2), says: &["not a DICOM file: no \"DICM\" marker"] },
        Case { name: "random_after_dicm_marker.dcm", bytes: after_marker, says: &["not a readable DICOM file"] },
        Case { name: "png_content.dcm", bytes: png.clone(), says: &["not a DICOM file"] },
        Case {
            name: "no_pixel_data.dcm",
            bytes: edited_dicom(dir, |o| {
                o.remove_element(tags::PIXEL_DATA);
            }),
            says: &["no Pixel Data element (7FE0,0010)"],
        },
        Case { name: "no_transfer_syntax.dcm", bytes: with_transfer_syntax(&dcm, None), says: &["TransferSyntax"] },
        Case {
            name: "unknown_transfer_syntax.dcm",
            bytes: with_transfer_syntax(&dcm, Some("1.2.826.0.1.3680043.9.9999.1")),
            says: &["1.2.826.0.1.3680043.9.9999.1", "advscan decodes"],
        },
        Case {
            // A known syntax (MPEG-2) with no decoder in dicom-rs, over encapsulated (RLE) fragments.
            name: "mpeg2_transfer_syntax.dcm",
            bytes: with_transfer_syntax(
                &ct_dicom_bytes_in(dir, advscan::io::dicom_write::WriteSyntax::RleLossless),
                Some("1.2.840.10008.1.2.4.100"),
            ),
            says: &["MPEG", "advscan decodes"],
        },
        Case {
            name: "rows_larger_than_data.dcm",
            bytes: edited_dicom(dir, |o| put_us(o, tags::ROWS, 64)),
            says: &["the pixel data is 512 bytes, shorter than the 2048 bytes"],
        },
        Case {
            name: "bits_allocated_32_for_16_bit_data.dcm",
            bytes: edited_dicom(dir, |o| {
                put_us(o, tags::BITS_ALLOCATED, 32);
            }),
            says: &["the pixel data is 512 bytes, shorter than the 1024 bytes"],
        },
        Case {
            name: "bits_stored_over_allocated.dcm",
            bytes: edited_dicom(dir, |o| put_us(o, tags::BITS_ALLOCATED, 8)),
            says: &["BitsStored = 16 is inconsistent with BitsAllocated = 8"],
        },
        Case {
            name: "bits_allocated_12.dcm",
            bytes: edited_dicom(dir, |o| put_us(o, tags::BITS_ALLOCATED, 12)),
            says: &["BitsAllocated = 12; advscan reads 1, 8, 16 or 32"],
        },
        Case {
            name: "columns_zero.dcm",
            bytes: edited_dicom(dir, |o| put_us(o, tags::COLUMNS, 0)),
            says: &["Rows = 16 and Columns = 0 do not describe an image"],
        },
        Case { name: "sequence_cut_short.dcm", bytes: sequence_cut_short(dir), says: &["not a readable DICOM file"] },
        Case { name: "pixel_data_length_4gb.dcm", bytes: length_bomb, says: &["not a readable DICOM file"] },
        Case {
            name: "bomb_60000x60000x100_frames.dcm",
            bytes: edited_dicom(dir, |o| {
                put_us(o, tags::ROWS, 60000);
                put_us(o, tags::COLUMNS, 60000);
                o.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from("100")));
            }),
            says: &["60000×60000 pixels × 100 frame(s) = 360000000000 pixels", "over the limit of 100000000 pixels"],
        },
    ]
}

/// 1. Every hostile PNG and DICOM file is skipped with its own one-line
/// reason; the run completes on the two good files (a CT DICOM and a
/// lung-window PNG) with exit status 2.
#[test]
fn hostile_images_are_each_skipped_with_a_reason_and_the_run_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("normal")).unwrap();
    std::fs::create_dir_all(data.join("nodule")).unwrap();
    std::fs::copy(repo().join(GOOD_CT_DICOM), data.join("normal/good_ct.dcm")).unwrap();
    std::fs::copy(repo().join(GOOD_CT_PNG), data.join("nodule/good_lung_window.png")).unwrap();
    let cases = hostile_images(tmp.path());
    for c in &cases {
        write(&data, c.name, &c.bytes);
    }
    let out = tmp.path().join("out");
    let (o, r) = fgsm_run(CT_MODEL, &data, &out, "5HU");
    assert!(r.is_object(), "expected results.json despite the bad inputs: {}", text(&o.stderr));
    let list = skipped(&r);
    assert_skip_summary(&o, cases.len());
    assert_eq!(list.len(), cases.len(), "expected one skipped entry per hostile file: {list:#?}");
    let mut failures = Vec::new();
    for c in &cases {
        // A decode failure's reason is a sentence that names the file itself.
        match check_skip(&list, c.name, c.says) {
            Ok(reason) if !reason.contains(c.name) => {
                failures.push(format!("{}: reason does not name it: {reason}", c.name))
            }
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}\nskipped: {list:#?}", failures.len(), failures.join("\n"));

    // The good files were evaluated, labelled by their folders, and attacked.
    assert_eq!(r["data"]["samples"], 2, "expected the 2 good files as samples: {}", r["data"]);
    let ids: Vec<&str> = arr(&r["samples"], "samples").iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, ["nodule/good_lung_window.png", "normal/good_ct.dcm"]);
    for s in arr(&r["samples"], "samples") {
        assert!(s["label"].is_number(), "expected {} labelled by its folder", s["id"]);
        assert_eq!(arr(&s["outcomes"], "outcomes").len(), 1, "expected one fgsm outcome for {}", s["id"]);
    }
    assert!(r["clean"]["accuracy"].is_number(), "expected a clean accuracy over the good files");
}

/// 2. The pixel limit is a flag: `--max-pixels 1000` skips a good 40×40 PNG
/// (1600 pixels), naming the limit, while the 28×28 ones (784) still run.
#[test]
fn max_pixels_flag_sets_the_pixel_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo_data(tmp.path(), 2);
    write(&data, "large_40x40.png", &grey_png(40, 40, |x, _| (x * 6) as u8));
    let out = tmp.path().join("out");
    let (o, r) = run(&[
        "attack",
        "--model",
        "models/pneumonia_cnn.onnx",
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm",
        "--eps",
        "2/255",
        "--max-pixels",
        "1000",
        "--gallery",
        "0",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_skip_summary(&o, 1);
    skip_reason(
        &skipped(&r),
        "large_40x40.png",
        &["40×40 pixels × 1 frame(s) = 1600 pixels", "over the limit of 1000 pixels"],
    );
    assert_eq!(r["data"]["samples"], 2, "expected the two 28×28 images evaluated: {}", r["data"]);
}

// ------------------------------------------------------------ model cases

fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// A [N,1,28,28] model whose logits are [sign·Log(m − 0.5), k] with m the
/// image mean: NaN when m < 0.5, −∞/+∞ when m = 0.5, finite above.
fn log_mean_model(sign: f32, k: f32) -> Vec<u8> {
    let mut mean = node("ReduceMean", &["image"], &["m4"]);
    mean.attribute = vec![attr_ints("axes", &[1, 2, 3]), attr_int("keepdims", 1)];
    let mut concat = node("Concat", &["z0", "z1"], &["logits"]);
    concat.attribute = vec![attr_int("axis", 1)];
    model_bytes(
        vec![value_info("image", FLOAT, &[-1, 1, 28, 28])],
        vec![value_info("logits", FLOAT, &[-1, 2])],
        vec![
            mean,
            node("Flatten", &["m4"], &["m"]),
            node("Sub", &["m", "half"], &["d"]),
            node("Log", &["d"], &["l"]),
            node("Mul", &["l", "sign"], &["z0"]),
            // m·0 + k: a constant column with the batch's shape.
            node("Mul", &["m", "zero"], &["m0"]),
            node("Add", &["m0", "k"], &["z1"]),
            concat,
        ],
        vec![
            float_tensor("half", &[], &[0.5]),
            float_tensor("sign", &[], &[sign]),
            float_tensor("zero", &[], &[0.0]),
            float_tensor("k", &[], &[k]),
        ],
        13,
    )
}

/// 3. A model whose output is NaN or infinite for some images: those samples
/// are listed in `data.skipped` with the reason, not counted in accuracy;
/// the others are evaluated; exit status 2.
#[test]
fn nan_and_infinite_logits_are_reported_not_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write(tmp.path(), "log_mean.onnx", &log_mean_model(1.0, 0.0));
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("1")).unwrap();
    // Every image is labelled 1. Bright images (mean > 0.5) give z = [log(m − 0.5) < 0, 0]: class 1,
    // correct. Dark ones give NaN, half-black-half-white exactly m = 0.5 → −∞. Were they counted,
    // argmax of [NaN, 0] is class 0 and the accuracy would drop below 1.
    write(&data.join("1"), "bright_a.png", &grey_png(28, 28, |x, y| 200 + ((x + y) % 40) as u8));
    write(&data.join("1"), "bright_b.png", &grey_png(28, 28, |_, _| 240));
    write(&data.join("1"), "dark_a.png", &grey_png(28, 28, |x, y| ((x * y) % 100) as u8));
    write(&data.join("1"), "dark_b.png", &grey_png(28, 28, |_, _| 10));
    write(&data.join("1"), "half_black_half_white.png", &grey_png(28, 28, |x, _| if x < 14 { 0 } else { 255 }));
    let out = tmp.path().join("out");
    let (o, r) = fgsm_run(model.to_str().unwrap(), &data, &out, "2/255");
    assert_skip_summary(&o, 3);
    let list = skipped(&r);
    assert_eq!(list.len(), 3, "expected the 3 non-finite samples skipped: {list:#?}");
    for name in ["dark_a.png", "dark_b.png", "half_black_half_white.png"] {
        skip_reason(&list, name, &["the model's output is NaN or infinite for this image"]);
    }
    assert_eq!(r["data"]["samples"], 2, "expected only the 2 bright images evaluated: {}", r["data"]);
    let ids: Vec<&str> = arr(&r["samples"], "samples").iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, ["1/bright_a.png", "1/bright_b.png"]);
    assert_eq!(r["clean"]["accuracy"], 1.0, "expected accuracy over the finite samples only: {}", r["clean"]);
}

/// 4. Logits that become NaN *during* the attack. The clean images (uniform
/// 230/255 and 250/255) give z = [−log(m − 0.5), 1] = [0.91, 1] and [0.73, 1]:
/// class 1, finite. Attacks away from class 1 lower the mean m; with ε = 0.45
/// the first lands below 0.5, where the output is NaN, the second at 0.53
/// (a finite flip). A NaN adversarial output must not be scored (argmax of
/// NaNs is class 0, a "flip"), nor abort the run: the sample is reported in
/// `data.skipped` as a NaN clean output is, the others are evaluated, exit 2.
/// (Found by this test: FGSM used to score the NaN output as a flip and write
/// `confidence: null`, and PGD's NaN gradient aborted the whole run.)
#[test]
fn nan_logits_during_the_attack_are_reported_not_counted_as_flips() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write(tmp.path(), "neg_log_mean.onnx", &log_mean_model(-1.0, 1.0));
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write(&data, "uniform_230.png", &grey_png(28, 28, |_, _| 230));
    write(&data, "uniform_250.png", &grey_png(28, 28, |_, _| 250));
    let out = tmp.path().join("out");
    let (o, r) = run(&[
        "attack",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm,pgd",
        "--eps",
        "0.45",
        "--steps",
        "5",
        "--gallery",
        "0",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.is_object(), "expected the run to complete and write results.json: {}", text(&o.stderr));
    assert_skip_summary(&o, 1);
    skip_reason(&skipped(&r), "uniform_230.png", &["NaN"]);
    let ids: Vec<&str> = arr(&r["samples"], "samples").iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, ["uniform_250.png"], "expected only the finite sample evaluated");
    for o in arr(&r["samples"][0]["outcomes"], "outcomes") {
        assert!(o["confidence"].is_number(), "expected finite outcomes only: {o}");
    }
}

/// The refusal of an image over the pixel limit names the flag that raises
/// it; the limit itself is tested above.
#[test]
fn too_large_refusal_names_the_max_pixels_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo_data(tmp.path(), 1);
    write(&data, "png_bomb_60000x60000.png", &png_bomb(60000, 60000));
    let out = tmp.path().join("out");
    let (o, r) = fgsm_run("models/pneumonia_cnn.onnx", &data, &out, "2/255");
    assert_skip_summary(&o, 1);
    skip_reason(&skipped(&r), "png_bomb_60000x60000.png", &["over the limit of 100000000 pixels", "--max-pixels"]);
}

/// A model whose input has the given dims (a negative entry is the named
/// symbol) and element type: Flatten → ReduceMean to one logit per sample.
fn shaped_model(dims: &[(i64, &str)], elem_type: i32) -> Vec<u8> {
    use pb::tensor_shape_proto::{Dimension, dimension::Value as D};
    let dim = dims
        .iter()
        .map(|&(d, name)| Dimension {
            value: Some(if d < 0 { D::DimParam(name.into()) } else { D::DimValue(d) }),
            ..Default::default()
        })
        .collect();
    let mut input = value_info("image", elem_type, &[]);
    if let Some(pb::type_proto::Value::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.shape = Some(pb::TensorShapeProto { dim });
    }
    let mut mean = node("ReduceMean", &["flat"], &["y"]);
    mean.attribute = vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)];
    model_bytes(
        vec![input],
        vec![value_info("y", FLOAT, &[-1, 1])],
        vec![node("Flatten", &["image"], &["flat"]), mean],
        vec![],
        13,
    )
}

/// tiny_classifier with its weight W stored in an external file that is missing.
fn external_data_missing() -> Vec<u8> {
    let mut model = pb::ModelProto::decode(tiny_classifier(None).as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let w = graph.initializer.iter_mut().find(|t| t.name == "W").unwrap();
    w.float_data.clear();
    w.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    let entry = |k: &str, v: &str| pb::StringStringEntryProto { key: k.into(), value: v.into() };
    w.external_data = vec![entry("location", "missing_weights.bin"), entry("offset", "0"), entry("length", "32")];
    model.encode_to_vec()
}
/// 5. Broken models are refused by `advscan attack` with exit status 2 and one
/// sentence naming the model file and the reason, before any data is read.
#[test]
fn broken_models_are_refused_by_attack_with_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo_data(tmp.path(), 1);
    let mut truncated = std::fs::read(repo().join("models/pneumonia_cnn.onnx")).unwrap();
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not_onnx.onnx", b"name,label\nscan.png,1\n".to_vec(), "not a readable ONNX model"),
        ("zero_bytes.onnx", Vec::new(), "not a readable ONNX model"),
        ("truncated.onnx", truncated, "not a readable ONNX model"),
        // os error 2: ENOENT on Unix, ERROR_FILE_NOT_FOUND on Windows.
        (
            "external_data_missing.onnx",
            external_data_missing(),
            "missing_weights.bin\": No such file or directory (os error 2)",
        ),
        (
            "dynamic_hw.onnx",
            shaped_model(&[(-1, "N"), (1, ""), (-1, "H"), (-1, "W")], FLOAT),
            "has a dynamic dimension 'H' at axis 2; advscan needs a fixed image size",
        ),
        (
            "rank3_input.onnx",
            shaped_model(&[(-1, "N"), (1, ""), (28, "")], FLOAT),
            "advscan attack needs an image model with input [N, C, H, W], this one takes [N, 1, 28]",
        ),
        ("rank2_input.onnx", shaped_model(&[(-1, "N"), (784, "")], FLOAT), "has rank 2"),
        ("int64_input.onnx", shaped_model(&[(-1, "N"), (1, ""), (28, ""), (28, "")], INT64), "element type int64"),
    ];
    let mut failures = Vec::new();
    for (name, bytes, says) in &cases {
        let model = write(tmp.path(), name, bytes);
        let out = tmp.path().join(format!("out_{name}"));
        let (o, r) = run(&[
            "attack",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--eps",
            "2/255",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        let err = text(&o.stderr);
        let lines: Vec<&str> =
            err.lines().filter(|l| !l.starts_with("no model config") && !l.starts_with("  ")).collect();
        let ok = o.status.code() == Some(2)
            && err.contains(&model.display().to_string())
            && err.contains(says)
            && lines.len() == 1
            && !err.contains("panicked")
            && r.is_null();
        if !ok {
            failures.push(format!(
                "{name}: expected exit 2, one line naming the file and saying '{says}', no results.json; got {:?}, results {}: {err}",
                o.status.code(),
                if r.is_null() { "absent" } else { "written" }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------------------ policies and configs

/// 6. Policies and model configs with wrong types or unknown keys: exit 2,
/// naming the file, the line and the key, before any attack runs.
#[test]
fn malformed_policies_and_model_configs_name_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo_data(tmp.path(), 1);
    let attack = |extra: &[&str], model: &str, name: &str| {
        let out = tmp.path().join(format!("out_{name}"));
        let mut args = vec!["attack", "--model", model, "--data", data.to_str().unwrap(), "--eps", "2/255", "--quiet"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        run(&args)
    };
    let mut failures = Vec::new();
    let mut expect = |what: &str, o: &Output, r: &Value, file: &Path, line: usize, key: &str, says: &str| {
        let err = text(&o.stderr);
        let want = format!("{}:{line}: key '{key}': ", file.display());
        if o.status.code() != Some(2) || !err.contains(&want) || !err.contains(says) || !r.is_null() {
            failures.push(format!(
                "{what}: expected exit 2, '{want}…{says}' and no results.json; got {:?}: {err}",
                o.status.code()
            ));
        }
    };

    // Policies, through `attack --policy` and through `gate`.
    let p = write(
        tmp.path(),
        "unknown_key.toml",
        b"[[require]]\nmax_flip_rate = 0.5\nattack = \"fgsm\"\neps = \"2/255\"\nnrom = \"linf\"\n",
    );
    let (o, r) = attack(&["--policy", p.to_str().unwrap()], "models/pneumonia_cnn.onnx", "policy_unknown");
    expect("policy unknown key (attack)", &o, &r, &p, 5, "nrom", "unknown field");
    let p = write(
        tmp.path(),
        "wrong_type.toml",
        b"# gate\n[[require]]\nattack = [\"fgsm\"]\neps = 0.0078\nmax_flip_rate = 0.5\n",
    );
    let o = advscan(&["gate", "--policy", p.to_str().unwrap(), tmp.path().join("none/results.json").to_str().unwrap()]);
    expect("policy wrong type (gate)", &o, &Value::Null, &p, 3, "attack", "invalid type");
    // eps takes a label or a number; a boolean is neither.
    let p = write(tmp.path(), "eps_bool.toml", b"[[require]]\nmax_flip_rate = 0.5\nattack = \"fgsm\"\neps = true\n");
    let o = advscan(&["gate", "--policy", p.to_str().unwrap(), tmp.path().join("none/results.json").to_str().unwrap()]);
    expect("policy eps of the wrong type (gate)", &o, &Value::Null, &p, 4, "eps", "");
    let p = write(tmp.path(), "bool_as_string.toml", b"[[require]]\nno_failed_checks = \"yes\"\n");
    let o = advscan(&["gate", "--policy", p.to_str().unwrap(), tmp.path().join("none/results.json").to_str().unwrap()]);
    expect("policy wrong type bool (gate)", &o, &Value::Null, &p, 2, "no_failed_checks", "invalid type");

    // Model configs, through `attack --model-config`, a sibling .model.toml and `inspect`.
    let c = write(
        tmp.path(),
        "wrong_type.model.toml",
        b"[input]\nsize = [28, 28]\n\n[window]\ncenter = \"minus 600\"\nwidth = 1500.0\n",
    );
    let (o, r) = attack(&["--model-config", c.to_str().unwrap()], "models/pneumonia_cnn.onnx", "cfg_wrong_type");
    expect("config wrong type (attack)", &o, &r, &c, 5, "window.center", "invalid type");
    let c = write(tmp.path(), "unknown_table.model.toml", b"[input]\nsize = [28, 28]\n[normalise]\nmean = [0.5]\n");
    let (o, r) = attack(&["--model-config", c.to_str().unwrap()], "models/pneumonia_cnn.onnx", "cfg_unknown_table");
    expect("config unknown table (attack)", &o, &r, &c, 3, "normalise", "unknown field");
    let model = tmp.path().join("sibling.onnx");
    std::fs::copy(repo().join("models/pneumonia_cnn.onnx"), &model).unwrap();
    let c = write(tmp.path(), "sibling.model.toml", b"[classes]\nnames = [\"normal\", \"pneumonia\"]\npositive = 1\n");
    let (o, r) = attack(&[], model.to_str().unwrap(), "cfg_sibling");
    expect("sibling config wrong type (attack)", &o, &r, &c, 3, "classes.positive", "invalid type");
    let c = write(tmp.path(), "inspect.model.toml", b"[input]\nresize = \"bicubic\"\n");
    let o = advscan(&["inspect", "models/pneumonia_cnn.onnx", "--model-config", c.to_str().unwrap()]);
    expect("config bad value (inspect)", &o, &Value::Null, &c, 2, "input.resize", "bicubic");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
