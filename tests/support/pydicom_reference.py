#!/usr/bin/env python3
"""Reference pixel values for tests/pydicom_corpus.rs, from pydicom itself.

Usage: pydicom_reference.py OUTDIR

For every file shipped inside the installed pydicom package
(pydicom/data/test_files/**; nothing is downloaded), writes OUTDIR/index.json:
one entry per file with what pydicom made of it:

- status "unreadable": dcmread raised (not DICOM, or broken); "error" says why.
- status "no_pixel_data": readable, but no (7FE0,0010) Pixel Data.
- status "pixel_error": pydicom could not decode the pixel data (missing
  plugin, unsupported syntax, corrupt data); "error" says why.
- status "ok": OUTDIR/<n>.f64 holds the values as float64 little-endian,
  shape [frames, samples, rows, columns] (channel-first, like advscan), after
  pydicom's own colour conversion (as_rgb, YBR -> RGB) and, for grey images,
  after pydicom.pixels.apply_modality_lut. Colour images get no modality LUT
  (advscan treats it as identity for colour).

Each entry also records transfer syntax, whether it is lossy, photometric
interpretation (as in the file) and the pydicom/plugin versions.
"""

import json
import os
import sys
import traceback

import numpy as np
import pydicom
from pydicom import dcmread

try:
    from pydicom.pixels import apply_modality_lut
except ImportError:  # pydicom < 3
    from pydicom.pixel_data_handlers.util import apply_modality_lut

# Transfer syntaxes whose decoded values may legitimately differ between
# decoders (IDCT rounding, wavelet arithmetic, NEAR > 0).
LOSSY = {
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossless or lossy)
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 (lossless or lossy)
    "1.2.840.10008.1.2.4.203",  # HTJ2K (lossless or lossy)
}


def plugin_versions():
    out = {"pydicom": pydicom.__version__, "numpy": np.__version__}
    for name in ("pylibjpeg", "libjpeg", "openjpeg", "rle", "PIL", "jpeg_ls", "gdcm"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "present")
        except Exception:
            pass
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: pydicom_reference.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    root = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
    )
    entries = []
    for n, path in enumerate(files):
        e = {"path": path, "name": os.path.relpath(path, root)}
        entries.append(e)
        try:
            ds = dcmread(path)
        except Exception as exc:
            e["status"] = "unreadable"
            e["error"] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        meta = getattr(ds, "file_meta", None)
        ts = str(getattr(meta, "TransferSyntaxUID", "")) if meta is not None else ""
        e["transfer_syntax"] = ts
        e["lossy"] = ts in LOSSY
        e["photometric"] = str(ds.get("PhotometricInterpretation", ""))
        if "PixelData" not in ds:
            e["status"] = "no_pixel_data"
            continue
        try:
            arr = ds.pixel_array
            spp = int(ds.get("SamplesPerPixel", 1))
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            if spp == 1:
                arr = apply_modality_lut(arr, ds)
            arr = np.asarray(arr, dtype=np.float64)
            rows, cols = int(ds.Rows), int(ds.Columns)
            # pydicom: (rows, cols[, spp]) or (frames, rows, cols[, spp]).
            arr = arr.reshape(frames, rows, cols, spp).transpose(0, 3, 1, 2)
        except Exception as exc:
            e["status"] = "pixel_error"
            e["error"] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        fname = f"{n}.f64"
        np.ascontiguousarray(arr).astype("<f8").tofile(os.path.join(outdir, fname))
        e["status"] = "ok"
        e["data"] = fname
        e["shape"] = list(arr.shape)
    with open(os.path.join(outdir, "index.json"), "w") as f:
        json.dump({"versions": plugin_versions(), "root": root, "files": entries}, f, indent=1)
    print(f"pydicom_reference: {len(entries)} files -> {outdir}")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
