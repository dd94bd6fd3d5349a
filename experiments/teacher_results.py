#!/usr/bin/env python3
"""Writes docs/results/teacher.{json,md} from a teacher run and `dace bench train` measurements.

    python3 experiments/teacher_results.py --run runs/teacher-fmnist \
        --bench cpu=bench_cpu.json --bench wgpu=bench_wgpu.json --out docs/results

The teacher's own report gives accuracy, seconds per epoch and images/s on the device it trained
on; a device that was only benchmarked (e.g. wgpu on lavapipe, too slow for a full run) gets its
seconds per epoch extrapolated from measured images/s, and the markdown says so. --notes appends a
prose file (experiments/teacher_notes.md) whose {name} placeholders are filled from the same
numbers (see fill_notes).

The committed docs/results/teacher.{md,json} come from the raw outputs kept in the repo (the run's
report.json is artifacts/teachers/fashion-mnist-convnet3/report.json; the wgpu measurement is
docs/results/teacher_bench_wgpu.json), byte-identical on a rerun:

    python3 experiments/teacher_results.py --run artifacts/teachers/fashion-mnist-convnet3 \
        --bench wgpu=docs/results/teacher_bench_wgpu.json --speed-from-epoch 11 \
        --notes experiments/teacher_notes.md --commit 98c5082 \
        --commit-note "epochs 1-3 ran on 1c39955 (slower CPU kernels, same maths), epochs 4-12 on 98c5082 after --resume; results written at 261862b" \
        --command "dace teacher train --data /tmp/dace-data/fashion-mnist --arch convnet3 --epochs 12 --batch 128 --out runs/teacher-fmnist (then the same with --resume after epoch 3)" \
        --machine "AMD EPYC (AVX-512), 2 cores, 24 GiB, no GPU; wgpu = Mesa lavapipe on the same CPU"
"""
import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path


def short(v):
    """A rate as the notes' prose writes it: one decimal, none when it is .0 (39.0 -> 39)."""
    return f"{v:.1f}".removesuffix(".0")


def fill_notes(path, out, hist, timed, device, bench_rows):
    """The notes file with its {name} placeholders filled from the numbers of this page."""
    slowest = max(hist, key=lambda e: e["seconds"])
    sec = out["sec_per_epoch"]
    # Every placeholder the notes may use ({dev}_* for each --bench device).
    values = {
        "accuracy": f"{out['test_accuracy']:.2f}",
        "epochs": str(out["epochs"]),
        "shared_epochs": f"1-{timed[0]['epoch'] - 1}" if timed[0]["epoch"] > 1 else "none",
        "timed_epochs": " and ".join(str(e["epoch"]) for e in timed) if len(timed) <= 2 else f"{timed[0]['epoch']}-{timed[-1]['epoch']}",
        "slowest_epoch": f"epoch {slowest['epoch']}: {slowest['seconds']:.0f} s",
        # a whole run at the measured median, rounded to 5 minutes
        "run_minutes": f"{5 * round(out['epochs'] * sec[device] / 60 / 5):.0f}",
    }
    for dev, row in bench_rows:
        values[f"{dev}_train_img_s"] = short(row["train_img_s"])
        values[f"{dev}_infer_img_s"] = short(row["infer_img_s"])
        values[f"{dev}_hours_per_epoch"] = f"{sec[dev] / 3600:.0f}"
        # `dace bench train` (src/bench/mod.rs) times training steps until its --seconds budget has
        # passed and at least 2 have run, after 2 untimed warm-up steps.
        step_s = row["batch"] / row["train_img_s"]
        values[f"{dev}_step_s"] = f"{step_s:.0f}"
        budget = re.search(r"--seconds ([0-9.]+)", row["command"])
        if budget:
            values[f"{dev}_timed_steps"] = str(max(2, math.ceil(float(budget.group(1)) / step_s)))
    text = path.read_text().rstrip("\n")
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    left = re.findall(r"\{[a-z0-9_]+\}", text)
    if left:
        sys.exit(f"{path}: no value for {', '.join(left)}")
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--device", default="cpu", help="device the run trained on")
    ap.add_argument("--bench", action="append", default=[], help="DEVICE=bench.json (dace bench train --json)")
    ap.add_argument("--command", default="")
    ap.add_argument("--machine", default="")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--speed-from-epoch", type=int, default=1,
                    help="take the run's speed from this epoch on (earlier epochs may have shared the CPU)")
    ap.add_argument("--commit", default=None, help="commit that trained the teacher (default: git HEAD)")
    ap.add_argument("--commit-note", default="", help="where the run's epochs ran, if on more than one commit")
    ap.add_argument("--notes", default=None, help="markdown file appended at the end, {name} placeholders filled")
    args = ap.parse_args()

    report = json.loads((Path(args.run) / "report.json").read_text())
    hist = report["history"]
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    train_n, test_n = report["train_samples"], report["test_samples"]
    timed = [e for e in hist if e["epoch"] >= args.speed_from_epoch] or hist
    median = lambda key: round(sorted(e[key] for e in timed)[len(timed) // 2], 1)
    sec = {args.device: median("seconds")}
    train_ips = {args.device: median("train_img_per_s")}
    infer_ips = {args.device: median("infer_img_per_s")}
    extrapolated = []
    bench_rows = []
    for spec in args.bench:
        dev, path = spec.split("=", 1)
        rows = json.loads(Path(path).read_text())["rows"]
        row = max(rows, key=lambda r: r["batch"])
        bench_rows.append((dev, {**row, "command": json.loads(Path(path).read_text()).get("command", "")}))
        if dev not in sec:
            sec[dev] = round(train_n / row["train_img_s"] + test_n / row["infer_img_s"], 1)
            train_ips[dev] = round(row["train_img_s"], 1)
            infer_ips[dev] = round(row["infer_img_s"], 1)
            extrapolated.append(dev)
    out = {
        "dataset": report["dataset"],
        "arch": report["config"]["model"]["arch"],
        "epochs": len(hist),
        "test_accuracy": round(hist[-1]["test_accuracy"], 2),
        "sec_per_epoch": sec,
        "train_img_per_s": train_ips,
        "infer_img_per_s": infer_ips,
        "commit": commit,
        "extrapolated_devices": extrapolated,
        "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()} for e in hist],
    }
    if args.commit_note:
        out["commit_note"] = args.commit_note
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "teacher.json").write_text(json.dumps(out, indent=2) + "\n")

    cfg = report["config"]
    lines = [
        f"# Teacher: {out['arch']} on full {out['dataset']}", "",
        f"- command: `{args.command}`" if args.command else "- command: see report.json",
        f"- commit: `{commit}`" + (f"; {args.commit_note}" if args.commit_note else ""),
        f"- machine: {args.machine}",
        f"- config: batch {cfg['batch_size']}, {cfg['optimizer']['kind']} lr {cfg['optimizer']['lr']} "
        f"wd {cfg['optimizer']['weight_decay']}, cosine schedule, random crop pad {cfg['crop_pad']}, flip {cfg['flip']}, "
        f"norm {cfg['model']['norm']}, seed {cfg['seed']}",
        f"- {train_n} train / {test_n} test images", "",
        f"**Final test accuracy after {out['epochs']} epochs: {out['test_accuracy']:.2f} %** (target >= 91 %).", "",
        "| epoch | train loss | train acc % | test loss | test acc % | seconds | train img/s | infer img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in hist:
        lines.append(f"| {e['epoch']} | {e['train_loss']:.4f} | {e['train_accuracy']:.2f} | {e['test_loss']:.4f} | "
                     f"{e['test_accuracy']:.2f} | {e['seconds']:.0f} | {e['train_img_per_s']:.0f} | {e['infer_img_per_s']:.0f} |")
    lines += ["", "## Speed per device", "",
              "| device | sec/epoch | train img/s | infer img/s | source |", "|---|---|---|---|---|"]
    for dev in sec:
        src = "extrapolated from `dace bench train` images/s (60k train + 10k test)" if dev in extrapolated else f"measured in this run (median of epochs {timed[0]['epoch']}-{timed[-1]['epoch']})"
        lines.append(f"| {dev} | {sec[dev]} | {train_ips[dev]} | {infer_ips[dev]} | {src} |")
    for dev, row in bench_rows:
        lines.append(f"\n`dace bench train` on {dev}: batch {row['batch']}, train {row['train_img_s']:.1f} img/s, infer {row['infer_img_s']:.1f} img/s.")
    if args.notes:
        lines += ["", fill_notes(Path(args.notes), out, hist, timed, args.device, bench_rows)]
    (d / "teacher.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
