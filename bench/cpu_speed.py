#!/usr/bin/env python3
"""dace vs PyTorch CPU training speed, side by side (issue 3).

Runs `dace bench train` and bench/torch_convnet.py one after the other on the same configurations
and thread count, prints both with their ratio and writes docs/results/cpu_speed.json and
cpu_speed.table.md; bench/cpu_speed_results.py renders docs/results/cpu_speed.md from them.

    python3 bench/cpu_speed.py --dace target/release/dace --python .venv-torch/bin/python \
        --threads 2 --seconds 10 --out docs/results

The PyTorch side runs under the interpreter given by --python, else $TORCH_PYTHON, else the python
running this script. Any interpreter that can `import torch` will do, e.g. a virtual environment
with bench/requirements-torch.txt installed:

    python3 -m venv .venv-torch && .venv-torch/bin/pip install -r bench/requirements-torch.txt

Run it on an idle machine: both sides use every thread they are given. With --repeat N the two
sides alternate N times per configuration and the tables report medians (PyTorch's own rate moves
by 10-20 % between runs on this kind of machine), with every run kept in the JSON.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = [  # (arch, size, channels)
    ("convnet3", 28, 1),
    ("convnet3", 32, 3),
    ("resnet18", 32, 3),
]


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dace", default="target/release/dace")
    ap.add_argument("--python", default=os.environ.get("TORCH_PYTHON", sys.executable),
                    help="interpreter that runs bench/torch_convnet.py (default: $TORCH_PYTHON, else this python)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", default="16,64")
    ap.add_argument("--only", help="comma-separated arch:size list, e.g. convnet3:28")
    ap.add_argument("--repeat", type=int, default=1, help="alternate dace/torch this many times; report medians")
    ap.add_argument("--out", default="docs/results")
    args = ap.parse_args()
    try:
        has_torch = subprocess.run([args.python, "-c", "import torch"], capture_output=True).returncode == 0
    except OSError:
        has_torch = False
    if not has_torch:
        sys.exit(f"{args.python} cannot import torch: pass --python (or set TORCH_PYTHON) to an interpreter "
                 "with bench/requirements-torch.txt installed")

    configs = CONFIGS
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in CONFIGS if f"{c[0]}:{c[1]}" in wanted]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp())
    dace_rows, torch_rows = [], []
    for arch, size, ch in configs:
      for rep in range(args.repeat):
        norm = "instance" if arch.startswith("convnet") else "batch"
        dj, tj = tmp / f"dace_{arch}_{size}_{rep}.json", tmp / f"torch_{arch}_{size}_{rep}.json"
        run([args.dace, "bench", "train", "--arch", arch, "--size", str(size), "--channels", str(ch),
             "--batch", args.batch, "--backend", "flex", "--seconds", str(args.seconds),
             "--norm", norm, "--threads", str(args.threads), "--json", str(dj)])
        run([args.python, "bench/torch_convnet.py", "--arch", arch, "--size", str(size), "--channels", str(ch),
             "--batch", args.batch, "--threads", str(args.threads), "--seconds", str(args.seconds),
             "--norm", norm, "--json", str(tj)])
        dace_rows += json.loads(dj.read_text())["rows"]
        torch_out = json.loads(tj.read_text())
        torch_rows += torch_out["rows"]

    rows = []
    key = lambda r: (r["arch"], r["size"], r["batch"])
    seen = []
    for d in dace_rows:
        if key(d) not in seen:
            seen.append(key(d))
    for k in seen:
        ds = [r for r in dace_rows if key(r) == k]
        ts = [r for r in torch_rows if key(r) == k]
        med = lambda rs, f: statistics.median(r[f] for r in rs)
        d = ds[0]
        rows.append({
            "arch": d["arch"], "size": d["size"], "channels": d["channels"], "batch": d["batch"],
            "dace_train_img_s": round(med(ds, "train_img_s"), 1), "torch_train_img_s": round(med(ts, "train_img_s"), 1),
            "dace_infer_img_s": round(med(ds, "infer_img_s"), 1), "torch_infer_img_s": round(med(ts, "infer_img_s"), 1),
            "train_ratio": round(med(ds, "train_img_s") / med(ts, "train_img_s"), 2),
            "infer_ratio": round(med(ds, "infer_img_s") / med(ts, "infer_img_s"), 2),
            "repeats": len(ds),
            "dace_train_runs": [round(r["train_img_s"], 1) for r in ds],
            "torch_train_runs": [round(r["train_img_s"], 1) for r in ts],
            "dace_step_ms": d["step"], "dace_convs": d["convs"],
        })
    command = "python3 " + " ".join(sys.argv)
    meta = {"command": command, "commit": commit, "machine": f"{cpu_model()}, {args.threads} threads",
            "torch_version": torch_out.get("torch_version"), "seconds_per_measurement": args.seconds}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_speed.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")

    lines = ["# CPU training speed: dace (burn Flex + dace's fused kernels) vs PyTorch", "",
             f"- command: `{command}`", f"- commit: `{commit}`", f"- machine: {meta['machine']}",
             f"- torch: {meta['torch_version']}", f"- {args.seconds} s per measurement, random inputs, Adam(W), cross-entropy",
             f"- {args.repeat} alternating repeats per configuration; medians shown, every run in cpu_speed.json", "",
             "| arch | input | batch | dace train img/s | torch train img/s | ratio | dace infer img/s | torch infer img/s | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['channels']}x{r['size']}x{r['size']} | {r['batch']} | {r['dace_train_img_s']} | "
                     f"{r['torch_train_img_s']} | {r['train_ratio']}x | {r['dace_infer_img_s']} | {r['torch_infer_img_s']} | {r['infer_ratio']}x |")
    (out / "cpu_speed.table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
