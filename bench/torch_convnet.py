#!/usr/bin/env python3
"""PyTorch side of dace's CPU training-speed comparison.

Measures training throughput (forward + cross-entropy + backward + Adam step,
model.train()) and inference throughput (model.eval() under
torch.inference_mode()) in images/s, on random inputs, for the same models
that dace trains: ConvNet-D (the dataset-distillation ConvNet) and the
small-image ResNet-18. Writes the same JSON as `dace bench train`, so the two
can be put side by side.

INSTALL (a git-ignored venv in the repo root; see bench/requirements-torch.txt for details):

    python3 -m venv .venv-torch
    # where download.pytorch.org is reachable (CPU-only wheel, ~200 MB):
    .venv-torch/bin/pip install -r bench/requirements-torch.txt \
        --index-url https://download.pytorch.org/whl/cpu
    # PyPI only (this project's machines): the PyPI wheel is a CUDA build and
    # needs its nvidia-* deps just to import (--no-deps fails with
    # "libcudart.so.13: cannot open shared object file"); ~5.4 GB, CPU-usable:
    .venv-torch/bin/pip install -r bench/requirements-torch.txt

RUN (from the repo root):

    .venv-torch/bin/python bench/torch_convnet.py --arch convnet3 \
        --size 28 --channels 1 --batch 16,64 --threads 2 --json torch.json
    # add more configurations to the same file with --append:
    .venv-torch/bin/python bench/torch_convnet.py --arch resnet18 \
        --size 32 --channels 3 --batch 16,64 --threads 2 --json torch.json --append

JSON written by --json:

    {"machine": str, "torch_version": str, "threads": int,
     "rows": [{"arch", "size", "channels", "batch", "norm",
               "train_img_s", "infer_img_s"}, ...]}

Models (must stay identical to dace's):
  convnetD  D blocks of [conv3x3 pad 1, width 128, bias -> norm -> ReLU ->
            AvgPool2d(2, 2)], then flatten -> Linear(128 * h * w -> classes),
            h, w = size halved (floored) D times. norm: 'instance' =
            GroupNorm(128, 128, affine) (the DC/DM convention, default),
            'batch' = BatchNorm2d, 'none'.
  resnet18  torchvision's BasicBlock ResNet-18 [2, 2, 2, 2] x 64/128/256/512
            with the small-image stem: conv1 3x3 stride 1 pad 1 (no bias) + BN
            + ReLU, no max-pool; stride 2 (1x1 conv + BN downsample) at the first
            block of stages 2-4; adaptive avg-pool; fc. Norm defaults to 'batch'.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 10
CONVNET_WIDTH = 128


# ---------------------------------------------------------------- models


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        # Instance norm with a learned per-channel affine, as in the DC/DM code.
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class ConvNet(nn.Module):
    def __init__(self, depth: int, channels: int, size: int, norm: str,
                 width: int = CONVNET_WIDTH, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers: list[nn.Module] = []
        c, h, w = channels, size, size
        for _ in range(depth):
            layers += [
                nn.Conv2d(c, width, kernel_size=3, padding=1, bias=True),
                make_norm(norm, width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            c, h, w = width, h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"size {size} too small for depth {depth}")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                make_norm(norm, planes),
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision resnet18 with conv1 -> 3x3/s1 and maxpool -> Identity."""

    def __init__(self, channels: int, norm: str, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = make_norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        inplanes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(
                BasicBlock(inplanes, planes, stride, norm),
                BasicBlock(planes, planes, 1, norm),
            ))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        # torchvision's init (irrelevant for speed, kept for fidelity).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_model(arch: str, size: int, channels: int, norm: str) -> nn.Module:
    m = re.fullmatch(r"convnet(\d+)", arch)
    if m:
        return ConvNet(int(m.group(1)), channels, size, norm)
    if arch == "resnet18":
        return ResNet18(channels, norm)
    raise ValueError(f"unknown arch {arch!r} (convnetD, e.g. convnet3, or resnet18)")


def default_norm(arch: str) -> str:
    return "batch" if arch == "resnet18" else "instance"


# ---------------------------------------------------------------- timing


def run_timed(step, warmup: int, iters: int | None, seconds: float) -> tuple[int, float]:
    """Runs `step` `warmup` times untimed, then either exactly `iters` times or
    (iters None) until `seconds` have passed (at least once). Returns
    (timed iterations, elapsed seconds)."""
    for _ in range(warmup):
        step()
    n = 0
    t0 = time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - t0
        if iters is not None:
            if n >= iters:
                break
        elif elapsed >= seconds:
            break
    return n, elapsed


def measure(arch: str, size: int, channels: int, batch: int, norm: str,
            warmup: int, iters: int | None, seconds: float, lr: float, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(arch, size, channels, norm)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # One random batch, made once: data generation is not timed.
    x = torch.randn(batch, channels, size, size)
    y = torch.randint(0, NUM_CLASSES, (batch,))
    last_loss = [float("nan")]

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        last_loss[0] = loss.detach()  # kept as a tensor: no copy per step

    model.train()
    t_n, t_s = run_timed(train_step, warmup, iters, seconds)
    loss = float(last_loss[0])
    if not math.isfinite(loss):
        raise RuntimeError(f"{arch} batch {batch}: training loss is {loss}")

    def infer_step():
        with torch.inference_mode():
            model(x)

    model.eval()
    i_n, i_s = run_timed(infer_step, warmup, iters, seconds)

    return {
        "arch": arch,
        "size": size,
        "channels": channels,
        "batch": batch,
        "norm": norm,
        "train_img_s": round(t_n * batch / t_s, 2),
        "infer_img_s": round(i_n * batch / i_s, 2),
        # Not in the JSON; for the table only.
        "_train_iters": t_n,
        "_infer_iters": i_n,
        "_loss": loss,
        "_params": sum(p.numel() for p in model.parameters()),
    }


# ---------------------------------------------------------------- output


def machine_description() -> str:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cpu = cpu or platform.processor() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}"


def print_table(rows: list[dict], out=sys.stdout) -> None:
    header = ("arch", "size", "ch", "batch", "norm", "params",
              "train img/s", "(iters)", "infer img/s", "(iters)")
    lines = [header]
    for r in rows:
        lines.append((
            r["arch"], str(r["size"]), str(r["channels"]), str(r["batch"]), r["norm"],
            str(r.get("_params", "")),
            f"{r['train_img_s']:.1f}", str(r.get("_train_iters", "")),
            f"{r['infer_img_s']:.1f}", str(r.get("_infer_iters", "")),
        ))
    widths = [max(len(l[i]) for l in lines) for i in range(len(header))]
    for k, l in enumerate(lines):
        print("  ".join(c.rjust(w) if i >= 1 else c.ljust(w)
                        for i, (c, w) in enumerate(zip(l, widths))), file=out)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=out)


def parse_batches(s: str) -> list[int]:
    try:
        b = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad batch list {s!r}")
    if not b or any(v < 1 for v in b):
        raise argparse.ArgumentTypeError(f"bad batch list {s!r}")
    return b


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="PyTorch CPU train/infer throughput for dace's ConvNet-D / ResNet-18.")
    p.add_argument("--arch", default="convnet3", help="convnetD (e.g. convnet3) or resnet18")
    p.add_argument("--size", type=int, default=32, help="image height = width (28, 32, ...)")
    p.add_argument("--channels", type=int, default=3, help="input channels (1 or 3)")
    p.add_argument("--batch", type=parse_batches, default=[16, 64],
                   help="comma-separated batch sizes (default 16,64)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per measurement")
    p.add_argument("--iters", type=int, default=None,
                   help="timed iterations per measurement (overrides --seconds)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="time per measurement when --iters is not given (default 10)")
    p.add_argument("--norm", choices=("instance", "batch", "none"), default=None,
                   help="default: instance for convnetD, batch for resnet18")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", default=None, help="write results as JSON")
    p.add_argument("--append", action="store_true",
                   help="add rows to an existing --json file instead of replacing it")
    a = p.parse_args(argv)

    if a.threads < 1 or a.warmup < 0 or (a.iters is not None and a.iters < 1) or a.seconds <= 0:
        p.error("--threads, --iters and --seconds must be positive, --warmup non-negative")
    norm = a.norm or default_norm(a.arch)
    try:
        build_model(a.arch, a.size, a.channels, norm)  # validate before timing anything
    except ValueError as e:
        p.error(str(e))

    torch.set_num_threads(a.threads)
    machine = machine_description()
    budget = f"{a.iters} iters" if a.iters is not None else f"~{a.seconds:g} s"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}; "
          f"warmup {a.warmup}, {budget} per measurement", file=sys.stderr)

    # Rows to keep from an existing --json file (checked before timing anything).
    old_rows: list[dict] = []
    if a.json and a.append and os.path.exists(a.json):
        with open(a.json) as f:
            old = json.load(f)
        if old.get("threads") != a.threads:
            print(f"error: {a.json} holds threads={old.get('threads')} rows, this run "
                  f"uses {a.threads}; not mixing them (use another --json)", file=sys.stderr)
            return 2
        old_rows = list(old.get("rows", []))

    rows = []
    for b in a.batch:
        print(f"  {a.arch} {a.size}x{a.size}x{a.channels} norm={norm} batch={b} ...",
              file=sys.stderr, flush=True)
        rows.append(measure(a.arch, a.size, a.channels, b, norm,
                            a.warmup, a.iters, a.seconds, a.lr, a.seed))
    print_table(rows)

    if a.json:
        public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        doc = {"machine": machine, "torch_version": torch.__version__,
               "threads": a.threads, "rows": old_rows}
        doc["rows"] += public
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, a.json)
        print(f"wrote {len(doc['rows'])} rows to {a.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
