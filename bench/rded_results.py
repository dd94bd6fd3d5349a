#!/usr/bin/env python3
"""Collects the RDED grids (runs/rded-*/results.json, written by `dace experiment rded`) into
docs/results/rded.md, docs/results/rded.json and the plots under docs/results/rded/.

    python3 bench/rded_results.py --runs runs --out docs/results --commit <sha> --machine "..."
"""
import argparse
import json
import shutil
from pathlib import Path

LIT = {  # ConvNet-3, IPC 1/10/50, from the DC/DSA/DM/MTT papers (../shared/NOTES.md §5; recalled, unverified)
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
    args = ap.parse_args()
    out = Path(args.out)
    figs = out / "rded"
    figs.mkdir(parents=True, exist_ok=True)
    reports = []
    for d in sorted(Path(args.runs).glob("rded-*")):
        f = d / "results.json"
        if not f.exists():
            continue
        r = json.loads(f.read_text())
        reports.append(r)
        for png in d.glob("*.png"):
            shutil.copy(png, figs / f"{r['dataset']}-{png.name}")
        for grid in (d / "coresets").glob("*/collage.png"):
            shutil.copy(grid, figs / f"{r['dataset']}-coreset-{grid.parent.name}.png")
    lines = ["# RDED baseline (issue 4)", ""]
    if args.intro:
        lines += [Path(args.intro).read_text().rstrip(), ""]
    for r in reports:
        ds = r["dataset"]
        status = "complete" if r["finished"] else "**PARTIAL: the grid is still running; missing cells are marked —**"
        lines += [f"## {ds} ({status})", "", f"- command: `{r['command']}`", f"- commit: `{args.commit}`",
                  f"- machine: {args.machine}", f"- teacher: `{r['teacher']}`", ""]
        md = Path(args.runs) / f"rded-{ds}" / "results.md"
        if md.exists():
            lines += [md.read_text().rstrip(), ""]
        lit = LIT.get(ds)
        if lit:
            lines += [f"Literature anchors (ConvNet-3, hard-label random subset, IPC 1/10/50): "
                      f"{' / '.join(map(str, lit['random']))}; whole data {lit['whole']} (NOTES §5, recalled).", ""]
        lines += [f"![accuracy vs r](rded/{ds}-accuracy_vs_r.png)", ""]
        for ipc in r["config"]["ipcs"]:
            if (figs / f"{ds}-curves_ipc{ipc}.png").exists():
                lines += [f"![curves IPC {ipc}](rded/{ds}-curves_ipc{ipc}.png)", ""]
    (out / "rded.md").write_text("\n".join(lines) + "\n")
    summary = [{"dataset": r["dataset"], "finished": r["finished"], "teacher_accuracy": r["teacher_accuracy"],
                "config": r["config"], "cells": r["cells"], "command": r["command"]} for r in reports]
    (out / "rded.json").write_text(json.dumps({"commit": args.commit, "machine": args.machine, "grids": summary}, indent=1) + "\n")
    print(f"wrote {out / 'rded.md'} ({len(reports)} grids)")


if __name__ == "__main__":
    main()
