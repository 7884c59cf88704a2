//! Files written by `advscan::io::dicom_write` are read by independent DICOM
//! tools: DCMTK (`dcmdump`, `dcm2pnm`), dicom3tools (`dciodvfy`, which checks
//! the IOD: no "Error" lines allowed, warnings printed) and, when installed,
//! pydicom (the pixel values must equal the stored values we wrote).
//! `.ci/run` installs dcmtk and dicom3tools. A missing tool fails the test when
//! `CI` is set; otherwise the test says so loudly and skips that tool.

use std::path::{Path, PathBuf};
use std::process::Command;

use advscan::io::dicom_write::{CtSliceSpec, HU_OFFSET, SliceKind, WriteSyntax, write_ct_slice, write_derived};

const SIZE: usize = 64;

fn have(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success() || !o.stderr.is_empty() || !o.stdout.is_empty());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is not installed, and CI is set: .ci/run must install it (dcmtk, dicom3tools)");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPING the {tool} checks: {tool} is not installed (apt-get install dcmtk dicom3tools) !!!!!!!!\n"
        );
    }
    ok
}

/// (file, expected stored values of frame 0, number of frames)
fn write_samples(dir: &Path) -> Vec<(PathBuf, Vec<i32>)> {
    let mut out = Vec::new();
    let hu = |seed, nodule| advscan::synthetic::ct_slice(SIZE, seed, nodule);
    let to_stored = |h: &[i16]| h.iter().map(|&v| v as i32 + HU_OFFSET).collect::<Vec<i32>>();
    for (name, syntax, bits, signed) in [
        ("ct_explicit_le.dcm", WriteSyntax::ExplicitVrLittleEndian, 16, true),
        ("ct_implicit_le.dcm", WriteSyntax::ImplicitVrLittleEndian, 16, true),
        ("ct_rle.dcm", WriteSyntax::RleLossless, 16, true),
        ("ct_12bit.dcm", WriteSyntax::ExplicitVrLittleEndian, 12, false),
    ] {
        let h = hu(1, true);
        let spec = CtSliceSpec { syntax, bits_stored: bits, signed, ..CtSliceSpec::ct(SIZE, h.clone(), 1) };
        let path = dir.join(name);
        write_ct_slice(&path, &spec).unwrap();
        out.push((path, to_stored(&h)));
    }
    let frames = vec![hu(2, false), hu(3, false), hu(4, false)];
    let spec = CtSliceSpec {
        kind: SliceKind::MultiFrameCt,
        frames: frames.clone(),
        syntax: WriteSyntax::RleLossless,
        signed: false,
        ..CtSliceSpec::ct(SIZE, Vec::new(), 2)
    };
    let mf = dir.join("ct_multiframe_rle.dcm");
    write_ct_slice(&mf, &spec).unwrap();
    out.push((mf.clone(), to_stored(&frames[0])));
    let xr: Vec<i16> = (0..SIZE * SIZE).map(|i| (i * 7 % 4096) as i16).collect();
    let spec = CtSliceSpec {
        kind: SliceKind::RadiographMonochrome1,
        frames: vec![xr.clone()],
        bits_stored: 12,
        signed: false,
        ..CtSliceSpec::ct(SIZE, Vec::new(), 3)
    };
    let path = dir.join("xr_monochrome1.dcm");
    write_ct_slice(&path, &spec).unwrap();
    out.push((path, xr.iter().map(|&v| v as i32).collect()));

    // Derived: frame 2 of the compressed multi-frame, and an anonymised CT.
    let adv: Vec<i32> = to_stored(&frames[2]).iter().map(|v| v + 3).collect();
    let path = dir.join("derived_from_multiframe.dcm");
    write_derived(&mf, 2, &adv, &path, "advscan PGD linf eps 4/255", false).unwrap();
    out.push((path, adv));
    let adv: Vec<i32> = to_stored(&hu(1, true)).iter().map(|v| v - 2).collect();
    let path = dir.join("derived_anonymized.dcm");
    write_derived(&dir.join("ct_explicit_le.dcm"), 0, &adv, &path, "advscan FGSM", true).unwrap();
    out.push((path, adv));
    out
}

#[test]
fn written_dicom_passes_dcmtk_dicom3tools_and_pydicom() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_samples(tmp.path());

    if have("dcmdump", &["--version"]) {
        for (path, _) in &files {
            let o = Command::new("dcmdump").arg("-q").arg(path).output().unwrap();
            assert!(o.status.success(), "dcmdump {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
        }
    }
    if have("dcm2pnm", &["--version"]) {
        for (path, _) in &files {
            let pnm = path.with_extension("pnm");
            let o = Command::new("dcm2pnm").arg(path).arg(&pnm).output().unwrap();
            assert!(o.status.success(), "dcm2pnm {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
            assert!(std::fs::metadata(&pnm).unwrap().len() as usize > SIZE * SIZE);
        }
    }
    if have("dciodvfy", &[]) {
        for (path, _) in &files {
            let o = Command::new("dciodvfy").arg(path).output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
            for warning in text.lines().filter(|l| l.starts_with("Warning")) {
                println!("dciodvfy {}: {warning}", path.file_name().unwrap().to_string_lossy());
            }
            assert!(errors.is_empty(), "dciodvfy {}:\n{}", path.display(), errors.join("\n"));
        }
    }
    let pydicom =
        Command::new("python3").args(["-c", "import pydicom, numpy"]).output().is_ok_and(|o| o.status.success());
    if !pydicom {
        eprintln!("\n!!!!!!!! SKIPPING the pydicom check: python3 with pydicom and numpy is not available !!!!!!!!\n");
        return;
    }
    for (path, want) in &files {
        let expected = path.with_extension("i32");
        std::fs::write(&expected, want.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let script = "import sys, numpy, pydicom\n\
                      ds = pydicom.dcmread(sys.argv[1])\n\
                      a = ds.pixel_array\n\
                      a = a[0] if getattr(ds, 'NumberOfFrames', 1) and int(getattr(ds, 'NumberOfFrames', 1)) > 1 else a\n\
                      want = numpy.fromfile(sys.argv[2], dtype='<i4')\n\
                      got = a.astype('int64').ravel()\n\
                      assert got.shape == want.shape, (got.shape, want.shape)\n\
                      assert (got == want).all(), int((got != want).sum())\n";
        let o = Command::new("python3").args(["-c", script]).arg(path).arg(&expected).output().unwrap();
        assert!(o.status.success(), "pydicom {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    }
}
