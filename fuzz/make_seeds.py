#!/usr/bin/env python3
"""Writes the generated part of the fuzz seed corpus (fuzz/seeds/<target>/gen_*).

Tiny files that reach every decoder branch advscan has, so the fuzzer starts
from valid structure instead of guessing it: DICOM in each transfer syntax
advscan decodes (explicit/implicit LE, explicit BE, deflated, RLE, JPEG
baseline, JPEG 2000), multi-frame, colour (RGB planar and interleaved,
YBR_FULL_422), 1-bit, 32-bit, a Modality LUT Sequence, MONOCHROME1 and a
few hostile headers; PNG in every colour type and bit depth plus JPEG; tiny
ONNX classifiers. DICOM is written by hand below (no pydicom needed);
images by Pillow, models by the `onnx` package (pip: pillow, onnx).

Deterministic: the same files every run. Run from the repository root:
    python3 fuzz/make_seeds.py
"""

import io
import os
import struct
import zlib

from PIL import Image

ROOT = os.path.dirname(os.path.abspath(__file__))

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

LONG_VRS = {"OB", "OW", "OF", "SQ", "UT", "UN"}


def pad(vr, value):
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    return value


def element(tag, vr, value, syntax):
    """One data element; `value` is bytes already in the syntax's byte order."""
    group, elem = tag
    value = pad(vr, value)
    big = syntax == EXPLICIT_BE and group != 0x0002
    e = ">" if big else "<"
    head = struct.pack(e + "HH", group, elem)
    length = 0xFFFFFFFF if vr == "SQ" and value.endswith(SEQ_END_MARK) else len(value)
    if value.endswith(SEQ_END_MARK):
        value = value[: -len(SEQ_END_MARK)]
    if syntax == IMPLICIT_LE and group != 0x0002:
        return head + struct.pack("<I", length) + value
    if vr in LONG_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack(e + "I", length) + value
    return head + vr.encode() + struct.pack(e + "H", length) + value


SEQ_END_MARK = b"<undefined-length>"


def us(values, syntax):
    e = ">" if syntax == EXPLICIT_BE else "<"
    return struct.pack(e + "%dH" % len(values), *values)


def text(s):
    return s.encode("ascii")


def meta(sop_class, sop_instance, syntax):
    body = b"".join(
        [
            element((0x0002, 0x0001), "OB", b"\0\1", EXPLICIT_LE),
            element((0x0002, 0x0002), "UI", text(sop_class), EXPLICIT_LE),
            element((0x0002, 0x0003), "UI", text(sop_instance), EXPLICIT_LE),
            element((0x0002, 0x0010), "UI", text(syntax), EXPLICIT_LE),
            element((0x0002, 0x0012), "UI", text("1.2.826.0.1.3680043.10.1341.1"), EXPLICIT_LE),
        ]
    )
    return element((0x0002, 0x0000), "UL", struct.pack("<I", len(body)), EXPLICIT_LE) + body


def encapsulated(fragments, syntax):
    """Pixel Data (7FE0,0010) OB of undefined length: empty offset table, one item per fragment."""
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    for f in fragments:
        f = pad("OB", f)
        items += struct.pack("<HHI", 0xFFFE, 0xE000, len(f)) + f
    items += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFFF) + items


def dicom(
    rows,
    cols,
    pixel_bytes,
    syntax=EXPLICIT_LE,
    samples=1,
    photometric="MONOCHROME2",
    bits_allocated=16,
    bits_stored=None,
    signed=True,
    frames=None,
    planar=None,
    modality="CT",
    rescale=(1.0, -1024.0),
    window=None,
    rescale_type=None,
    lut=None,
    fragments=None,
    preamble=True,
    extra=(),
):
    """A whole DICOM file. `pixel_bytes` native, in the syntax's byte order; `fragments` encapsulated."""
    bits_stored = bits_allocated if bits_stored is None else bits_stored
    sop_class = CT_STORAGE if modality == "CT" else SC_STORAGE
    sop_instance = "1.2.826.0.1.3680043.10.1341.%d.%d.%d" % (rows, cols, len(pixel_bytes or b"") + bits_stored)
    data_syntax = EXPLICIT_LE if syntax == DEFLATED else syntax
    els = [
        ((0x0008, 0x0016), "UI", text(sop_class)),
        ((0x0008, 0x0018), "UI", text(sop_instance)),
        ((0x0008, 0x0060), "CS", text(modality)),
        ((0x0028, 0x0002), "US", us([samples], data_syntax)),
        ((0x0028, 0x0004), "CS", text(photometric)),
        ((0x0028, 0x0010), "US", us([rows], data_syntax)),
        ((0x0028, 0x0011), "US", us([cols], data_syntax)),
        ((0x0028, 0x0100), "US", us([bits_allocated], data_syntax)),
        ((0x0028, 0x0101), "US", us([bits_stored], data_syntax)),
        ((0x0028, 0x0102), "US", us([bits_stored - 1], data_syntax)),
        ((0x0028, 0x0103), "US", us([1 if signed else 0], data_syntax)),
    ]
    if frames is not None:
        els.append(((0x0028, 0x0008), "IS", text(str(frames))))
    if planar is not None:
        els.append(((0x0028, 0x0006), "US", us([planar], data_syntax)))
    if window is not None:
        els.append(((0x0028, 0x1050), "DS", text("%g" % window[0])))
        els.append(((0x0028, 0x1051), "DS", text("%g" % window[1])))
    if rescale is not None:
        els.append(((0x0028, 0x1052), "DS", text("%g" % rescale[1])))
        els.append(((0x0028, 0x1053), "DS", text("%g" % rescale[0])))
    if rescale_type is not None:
        els.append(((0x0028, 0x1054), "LO", text(rescale_type)))
    if lut is not None:
        first, table = lut
        item = element((0x0028, 0x3002), "US", us([len(table), first, 16], data_syntax), data_syntax)
        item += element((0x0028, 0x3004), "LO", text("HU"), data_syntax)
        item += element((0x0028, 0x3006), "OW", us(table, data_syntax), data_syntax)
        e = ">" if data_syntax == EXPLICIT_BE else "<"
        seq = struct.pack(e + "HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item + struct.pack(e + "HHI", 0xFFFE, 0xE00D, 0)
        seq += struct.pack(e + "HHI", 0xFFFE, 0xE0DD, 0)
        els.append(((0x0028, 0x3000), "SQ", seq + SEQ_END_MARK))
    els.extend(extra)
    els.sort(key=lambda t: t[0])
    body = b"".join(element(tag, vr, value, data_syntax) for tag, vr, value in els)
    if fragments is not None:
        body += encapsulated(fragments, data_syntax)
    else:
        vr = "OB" if bits_allocated <= 8 else "OW"
        body += element((0x7FE0, 0x0010), vr, pixel_bytes, data_syntax)
    if syntax == DEFLATED:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        body = c.compress(body) + c.flush()
    head = (b"\0" * 128 + b"DICM") if preamble else b"DICM"
    return head + meta(sop_class, sop_instance, syntax) + body


def ramp(n, lo, hi):
    return [lo + (hi - lo) * i // max(n - 1, 1) for i in range(n)]


def packbits(data):
    out = bytearray()
    for i in range(0, len(data), 128):
        chunk = data[i : i + 128]
        out.append(len(chunk) - 1)
        out += chunk
    return bytes(out)


def rle_frame(planes):
    """RLE Lossless frame: 64-byte header, then one PackBits segment per byte plane."""
    segments = [packbits(p) for p in planes]
    offsets, at = [], 64
    for s in segments:
        offsets.append(at)
        at += len(s) + (len(s) % 2)
    header = struct.pack("<16I", len(segments), *(offsets + [0] * (15 - len(offsets))))
    return header + b"".join(s + b"\0" * (len(s) % 2) for s in segments)


def image_bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write(target, name, data):
    d = os.path.join(ROOT, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def dicom_seeds():
    n = 8
    hu = ramp(n * n, -1000, 400)  # stored = HU + 1024 (intercept −1024)
    stored = [(v + 1024) & 0xFFFF for v in hu]
    write("dicom_to_sample", "gen_ct_explicit_le.dcm", dicom(n, n, us(stored, EXPLICIT_LE)))
    write("dicom_to_sample", "gen_ct_implicit_le.dcm", dicom(n, n, us(stored, IMPLICIT_LE), syntax=IMPLICIT_LE))
    write("dicom_to_sample", "gen_ct_explicit_be.dcm", dicom(n, n, us(stored, EXPLICIT_BE), syntax=EXPLICIT_BE))
    write("dicom_to_sample", "gen_ct_deflated.dcm", dicom(n, n, us(stored, EXPLICIT_LE), syntax=DEFLATED))
    write(
        "dicom_to_sample",
        "gen_ct_no_preamble_12bit.dcm",
        dicom(n, n, us(stored, EXPLICIT_LE), bits_stored=12, signed=False, preamble=False),
    )
    # RLE: two byte planes, most significant first.
    hi = bytes(v >> 8 for v in stored)
    lo = bytes(v & 0xFF for v in stored)
    write("dicom_to_sample", "gen_ct_rle.dcm", dicom(n, n, None, syntax=RLE, fragments=[rle_frame([hi, lo])]))
    # Multi-frame (3 frames), unsigned, RescaleType HU, secondary capture.
    frames = stored * 3
    write(
        "dicom_to_sample",
        "gen_multiframe_3.dcm",
        dicom(n, n, us(frames, EXPLICIT_LE), frames=3, signed=False, modality="OT", rescale_type="HU"),
    )
    # MONOCHROME1 radiograph, file VOI window, no rescale.
    xr = ramp(n * n, 0, 4095)
    write(
        "dicom_to_sample",
        "gen_xr_monochrome1.dcm",
        dicom(
            n,
            n,
            us(xr, EXPLICIT_LE),
            photometric="MONOCHROME1",
            bits_stored=12,
            signed=False,
            modality="DX",
            rescale=None,
            window=(2048, 4096),
        ),
    )
    # Modality LUT Sequence instead of rescale.
    table = ramp(256, 0, 2000)
    write(
        "dicom_to_sample",
        "gen_modality_lut.dcm",
        dicom(
            n,
            n,
            us(xr, EXPLICIT_LE),
            bits_stored=12,
            signed=False,
            modality="OT",
            rescale=None,
            window=(1000, 2000),
            lut=(0, table),
        ),
    )
    # 8-bit colour: RGB interleaved, RGB planar, YBR_FULL_422.
    rgb = bytes((i * 7 + c * 60) & 0xFF for i in range(n * n) for c in range(3))
    write(
        "dicom_to_sample",
        "gen_rgb_interleaved.dcm",
        dicom(n, n, rgb, samples=3, photometric="RGB", bits_allocated=8, signed=False, modality="OT", rescale=None),
    )
    planar_rgb = bytes(rgb[p * 3 + c] for c in range(3) for p in range(n * n))
    write(
        "dicom_to_sample",
        "gen_rgb_planar.dcm",
        dicom(
            n,
            n,
            planar_rgb,
            samples=3,
            photometric="RGB",
            bits_allocated=8,
            signed=False,
            planar=1,
            modality="OT",
            rescale=None,
        ),
    )
    ybr422 = bytes((i * 5 + k * 40) & 0xFF for i in range(n * n // 2) for k in range(4))
    write(
        "dicom_to_sample",
        "gen_ybr_full_422.dcm",
        dicom(
            n,
            n,
            ybr422,
            samples=3,
            photometric="YBR_FULL_422",
            bits_allocated=8,
            signed=False,
            modality="OT",
            rescale=None,
        ),
    )
    # 1-bit and 32-bit grey.
    bits = bytes((i * 37) & 0xFF for i in range(n * n // 8))
    write(
        "dicom_to_sample",
        "gen_1bit.dcm",
        dicom(n, n, bits, bits_allocated=1, signed=False, modality="OT", rescale=None, window=(0.5, 1)),
    )
    words32 = struct.pack("<%dI" % (n * n), *[(v * 65536 + 7) & 0xFFFFFFFF for v in ramp(n * n, 0, 3000)])
    write(
        "dicom_to_sample",
        "gen_32bit.dcm",
        dicom(n, n, words32, bits_allocated=32, signed=False, modality="OT", rescale=None, window=(1e8, 2e8)),
    )
    # JPEG baseline (grey and YBR colour) and JPEG 2000 lossless, encoded by Pillow.
    grey = Image.frombytes("L", (16, 16), bytes((i * 3) & 0xFF for i in range(256)))
    write(
        "dicom_to_sample",
        "gen_jpeg_baseline_grey.dcm",
        dicom(
            16,
            16,
            None,
            syntax=JPEG_BASELINE,
            bits_allocated=8,
            signed=False,
            modality="OT",
            rescale=None,
            window=(128, 256),
            fragments=[image_bytes(grey, "JPEG", quality=90)],
        ),
    )
    colour = Image.frombytes("RGB", (16, 16), bytes((i * 11) & 0xFF for i in range(768)))
    write(
        "dicom_to_sample",
        "gen_jpeg_baseline_ybr.dcm",
        dicom(
            16,
            16,
            None,
            syntax=JPEG_BASELINE,
            samples=3,
            photometric="YBR_FULL_422",
            bits_allocated=8,
            signed=False,
            modality="OT",
            rescale=None,
            fragments=[image_bytes(colour, "JPEG", quality=90)],
        ),
    )
    write(
        "dicom_to_sample",
        "gen_j2k_lossless_grey.dcm",
        dicom(
            16,
            16,
            None,
            syntax=JPEG_2000_LOSSLESS,
            bits_allocated=8,
            signed=False,
            modality="OT",
            rescale=None,
            window=(128, 256),
            fragments=[image_bytes(grey, "JPEG2000", no_jp2=True, irreversible=False)],
        ),
    )
    # Hostile headers: a 65535×65535 image with 1 byte of pixel data (refused
    # by the pixel limit before decoding), NumberOfFrames far over the limit,
    # and BitsStored larger than BitsAllocated.
    write("dicom_to_sample", "gen_huge_claimed_size.dcm", dicom(65535, 65535, b"\0\0"))
    write("dicom_to_sample", "gen_huge_frame_count.dcm", dicom(n, n, us(stored, EXPLICIT_LE), frames=4000000000))
    write("dicom_to_sample", "gen_bits_stored_over_allocated.dcm", dicom(n, n, us(stored, EXPLICIT_LE), bits_stored=17))


def png_seeds():
    w, h = 8, 6
    px = [(x * 31 + y * 17) & 0xFF for y in range(h) for x in range(w)]
    grey = Image.frombytes("L", (w, h), bytes(px))
    write("png_to_sample", "gen_grey8.png", image_bytes(grey, "PNG"))
    write("png_to_sample", "gen_grey8_interlaced.png", image_bytes(grey, "PNG", interlace=1))
    g16 = Image.frombytes("I;16", (w, h), struct.pack("<%dH" % (w * h), *[v * 257 for v in px]))
    write("png_to_sample", "gen_grey16.png", image_bytes(g16, "PNG"))
    rgb = Image.merge("RGB", [grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey.point(lambda v: 255 - v)])
    write("png_to_sample", "gen_rgb8.png", image_bytes(rgb, "PNG"))
    rgba = rgb.copy()
    rgba.putalpha(grey)
    write("png_to_sample", "gen_rgba8.png", image_bytes(rgba, "PNG"))
    la = Image.merge("LA", [grey, grey.point(lambda v: 255 - v)])
    write("png_to_sample", "gen_grey_alpha8.png", image_bytes(la, "PNG"))
    write("png_to_sample", "gen_palette.png", image_bytes(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG"))
    write("png_to_sample", "gen_1bit.png", image_bytes(grey.convert("1"), "PNG"))
    write("png_to_sample", "gen_grey.jpg", image_bytes(grey, "JPEG", quality=90))
    write("png_to_sample", "gen_rgb.jpg", image_bytes(rgb, "JPEG", quality=90))
    # A valid PNG signature and IHDR claiming 100000×100000 pixels, no data.
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    write(
        "png_to_sample",
        "gen_huge_claimed_size.png",
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""),
    )


def onnx_seeds():
    import onnx
    from onnx import TensorProto, helper

    def tensor(name, dims, seed):
        n = 1
        for d in dims:
            n *= d
        vals = [((i * 2654435761 + seed) % 1000) / 1000.0 - 0.5 for i in range(n)]
        return helper.make_tensor(name, TensorProto.FLOAT, dims, vals)

    def save(name, nodes, inits, in_shape, out_shape, opset=13):
        graph = helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, out_shape)],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="advscan-fuzz")
        model.ir_version = 8
        onnx.checker.check_model(model)
        write("onnx_inspect", name, model.SerializeToString())

    # Conv → Relu → MaxPool → GlobalAveragePool → Flatten → Gemm → Softmax.
    save(
        "gen_tiny_cnn.onnx",
        [
            helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("GlobalAveragePool", ["p1"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        [tensor("w1", [4, 1, 3, 3], 1), tensor("b1", [4], 2), tensor("w2", [2, 4], 3), tensor("b2", [2], 4)],
        [1, 1, 8, 8],
        [1, 2],
    )
    # Residual block with BatchNormalization, Add, Sigmoid, dynamic batch, no softmax.
    save(
        "gen_residual_bn.onnx",
        [
            helper.make_node("Conv", ["input", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], epsilon=1e-5),
            helper.make_node("Add", ["n1", "input"], ["a"]),
            helper.make_node("Sigmoid", ["a"], ["sg"]),
            helper.make_node("ReduceMean", ["sg"], ["rm"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["rm", "w2"], ["probs"]),
        ],
        [
            tensor("w1", [1, 1, 3, 3], 5),
            helper.make_tensor("s", TensorProto.FLOAT, [1], [1.0]),
            helper.make_tensor("bb", TensorProto.FLOAT, [1], [0.1]),
            helper.make_tensor("m", TensorProto.FLOAT, [1], [0.0]),
            helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]),
            tensor("w2", [1, 3], 6),
        ],
        ["N", 1, 6, 6],
        ["N", 3],
    )
    # A 3-D (N, C, L) input through Reshape with a constant shape and an
    # AveragePool, opset 11.
    save(
        "gen_rank3_reshape.onnx",
        [
            helper.make_node("Constant", [], ["shape"], value=helper.make_tensor("sv", TensorProto.INT64, [2], [1, 16])),
            helper.make_node("AveragePool", ["input"], ["ap"], kernel_shape=[2], strides=[2]),
            helper.make_node("Reshape", ["ap", "shape"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w"], ["probs"]),
        ],
        [tensor("w", [16, 2], 7)],
        [1, 2, 16],
        [1, 2],
        opset=11,
    )


def hostile_regressions():
    """Hand-made hostile inputs for tests/fuzz_regressions.rs (fuzz/regressions/<target>/hostile_*):
    every one must be refused with an error, never a panic."""

    def reg(target, name, data):
        d = os.path.join(ROOT, "regressions", target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)

    def seed(target, name):
        with open(os.path.join(ROOT, "seeds", target, name), "rb") as f:
            return f.read()

    garbage = bytes((i * 197 + 13) & 0xFF for i in range(300))
    ct = seed("dicom_to_sample", "gen_ct_explicit_le.dcm")
    reg("dicom_to_sample", "hostile_empty.dcm", b"")
    reg("dicom_to_sample", "hostile_garbage.dcm", garbage)
    reg("dicom_to_sample", "hostile_truncated_in_header.dcm", ct[:200])
    reg("dicom_to_sample", "hostile_truncated_in_pixels.dcm", ct[:-40])
    reg("dicom_to_sample", "hostile_rle_truncated.dcm", seed("dicom_to_sample", "gen_ct_rle.dcm")[:-100])
    n = 8
    reg("dicom_to_sample", "hostile_zero_rows.dcm", dicom(0, n, b""))
    reg("dicom_to_sample", "hostile_three_samples_two_bytes.dcm", dicom(n, n, b"\0\0", samples=3, photometric="RGB"))
    # Tiny files declaring 4 GB elements: dicom-rs would allocate (and zero)
    # the declared length before reading; advscan refuses them first.
    pix = ct.rfind(b"\xe0\x7f\x10\x00OW\0\0")
    reg("dicom_to_sample", "hostile_pixel_data_claims_4gb.dcm", ct[: pix + 8] + struct.pack("<I", 0xFFFFFFF0) + ct[pix + 12 :])
    version = ct.find(b"\x02\x00\x01\x00OB\0\0")
    reg("dicom_to_sample", "hostile_meta_element_claims_4gb.dcm", ct[: version + 8] + struct.pack("<I", 0xFFFFFFF0) + ct[version + 12 :])
    lut = seed("dicom_to_sample", "gen_modality_lut.dcm")
    data = lut.find(b"\x28\x00\x06\x30OW\0\0")
    reg("dicom_to_sample", "hostile_lut_data_in_sequence_claims_4gb.dcm", lut[: data + 8] + struct.pack("<I", 0xFFFFFFF0) + lut[data + 12 :])
    # Known bug (fuzz/README.md): a CT whose file VOI window starts at 0 HU
    # (centre 750, width 1500) with bone up to 3000 HU reaches the model
    # unclipped under the default config (which uses the file's window).
    bone = [(v + 1024) & 0xFFFF for v in ramp(n * n, -1000, 3000)]
    reg("dicom_to_sample", "known_window_starting_at_zero.dcm", dicom(n, n, us(bone, EXPLICIT_LE), window=(750, 1500)))
    rgb = seed("png_to_sample", "gen_rgb8.png")
    reg("png_to_sample", "hostile_empty.png", b"")
    reg("png_to_sample", "hostile_garbage.png", garbage)
    reg("png_to_sample", "hostile_truncated.png", rgb[: len(rgb) // 2])
    reg("png_to_sample", "hostile_signature_only.png", b"\x89PNG\r\n\x1a\n")
    reg("png_to_sample", "hostile_truncated.jpg", seed("png_to_sample", "gen_rgb.jpg")[:200])
    ihdr = struct.pack(">IIBBBBB", 0, 7, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    reg("png_to_sample", "hostile_zero_width.png", b"\x89PNG\r\n\x1a\n" + chunk)
    cnn = seed("onnx_inspect", "gen_tiny_cnn.onnx")
    reg("onnx_inspect", "hostile_empty.onnx", b"")
    reg("onnx_inspect", "hostile_garbage.onnx", garbage)
    reg("onnx_inspect", "hostile_truncated.onnx", cnn[: len(cnn) // 2])


if __name__ == "__main__":
    dicom_seeds()
    png_seeds()
    onnx_seeds()
    hostile_regressions()
