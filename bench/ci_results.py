#!/usr/bin/env python3
"""docs/results/ci.{md,json} from the raw records under docs/results/ci/:

  * */summary.txt: fresh-machine runs of the README's two commands (bench/fresh_machine.sh);
  * runs.json: timed runs of .ci/run, one object per run (command, commit, machine, seconds).

    python3 bench/ci_results.py
"""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "docs/results/ci"


def fresh_runs():
    runs = []
    for summary in sorted(RAW.glob("*/summary.txt")):
        text = summary.read_text()
        field = lambda key: (re.search(rf"^{key}:? (.*)$", text, re.M) or [None, None])[1]
        machine = field("machine")
        if machine is None and (summary.parent / "machine.txt").exists():
            machine = (summary.parent / "machine.txt").read_text().strip()
        run = {"record": str(summary.relative_to(ROOT)), "commit": field("commit"), "machine": machine,
               "cargo_home_before": field("cargo home"), "command": "bench/fresh_machine.sh " + str(summary.parent.relative_to(ROOT))}
        if (summary.parent / "measure.sh").exists():
            run["command"] = str((summary.parent / "measure.sh").relative_to(ROOT)) + " (the first version of bench/fresh_machine.sh)"
        for step, m in ((m.group(1), m) for m in re.finditer(r"^(test|demo) rc=(\d+) seconds=(\d+)$", text, re.M)):
            run[step] = {"exit_status": int(m.group(2)), "seconds": int(m.group(3))}
            log = summary.parent / f"{step}.log"
            if log.exists():
                run[step]["crates_compiled"] = compiled(log)
        runs.append(run)
    return runs


def compiled(log):
    """Names of the crates a cargo log compiled."""
    return sorted({m.group(1) for m in re.finditer(r"^\s*Compiling (\S+) v", log.read_text(), re.M)})


def minutes(s):
    return f"{s} s ({s / 60:.1f} min)"


def main():
    fresh = fresh_runs()
    ci = json.loads((RAW / "runs.json").read_text())["runs"]
    md = ["# Build and CI times", "", "Written by `python3 bench/ci_results.py` from the raw records in `docs/results/ci/`.", ""]
    md += ["## The README's two commands on a fresh machine", "",
           "A clean clone, an empty target dir and an empty cargo cache (`bench/fresh_machine.sh`); the test",
           "command installs its Debian packages first.", "",
           "| record | commit | machine | `scripts/test.sh` | then `cargo run --release -- demo` |", "|---|---|---|---|---|"]
    for r in fresh:
        cell = lambda step: (f"{minutes(r[step]['seconds'])}, exit {r[step]['exit_status']}" if step in r else "not run")
        md.append(f"| `{r['record']}` | `{r['commit']}` | {r['machine']} | {cell('test')} | {cell('demo')} |")
    for r in fresh:
        if "demo" in r and "test" in r:
            md += ["", f"`{r['record']}`: the test command compiled {len(r['test']['crates_compiled'])} crates; the demo, run after it in the",
                   f"same target dir, compiled {len(r['demo']['crates_compiled'])} more before it ran: cargo resolved other features for",
                   "`cargo run` than for `cargo test` (the dev-dependency tempfile turns on bitflags' and fastrand's `std`,",
                   "the tests used safetensors' defaults), so the whole wgpu/cubecl stack and burn were built twice."]
    unification = RAW / "unification" / "build.log"
    if unification.exists():
        names = compiled(unification)
        md += ["", "Since then Cargo.toml asks for the same features in the normal build. Measured on that tree",
               f"(`docs/results/ci/unification/`): `cargo build --release` after the test build compiled {len(names)} crates",
               f"({', '.join(names)}): the bin reuses every dependency the tests built. A fresh-machine run of the",
               "two commands with the fix has not been timed yet."]
    no_root = RAW / "no-root" / "output.txt"
    if no_root.exists():
        md += ["", "Without root, on a machine lacking a package, the test command stops at once with the exact",
               f"install line (`{no_root.relative_to(ROOT)}`):", "", "```text", no_root.read_text().rstrip(), "```"]
    md += ["", "## `.ci/run`", "", "| when | commit | run | wall time | status | command |", "|---|---|---|---|---|---|"]
    for r in ci:
        md.append(f"| {r['when']} | `{r['commit']}` | {r['run']} | {minutes(r['seconds'])} | {r['status']} | `{r['command']}` |")
    notes = [f"- {r['when']}, {r['run']}: {r['notes']}" for r in ci if r.get("notes")]
    if notes:
        md += ["", "Notes:", ""] + notes
    machines = sorted({r["machine"] for r in ci} | {r["machine"] for r in fresh if r["machine"]})
    md += ["", "Machines: " + "; ".join(machines) + "."]
    (ROOT / "docs/results/ci.md").write_text("\n".join(md) + "\n")
    out = {"command": "python3 bench/ci_results.py", "fresh_machine": fresh, "ci_runs": ci}
    if no_root.exists():
        out["without_root"] = {"record": str(no_root.relative_to(ROOT)), "output": no_root.read_text()}
    if unification.exists():
        out["bin_after_test_build"] = {"record": str(unification.relative_to(ROOT)), "crates_compiled": compiled(unification)}
    (ROOT / "docs/results/ci.json").write_text(json.dumps(out, indent=2) + "\n")
    print("wrote docs/results/ci.md and docs/results/ci.json")


if __name__ == "__main__":
    main()
