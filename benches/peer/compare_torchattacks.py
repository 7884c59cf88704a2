#!/usr/bin/env python3
"""Peer check of `advscan attack` against torchattacks (issue 3, "Correctness against the peers").

For each committed model (models/*.onnx, or --models) on the PneumoniaMNIST test split:
  clean accuracy, and FGSM and PGD (L-inf, no random start, 10 steps, step eps/4) robust accuracy
  at eps in {1,2,4,8}/255, computed
    - by torchattacks 3.5 on the same ONNX graph converted to PyTorch with onnx2torch
      (float32, eval mode, final Softmax stripped so the model outputs logits; conversion code is
      imported from models/make_grad_reference.py), and
    - by the advscan binary (`advscan attack ... --out DIR`, read back from DIR/results.json),
  and the two must agree within --tolerance percentage points (default 0.5).

Robust accuracy = share of samples predicted correctly on the clean image AND under attack (clean
mistakes count as not robust), as in advscan's results.json. Also reported per row: the number of
samples whose correct/incorrect status differs between the two tools (from results.json `samples`).

Writes the tables to benches/peer/latest.md (or --md) and stdout; exits 1 if any row fails.

Usage (from the repository root):
  cargo build --release
  python benches/peer/compare_torchattacks.py [--threads 2] [--models models/a.onnx ...]
Prerequisites: pip install -r models/requirements.txt torchattacks==3.5.1 pillow
"""

from __future__ import annotations

import argparse
import csv
import glob
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import torch
import torchattacks
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "models"))
import make_grad_reference as mgr  # noqa: E402  (strip_final_softmax, convert_with_onnx2torch, ort_*)

EPS = [("1/255", 1 / 255), ("2/255", 2 / 255), ("4/255", 4 / 255), ("8/255", 8 / 255)]
ATTACKS = ["fgsm", "pgd"]
STEPS = 10


# --------------------------------------------------------------------------------------------
# Data and model
# --------------------------------------------------------------------------------------------


def load_dataset(data_dir: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """labels.csv (`file,label,label_name`) + PNGs -> ids, x [N,1,H,W] float32, y [N] int64."""
    ids, xs, ys = [], [], []
    with open(os.path.join(data_dir, "labels.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            with Image.open(os.path.join(data_dir, row["file"])) as im:
                a = np.asarray(im)
            if a.dtype == np.uint8:
                assert im.mode == "L", (row["file"], im.mode)
                x = a.astype(np.float32) / np.float32(255.0)
            elif a.dtype in (np.uint16, np.dtype(">u2"), np.int32) and im.mode.startswith("I"):
                x = a.astype(np.float32) / np.float32(65535.0)
            else:
                raise ValueError(f"{row['file']}: unsupported PNG ({im.mode}, {a.dtype})")
            assert x.ndim == 2, (row["file"], x.shape)
            ids.append(row["file"])
            xs.append(x)
            ys.append(int(row["label"]))
    return ids, np.stack(xs)[:, None], np.asarray(ys, dtype=np.int64)


def load_torch_model(path: str, x: np.ndarray) -> tuple[torch.nn.Module, dict]:
    """onnx2torch conversion exactly as models/make_grad_reference.py does it, but float32."""
    original = onnx.load(path)
    onnx.checker.check_model(original, full_check=True)
    stripped, was_stripped, _ = mgr.strip_final_softmax(original)
    probe = x[:4].astype(np.float32)
    tm, conv = mgr.convert_with_onnx2torch(stripped, probe)
    tm = tm.float().eval()
    for p in tm.parameters():
        p.requires_grad_(False)
    # the converted model must compute what onnxruntime computes on the real data (float32)
    sess = mgr.ort_session(stripped)
    ort_logits = np.concatenate([mgr.ort_run(sess, x[i:i + 128]) for i in range(0, len(x), 128)])
    with torch.no_grad():
        t_logits = tm(torch.from_numpy(x)).numpy()
    info = {
        "softmax_stripped": was_stripped,
        "conversion": conv["method"],
        "max_abs_diff_vs_ort": float(np.abs(t_logits - ort_logits).max()),
        "argmax_disagreements_vs_ort": int((t_logits.argmax(1) != ort_logits.argmax(1)).sum()),
    }
    return tm, info


# --------------------------------------------------------------------------------------------
# torchattacks side
# --------------------------------------------------------------------------------------------


def predict(tm: torch.nn.Module, x: torch.Tensor, bs: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([tm(x[i:i + bs]).argmax(1) for i in range(0, len(x), bs)])


def run_attack(atk, x: torch.Tensor, y: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([atk(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)])


def torchattacks_side(tm, x_np, y_np, bs: int) -> dict:
    x = torch.from_numpy(x_np)
    y = torch.from_numpy(y_np)
    clean_pred = predict(tm, x, bs)
    clean_ok = clean_pred == y
    out = {"clean": int(clean_ok.sum()) / len(y), "clean_ok": clean_ok.numpy(), "runs": {}}
    for attack in ATTACKS:
        for label, eps in EPS:
            if attack == "fgsm":
                atk = torchattacks.FGSM(tm, eps=eps)
            else:
                atk = torchattacks.PGD(tm, eps=eps, alpha=eps / 4, steps=STEPS, random_start=False)
            t0 = time.perf_counter()
            adv = run_attack(atk, x, y, bs)
            secs = time.perf_counter() - t0
            linf = float((adv - x).abs().max())
            assert linf <= eps + 1e-6 and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
            ok = clean_ok & (predict(tm, adv, bs) == y)
            out["runs"][(attack, label)] = {"robust": int(ok.sum()) / len(y), "ok": ok.numpy(), "seconds": secs}
    return out


# --------------------------------------------------------------------------------------------
# advscan side
# --------------------------------------------------------------------------------------------


def advscan_side(binary: str, model: str, data_dir: str, threads: int, out_dir: str) -> dict:
    cmd = [binary, "attack", "--model", model, "--data", os.path.join(data_dir, "labels.csv"),
           "--attack", ",".join(ATTACKS), "--eps", ",".join(l for l, _ in EPS), "--steps", str(STEPS),
           "--step-size", "eps/4", "--no-random-start", "--threads", str(threads), "--quiet", "--out", out_dir]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"advscan failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    with open(os.path.join(out_dir, "results.json"), encoding="utf-8") as f:
        res = json.load(f)
    runs = {}
    for r in res["runs"]:
        if r["attack"] in ATTACKS and r["eps_label"] in dict(EPS):
            runs[(r["attack"], r["eps_label"])] = r
    # per-sample correct-under-attack flags keyed by file name (for the disagreement count)
    per_sample = {}
    for s in res["samples"]:
        key = os.path.basename(s["id"])
        flags = {"clean": s["label"] is not None and s["clean_pred"] == s["label"]}
        for o in s["outcomes"]:
            flags[(o["attack"], o["eps_label"])] = flags["clean"] and o["pred"] == s["label"]
        per_sample[key] = flags
    return {"clean": res["clean"]["accuracy"], "runs": runs, "samples": per_sample, "wall": wall,
            "cmd": cmd, "n": res["data"]["samples"], "skipped": len(res["data"]["skipped"]),
            "checks": [c for c in res.get("checks", []) if c["status"] != "pass"]}


# --------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------


def compare(model_rel: str, info: dict, ids, ta: dict, av: dict, tol: float, n: int) -> tuple[list[str], bool]:
    lines = [f"### `{model_rel}`", "",
             f"{n} images; onnx2torch: {info['conversion']}; softmax stripped: {info['softmax_stripped']}; "
             f"max |logit| diff onnx2torch vs onnxruntime on the test set {info['max_abs_diff_vs_ort']:.1e} "
             f"({info['argmax_disagreements_vs_ort']} argmax disagreements).", "",
             "| attack | ε | torchattacks % | advscan % | Δ pp | samples differing | result "
             "| torchattacks img/s | advscan img/s |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    all_ok = True

    def differing(key):
        d = 0
        for i, sid in enumerate(ids):
            a = av["samples"].get(sid)
            if a is None or key not in a:
                return "n/a"
            d += int(bool(ta_flags(key)[i]) != a[key])
        return str(d)

    def ta_flags(key):
        return ta["clean_ok"] if key == "clean" else ta["runs"][key]["ok"]

    def row(attack, eps, t, a, key, tps="", aps=""):
        nonlocal all_ok
        if a is None:
            all_ok = False
            lines.append(f"| {attack} | {eps} | {100 * t:.2f} | missing | – | – | FAIL | {tps} | {aps} |")
            return
        d = round(100 * (a - t), 9) + 0.0  # counts/n on both sides; no "-0.00"
        ok = abs(d) <= tol + 1e-9
        all_ok &= ok
        lines.append(f"| {attack} | {eps} | {100 * t:.2f} | {100 * a:.2f} | {d:+.2f} | {differing(key)} | "
                     f"{'PASS' if ok else 'FAIL'} | {tps} | {aps} |")

    row("clean", "0", ta["clean"], av["clean"], "clean")
    for attack in ATTACKS:
        for label, _ in EPS:
            key = (attack, label)
            t = ta["runs"][key]
            a = av["runs"].get(key)
            tps = aps = ""
            if attack == "pgd":
                tps = f"{n / t['seconds']:.0f}"
                if a is not None and a.get("seconds"):
                    aps = f"{n / a['seconds']:.0f}"
            row(attack, label, t["robust"], a["robust_accuracy"] if a else None, key, tps, aps)
    if av["checks"]:
        lines += ["", "advscan trust checks not passing: " +
                  "; ".join(f"{c['name']} {c['status']}: {c['detail']}" for c in av["checks"])]
    return lines, all_ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="ONNX files (default: models/*.onnx)")
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "pneumoniamnist", "test"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64, help="torchattacks batch size")
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "advscan"))
    ap.add_argument("--tolerance", type=float, default=0.5, help="percentage points")
    ap.add_argument("--md", default=os.path.join(HERE, "latest.md"))
    ap.add_argument("--keep", help="keep advscan output folders under this directory")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = args.models or sorted(glob.glob(os.path.join(REPO, "models", "*.onnx")))
    data_dir = os.path.normpath(args.data)
    ids, x, y = load_dataset(data_dir)
    n = len(ids)
    print(f"{n} images from {data_dir}", file=sys.stderr)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    ver = subprocess.run([args.binary, "--version"], capture_output=True, text=True).stdout.strip()
    md = ["# advscan vs torchattacks", "",
          f"Generated by `benches/peer/compare_torchattacks.py --threads {args.threads}` on "
          f"`{os.path.relpath(data_dir, REPO)}`; {ver}; torch {torch.__version__}, "
          f"torchattacks {torchattacks.__version__}, onnx2torch {importlib.metadata.version('onnx2torch')}; "
          f"{args.threads} threads on both sides ({cpu}).", "",
          "Robust accuracy: correct on the clean image and under attack. FGSM and PGD are L∞, PGD with "
          f"{STEPS} steps of ε/4 and no random start. Pass: |Δ| ≤ {args.tolerance} pp. "
          "\"samples differing\": images whose correct/incorrect status differs between the tools. "
          "img/s: PGD-10 wall time (torchattacks: batches of "
          f"{args.batch_size}; advscan: `runs[].seconds`); indicative only, measured while other jobs shared the machine.", ""]
    all_ok = True
    for m in models:
        rel = os.path.relpath(os.path.abspath(m), REPO)
        print(f"== {rel}", file=sys.stderr, flush=True)
        tm, info = load_torch_model(m, x)
        ta = torchattacks_side(tm, x, y, args.batch_size)
        if args.keep:
            out = os.path.join(args.keep, os.path.splitext(os.path.basename(m))[0])
            os.makedirs(out, exist_ok=True)
            av = advscan_side(args.binary, m, data_dir, args.threads, out)
        else:
            with tempfile.TemporaryDirectory(prefix="advscan-peer-") as out:
                av = advscan_side(args.binary, m, data_dir, args.threads, out)
        if av["n"] != n or av["skipped"]:
            print(f"WARNING: advscan evaluated {av['n']} samples ({av['skipped']} skipped), torch {n}",
                  file=sys.stderr)
            all_ok = False
        lines, ok = compare(rel, info, ids, ta, av, args.tolerance, n)
        all_ok &= ok
        md += lines + [""]
        print("\n".join(lines) + "\n", flush=True)
    md.append(f"Overall: {'PASS' if all_ok else 'FAIL'}")
    with open(args.md, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    print(f"Overall: {'PASS' if all_ok else 'FAIL'} (written to {os.path.relpath(args.md, REPO)})")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
