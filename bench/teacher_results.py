#!/usr/bin/env python3
"""Writes docs/results/teacher.{json,md} from a teacher run and `dace bench train` measurements.

    python3 bench/teacher_results.py --run runs/teacher-fmnist \
        --bench cpu=bench_cpu.json --bench wgpu=bench_wgpu.json --out docs/results

The teacher's own report gives accuracy, seconds per epoch and images/s on the device it trained
on; a device that was only benchmarked (e.g. wgpu on lavapipe, too slow for a full run) gets its
seconds per epoch extrapolated from measured images/s, and the markdown says so.
"""
import argparse
import json
import subprocess
from pathlib import Path


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
    args = ap.parse_args()

    report = json.loads((Path(args.run) / "report.json").read_text())
    hist = report["history"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
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
        bench_rows.append((dev, row))
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
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "teacher.json").write_text(json.dumps(out, indent=2) + "\n")

    cfg = report["config"]
    lines = [
        f"# Teacher: {out['arch']} on full {out['dataset']}", "",
        f"- command: `{args.command}`" if args.command else "- command: see report.json",
        f"- commit: `{commit}`",
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
    (d / "teacher.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
