#!/usr/bin/env python3
"""Renders docs/results/expansion_speed.{md,json} from the raw records under
docs/results/expansion_speed/:

- `speed-LABEL.json`: one `bench/prior_speed.py --suite` run (dace and diffusers alternating,
  medians per row); LABEL says which dace it timed (e.g. `before`, `after`);
- `perf-LABEL.txt`: `perf report --no-children --sort symbol --stdio` of `perf record -g` on
  `dace bench prior` (Fashion-MNIST prior, batch 64), grouped here into where the time goes.

The .json is the latest speed record's rows (`--latest`, default `after`) with its command,
commit and machine; the .md shows every record side by side with the targets of issue 18.

    python3 bench/expansion_speed_results.py [--latest after]
"""
import argparse
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
RAW = ROOT / "docs/results/expansion_speed"

# Where a symbol's time goes: the first pattern that matches names the group.
GROUPS = [
    ("direct convolution: register tiles", r"conv_direct::x86|row_avx"),
    ("direct convolution: channels-last packing", r"conv_direct"),
    # The closures run inside `matmul_cpu::with_scratch` are inlined into it: im2col and the
    # regrouping of images up to `after-2`, the direct convolution's channels-last packing and
    # output scatter in `after-3`.
    ("closures on the scratch buffer (im2col; channels-last packing and output scatter)", r"with_scratch"),
    ("GEMM micro-kernels", r"gemm|matmul|nano_gemm|sgemm"),
    ("im2col / col2im", r"im2col|col2im|conv_cpu"),
    # burn's `unary_op` is where the composed SiLU/GELU evaluated their exp and erf.
    ("exp / erf / activations", r"expf|exp\b|erf|silu|gelu|sigmoid|tanh|activation_cpu|exp_shifted|unary_op"),
    ("normalisation", r"norm_cpu|group_norm|layer_norm|instance_norm"),
    ("strided copies / layout changes", r"copy|strided|contiguous|permute|swap|transpose|reshape|broadcast|gather|to_contiguous"),
    ("memmove / memcpy / memset", r"memmove|memcpy|memset"),
    ("allocation", r"malloc|free|alloc|realloc|mmap|page_fault|clear_page"),
    ("attention (softmax, scores)", r"softmax|attention"),
    ("rayon work items (inlined loops) and scheduling", r"rayon|crossbeam|futex|sched_|spin|park"),
]

TARGETS = {"expand": 1.0}
TARGET_FMNIST_64 = 1.5


def row_key(r):
    return (r["prior"], r["resolution"], r["batch"], r["workload"])


def across_records(speeds, latest, baseline):
    """Each row's dace and diffusers rates in every record, and dace's change from `baseline` to
    `latest` (how much dace itself moved, independent of the peer's run-to-run spread; the two
    records should come from one machine)."""
    rows = {}
    for label, rec in speeds.items():
        for r in rec["rows"]:
            entry = rows.setdefault(row_key(r), {"prior": r["prior"], "resolution": r["resolution"], "batch": r["batch"],
                                                 "workload": r["workload"], "dace_img_s": {}, "diffusers_img_s": {}})
            entry["dace_img_s"][label] = r["dace_img_s"]
            entry["diffusers_img_s"][label] = r["diffusers_img_s"]
    for entry in rows.values():
        # The first baseline record that has the row (one machine's records may be split by row).
        before = next((entry["dace_img_s"][b] for b in baseline.split(",") if b in entry["dace_img_s"]), None)
        now = entry["dace_img_s"].get(latest)
        entry["dace_change_percent"] = None if not (before and now) else 100 * (now / before - 1)
    return list(rows.values())


def across_records_md(rows, labels, latest, baseline):
    md = ["## Each row across the records", "",
          f"dace's and diffusers' rates (images/s) in every record; the last column is dace's own change from `{baseline}` to `{latest}`.", "",
          "| prior | px | batch | workload | " + " | ".join(f"dace `{l}`" for l in labels) + " | "
          + " | ".join(f"diffusers `{l}`" for l in labels) + " | dace change |",
          "|---|---|---|---|" + "---|" * (2 * len(labels) + 1)]
    for e in rows:
        cells = [rate(e["dace_img_s"][l]) if l in e["dace_img_s"] else "—" for l in labels]
        cells += [rate(e["diffusers_img_s"][l]) if l in e["diffusers_img_s"] else "—" for l in labels]
        change = e["dace_change_percent"]
        cells.append("—" if change is None else f"{change:+.0f} %")
        md.append(f"| {e['prior']} | {e['resolution']} | {e['batch']} | {e['workload']} | " + " | ".join(cells) + " |")
    return md + [""]


def rate(img_s):
    """Images/s with three significant digits at least (the 256 px rows are ~0.06)."""
    return f"{img_s:.2f}" if img_s >= 1 else f"{img_s:.4f}"


def parse_perf(path):
    """[(percent, symbol)] from a `perf report --stdio --no-children --sort symbol` listing."""
    rows = []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(?:\S+\s+)?\[[.k]\]\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), re.sub(r"[\s-]+$", "", m.group(2))))
    return rows


def group_perf(rows):
    totals = {name: 0.0 for name, _ in GROUPS}
    totals["other"] = 0.0
    for pct, sym in rows:
        for name, pat in GROUPS:
            if re.search(pat, sym, re.IGNORECASE):
                totals[name] += pct
                break
        else:
            totals["other"] += pct
    return totals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latest", default="after", help="label of the record the .json reports")
    ap.add_argument("--baseline", default="after", help="label of the record dace's change is measured from (comma-separated: the first that has the row)")
    args = ap.parse_args()
    # Records in the order before, after, then any others by name.
    order = lambda p: ({"before": 0, "after": 1}.get(p.stem.split("-", 1)[1], 2), p.stem)
    speeds = {p.stem[len("speed-"):]: json.loads(p.read_text()) for p in sorted(RAW.glob("speed-*.json"), key=order)}
    perfs = {p.stem[len("perf-"):]: parse_perf(p) for p in sorted(RAW.glob("perf-*.txt"), key=order)}
    if args.latest not in speeds:
        raise SystemExit(f"no docs/results/expansion_speed/speed-{args.latest}.json (have: {sorted(speeds)})")
    latest = speeds[args.latest]
    out = {k: latest[k] for k in ("rows", "commit", "machine", "command")}
    out["dace_binary"] = latest.get("dace_binary")
    out["renderer"] = f"python3 bench/expansion_speed_results.py --latest {args.latest} --baseline {args.baseline}"
    # Every record the .md shows, with its own command, commit, machine and binary.
    out["records"] = {label: {k: rec.get(k) for k in ("rows", "command", "commit", "machine", "dace_binary")}
                      for label, rec in speeds.items()}
    out["across_records"] = across_records(speeds, args.latest, args.baseline)
    out["change_from"] = args.baseline
    out["profile_shares_percent"] = {label: group_perf(rows) for label, rows in perfs.items()}
    # fidelity.json, then fidelity-2.json, ...: one record per kernel change checked.
    fidelities = [json.loads(p.read_text()) for p in sorted(RAW.glob("fidelity*.json"), key=lambda p: (len(p.name), p.name))]
    if fidelities:
        out["fidelity"] = fidelities[-1]
        out["fidelity_records"] = fidelities
    (ROOT / "docs/results/expansion_speed.json").write_text(json.dumps(out, indent=1) + "\n")

    md = ["# Expansion throughput on the CPU: dace vs diffusers (issue 18)", ""]
    md += [
        "Written by `python3 bench/expansion_speed_results.py` from the raw records in",
        "`docs/results/expansion_speed/` (`speed-*.json`: `bench/prior_speed.py --suite`; `perf-*.txt`:",
        "`perf report` of `perf record -g` on `dace bench prior`).",
        "",
        "Workloads as `dace bench prior` defines them: `unet_forward` is one UNet call at t = 500;",
        "`expand` is a whole expansion (VAE encode, posterior sample, noise, 5 Euler-ancestral steps",
        "at strength 1, VAE decode). Rates are images/s, medians of alternating dace/diffusers repeats",
        "in one script run on the same CPU and threads; ratio = dace / diffusers.",
        f"Targets: expand ratio >= {TARGETS['expand']:.1f}x on every row, >= {TARGET_FMNIST_64:.1f}x for the Fashion-MNIST prior at batch 64.",
        "",
    ]
    for label, rec in speeds.items():
        md += [f"## `{label}`: dace {rec.get('dace_binary', '?')}", "",
               f"- command: `{rec['command']}`",
               f"- recorded at commit `{rec['commit']}`",
               f"- machine: {rec['machine']}; torch {rec['versions']['torch']}, diffusers {rec['versions']['diffusers']}; "
               f"{rec['repeats']} repeats ({rec.get('repeats_256px', rec['repeats'])} at 256 px), at least {rec['seconds']} s and 3 timed runs after 2 warm-up runs per measurement", "",
               "| prior | px | batch | workload | dace img/s | diffusers img/s | ratio | target |",
               "|---|---|---|---|---|---|---|---|"]
        for r in rec["rows"]:
            target = TARGET_FMNIST_64 if (r["prior"] == "fashion-mnist" and r["batch"] == 64 and r["workload"] == "expand") \
                else TARGETS.get(r["workload"])
            if target is None:
                verdict = "—"
            elif r["ratio"] >= target:
                verdict = f"met ({target:.1f}x)"
            else:
                verdict = f"**missed** by {100 * (1 - r['ratio'] / target):.0f} % ({target:.1f}x)"
            md.append(f"| {r['prior']} | {r['resolution']} | {r['batch']} | {r['workload']} | {rate(r['dace_img_s'])} | "
                      f"{rate(r['diffusers_img_s'])} | {r['ratio']:.2f}x | {verdict} |")
        md.append("")
    md += across_records_md(out["across_records"], list(speeds), args.latest, args.baseline)
    if perfs:
        md += ["## Where the time goes (`perf`, Fashion-MNIST prior, batch 64, 2 threads)", "",
               "Share of samples per group of symbols (self time; the grouping patterns are in the renderer):", ""]
        labels = list(perfs)
        grouped = {label: group_perf(rows) for label, rows in perfs.items()}
        md.append("| group | " + " | ".join(f"`{l}`" for l in labels) + " |")
        md.append("|---|" + "---|" * len(labels))
        for name in [g for g, _ in GROUPS] + ["other"]:
            md.append(f"| {name} | " + " | ".join(f"{grouped[l][name]:.1f} %" for l in labels) + " |")
        md.append("")
        for label, rows in perfs.items():
            md += [f"Top symbols of `{label}`:", "", "| self % | symbol |", "|---|---|"]
            for pct, sym in rows[:12]:
                md.append(f"| {pct:.2f} | `{sym[:110]}` |")
            md.append("")
    if fidelities:
        md += ["## Regeneration of packages distilled before each change", "",
               "Each package distilled and regenerated by the old binary, regenerated again by the new one.",
               "Bound: largest pixel difference <= 1/255 where the arithmetic changed.", ""]
    for f in fidelities:
        md += [f"`{f['command']}` (commit `{f['commit']}`; old: {f['old_binary']}; new: {f['new_binary']}; {f['machine']}):", "",
               "| variant | images | largest pixel difference | PSNR | bit-identical |", "|---|---|---|---|---|"]
        for r in f["rows"]:
            psnr = "inf" if r["psnr_db"] is None else f"{r['psnr_db']:.1f} dB"
            md.append(f"| {r['variant']} | {r['images']} | {r['max_abs_diff']}/255 | {psnr} | {r['bit_identical']} |")
        md.append("")
    notes = RAW / "notes.md"
    if notes.exists():
        md += [notes.read_text().rstrip(), ""]
    (ROOT / "docs/results/expansion_speed.md").write_text("\n".join(md))
    print("wrote docs/results/expansion_speed.{md,json}")


if __name__ == "__main__":
    main()
