#!/usr/bin/env python3
"""Write PyTorch-autograd reference gradients for every models/*.onnx.

For each model M this writes fixtures/grad_ref/<M stem>.json with, for 4 synthetic inputs
(seeded numpy RNG, never dataset images):
  logits z (shape [1, C]) and, w.r.t. the input x ([1, 1, n, n], n the model input size):
    loss_ce          = logsumexp(z) - z[label]               grad_ce
    loss_margin      = max_{j != label} z_j - z[label]       grad_margin
    loss_ce_targeted = -(logsumexp(z) - z[target])           grad_ce_targeted

Reference = onnx2torch conversion of the ONNX graph, cast to float64, eval mode, torch autograd.
If the graph's final node is Softmax / LogSoftmax it is removed first (the graph output becomes
its input, i.e. the logits) and `softmax_stripped` is true.

If onnx2torch cannot convert a graph as is, the script does not silently switch: it first tries
onnx.version_converter to a lower opset and, if that has no adapter, applies an explicit,
checked opset-18 -> 17 rewrite of exactly the ops whose schema changed at 18 (see
`downgrade_18_to_17`). Whatever was done is recorded in the fixture's `conversion` object,
together with an onnxruntime check that the rewritten copy computes the same as the original.

Inputs are generated as float32 and upcast to float64, so a float32 engine sees exactly the same
values; they are stored with full precision (json writes repr of the float64 value).

Usage (from the repository root):
  python models/make_grad_reference.py   (packages: models/requirements.txt)
"""

from __future__ import annotations

import copy
import glob
import hashlib
import importlib.metadata
import json
import os

import numpy as np
import onnx
import onnx2torch
import onnxruntime as ort
import torch
from onnx import defs, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT_DIR = os.path.join(REPO, "fixtures", "grad_ref")
GENERATOR = "models/make_grad_reference.py"


# --------------------------------------------------------------------------------------
# Synthetic inputs (float32 values in [0,1], then upcast)
# --------------------------------------------------------------------------------------


# Inputs are n×n with n the model's input size; at n = 28 every value equals what the first
# version of this script (28×28 only) generated, so the existing fixtures stay valid.
def blobs(seed: int, n: int = 28) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = n / 28
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    img = np.full((n, n), 0.15)
    for _ in range(int(rng.integers(3, 6))):
        cy, cx = rng.uniform(4 * s, 24 * s, size=2)
        sigma = rng.uniform(2.5 * s, 7.0 * s)
        amp = rng.uniform(0.25, 0.7)
        img += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    img += rng.normal(0.0, 0.03, size=img.shape)
    # affine rescale to [0.05, 0.95] instead of clipping: clipping makes flat plateaus, which give
    # exact ties in max-pool windows (gradient routing then depends on the engine's tie-breaking)
    img = 0.05 + 0.9 * (img - img.min()) / (img.max() - img.min())
    return img.astype(np.float32)


def uniform(seed: int, n: int = 28) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, n), dtype=np.float32)


def checker_gradient(n: int = 28) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    checker = ((yy // 4 + xx // 4) % 2).astype(np.float32)
    ramp = ((yy + 2 * xx) / float(3 * (n - 1))).astype(np.float32)
    return np.clip(np.float32(0.3) * checker + np.float32(0.6) * ramp + np.float32(0.05), 0.0, 1.0).astype(np.float32)


# Seeds / pattern constants were picked (from a handful tried) so that, for all three committed models,
# every ReLU/Clip input is >= 1e-5 from its kink and every max-pool window has a top-1/top-2 gap
# >= 1e-5 (recorded per case as `nonsmooth_margin`): a float32 engine then follows the same branches
# as the float64 reference. If the models change, re-check those margins.
CASES = [
    # name, generator, label, target
    ("blobs_seed44", lambda n: blobs(44, n), 1, 0),
    ("uniform_seed66", lambda n: uniform(66, n), 0, 1),
    ("blobs_seed55", lambda n: blobs(55, n), 0, 1),
    ("checker_gradient", checker_gradient, 1, 0),
]
MIN_MARGIN_WARN = 1e-5


# --------------------------------------------------------------------------------------
# Graph preparation
# --------------------------------------------------------------------------------------


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def default_opset(m: onnx.ModelProto) -> int:
    return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))


def strip_final_softmax(m: onnx.ModelProto) -> tuple[onnx.ModelProto, bool, str | None]:
    """If the (single) graph output is produced by a final Softmax/LogSoftmax, drop that node."""
    assert len(m.graph.output) == 1, "expected one graph output"
    out = m.graph.output[0]
    last = m.graph.node[-1]
    if last.op_type not in ("Softmax", "LogSoftmax") or list(last.output) != [out.name]:
        return m, False, None
    m = copy.deepcopy(m)
    logits_name = last.input[0]
    consumers = [n for n in m.graph.node[:-1] if logits_name in n.input]
    assert not consumers, "softmax input is used elsewhere"
    new_out = helper.make_tensor_value_info(logits_name, out.type.tensor_type.elem_type, None)
    new_out.type.CopyFrom(out.type)
    del m.graph.node[-1]
    vi = [v for v in m.graph.value_info if v.name != logits_name]
    del m.graph.value_info[:]
    m.graph.value_info.extend(vi)
    del m.graph.output[:]
    m.graph.output.append(new_out)
    onnx.checker.check_model(m, full_check=True)
    return m, True, last.op_type


REDUCE_WITH_AXES_ATTR_AT_17 = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


def downgrade_18_to_17(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Checked, semantics-preserving rewrite of an opset-18 graph to opset 17.

    Only ops whose schema changed at 18 are touched; any such op not handled here is an error.
      Pad-18 (optional `axes` input added)            -> Pad-13  (requires `axes` absent)
      Resize-18 (antialias/axes/keep_aspect_ratio...) -> Resize-13 (requires those at defaults)
      Reduce*-18 (axes as an input)                   -> Reduce*-13 (axes attribute; constant axes required)
    """
    m = copy.deepcopy(model)
    assert default_opset(m) == 18
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    notes = []
    for n in m.graph.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        v18 = defs.get_schema(n.op_type, 18, "").since_version
        v17 = defs.get_schema(n.op_type, 17, "").since_version
        if v18 == v17:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        if n.op_type == "Pad":
            assert len(n.input) <= 3 or all(i == "" for i in n.input[3:]), "Pad with axes input"
            del n.input[3:]
            notes.append(f"{n.name}: Pad-18 -> Pad-{v17} (no axes input; identical semantics)")
        elif n.op_type == "Resize":
            assert attrs.get("antialias", 0) == 0, "Resize antialias"
            assert "axes" not in attrs, "Resize axes"
            assert attrs.get("keep_aspect_ratio_policy", "stretch") == "stretch", "Resize policy"
            for a in [a for a in n.attribute if a.name in ("antialias", "keep_aspect_ratio_policy")]:
                n.attribute.remove(a)
            notes.append(f"{n.name}: Resize-18 -> Resize-{v17} (mode={attrs.get('mode')!r}, "
                         f"coordinate_transformation_mode={attrs.get('coordinate_transformation_mode')!r}; "
                         f"antialias/axes/keep_aspect_ratio_policy at defaults; identical semantics)")
        elif n.op_type in REDUCE_WITH_AXES_ATTR_AT_17:
            assert attrs.get("noop_with_empty_axes", 0) == 0
            if len(n.input) > 1 and n.input[1] != "":
                assert n.input[1] in consts, f"{n.name}: axes not constant"
                axes = [int(a) for a in np.asarray(consts[n.input[1]]).reshape(-1)]
                assert axes, "empty axes"
                del n.input[1:]
                n.attribute.append(helper.make_attribute("axes", axes))
            notes.append(f"{n.name}: {n.op_type}-18 -> {n.op_type}-{v17} (axes input {axes} -> axes attribute)")
        else:
            raise NotImplementedError(f"no opset 18->17 rewrite for {n.op_type}")
    # drop Constant nodes that are no longer used (e.g. the former axes inputs)
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    keep = [n for n in m.graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    removed = len(m.graph.node) - len(keep)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    if removed:
        notes.append(f"removed {removed} now-unused Constant node(s)")
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 17
    del m.graph.value_info[:]
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m, full_check=True)
    return m, notes


def ort_session(m: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_run(sess: ort.InferenceSession, x32: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x32})[0]


SHAPE_NOTE = ("before onnx2torch.convert, value_info is filled by onnx.shape_inference.infer_shapes(data_prop=True) "
              "(nodes unchanged): onnx2torch's LayerNormalization converter takes normalized_shape from static "
              "value_info, which plain shape inference leaves unknown after a Shape->...->Reshape subgraph")


def with_static_shapes(m: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)


def convert_with_onnx2torch(m: onnx.ModelProto, probe: np.ndarray) -> tuple[torch.nn.Module, dict]:
    """Convert; on failure try onnx.version_converter, then the explicit 18->17 rewrite."""
    conv = {"input_opset": default_opset(m), "attempts": [], "shape_inference": SHAPE_NOTE}
    try:
        tm = onnx2torch.convert(with_static_shapes(m))
        conv.update(converted_opset=default_opset(m), method="onnx2torch.convert on the graph as is")
        return tm, conv
    except NotImplementedError as e:
        conv["attempts"].append(f"onnx2torch.convert at opset {default_opset(m)}: NotImplementedError: {e}")
    candidate = None
    try:
        candidate = onnx.version_converter.convert_version(m, 17)
        onnx.checker.check_model(candidate, full_check=True)
        conv["method"] = "onnx.version_converter.convert_version(model, 17), then onnx2torch.convert"
        conv["rewrites"] = []
    except Exception as e:  # noqa: BLE001 - record and fall back to the explicit rewrite
        msg = str(e).strip().splitlines()[-1]
        conv["attempts"].append(f"onnx.version_converter.convert_version(model, 17): {type(e).__name__}: {msg}")
        candidate = None
    if candidate is None:
        candidate, notes = downgrade_18_to_17(m)
        conv["method"] = ("explicit opset 18->17 rewrite of a copy of the graph (models/make_grad_reference.py: "
                          "downgrade_18_to_17), then onnx2torch.convert")
        conv["rewrites"] = notes
    # the rewritten copy must compute exactly what the original computes (onnxruntime, float32)
    a = ort_run(ort_session(m), probe)
    b = ort_run(ort_session(candidate), probe)
    conv["ort_original_vs_rewritten_max_abs_diff"] = float(np.abs(a - b).max())
    assert conv["ort_original_vs_rewritten_max_abs_diff"] <= 1e-6, conv
    tm = onnx2torch.convert(with_static_shapes(candidate))
    conv["converted_opset"] = default_opset(candidate)
    return tm, conv


# --------------------------------------------------------------------------------------
# Losses / gradients
# --------------------------------------------------------------------------------------


def losses(z: torch.Tensor, label: int, target: int) -> dict:
    z = z.reshape(-1)
    lse = torch.logsumexp(z, dim=0)
    others = torch.cat([z[:label], z[label + 1:]])
    return {
        "ce": lse - z[label],
        "margin": others.max() - z[label],
        "ce_targeted": -(lse - z[target]),
    }


def directional_fd_check(tm, x64: np.ndarray, grads: dict, label: int, target: int, seed: int) -> float:
    """Relative error of grad·v vs a central finite difference along 2 random unit directions."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    eps = 1e-6
    for _ in range(2):
        v = rng.normal(size=x64.shape)
        v /= np.linalg.norm(v)
        with torch.no_grad():
            lp = losses(tm(torch.from_numpy(x64 + eps * v)), label, target)
            lm = losses(tm(torch.from_numpy(x64 - eps * v)), label, target)
        for k in lp:
            fd = (float(lp[k]) - float(lm[k])) / (2 * eps)
            an = float(np.dot(grads[k].reshape(-1), v.reshape(-1)))
            worst = max(worst, abs(fd - an) / max(1e-3, abs(an)))
    return worst


# Non-smooth points of the element-wise ops / max-pooling as converted by onnx2torch.
KINKS = {"ReLU": (0.0,), "ReLU6": (0.0, 6.0), "LeakyReLU": (0.0,), "Hardswish": (-3.0, 3.0)}


def nonsmooth_margin(tm, x64: np.ndarray) -> dict:
    """Smallest distance of any activation input to a kink, and smallest top-1/top-2 gap in any
    max-pool window, for this input. Large margins mean a float32 engine takes the same branch
    everywhere, so its gradient should match the float64 reference (up to rounding)."""
    found = {"min_kink_distance": None, "kink_op": None, "min_maxpool_gap": None}
    hooks = []

    def upd(key, val, op=None):
        if found[key] is None or val < found[key]:
            found[key] = val
            if op is not None:
                found["kink_op"] = op

    for name, mod in tm.named_modules():
        kind = type(mod).__name__
        if kind in KINKS:
            def hook(m, inp, out, name=name, ks=KINKS[kind]):
                t = inp[0].detach()
                upd("min_kink_distance", min(float((t - k).abs().min()) for k in ks), name)
            hooks.append(mod.register_forward_hook(hook))
        elif isinstance(mod, torch.nn.MaxPool2d):
            def pair(v):
                return tuple(v) if isinstance(v, (list, tuple)) else (v, v)

            assert pair(mod.padding) == (0, 0) and pair(mod.dilation) == (1, 1), "pad/dilated MaxPool"
            assert len(set(pair(mod.kernel_size))) == 1 and len(set(pair(mod.stride))) == 1, "non-square MaxPool"
            k, st = pair(mod.kernel_size)[0], pair(mod.stride)[0]

            def hook(m, inp, out, k=k, st=st):
                t = inp[0].detach()
                w = t.unfold(2, k, st).unfold(3, k, st).reshape(*t.shape[:2], -1, k * k)
                top = torch.topk(w, 2, dim=-1).values
                gap = top[..., 0] - top[..., 1]
                # windows whose two largest values are both exactly 0 are ReLU-clamped zeros:
                # their gradient is 0 whichever element is chosen (the ReLU margin covers them)
                gap = gap[~((top[..., 0] == 0) & (top[..., 1] == 0))]
                if gap.numel():
                    upd("min_maxpool_gap", float(gap.min()))
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        tm(torch.from_numpy(x64))
    for h in hooks:
        h.remove()
    return found


def flat(a) -> list:
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def process(path: str) -> dict:
    rel = os.path.relpath(path, REPO)
    original = onnx.load(path)
    onnx.checker.check_model(original, full_check=True)
    stripped, was_stripped, stripped_op = strip_final_softmax(original)
    dims = original.graph.input[0].type.tensor_type.shape.dim
    n = dims[-1].dim_value
    assert n > 0 and dims[-2].dim_value == n, "square image inputs only"
    probe = np.stack([c[1](n) for c in CASES])[:, None, :, :].astype(np.float32)
    tm, conv = convert_with_onnx2torch(stripped, probe)
    tm = tm.double().eval()
    sess_full = ort_session(original)
    sess_logits = ort_session(stripped)

    cases = []
    max_ort_diff = 0.0
    worst_fd = 0.0
    for ci, (name, gen, label, target) in enumerate(CASES):
        x32 = gen(n).reshape(1, 1, n, n)
        assert x32.dtype == np.float32 and x32.min() >= 0.0 and x32.max() <= 1.0
        x64 = x32.astype(np.float64)
        x = torch.from_numpy(x64.copy()).requires_grad_(True)
        z = tm(x)
        assert z.dtype == torch.float64 and z.shape[0] == 1
        ls = losses(z, label, target)
        grads = {}
        for k, loss in ls.items():
            (g,) = torch.autograd.grad(loss, x, retain_graph=True)
            grads[k] = g.detach().numpy()
        z_np = z.detach().numpy()
        ort_logits = ort_run(sess_logits, x32)
        d = float(np.abs(ort_logits.astype(np.float64) - z_np).max())
        max_ort_diff = max(max_ort_diff, d)
        fd = directional_fd_check(tm, x64, grads, label, target, seed=1000 + ci)
        worst_fd = max(worst_fd, fd)
        case = {
            "name": name,
            "input_shape": [1, 1, n, n],
            "input": flat(x64),
            "label": label,
            "target": target,
            "logits": flat(z_np),
            "loss_ce": ls["ce"].item(),
            "loss_margin": ls["margin"].item(),
            "loss_ce_targeted": ls["ce_targeted"].item(),
            "grad_ce": flat(grads["ce"]),
            "grad_margin": flat(grads["margin"]),
            "grad_ce_targeted": flat(grads["ce_targeted"]),
            "nonsmooth_margin": nonsmooth_margin(tm, x64),
            "ort_float32_logits": flat(ort_logits),
            "ort_float32_model_output": flat(ort_run(sess_full, x32)),
        }
        # exactness of the stored input: float64 values are exactly float32 values
        assert np.array_equal(np.asarray(case["input"], dtype=np.float32).astype(np.float64), np.asarray(case["input"]))
        cases.append(case)
        print(f"  {name}: label {label} target {target} logits {flat(z_np)} "
              f"|ORT-f64| {d:.1e} fd-rel {fd:.1e} nonsmooth {case['nonsmooth_margin']}")
    for c in cases:
        mm = [v for v in (c["nonsmooth_margin"]["min_kink_distance"], c["nonsmooth_margin"]["min_maxpool_gap"])
              if v is not None]
        if mm and min(mm) < MIN_MARGIN_WARN:
            print(f"  WARNING: {c['name']}: an activation is within {min(mm):.1e} of a non-smooth point; "
                  "float32 engines may take the other branch there")
    assert max_ort_diff < 1e-4, max_ort_diff
    assert worst_fd < 1e-4, worst_fd

    return {
        "model": rel,
        "model_sha256": sha256(path),
        "model_opset": default_opset(original),
        "model_output_name": original.graph.output[0].name,
        "reference": "onnx2torch float64 autograd",
        "torch_version": torch.__version__,
        "onnx2torch_version": importlib.metadata.version("onnx2torch"),
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
        "softmax_stripped": was_stripped,
        "stripped_node": stripped_op,
        "logits_name": stripped.graph.output[0].name,
        "conversion": conv,
        "checks": {
            "max_abs_diff_logits_onnx2torch_f64_vs_onnxruntime_f32": max_ort_diff,
            "max_rel_err_directional_finite_difference": worst_fd,
        },
        "losses": {
            "loss_ce": "logsumexp(z) - z[label]",
            "loss_margin": "max_{j != label} z[j] - z[label]",
            "loss_ce_targeted": "-(logsumexp(z) - z[target])",
            "grads": "d loss / d input, same layout as input (row-major [1, 1, H, W] as input_shape)",
            "nonsmooth_margin": ("per case: min distance of any ReLU/ReLU6(Clip)/LeakyReLU/HardSwish input to "
                                 "its kink, and min top-1/top-2 gap in any MaxPool window (null if none)"),
            "ort_float32_logits": "onnxruntime float32 logits (graph with the final softmax stripped, if any)",
            "ort_float32_model_output": "onnxruntime float32 output of the unmodified model file",
        },
        "generator": GENERATOR,
        "cases": cases,
    }


def main() -> None:
    torch.set_num_threads(2)
    os.makedirs(OUT_DIR, exist_ok=True)
    # `python make_grad_reference.py [stem ...]` regenerates only those models.
    import sys
    wanted = set(sys.argv[1:])
    paths = [p for p in sorted(glob.glob(os.path.join(HERE, "*.onnx")))
             if not wanted or os.path.splitext(os.path.basename(p))[0] in wanted]
    assert paths, "no models/*.onnx"
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        print(f"== {stem} ==", flush=True)
        fx = process(path)
        out = os.path.join(OUT_DIR, stem + ".json")
        with open(out, "w", encoding="utf-8") as f:
            json.dump(fx, f, indent=1)
            f.write("\n")
        print(f"  wrote {os.path.relpath(out, REPO)} ({os.path.getsize(out):,} bytes); "
              f"conversion: {fx['conversion']['method']}")


if __name__ == "__main__":
    main()
