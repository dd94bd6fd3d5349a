#!/usr/bin/env python3
"""Collects the RDED grids (runs/rded-*/results.json, written by `dace experiment rded`) into
docs/results/rded.md, docs/results/rded.json and the plots under docs/results/rded/.

    python3 experiments/rded_results.py --runs runs --out docs/results --commit <sha> --machine "..."
"""
import argparse
import json
import shutil
from pathlib import Path

LIT = {  # ConvNet-3, IPC 1/10/50, from the DC/DSA/DM/MTT papers (recalled, unverified)
    "fashion-mnist": {"random": [51.4, 73.8, 82.5], "whole": 93.5},
    "mnist": {"random": [64.9, 95.1, 97.9], "whole": 99.6},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--commit", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--intro", help="markdown file inserted after the title")
    ap.add_argument("--grids", default="rded-fashion-mnist,rded-mnist",
                    help="comma-separated grid directories under --runs, in page order; NAME=NOTE adds a note under its heading")
    args = ap.parse_args()
    out = Path(args.out)
    figs = out / "rded"
    figs.mkdir(parents=True, exist_ok=True)
    reports = []
    for spec in args.grids.split(","):
        name, _, note = spec.partition("=")
        d = Path(args.runs) / name
        f = d / "results.json"
        if not f.exists():
            continue
        r = json.loads(f.read_text())
        r["_dir"], r["_note"] = name, note
        reports.append(r)
        for png in d.glob("*.png"):
            shutil.copy(png, figs / f"{name}-{png.name}")
        for grid in (d / "coresets").glob("*/collage.png"):
            shutil.copy(grid, figs / f"{name}-coreset-{grid.parent.name}.png")
    lines = ["# RDED baseline (issue 4)", ""]
    if args.intro:
        lines += [Path(args.intro).read_text().rstrip(), ""]
    for r in reports:
        ds, name = r["dataset"], r["_dir"]
        if r["finished"]:
            status = "complete"
        elif r["_note"]:
            status = "stopped early on purpose: partial by design"
        else:
            status = "**PARTIAL: the grid is still running; missing cells are marked —**"
        lines += [f"## {ds}: `{name}` ({status})", ""]
        if r["_note"]:
            lines += [r["_note"], ""]
        lines += [f"- command: `{r['command']}`", f"- commit: `{args.commit}`",
                  f"- machine: {args.machine}", f"- teacher: `{r['teacher']}`", ""]
        md = Path(args.runs) / name / "results.md"
        if md.exists():
            lines += [md.read_text().rstrip(), ""]
        lit = LIT.get(ds)
        if lit:
            lines += [f"Literature anchors (ConvNet-3, hard-label random subset, IPC 1/10/50): "
                      f"{' / '.join(map(str, lit['random']))}; whole data {lit['whole']} (DC/DSA/DM/MTT papers, recalled).", ""]
        if (figs / f"{name}-accuracy_vs_r.png").exists():
            lines += [f"![accuracy vs r](rded/{name}-accuracy_vs_r.png)", ""]
        for ipc in r["config"]["ipcs"]:
            if (figs / f"{name}-curves_ipc{ipc}.png").exists():
                lines += [f"![curves IPC {ipc}](rded/{name}-curves_ipc{ipc}.png)", ""]
    (out / "rded.md").write_text("\n".join(lines) + "\n")
    summary = [{"grid": r["_dir"], "dataset": r["dataset"], "finished": r["finished"], "teacher_accuracy": r["teacher_accuracy"],
                "config": r["config"], "cells": r["cells"], "command": r["command"]} for r in reports]
    # The machine-readable rows: one per finished cell, headline = final-epoch mean ± std.
    # Only the grids with the current recipe count (a NOTE marks an earlier-recipe grid).
    rows = []
    for r in reports:
        if r["_note"]:
            continue
        arch = r["config"].get("arch", "convnet3") if isinstance(r["config"], dict) else "convnet3"
        for c in r["cells"]:
            st = c.get("final_stats") or {}
            if not st.get("n"):
                continue
            rows.append({"dataset": r["dataset"], "method": c["method"], "ipc": c["ipc"], "factor": c["factor"],
                         "arch": arch, "epochs": c["epochs"], "runs": st["n"], "acc_mean": st["mean"],
                         "acc_std": st["std"]})
        ta = r.get("teacher_accuracy")
        if ta is not None:
            rows.append({"dataset": r["dataset"], "method": "whole", "ipc": None, "factor": None, "arch": "convnet3",
                         "epochs": None, "runs": 1, "acc_mean": ta, "acc_std": 0.0})
    (out / "rded.json").write_text(json.dumps({"commit": args.commit, "machine": args.machine, "rows": rows,
                                               "grids": summary}, indent=1) + "\n")
    print(f"wrote {out / 'rded.md'} ({len(reports)} grids)")


if __name__ == "__main__":
    main()
