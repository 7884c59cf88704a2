#!/usr/bin/env python3
"""Train and export advscan's ONNX reference classifiers for PneumoniaMNIST.

Produces, next to this script:
  pneumonia_cnn.onnx        opset 13, output `logits`
  pneumonia_resnet.onnx     opset 13, output `probabilities` (final Softmax node)
  pneumonia_mixed_ops.onnx  opset 18, output `logits` (exercises many ONNX op types)
and one model card (<stem>.md) per model.

All models take input `image`, float32 [N,1,28,28], pixel values in [0,1]
(uint8 / 255); the normalisation (x - MEAN) / STD is the first op inside the graph.

Usage (from the repository root):
  python models/train_models.py [--data PATH] [--only cnn,resnet,mixed_ops]
(with the packages of models/requirements.txt installed).

Training is seeded and single-process (deterministic algorithms, 2 CPU threads).
The dataset is only read, never copied into the repository.
"""

from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import os
import platform
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "pneumoniamnist", "pneumoniamnist.npz")
DEFAULT_DATA_DISPLAY = "../shared/data/pneumoniamnist/pneumoniamnist.npz"

# Normalisation constants: mean / std of the training-split pixels in [0,1]
# (measured: 0.5719, 0.1684), rounded. Stored in the graph as Sub / Div constants.
MEAN = 0.572
STD = 0.168

CLASS_NAMES = ["normal", "pneumonia"]

ATTRIBUTION = (
    "MedMNIST v2, PneumoniaMNIST at 28×28 — Yang, J. et al., \"MedMNIST v2: A large-scale "
    "lightweight benchmark for 2D and 3D biomedical image classification\", Scientific Data 10, "
    "41 (2023); derived from Kermany, D. S. et al., Cell 172(5), 2018. Licence: CC BY 4.0."
)


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


class Normalize(nn.Module):
    """(x - MEAN) / STD as the first ops of every graph (exported as Sub, Div)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(STD, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PneumoniaCNN(nn.Module):
    """Sub/Div → Conv16 → ReLU → MaxPool → Conv32 → ReLU → MaxPool → Flatten → Gemm64 → ReLU → Dropout → Gemm2."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalize()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.flatten(x)
        x = self.drop(F.relu(self.fc1(x)))
        return self.fc2(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            # 1×1 stride-2 projection shortcut
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PneumoniaResNet(nn.Module):
    """Small ResNet: stem 16ch @28 → block 16 @28 → block 32 @14 (stride 2) → block 64 @7 (stride 2)
    → GlobalAveragePool → Gemm(2) → Softmax (only when `with_softmax`, i.e. at export)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalize()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.layer3 = BasicBlock(32, 64, 2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 2)
        self.with_softmax = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.norm(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        z = self.fc(self.flatten(self.gap(x)))
        if self.with_softmax:
            return torch.softmax(z, dim=1)
        return z


class PneumoniaMixedOps(nn.Module):
    """A real (small) classifier written to exercise many ONNX op types at opset 18."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalize()
        self.conv_a = nn.Conv2d(1, 8, 3, padding=1)                 # → LeakyRelu
        self.conv_b = nn.Conv2d(1, 8, 3, padding=2, dilation=2)     # dilated → Elu
        self.inorm = nn.InstanceNorm2d(16, affine=True)             # InstanceNormalization
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)        # depthwise → HardSwish
        self.pw = nn.Conv2d(16, 24, 1)                              # pointwise → Clip (relu6)
        self.down = nn.Conv2d(24, 32, 3, stride=2, padding=1)       # → GELU (Erf form)
        self.skip = nn.Conv2d(24, 32, 1)
        self.gate = nn.Conv2d(32, 32, 1)                            # → Sigmoid gate
        self.ln = nn.LayerNorm(32)                                  # over last dim
        self.token_fc = nn.Linear(32, 32)                           # 3-D input → MatMul + Add
        self.head = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = F.pad(x, (2, 2, 2, 2), mode="reflect")                   # Pad(reflect) 28 → 32
        a = F.leaky_relu(self.conv_a(x), 0.1)
        b = F.elu(self.conv_b(x))
        x = torch.cat([a, b], dim=1)                                 # Concat channels: 16×32×32
        x = self.inorm(x)
        x = F.hardswish(self.dw(x))
        x = F.relu6(self.pw(x))                                      # 24×32×32
        x = F.avg_pool2d(x, 2)                                       # AveragePool → 24×16×16
        x = x[:, :, 1:-1, 1:-1]                                      # Slice → 24×14×14
        y = F.gelu(self.down(x))                                     # 32×7×7
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)  # Resize linear → 14×14
        z = torch.tanh(self.skip(x) + y)                             # 32×14×14
        g = torch.sigmoid(self.gate(F.avg_pool2d(z, 2)))             # 32×7×7
        g = F.interpolate(g, scale_factor=2.0, mode="nearest")        # Resize nearest → 14×14
        z = z * g
        pooled = z.mean(dim=(2, 3))                                  # ReduceMean, axes as input → [N,32]
        t = F.avg_pool2d(z, 2)                                       # 32×7×7
        t = t.reshape(t.size(0), t.size(1), -1).transpose(1, 2)      # Shape/Gather/Unsqueeze/Concat/Reshape, Transpose → [N,49,32]
        t = self.ln(t)                                               # LayerNormalization
        t = torch.tanh(self.token_fc(t))                             # MatMul, Add, Tanh
        t = t.mean(dim=1)                                            # ReduceMean → [N,32]
        h = torch.cat([pooled, t], dim=1)                            # [N,64]
        h = h.view(h.size(0), -1)                                    # dynamic-shape Reshape
        return self.head(h)                                          # Gemm


# --------------------------------------------------------------------------------------
# Data / training
# --------------------------------------------------------------------------------------


def load_data(path: str):
    d = np.load(path)
    out = {}
    for split in ("train", "val", "test"):
        x = d[f"{split}_images"].astype(np.float32)[:, None, :, :] / np.float32(255.0)
        y = d[f"{split}_labels"].reshape(-1).astype(np.int64)
        out[split] = (x, y)
    return out


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random shift of up to ±2 px (edge padding) and random small brightness/contrast jitter."""
    n = x.shape[0]
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    dy = rng.integers(0, 5, size=n)
    dx = rng.integers(0, 5, size=n)
    out = np.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28]
    gain = rng.uniform(0.9, 1.1, size=(n, 1, 1, 1)).astype(np.float32)
    bias = rng.uniform(-0.05, 0.05, size=(n, 1, 1, 1)).astype(np.float32)
    return np.clip(out * gain + bias, 0.0, 1.0).astype(np.float32)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch: int = 512) -> np.ndarray:
    model.eval()
    outs = []
    for i in range(0, len(x), batch):
        outs.append(model(torch.from_numpy(x[i:i + batch])).numpy())
    return np.concatenate(outs)


def metrics(logits: np.ndarray, y: np.ndarray) -> dict:
    pred = logits.argmax(1)
    rec = [float((pred[y == c] == c).mean()) for c in range(2)]
    return {"acc": float((pred == y).mean()), "recall": rec, "n": int(len(y))}


def train(model: nn.Module, data, *, epochs: int, lr: float, seed: int, batch: int = 64,
          weight_decay: float = 1e-4) -> dict:
    x_tr, y_tr = data["train"]
    rng = np.random.default_rng(seed)
    counts = np.bincount(y_tr, minlength=2)
    # inverse-frequency class weights, normalised to mean 1
    w = (len(y_tr) / (2.0 * counts)).astype(np.float32)
    crit = nn.CrossEntropyLoss(weight=torch.from_numpy(w))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(x_tr) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    best = (-1.0, None, -1)
    history = []
    for ep in range(epochs):
        model.train()
        perm = rng.permutation(len(x_tr))
        t0 = time.time()
        tot = 0.0
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            xb = torch.from_numpy(augment(x_tr[idx], rng))
            yb = torch.from_numpy(y_tr[idx])
            opt.zero_grad()
            loss = crit(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        val = metrics(predict(model, data["val"][0]), data["val"][1])
        history.append({"epoch": ep + 1, "train_loss": tot / len(perm), "val_acc": val["acc"]})
        print(f"  epoch {ep + 1}/{epochs} loss {tot / len(perm):.4f} val_acc {val['acc']:.4f} "
              f"({time.time() - t0:.1f}s)", flush=True)
        if val["acc"] > best[0]:
            best = (val["acc"], copy.deepcopy(model.state_dict()), ep + 1)
    model.load_state_dict(best[1])
    model.eval()
    return {"best_epoch": best[2], "history": history, "class_weights": w.tolist()}


# --------------------------------------------------------------------------------------
# Export / verification / model card
# --------------------------------------------------------------------------------------


def export(model: nn.Module, path: str, *, opset: int, output_name: str, constant_folding: bool) -> None:
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28, dtype=torch.float32)
    kwargs = dict(
        input_names=["image"],
        output_names=[output_name],
        opset_version=opset,
        dynamic_axes={"image": {0: "N"}, output_name: {0: "N"}},
        do_constant_folding=constant_folding,
        training=torch.onnx.TrainingMode.EVAL,
    )
    try:
        torch.onnx.export(model, (dummy,), path, dynamo=False, **kwargs)
    except TypeError:  # torch without the `dynamo` argument: TorchScript exporter is the default
        torch.onnx.export(model, (dummy,), path, **kwargs)
    m = onnx.load(path)
    m.producer_name = "advscan models/train_models.py (" + m.producer_name + " " + m.producer_version + ")"
    onnx.save(m, path)


def op_histogram(m: onnx.ModelProto) -> dict:
    return dict(sorted(collections.Counter(n.op_type for n in m.graph.node).items()))


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def verify(model: nn.Module, path: str, data, output_name: str) -> dict:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["image"], [i.name for i in m.graph.input]
    assert [o.name for o in m.graph.output] == [output_name], [o.name for o in m.graph.output]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 28, 28], dims
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(123)
    probes = {
        "test[:64]": data["test"][0][:64],
        "single": data["test"][0][100:101],
        "uniform_random": rng.random((8, 1, 28, 28), dtype=np.float32),
    }
    max_diff = 0.0
    for name, xb in probes.items():
        ref = predict(model, xb)
        got = sess.run([output_name], {"image": xb})[0]
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        d = float(np.abs(got - ref).max())
        max_diff = max(max_diff, d)
        print(f"  ORT vs torch [{name}] max|diff| = {d:.2e}")
    assert max_diff < 1e-4, max_diff
    # test-split accuracy through onnxruntime as well (must equal torch's)
    ort_test = sess.run([output_name], {"image": data["test"][0]})[0]
    return {"ort_max_abs_diff": max_diff, "ort_test": metrics(ort_test, data["test"][1])}


def fmt_hist(hist: dict) -> str:
    return "\n".join(f"| `{k}` | {v} |" for k, v in hist.items())


def graph_notes(m: onnx.ModelProto, spec: dict) -> str:
    notes = []
    ids = [n for n in m.graph.node if n.op_type == "Identity"]
    if ids:
        pairs = ", ".join(f"`{n.output[0]}` = `{n.input[0]}`" for n in ids)
        notes.append(
            f"- The {len(ids)} `Identity` node(s) come from the exporter's de-duplication of initializers with "
            f"identical values: {pairs}. (A block's last BatchNorm bias and its projection-shortcut BatchNorm "
            "bias receive identical gradients because their outputs are summed, so they stay equal during training.)"
        )
    notes.extend(spec.get("graph_notes", []))
    return "\n".join(notes) + ("\n" if notes else "")


def write_card(spec: dict, res: dict) -> None:
    stem = spec["stem"]
    onnx_path = os.path.join(HERE, stem + ".onnx")
    m = onnx.load(onnx_path)
    hist = op_histogram(m)
    size = os.path.getsize(onnx_path)
    n_params = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
    last = m.graph.node[-1].op_type
    te, va = res["test"], res["val"]
    out_spec = spec["output_spec"]
    lines = f"""# {stem}.onnx — PneumoniaMNIST {spec['title']}

**Task.** Binary classification of 28×28 greyscale paediatric chest X-rays:
class 0 = `normal`, class 1 = `pneumonia`. Built as a target model for advscan's adversarial-attack
tests and benchmarks; it is a small research model, **not** a medical device and not for diagnosis.

## Data

PneumoniaMNIST (train 4708 / val 524 / test 624 images; class counts train 1214/3494, val 135/389,
test 234/390), read from `{DEFAULT_DATA_DISPLAY}` (not copied into this repository).

Source and attribution: {ATTRIBUTION}

## Architecture

{spec['architecture']}

Parameters: {n_params:,} (all stored as ONNX initializers, float32).

## Training

- Training split only; model selection = epoch with best validation accuracy (epoch {res['train']['best_epoch']} of {spec['epochs']}).
- Optimiser: Adam, max lr {spec['lr']}, weight decay 1e-4, OneCycle schedule, batch 64, {spec['epochs']} epochs.
- Loss: cross-entropy on logits with inverse-frequency class weights {[round(v, 4) for v in res['train']['class_weights']]} (normal, pneumonia).
- Augmentation: random shift ±2 px (edge padding), brightness/contrast jitter (gain 0.9–1.1, bias ±0.05), clipped to [0,1].
- Seed {spec['seed']} (`torch.manual_seed`, numpy `default_rng`), `torch.use_deterministic_algorithms(True)`, 2 CPU threads.
- Software: torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}, Python {platform.python_version()} (see `models/requirements.txt`).
- Reproduce (from the repository root, in a Python env with `pip install -r models/requirements.txt`; well under 2 minutes on 2 idle CPU cores):

  ```
  python models/train_models.py --only {spec['key']}
  ```

  (`--data PATH` overrides the default dataset path `{DEFAULT_DATA_DISPLAY}`; without `--only`
  all three models are trained.) Bit-identical ONNX files are expected only with the same
  torch version and CPU.

## Results

| split | accuracy | recall normal | recall pneumonia | n |
|---|---|---|---|---|
| val  | {va['acc']:.4f} | {va['recall'][0]:.4f} | {va['recall'][1]:.4f} | {va['n']} |
| test | {te['acc']:.4f} | {te['recall'][0]:.4f} | {te['recall'][1]:.4f} | {te['n']} |

For comparison, the MedMNIST v2 paper reports test accuracy 0.854 for ResNet-18 at 28×28.
The test accuracy recomputed through onnxruntime on the exported file is {res['verify']['ort_test']['acc']:.4f};
max |ORT − PyTorch| over the verification probes is {res['verify']['ort_max_abs_diff']:.1e}.

## Input

- Name `image`, float32, shape `[N, 1, 28, 28]` (`N` is a dynamic batch dimension).
- Pixel values in [0, 1]: the dataset's uint8 pixels divided by 255.
- Normalisation is **inside the graph**: the first nodes are `Sub` (mean {MEAN}) and `Div` (std {STD}).
  Do not normalise before feeding the model.

## Output

{out_spec}

## File

- `models/{stem}.onnx`, {size:,} bytes, sha256 `{sha256(onnx_path)}`
- ONNX IR version {m.ir_version}, opset {m.opset_import[0].version} (default domain), exported with the
  TorchScript exporter (`torch.onnx.export(..., dynamo=False, do_constant_folding={spec['constant_folding']})`)
  in eval mode{spec.get('export_note', '')}. Last node: `{last}`.
- Checked with `onnx.checker.check_model(full_check=True)`; onnxruntime {ort.__version__} output equals the
  PyTorch float32 output (max |diff| {res['verify']['ort_max_abs_diff']:.1e}) for batch sizes 1, 8 and 64.
{graph_notes(m, spec)}
### Op histogram ({len(m.graph.node)} nodes)

| op | count |
|---|---|
{fmt_hist(hist)}
"""
    with open(os.path.join(HERE, stem + ".md"), "w", encoding="utf-8") as f:
        f.write(lines)


SPECS = {
    "cnn": dict(
        key="cnn", stem="pneumonia_cnn", title="simple CNN", cls=PneumoniaCNN, opset=13,
        output="logits", epochs=10, lr=2e-3, seed=1234, constant_folding=True,
        architecture=(
            "`Sub`/`Div` normalisation → Conv(1→16, 3×3, pad 1) → ReLU → MaxPool 2×2 → "
            "Conv(16→32, 3×3, pad 1) → ReLU → MaxPool 2×2 → Flatten (32·7·7 = 1568) → Gemm(→64) → ReLU → "
            "Dropout(0.3) → Gemm(→2).\n\nDropout is identity in eval mode and is not present in the exported graph."
        ),
        output_spec=(
            "- Name `logits`, float32, shape `[N, 2]`: raw class scores (no softmax), "
            "index 0 = normal, 1 = pneumonia. Predicted class = argmax."
        ),
    ),
    "resnet": dict(
        key="resnet", stem="pneumonia_resnet", title="small ResNet with Softmax output", cls=PneumoniaResNet,
        opset=13, output="probabilities", epochs=10, lr=3e-3, seed=2345, constant_folding=False,
        export_note=(
            "; constant folding is disabled because the exporter's eval-mode peephole pass would "
            "otherwise fuse every BatchNormalization into the preceding Conv — with it off, "
            "BatchNormalization stays a separate node (inference form, running statistics)"
        ),
        architecture=(
            "`Sub`/`Div` normalisation → stem Conv(1→16, 3×3) → BatchNorm → ReLU (28×28) →\n"
            "residual block 16→16 (stride 1, identity shortcut, 28×28) →\n"
            "residual block 16→32 (first conv stride 2, shortcut = 1×1 stride-2 Conv + BatchNorm, 14×14) →\n"
            "residual block 32→64 (first conv stride 2, shortcut = 1×1 stride-2 Conv + BatchNorm, 7×7) →\n"
            "GlobalAveragePool → Flatten → Gemm(64→2) → **Softmax**.\n\n"
            "Each residual block: Conv 3×3 → BatchNorm → ReLU → Conv 3×3 → BatchNorm, `Add` shortcut, ReLU. "
            "Convs have no bias (BatchNorm follows). BatchNormalization nodes are kept in the graph "
            "(not fused into Conv)."
        ),
        output_spec=(
            "- Name `probabilities`, float32, shape `[N, 2]`: softmax over the two classes "
            "(index 0 = normal, 1 = pneumonia); the graph's last node is `Softmax` (axis 1).\n"
            "- Logits are the input of that final `Softmax` node (output of the last `Gemm`); "
            "attacks that need logits should strip the final Softmax."
        ),
    ),
    "mixed_ops": dict(
        key="mixed_ops", stem="pneumonia_mixed_ops", title="mixed-op stress-test classifier",
        cls=PneumoniaMixedOps, opset=18, output="logits", epochs=8, lr=3e-3, seed=3456, constant_folding=True,
        architecture=(
            "Written to exercise many ONNX op types while still being a real classifier:\n\n"
            "1. `Sub`/`Div` normalisation; `Pad` (reflect, 2 px) 28→32.\n"
            "2. Two parallel convs 1→8: 3×3 → `LeakyRelu`(0.1), and dilated 3×3 (dilation 2) → `Elu`; "
            "`Concat` along channels (16 ch).\n"
            "3. `InstanceNormalization` (affine) → depthwise Conv 3×3 (groups 16) → `HardSwish` → "
            "pointwise Conv 1×1 16→24 → `Clip`[0,6] (ReLU6).\n"
            "4. `AveragePool` 2 (→16×16) → `Slice` [1:-1, 1:-1] (→14×14).\n"
            "5. Conv 3×3 stride 2 24→32 → GELU (exported at opset 18 as `Div`/`Erf`/`Add`/`Mul`) → "
            "bilinear ×2 `Resize` (→14×14); added to a 1×1 Conv skip of the 14×14 map → `Tanh`.\n"
            "6. Gate: `AveragePool` 2 → Conv 1×1 → `Sigmoid` → nearest ×2 `Resize` → `Mul`.\n"
            "7. Global branch: `ReduceMean` over H,W (opset-18 form, axes as an input) → [N,32].\n"
            "8. Token branch: `AveragePool` 2 → 32×7×7 → dynamic `Reshape` to [N,32,49] "
            "(`Shape`→`Gather`→`Unsqueeze`→`Concat`→`Reshape`) → `Transpose` → [N,49,32] → "
            "`LayerNormalization` over the last dim → Linear on 3-D input (`MatMul` + `Add`) → `Tanh` → "
            "`ReduceMean` over tokens → [N,32].\n"
            "9. `Concat` both branches → [N,64] → dynamic `Reshape` (`x.view(x.size(0), -1)`) → `Gemm`(→2)."
        ),
        output_spec=(
            "- Name `logits`, float32, shape `[N, 2]`: raw class scores (no softmax), "
            "index 0 = normal, 1 = pneumonia."
        ),
        graph_notes=[
            "- `F.pad(..., mode='reflect')` exports as `Pad`(mode=reflect) whose `pads` input is computed by a "
            "small int64 subgraph (`Constant`/`ConstantOfShape`/`Concat`/`Reshape`/`Slice` with step −1 and "
            "end −2^63+1/`Transpose`/`Reshape`/`Cast`); the exporter's constant folding does not fold a "
            "Slice with step ≠ 1, so that subgraph stays in the file. The resulting pads are [0,0,2,2,0,0,2,2].",
            "- `Resize` nodes: bilinear = mode `linear`, coordinate_transformation_mode `half_pixel`, scales "
            "[1,1,2,2]; nearest = mode `nearest`, nearest_mode `floor`, coordinate_transformation_mode "
            "`asymmetric`, scales [1,1,2,2]; both with an empty `roi` input.",
            "- `ReduceMean` nodes are the opset-18 form (axes [2,3] and [1] as a constant input, keepdims 0).",
            "- `InstanceNormalization` always uses per-instance statistics (no running stats), so it "
            "behaves the same in training and inference.",
            "- onnx2torch 1.5.15 has no converters for Pad-18, Resize-18, ReduceMean-18; the gradient "
            "fixture generator converts a checked opset-17 rewrite of a copy of this graph "
            "(see `fixtures/grad_ref/pneumonia_mixed_ops.json` → `conversion`).",
        ],
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA,
                    help=f"path to pneumoniamnist.npz (default: {DEFAULT_DATA_DISPLAY} relative to the repo root)")
    ap.add_argument("--only", default="cnn,resnet,mixed_ops", help="comma-separated subset of: cnn,resnet,mixed_ops")
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    data = load_data(args.data)
    print(f"data: {args.data}; train {len(data['train'][1])}, val {len(data['val'][1])}, test {len(data['test'][1])}")

    for key in [k.strip() for k in args.only.split(",") if k.strip()]:
        spec = SPECS[key]
        print(f"== {spec['stem']} ==", flush=True)
        torch.manual_seed(spec["seed"])
        model = spec["cls"]()
        t0 = time.time()
        tr = train(model, data, epochs=spec["epochs"], lr=spec["lr"], seed=spec["seed"])
        train_seconds = time.time() - t0
        res = {
            "train": tr,
            "train_seconds": train_seconds,
            "val": metrics(predict(model, data["val"][0]), data["val"][1]),
            "test": metrics(predict(model, data["test"][0]), data["test"][1]),
        }
        print(f"  best epoch {tr['best_epoch']}: val {res['val']} test {res['test']}")
        if isinstance(model, PneumoniaResNet):
            model.with_softmax = True
        path = os.path.join(HERE, spec["stem"] + ".onnx")
        export(model, path, opset=spec["opset"], output_name=spec["output"],
               constant_folding=spec["constant_folding"])
        res["verify"] = verify(model, path, data, spec["output"])
        assert abs(res["verify"]["ort_test"]["acc"] - res["test"]["acc"]) < 1e-9
        m = onnx.load(path)
        hist = op_histogram(m)
        size = os.path.getsize(path)
        assert size < 2 * 1024 * 1024, size
        if key == "resnet":
            assert hist.get("BatchNormalization", 0) > 0, hist
            assert m.graph.node[-1].op_type == "Softmax", m.graph.node[-1].op_type
        assert "Dropout" not in hist, hist
        print(f"  {path}: {size} bytes, sha256 {sha256(path)}")
        print(f"  ops: {hist}")
        write_card(spec, res)


if __name__ == "__main__":
    main()
