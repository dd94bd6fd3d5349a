#!/usr/bin/env python3
"""docs/results/expansion.{md,json} (+ figures in docs/results/expansion/) from the
`dace experiment expansion` results of experiments/expansion_grid.sh and the RDED grid's rows.

  python3 experiments/expansion_results.py --runs runs/exp-fmnist-ablation --commit SHA --machine "..."

The intro (experiments/expansion_intro.md) is fixed prose; its {name} placeholders (the throughput,
the label-encoding table and top-k's cost) are filled from the same rows that expansion.json records.
"""
import argparse, json, re, shutil, sys
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--runs", nargs="+", default=["runs/exp-fmnist-ablation"])
ap.add_argument("--rded", default="docs/results/rded.json")
ap.add_argument("--out", default="docs/results")
ap.add_argument("--commit", default="?")
ap.add_argument("--machine", default="?")
ap.add_argument("--intro", default="experiments/expansion_intro.md")
ap.add_argument("--label-runs", nargs="*", default=[],
                help="grids of one cell distilled with other --labels encodings (compared with the f16 cell of --runs)")
a = ap.parse_args()

out = Path(a.out)
figs = out / "expansion"
figs.mkdir(parents=True, exist_ok=True)
rded_rows = json.load(open(a.rded))["rows"]
reports = [json.load(open(Path(r) / "results.json")) for r in a.runs]

rows = []
for rep in reports:
    for c in rep["cells"]:
        st = c["final_stats"]
        if not st:
            continue
        rows.append({
            "dataset": rep["dataset"], "method": "dace" if c["variant"] != "rded" else "patches-upsampled",
            "variant": c["variant"], "layout": "patches", "ipc": c["ipc"], "factor": c["factor"],
            "arch": c["arch"], "epochs": c["epochs"], "runs": st["n"], "acc_mean": st["mean"], "acc_std": st["std"],
            "seeds_per_patch": c["seeds"], "patches": c["patches"], "package_bytes": c["package_bytes"],
            "ipc_budget_bytes": c["ipc_budget_bytes"], "expansions_per_s": c.get("expansions_per_s"),
            "label_argmax_is_class": c.get("label_argmax_is_class"),
            "regeneration_bit_identical": c.get("regeneration_bit_identical"),
        })
for r in rded_rows:
    rows.append({**r, "variant": "rded" if r["method"] == "rded" else r["method"], "layout": "collage" if r["method"] == "rded" else "images"})

def find(ds, variant, ipc, r, arch="convnet3", layout="patches"):
    for x in rows:
        if (x["dataset"], x["variant"], x["ipc"], x["factor"], x["arch"], x["layout"]) == (ds, variant, ipc, r, arch, layout):
            return x
    return None

def show(x):
    if not x:
        return "—"
    if x["runs"] == 1:
        return f"{x['acc_mean']:.2f} (1 seed)"
    return f"{x['acc_mean']:.2f} ± {x['acc_std']:.2f}" + ("" if x["runs"] >= 3 else f" ({x['runs']} seeds)")

VARIANTS = [("rded", "patches upsampled, no diffusion (RDED's selection, the paper's layout)"),
            ("cond-only", "class-conditional generation only, no patches (the paper's text-only row)"),
            ("sr", "img2img rho 0.4 (super-resolution)"),
            ("sr-aug", "img2img rho 0.8 (SR + augmentation)"),
            ("sr-aug-mixup", "rho 0.8 + same-class latent mixup (the full method)")]
# The label-encoding cells (--label-runs): the same cell distilled with another --labels encoding.
base = find("fashion-mnist", "sr-aug-mixup", 1, 2)
label_rows = []  # kept out of `rows`, which the main table searches
for lr in [json.load(open(Path(r) / "results.json")) for r in a.label_runs]:
    enc = lr["config"]["labels"]
    for c in lr["cells"]:
        if (c["variant"], c["ipc"], c["factor"], c["arch"]) != ("sr-aug-mixup", 1, 2, "convnet3") or not c["final_stats"]:
            continue
        label_rows.append({"dataset": lr["dataset"], "method": "dace", "variant": "sr-aug-mixup", "layout": "patches",
                     "labels": enc, "ipc": 1, "factor": 2, "arch": "convnet3", "epochs": c["epochs"], "runs": c["final_stats"]["n"],
                     "acc_mean": c["final_stats"]["mean"], "acc_std": c["final_stats"]["std"], "seeds_per_patch": c["seeds"],
                     "package_bytes": c["package_bytes"], "ipc_budget_bytes": c["ipc_budget_bytes"]})

# The intro's numbers, filled from the rows: its placeholders are {name} in experiments/expansion_intro.md.
def seeds_note(x):
    return f"{x['acc_mean']:.2f} % (1 seed)" if x["runs"] == 1 else f"{x['acc_mean']:.2f} ± {x['acc_std']:.2f} % ({x['runs']} seeds)"

def label_name(enc):
    return f"top-{enc['k']}" if enc["encoding"] == "top-k" else enc["encoding"]

# Throughput: min and max of expansions_per_s over the diffusion variants' distillations (the `rded`
# rows only upsample; the RDED grid's rows have no expansion).
speeds = [x["expansions_per_s"] for x in rows if x.get("expansions_per_s") is not None and x["variant"] != "rded"]
intro_values = {"throughput": f"{min(speeds):.1f} to {max(speeds):.1f}" if speeds else "(not measured)"}
# The size section's label-encoding table (f16 = the main grid's cell) and top-k's accuracy cost against f16.
if base and label_rows:
    table = ["  | labels | accuracy (IPC 1, r = 2, full method) | package |", "  |---|---|---|",
             f"  | f16 | {seeds_note(base)} | {base['package_bytes']:,} B |"]
    table += [f"  | {label_name(x['labels'])} | {seeds_note(x)} | {x['package_bytes']:,} B |" for x in label_rows]
    intro_values["label_table"] = "\n".join(table)
    topk = [x for x in label_rows if x["labels"]["encoding"] == "top-k"]
    intro_values["topk_cost"] = f"{base['acc_mean'] - topk[0]['acc_mean']:.1f}" if topk else "(not run)"
else:
    intro_values["label_table"] = "  (the label-encoding runs were not given to this renderer)"
    intro_values["topk_cost"] = "(not run)"
lines = []
if Path(a.intro).exists():
    intro = open(a.intro).read().rstrip()
    for k, v in intro_values.items():
        intro = intro.replace("{" + k + "}", v)
    left = re.findall(r"\{[a-z0-9_]+\}", intro)
    if left:
        sys.exit(f"{a.intro}: no value for {', '.join(left)}")
    lines = [intro, ""]
for rep in reports:
    ds = rep["dataset"]
    cfg = rep["config"]
    lines += [f"## {ds}", "",
              f"Teacher: `{rep['teacher']}` ({rep['teacher_accuracy']:.2f} %), prior `{rep['prior']}` (fingerprint {rep['prior_fingerprint'][:12]}). "
              f"Expansion: {cfg['steps']}-step {cfg['scheduler']}, guidance {cfg['guidance']}, mixup gamma {cfg['gamma']}; "
              f"student augmentation {cfg['augment']}; labels {cfg['labels']['encoding']}; T = {cfg['temperature']}. "
              f"Seeds per patch m = min(epochs, {cfg['max_expansions']} / patches). Final-epoch test accuracy (%), mean ± std over student seeds.", ""]
    ipcs = sorted({c["ipc"] for c in rep["cells"]})
    for ipc in ipcs:
        r = 2
        if not any(c["ipc"] == ipc and c["factor"] == r and c["variant"] != "rded" for c in rep["cells"]):
            continue
        ran = [v for v, _ in VARIANTS if find(ds, v, ipc, r)]
        ablation = len(ran) == len(VARIANTS)
        title = f"Ablation (paper Table 4), IPC {ipc}" if ablation else f"IPC {ipc} (main-table cells)"
        lines += [f"### {title}, r = {r}, ConvNet-3", "",
                  "| variant | what | accuracy | m (seeds/patch) | package bytes (IPC budget) |", "|---|---|---|---|---|"]
        for v, what in VARIANTS:
            x = find(ds, v, ipc, r)
            if not x and not ablation:
                continue
            extra = f"{x['seeds_per_patch']} | {x['package_bytes']} ({x['ipc_budget_bytes']})" if x else "— | —"
            lines.append(f"| {v} | {what} | {show(x)} | {extra} |")
        for rr in (1, 2):
            x = find(ds, "rded", ipc, rr, layout="collage")
            lines.append(f"| RDED r={rr} | RDED itself: {rr}x{rr} collages, ShufflePatches (docs/results/rded.md) | {show(x)} | per epoch | — |")
        for m in ("random-soft", "random-hard"):
            x = find(ds, m, ipc, 1, layout="images")
            lines.append(f"| {m} | random real images, {'teacher soft' if m == 'random-soft' else 'hard'} labels | {show(x)} | | |")
        lines.append("")
    factors = sorted({c["factor"] for c in rep["cells"] if c["ipc"] == 1})
    if len(factors) > 1:
        lines += ["### Patch-size sweep (paper Fig. 5), IPC 1, ConvNet-3", "",
                  "| r | patch | patches / class | full method (sr-aug-mixup) | patches upsampled | RDED (collages) |", "|---|---|---|---|---|---|"]
        for r in factors:
            side = 28 // r
            lines.append(f"| {r} | {side}x{side} | {r * r} | {show(find(ds, 'sr-aug-mixup', 1, r))} | {show(find(ds, 'rded', 1, r))} | {show(find(ds, 'rded', 1, r, layout='collage'))} |")
        lines += ["", f"![accuracy vs r](expansion/{ds}-accuracy_vs_r_ipc1_convnet3.png)", ""]
    archs = sorted({c["arch"] for c in rep["cells"]})
    if len(archs) > 1:
        xr = sorted({c["factor"] for c in rep["cells"] if c["ipc"] == 1 and c["arch"] != "convnet3"})
        lines += ["### Cross-architecture, IPC 1 (ConvNet-3 teacher and labels)", "",
                  "| student | r | full method (sr-aug-mixup) | patches upsampled | diffusion adds |", "|---|---|---|---|---|"]
        for r in xr:
            for arch in archs:
                full, up = find(ds, "sr-aug-mixup", 1, r, arch), find(ds, "rded", 1, r, arch)
                gain = f"{full['acc_mean'] - up['acc_mean']:+.2f}" if full and up else "—"
                lines.append(f"| {arch} | {r} | {show(full)} | {show(up)} | {gain} |")
        lines.append("")
    src = Path(a.runs[reports.index(rep)])
    for png in src.glob("*.png"):
        shutil.copy(png, figs / f"{ds}-{png.name}")
    for png in (src / "packages").glob("*/expansions.png"):
        shutil.copy(png, figs / f"{ds}-{png.parent.name}-expansions.png")
    curves = sorted(figs.glob(f"{ds}-curves_*.png"))
    for c in curves:
        lines += [f"![{c.stem}](expansion/{c.name})", ""]
    grids = sorted(figs.glob(f"{ds}-*-ipc1-r2-expansions.png")) + [figs / f"{ds}-sr-aug-mixup-ipc1-r{r}-expansions.png" for r in (4, 7)]
    grids = [g for g in grids if g.exists()]
    if grids:
        lines += ["Expansions of the first patch of each class (rows): the upsampled patch, then the first seeds (IPC 1, r = 2 for every variant; then the full method at r = 4 and r = 7, from 7x7 and 4x4 patches):", ""]
        lines += [f"![{g.stem}](expansion/{g.name})" for g in grids]
        lines.append("")
if a.label_runs:
    lines += ["## Label encodings (Fashion-MNIST, IPC 1, r = 2, full method, ConvNet-3)", "",
              "The same coreset and seeds distilled with each `--labels` encoding; the student trains on the decoded labels.", "",
              "| labels | accuracy | package bytes | vs f16 |", "|---|---|---|---|"]
    if base:
        lines.append(f"| f16 | {show(base)} | {base['package_bytes']} | 1.00x |")
    for x in label_rows:
        enc = x["labels"]
        name = enc["encoding"] + (f" (k = {enc['k']})" if enc.get("k") else "")
        ratio = f"{x['package_bytes'] / base['package_bytes']:.2f}x" if base else "—"
        lines.append(f"| {name} | {show(x)} | {x['package_bytes']} | {ratio} |")
    lines.append("")

lines += ["## Main table (ConvNet-3, final-epoch accuracy %, full method = sr-aug-mixup at its r)", "",
          "| dataset | method | IPC 1 | IPC 10 | IPC 50 |", "|---|---|---|---|---|"]
for ds in ("fashion-mnist", "mnist"):
    best = lambda variant, ipc, layout="patches": max((x for x in rows if x["dataset"] == ds and x["variant"] == variant and x["ipc"] == ipc
                                                       and x["arch"] == "convnet3" and x["layout"] == layout), key=lambda x: x["acc_mean"], default=None)
    for label, variant, layout in [("dace, full method (best r run)", "sr-aug-mixup", "patches"), ("patches upsampled (best r run)", "rded", "patches"),
                                   ("RDED (best r of 1, 2, 4)", "rded", "collage"), ("random real, soft labels", "random-soft", "images"),
                                   ("random real, hard labels", "random-hard", "images")]:
        cells = []
        for ipc in (1, 10, 50):
            x = best(variant, ipc, layout)
            cells.append(f"{show(x)} (r={x['factor']})" if x and layout != "images" else show(x))
        lines.append(f"| {ds} | {label} | " + " | ".join(cells) + " |")
lines += ["", f"Commit {a.commit} · machine: {a.machine}.", ""]
(out / "expansion.md").write_text("\n".join(lines))
json.dump({"rows": rows + label_rows, "commit": a.commit, "machine": a.machine,
           "command": "DATA=/tmp/dace-data experiments/expansion_grid.sh; DATASET=mnist DATA=/tmp/dace-data experiments/expansion_grid.sh; "
                      "the label-encoding grids of expansion.md; python3 experiments/expansion_results.py " + " ".join(sys.argv[1:])},
          open(out / "expansion.json", "w"), indent=2)
print("\n".join(lines))
