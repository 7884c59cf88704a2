#!/usr/bin/env python3
"""Side-by-side speed of `advscan attack --attack pgd` and torchattacks' PGD (issue 6).

One command (from the repository root, after `cargo build --release`):

    python3 benches/peer/speed.py [--threads 2] [--reps 3] [--label after]

with the packages of models/requirements.txt plus torchattacks==3.5.1 and pillow installed.

For every committed model (models/*.onnx) and a ResNet-18-shaped 224×224×3 classifier generated
here (random weights, BatchNorm statistics calibrated on the benchmark images so activations stay
in a sane range; written to target/bench-models/resnet18_224.onnx, never committed):

- the same images on both sides (see WORKLOADS: PneumoniaMNIST test PNGs; synthetic CT slices
  written by the project's own generator; 224×224 RGB PNGs upsampled from PneumoniaMNIST);
- the same attack: L∞ PGD, 10 steps of ε/4, ε = 8/255, no random start, cross-entropy;
- advscan: `advscan --threads T attack ... --attack pgd --steps 10 --no-random-start --quiet`;
  torchattacks: `PGD(model, eps, alpha=eps/4, steps=10, random_start=False)` on the onnx2torch
  conversion of the same ONNX file, `torch.set_num_threads(T)`, in its own process. Where advscan's
  model config resizes or normalises (ct_nodule_cnn), the torch model is wrapped with the same
  differentiable steps (F.interpolate bilinear, align_corners=False; (u - mean) / std), so both
  tools attack the same variable (the 128×128 scan) — the script checks that clean and robust
  accuracy agree between the tools, which they only do if the attacks are the same;
- a pilot picks each tool's best batch size (advscan --batch-size 1 / 2 / 4 / 16; torchattacks 16 / 64 /
  128, capped at the number of images), then A/B/A/B… runs alternate (advscan T, torchattacks T,
  advscan T=1 for the scaling figure), `--reps` of each, and medians are reported;
- images/s = images / attack seconds (advscan: results.json `runs[].seconds` of the PGD run, which
  covers the attack and the evaluation of the adversarial images; torchattacks: the same loop,
  attack then prediction, timed inside the process, one pass, no warm-up), and also images /
  whole-process wall time (process start to exit: loading, conversion, reports included);
- peak resident memory of a 1,000-image and a 100-image run for every committed model, as GNU
  time's %M (the maximum RSS of the process it forks). Not os.wait4 of our own child: Linux
  carries the RSS of the forked copy of this script into the child's ru_maxrss across exec, so
  every figure below this script's own size (≥ 30 MiB with numpy and Pillow, ~900 MiB after
  importing torch) would read as that size. For the same reason the ResNet-18 export, which
  imports torch, runs in a child process.

Writes a markdown report to benches/peer/speed.md (or --md) and the raw figures beside it as JSON.
Python is used only here (not in .ci/run). Prerequisites: the venv of compare_torchattacks.py
plus torchvision (for the ResNet-18 architecture), and GNU time at /usr/bin/time (Debian: time).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "pneumoniamnist"))
SCRATCH = "/tmp/advscan-speed"
RESNET18 = os.path.join(REPO, "target", "bench-models", "resnet18_224.onnx")
EPS_LABEL, EPS = "8/255", 8 / 255
STEPS = 10
CT_SEED = 900_000  # far from train_ct_model.py's seed ranges: slices it never saw
TORCH_BATCHES = [16, 64, 128]
ADVSCAN_BATCHES = [1, 2, 4, 16]  # small batches share each weight read between images (ResNet-18: +15% at 2)


# --------------------------------------------------------------------------------------------
# Data preparation (scratch under /tmp, nothing written into the repository but the reports)
# --------------------------------------------------------------------------------------------


def write_csv(path: str, rows: list[tuple[str, int]]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows(rows)
    return path


def head_csv(path: str, n: int) -> str:
    """The first n rows of a `file,label` CSV, as a new CSV beside it."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(r["file"], int(r["label"])) for r in csv.DictReader(f)][:n]
    return write_csv(os.path.splitext(path)[0] + f"_first{n}.csv",
                     [(os.path.join(os.path.dirname(path), p), l) for p, l in rows])


def xray_rows(split: str) -> list[tuple[str, int]]:
    d = os.path.join(DATA, split)
    with open(os.path.join(d, "labels.csv"), newline="", encoding="utf-8") as f:
        return [(os.path.join(d, r["file"]), int(r["label"])) for r in csv.DictReader(f)]


def prepare_xray() -> dict:
    os.makedirs(SCRATCH, exist_ok=True)
    test, val = xray_rows("test"), xray_rows("val")
    both = test + val
    assert len(both) >= 1000, f"need 1000 PneumoniaMNIST images, have {len(both)}"
    return {"bench": write_csv(f"{SCRATCH}/xray_test.csv", test),
            "n1000": write_csv(f"{SCRATCH}/xray_1000.csv", both[:1000]),
            "n100": write_csv(f"{SCRATCH}/xray_100.csv", both[:100])}


def prepare_ct(generator: str | None, count: int = 1000) -> dict:
    """Synthetic 128×128 CT slices from the project's generator (examples/make_ct_training_set.rs),
    exported as 16-bit lung-window PNGs exactly as synthetic::lung_window(hu, 65535) does."""
    import numpy as np
    from PIL import Image

    d = f"{SCRATCH}/ct"
    done = f"{d}/.done{count}"
    if not os.path.exists(done):
        raw = f"{SCRATCH}/ct_raw"
        cmd = [generator] if generator else ["cargo", "run", "--quiet", "--release", "--example",
                                             "make_ct_training_set", "--"]
        subprocess.run(cmd + [raw, str(count), str(CT_SEED)], cwd=REPO, check=True)
        hu = np.fromfile(f"{raw}/hu.bin", dtype="<i2").reshape(count, 128, 128)
        labels = [int(v) for v in open(f"{raw}/labels.txt").read().split()]
        os.makedirs(d, exist_ok=True)
        for i in range(count):
            u = np.clip((hu[i].astype(np.float32) + np.float32(1350.0)) / np.float32(1500.0), 0.0, 1.0)
            Image.fromarray(np.round(u * np.float32(65535.0)).astype(np.uint16)).save(f"{d}/ct_{i:04d}.png")
        write_csv(f"{d}/all.csv", [(f"{d}/ct_{i:04d}.png", labels[i]) for i in range(count)])
        shutil.rmtree(raw)
        open(done, "w").close()
    rows = list(csv.reader(open(f"{d}/all.csv")))[1:]
    rows = [(p, int(l)) for p, l in rows]
    return {"bench": write_csv(f"{SCRATCH}/ct_624.csv", rows[:624]),
            "n1000": write_csv(f"{SCRATCH}/ct_1000.csv", rows[:1000]),
            "n100": write_csv(f"{SCRATCH}/ct_100.csv", rows[:100])}


def prepare_rgb224(count: int) -> dict:
    """224×224 RGB PNGs: PneumoniaMNIST test images, bilinear-upsampled, grey in all three channels."""
    from PIL import Image

    d = f"{SCRATCH}/rgb224"
    os.makedirs(d, exist_ok=True)
    rows = []
    for i, (p, label) in enumerate(xray_rows("test")[:count]):
        out = f"{d}/rgb_{i:04d}.png"
        if not os.path.exists(out):
            with Image.open(p) as im:
                im.convert("L").resize((224, 224), Image.BILINEAR).convert("RGB").save(out)
        rows.append((out, label))
    return {"bench": write_csv(f"{SCRATCH}/rgb224_{count}.csv", rows)}


def make_resnet18(csv_path: str) -> None:
    """torchvision's ResNet-18 (2 classes), random weights (seed 0); BatchNorm running statistics are
    set by a few train-mode forward passes over the benchmark images, then the model is exported in
    eval mode (TorchScript exporter, opset 17, batch axis dynamic) to RESNET18."""
    import numpy as np
    import torch
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None, num_classes=2)
    x = torch.from_numpy(load_images(csv_path)[0])
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # cumulative average over the calibration passes
    m.train()
    with torch.no_grad():
        for i in range(0, len(x), 16):
            m(x[i:i + 16])
    m.eval()
    os.makedirs(os.path.dirname(RESNET18), exist_ok=True)
    tmp = RESNET18 + ".tmp"
    torch.onnx.export(m, (torch.zeros(1, 3, 224, 224),), tmp, dynamo=False, input_names=["image"],
                      output_names=["logits"], opset_version=17,
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
                      do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL)
    os.replace(tmp, RESNET18)
    with torch.no_grad():
        z = m(x[:8]).numpy()
    print(f"wrote {RESNET18}; logits of 8 images span [{z.min():.2f}, {z.max():.2f}]", file=sys.stderr)
    del np


# --------------------------------------------------------------------------------------------
# The torchattacks side (run in a child process: `speed.py _torch SPEC_JSON`)
# --------------------------------------------------------------------------------------------


def load_images(csv_path: str):
    """CSV `file,label` -> x [N, C, H, W] float32 as advscan's attack variable (8-bit /255, 16-bit
    /65535, RGB channels first), y [N] int64."""
    import numpy as np
    from PIL import Image

    xs, ys = [], []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            p = os.path.join(os.path.dirname(csv_path), r["file"])
            with Image.open(p) as im:
                a = np.asarray(im)
                mode = im.mode
            if mode == "L":
                x = a.astype(np.float32)[None] / np.float32(255.0)
            elif mode.startswith("I;16") or mode == "I":
                x = a.astype(np.float32)[None] / np.float32(65535.0)
            elif mode == "RGB":
                x = a.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
            else:
                raise ValueError(f"{p}: unsupported PNG mode {mode}")
            xs.append(x)
            ys.append(int(r["label"]))
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def torch_model(onnx_path: str, x_probe):
    """onnx2torch conversion as compare_torchattacks.py does it, wrapped with the differentiable
    part of advscan's preprocessing from the model config beside the model (resize, grey->RGB,
    normalisation), so the attack variable is the same image advscan attacks."""
    import numpy as np
    import onnx
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, os.path.join(REPO, "models"))
    import make_grad_reference as mgr

    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = None
    cfg = {}
    toml_path = os.path.splitext(onnx_path)[0] + ".model.toml"
    if os.path.exists(toml_path):
        assert tomllib is not None, "Python 3.11+ needed to read the model config"
        with open(toml_path, "rb") as f:
            cfg = tomllib.load(f)
    stripped, _, _ = mgr.strip_final_softmax(onnx.load(onnx_path))
    dims = [d.dim_value for d in stripped.graph.input[0].type.tensor_type.shape.dim]
    c, h, w = dims[1], dims[2], dims[3]
    size = tuple(cfg.get("input", {}).get("size", [h, w]))
    assert size == (h, w), (size, (h, w))
    resize = cfg.get("input", {}).get("resize", "bilinear")
    mean = cfg.get("normalize", {}).get("mean")
    std = cfg.get("normalize", {}).get("std")
    probe = np.zeros((2, c, h, w), dtype=np.float32)
    net, conv = mgr.convert_with_onnx2torch(stripped, probe)
    net = net.float().eval()
    for p in net.parameters():
        p.requires_grad_(False)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, u):
            if tuple(u.shape[-2:]) != size:
                assert resize in ("bilinear", "nearest"), resize
                u = F.interpolate(u, size=size, mode=resize,
                                  **({"align_corners": False} if resize == "bilinear" else {}))
            if u.shape[1] == 1 and c == 3:
                u = u.expand(-1, 3, -1, -1)
            if mean is not None:
                m = torch.tensor(mean, dtype=u.dtype).view(1, -1, 1, 1)
                s = torch.tensor(std, dtype=u.dtype).view(1, -1, 1, 1)
                u = (u - m) / s
            return self.net(u)

    wrapped = Wrapped().eval()
    return wrapped, conv["method"]


def torch_worker(spec: dict) -> dict:
    t_start = time.perf_counter()
    import torch
    import torchattacks

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    x_np, y_np = load_images(spec["csv"])
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model, method = torch_model(spec["model"], x_np[:2])
    out = {"n": len(y), "conversion": method, "batches": {}}
    with torch.no_grad():
        clean_ok = torch.cat([model(x[i:i + 128]).argmax(1) for i in range(0, len(x), 128)]) == y
    out["clean_accuracy"] = float(clean_ok.float().mean())
    for bs in spec["batch_sizes"]:
        atk = torchattacks.PGD(model, eps=spec["eps"], alpha=spec["eps"] / 4, steps=spec["steps"],
                               random_start=False)
        preds = []
        t0 = time.perf_counter()
        for i in range(0, len(x), bs):
            adv = atk(x[i:i + bs], y[i:i + bs])
            with torch.no_grad():
                preds.append(model(adv).argmax(1))
        secs = time.perf_counter() - t0
        robust = float((clean_ok & (torch.cat(preds) == y)).float().mean())
        out["batches"][str(bs)] = {"seconds": secs, "robust_accuracy": robust}
    out["in_process_seconds"] = time.perf_counter() - t_start
    out["torch"] = torch.__version__
    out["torchattacks"] = torchattacks.__version__
    return out


# --------------------------------------------------------------------------------------------
# Child processes with their own peak RSS
# --------------------------------------------------------------------------------------------


GNU_TIME = "/usr/bin/time"


def run_child(cmd: list[str], env: dict | None = None) -> tuple[str, float, float]:
    """Runs cmd under GNU time; returns (stdout, wall seconds, peak RSS in MiB of that process).
    GNU time forks cmd from its own small image, so the figure is cmd's alone (see the module
    docstring for why os.wait4 here would not be)."""
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"{GNU_TIME} not found: install GNU time (Debian: apt install time)")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t0 = time.perf_counter()
        p = subprocess.run([GNU_TIME, "-f", "%M", "-o", rss.name] + cmd, stdout=out, stderr=err, env=env)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {' '.join(cmd)}\n{stderr[-3000:]}")
        max_rss_kib = float(rss.read().split()[-1])
    return stdout, wall, max_rss_kib / 1024.0


def run_torch(model: str, csv_path: str, threads: int, batch_sizes: list[int]) -> dict:
    spec = {"model": model, "csv": csv_path, "threads": threads, "batch_sizes": batch_sizes,
            "eps": EPS, "steps": STEPS}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    stdout, wall, rss = run_child([sys.executable, os.path.abspath(__file__), "_torch", json.dumps(spec)], env)
    res = json.loads(stdout.strip().splitlines()[-1])
    res.update(wall=wall, rss_mib=rss)
    return res


def run_advscan(binary: str, model: str, csv_path: str, threads: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="advscan-speed-") as out:
        cmd = [binary, "--threads", str(threads), "attack", "--model", model, "--data", csv_path,
               "--attack", "pgd", "--eps", EPS_LABEL, "--steps", str(STEPS), "--step-size", "eps/4",
               "--no-random-start", "--batch-size", str(batch), "--quiet", "--out", out]
        _, wall, rss = run_child(cmd)
        with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
            res = json.load(f)
    run = next(r for r in res["runs"] if r["attack"] == "pgd")
    return {"n": res["data"]["samples"], "skipped": len(res["data"]["skipped"]), "seconds": run["seconds"],
            "robust_accuracy": run["robust_accuracy"], "clean_accuracy": res["clean"]["accuracy"],
            "wall": wall, "rss_mib": rss, "cmd": cmd}


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def med(v: list[float]) -> float:
    return statistics.median(v)


def bench_model(args, name: str, model: str, data: dict, n_expected: int) -> dict:
    if args.images and name != "resnet18_224" and n_expected > args.images:
        data = dict(data, bench=head_csv(data["bench"], args.images))
        n_expected = args.images
    T = args.threads
    log = lambda *a: print(f"[{name}]", *a, file=sys.stderr, flush=True)  # noqa: E731
    # pilot: each tool's best batch size at T threads (one run each)
    # (capped at the image count; advscan's batch also at one chunk per thread, or a thread idles)
    torch_bs = sorted({min(b, n_expected) for b in args.torch_batches})
    advscan_bs = sorted({min(b, max(1, n_expected // T)) for b in args.advscan_batches})
    pilot_t = run_torch(model, data["bench"], T, torch_bs) if len(torch_bs) > 1 else {"batches": {}}
    t_best = min(pilot_t["batches"], key=lambda b: pilot_t["batches"][b]["seconds"], default=str(torch_bs[0]))
    pilot_a = {b: run_advscan(args.binary, model, data["bench"], T, b) for b in advscan_bs} if len(advscan_bs) > 1 else {}
    a_best = min(pilot_a, key=lambda b: pilot_a[b]["seconds"], default=advscan_bs[0])
    log(f"pilot: torchattacks {{bs: s}} = { {b: round(v['seconds'], 2) for b, v in pilot_t['batches'].items()} }, "
        f"advscan = { {b: round(v['seconds'], 2) for b, v in pilot_a.items()} }")
    # alternating runs
    a_runs, t_runs, a1_runs = [], [], []
    for rep in range(args.reps):
        a_runs.append(run_advscan(args.binary, model, data["bench"], T, a_best))
        t_runs.append(run_torch(model, data["bench"], T, [int(t_best)]))
        if not args.no_scaling:
            a1_runs.append(run_advscan(args.binary, model, data["bench"], 1, a_best))
        log(f"rep {rep + 1}: advscan {a_runs[-1]['seconds']:.2f}s, torchattacks "
            f"{t_runs[-1]['batches'][t_best]['seconds']:.2f}s"
            + (f", advscan T=1 {a1_runs[-1]['seconds']:.2f}s" if a1_runs else ""))
    n = a_runs[0]["n"]
    assert n == n_expected and t_runs[0]["n"] == n, (n, n_expected, t_runs[0]["n"])
    assert all(r["skipped"] == 0 for r in a_runs), "advscan skipped inputs"
    r = {
        "model": name, "n": n, "advscan_batch": a_best, "torch_batch": int(t_best),
        "pilot_torch": {b: n / v["seconds"] for b, v in pilot_t["batches"].items()},
        "pilot_advscan": {b: n / v["seconds"] for b, v in pilot_a.items()},
        "advscan_ips": med([n / x["seconds"] for x in a_runs]),
        "torch_ips": med([n / x["batches"][t_best]["seconds"] for x in t_runs]),
        "advscan_wall_ips": med([n / x["wall"] for x in a_runs]),
        "torch_wall_ips": med([n / x["wall"] for x in t_runs]),
        "advscan_ips_all": [n / x["seconds"] for x in a_runs],
        "torch_ips_all": [n / x["batches"][t_best]["seconds"] for x in t_runs],
        "clean": (a_runs[0]["clean_accuracy"], t_runs[0]["clean_accuracy"]),
        "robust": (a_runs[0]["robust_accuracy"], t_runs[0]["batches"][t_best]["robust_accuracy"]),
        "conversion": t_runs[0]["conversion"],
        "advscan_cmd": " ".join(os.path.relpath(c, REPO) if os.path.isabs(c) and c.startswith(REPO) else c
                                for c in a_runs[0]["cmd"]),
        "versions": {"torch": t_runs[0]["torch"], "torchattacks": t_runs[0]["torchattacks"]},
    }
    if a1_runs:
        r["advscan_t1_ips"] = med([n / x["seconds"] for x in a1_runs])
        r["scaling"] = r["advscan_ips"] / r["advscan_t1_ips"]
    r["ratio"] = r["advscan_ips"] / r["torch_ips"]
    r["wall_ratio"] = r["advscan_wall_ips"] / r["torch_wall_ips"]
    # memory: 1,000 and 100 images, each tool at its best batch size
    if "n1000" in data and not args.no_memory:
        mem = {}
        for key in ("n1000", "n100"):
            a = run_advscan(args.binary, model, data[key], T, a_best)
            t = run_torch(model, data[key], T, [int(t_best)])
            mem[key] = {"advscan_mib": a["rss_mib"], "torch_mib": t["rss_mib"],
                        "advscan_s": a["seconds"], "torch_s": t["batches"][t_best]["seconds"]}
        r["memory"] = mem
        log(f"memory: {mem}")
    log(f"advscan {r['advscan_ips']:.1f} img/s, torchattacks {r['torch_ips']:.1f} img/s, ratio {r['ratio']:.2f}")
    return r


def pilot_text(pilot, chosen):
    """One tool's pilot figures, or the only batch size it had (no pilot run)."""
    if not pilot:
        return f"b{chosen} only (no pilot)"
    return ", ".join(f"b{b} {fmt(v)}" for b, v in pilot.items())


def cpu_description() -> str:
    """Model name, family/model and the widest vector ISA: advscan's fast kernels need AVX-512
    (without it they fall back to generic code), so figures from machines with and without it
    are not comparable."""
    info = {}
    for line in open("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')} model {info.get('model', '?')}, {isa})"


def fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def markdown(args, results: list[dict], meta: dict) -> str:
    T = args.threads
    L = [f"# PGD-10 speed: advscan vs torchattacks ({meta['label']})", "",
         f"Generated by `{meta['command']}` on {meta['date']}; {meta['cpu']}, {meta['cpus']} CPUs; "
         f"{meta['advscan']}, {meta['rustc']}; torch {meta['torch']}, torchattacks {meta['torchattacks']}, "
         f"Python {platform.python_version()}. Load: {meta['load']}.", "",
         f"L∞ PGD, ε = {EPS_LABEL}, {STEPS} steps of ε/4, no random start, cross-entropy; {T} threads on both "
         f"sides (advscan `--threads {T}`, torch `set_num_threads({T})`); median of {args.reps} alternating runs per "
         "tool. img/s = images / attack seconds (advscan `runs[].seconds`; torchattacks: the attack + "
         "prediction loop timed in-process); \"wall\" = images / whole-process time (start-up, model loading "
         "and conversion, reports). Batch = each tool's best in the pilot (advscan "
         + " / ".join(map(str, meta.get("advscan_batches", ADVSCAN_BATCHES))) + "; torchattacks "
         + " / ".join(map(str, meta.get("torch_batches", TORCH_BATCHES)))
         + "; capped at the image count, and advscan's at one chunk per thread).", "",
         "| model | images | advscan img/s | torchattacks img/s | ratio | advscan wall img/s | torchattacks wall img/s "
         "| wall ratio | advscan T=1 img/s | scaling T=1→T=2 | batch (advscan / torch) | clean acc (advscan / torch) "
         "| robust acc (advscan / torch) |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in results:
        sc = f"{fmt(r['advscan_t1_ips'])} | {r['scaling']:.2f}×" if "scaling" in r else "– | –"
        L.append(f"| {r['model']} | {r['n']} | {fmt(r['advscan_ips'])} | {fmt(r['torch_ips'])} | "
                 f"**{r['ratio']:.2f}×** | {fmt(r['advscan_wall_ips'])} | {fmt(r['torch_wall_ips'])} | "
                 f"{r['wall_ratio']:.2f}× | {sc} | {r['advscan_batch']} / {r['torch_batch']} | "
                 f"{r['clean'][0]:.4f} / {r['clean'][1]:.4f} | {r['robust'][0]:.4f} / {r['robust'][1]:.4f} |")
    L += ["", "Runs (img/s, in order): " + "; ".join(
        f"{r['model']}: advscan {', '.join(fmt(v) for v in r['advscan_ips_all'])} / torchattacks "
        f"{', '.join(fmt(v) for v in r['torch_ips_all'])}" for r in results) + ".", "",
        "Pilot (img/s by batch size, one run each): " + "; ".join(
        f"{r['model']}: advscan {pilot_text(r['pilot_advscan'], r['advscan_batch'])}"
        f" / torchattacks {pilot_text(r['pilot_torch'], r['torch_batch'])}" for r in results) + ".", ""]
    mem = [r for r in results if "memory" in r]
    if mem:
        L += [f"## Peak resident memory (MiB, whole process, {T} threads, best batch size)", "",
              "| model | advscan 100 img | advscan 1,000 img | advscan growth | torchattacks 100 img "
              "| torchattacks 1,000 img | advscan / torchattacks at 1,000 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for r in mem:
            m = r["memory"]
            a1, a0, t1, t0 = m["n1000"]["advscan_mib"], m["n100"]["advscan_mib"], m["n1000"]["torch_mib"], \
                m["n100"]["torch_mib"]
            L.append(f"| {r['model']} | {a0:.0f} | {a1:.0f} | {a1 / a0:.2f}× | {t0:.0f} | {t1:.0f} | {a1 / t1:.2f} |")
        L.append("")
    L += targets(results)
    L += ["Commands: advscan `target/release/advscan --threads T attack --model MODEL.onnx --data DATA.csv "
          "--attack pgd --eps 8/255 --steps 10 --step-size eps/4 --no-random-start --batch-size B --quiet "
          "--out DIR`; torchattacks: `benches/peer/speed.py _torch SPEC` (a child process).", "",
          "Data: " + "; ".join(f"{k}: {v}" for k, v in meta["data"].items()) + ".", "",
          "Conversion (onnx2torch): " + "; ".join(f"{r['model']}: {r['conversion']}" for r in results) + ".", ""]
    return "\n".join(L) + "\n"


def targets(results: list[dict]) -> list[str]:
    """Issue 6's targets that this script measures (forward + backward vs tract's forward is
    cargo bench's: benches/README.md)."""
    ok = lambda c: "met" if c else "**not met**"  # noqa: E731
    committed = [r for r in results if r["model"] != "resnet18_224"]
    resnet = [r for r in results if r["model"] == "resnet18_224"]
    L = ["## Targets (issue 6)", "", "| target | measured | status |", "|---|---|---|"]
    if committed:
        worst = min(committed, key=lambda r: r["ratio"])
        L.append(f"| PGD-10 ≥ 2× torchattacks on every committed model | "
                 + ", ".join(f"{r['model']} {r['ratio']:.2f}×" for r in committed)
                 + f" (worst {worst['model']}) | {ok(worst['ratio'] >= 2.0)} |")
    for r in resnet:
        L.append(f"| ResNet-18 224×224 PGD-10 ≥ 1.5× torchattacks | {r['ratio']:.2f}× | {ok(r['ratio'] >= 1.5)} |")
    mem = [r for r in results if "memory" in r]
    if mem:
        half = [(r["model"], r["memory"]["n1000"]["advscan_mib"] / r["memory"]["n1000"]["torch_mib"]) for r in mem]
        L.append("| peak RSS of a 1,000-image run ≤ ½ torchattacks' | "
                 + ", ".join(f"{m} {v:.2f}" for m, v in half) + f" | {ok(all(v <= 0.5 for _, v in half))} |")
        growth = [(r["model"], r["memory"]["n1000"]["advscan_mib"] / r["memory"]["n100"]["advscan_mib"]) for r in mem]
        L.append("| … and flat in the number of images (1,000 vs 100 images, ≤ 1.10×) | "
                 + ", ".join(f"{m} {v:.2f}×" for m, v in growth) + f" | {ok(all(v <= 1.10 for _, v in growth))} |")
    sc = [r for r in results if "scaling" in r]
    if sc:
        L.append("| advscan PGD scaling 1 → 2 threads ≥ 1.8× | "
                 + ", ".join(f"{r['model']} {r['scaling']:.2f}×" for r in sc)
                 + f" | {ok(all(r['scaling'] >= 1.8 for r in sc))} |")
    return L + [""]


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "_torch":
        print(json.dumps(torch_worker(json.loads(sys.argv[2]))))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "_resnet18":
        make_resnet18(sys.argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "advscan"))
    ap.add_argument("--models", nargs="*", help="subset of model names (default: all + resnet18_224)")
    ap.add_argument("--resnet18-images", type=int, default=16)
    ap.add_argument("--images", type=int, help="limit the throughput runs of the committed models to the "
                    "first N of their 624 images (the memory runs keep 1,000 and 100)")
    ap.add_argument("--torch-batches", type=lambda s: [int(v) for v in s.split(",")], default=TORCH_BATCHES)
    ap.add_argument("--advscan-batches", type=lambda s: [int(v) for v in s.split(",")], default=ADVSCAN_BATCHES)
    ap.add_argument("--ct-generator", help="a built examples/make_ct_training_set binary (default: cargo run)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--label", default="latest", help="heading label, e.g. before / after")
    ap.add_argument("--md", default=os.path.join(HERE, "speed.md"))
    ap.add_argument("--render", metavar="JSON", help="only rewrite --md from a saved speed JSON")
    args = ap.parse_args()
    if args.render:
        with open(args.render, encoding="utf-8") as f:
            saved = json.load(f)
        args.threads = saved["meta"].get("threads", args.threads)
        args.reps = saved["meta"].get("reps", args.reps)
        md = markdown(args, saved["results"], saved["meta"])
        with open(args.md, "w", encoding="utf-8") as f:
            f.write(md)
        print(md)
        return 0

    committed = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "models")) if f.endswith(".onnx"))
    names = args.models or committed + ["resnet18_224"]
    xray = prepare_xray()
    first = f"the first {args.images} of " if args.images else ""
    data_note = {"PneumoniaMNIST models": f"{first}the 624 test PNGs (28×28 grey, 8-bit); 1,000 / 100 for memory = "
                 "test then val, in order"}
    work = []
    for name in names:
        if name == "resnet18_224":
            d = prepare_rgb224(args.resnet18_images)
            if not os.path.exists(RESNET18):
                # A child process: torch in this one would inflate every RSS figure (docstring).
                subprocess.run([sys.executable, os.path.abspath(__file__), "_resnet18", d["bench"]], check=True)
            work.append((name, RESNET18, d, args.resnet18_images))
            data_note["resnet18_224"] = (f"the first {args.resnet18_images} PneumoniaMNIST test images upsampled "
                                         "(PIL bilinear) to 224×224 RGB PNGs (grey in all channels), in /tmp; "
                                         "torchvision ResNet-18, 2 classes, random weights, BN calibrated on them")
        elif name == "ct_nodule_cnn":
            work.append((name, os.path.join(REPO, "models", name + ".onnx"), prepare_ct(args.ct_generator), 624))
            data_note["ct_nodule_cnn"] = (f"{first}624 synthetic 128×128 CT slices (examples/make_ct_training_set, seed "
                                          f"{CT_SEED}+i) as 16-bit lung-window PNGs in /tmp; advscan resizes to 64×64 "
                                          "and normalises per ct_nodule_cnn.model.toml, the torch model does the same "
                                          "in-graph")
        else:
            work.append((name, os.path.join(REPO, "models", name + ".onnx"), xray, 624))
    ver = subprocess.run([args.binary, "--version"], capture_output=True, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = cpu_description()
    load_start = os.getloadavg()
    results = []
    for name, model, data, n in work:
        results.append(bench_model(args, name, model, data, n))
    import torch
    import torchattacks
    meta = {"label": args.label, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "cpus": os.cpu_count(), "advscan": ver, "rustc": rustc, "torch": torch.__version__,
            "torchattacks": torchattacks.__version__, "data": data_note,
            "command": "python benches/peer/speed.py " + " ".join(sys.argv[1:]), "threads": args.threads,
            "reps": args.reps, "advscan_batches": args.advscan_batches, "torch_batches": args.torch_batches,
            "load": f"{load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (1-minute load average)"}
    with open(os.path.splitext(args.md)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1, default=str)
    md = markdown(args, results, meta)
    with open(args.md, "w", encoding="utf-8") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
