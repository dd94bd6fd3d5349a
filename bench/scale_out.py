#!/usr/bin/env python3
"""Scale-out (issue 20), the parts this machine can run: a distillation split into class shards
and merged, compared byte for byte with the single-process package; a package student's peak
memory and epoch time under several regeneration-cache budgets; and, on paper, the wall time of
ImageNet-1K IPC 10 on 1, 8 and 64 GPUs from the per-expansion time measured on the lent GPU
(docs/results/gpu.json); the same shards as a Slurm job array on a one-node cluster started here
(deploy/slurm/local-cluster.sh, as root, Debian's slurm-wlm and munge); and a student on a larger
package whose images exceed the cache budget by far.

    python3 bench/scale_out.py --dace target/release/dace --out docs/results/scale_out/run-2.json
    python3 bench/scale_out.py --render docs/results/scale_out/run-2.json

Data: the embedded Fashion-MNIST subset with the committed teacher and prior (artifacts/).
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

TEACHER = "artifacts/teachers/fashion-mnist-convnet3"
PRIOR = "artifacts/priors/fashion-mnist"
FILES = ("manifest.json", "patches.bin", "labels.bin")


def run(cmd):
    """Runs `cmd`: (wall seconds, peak RSS MiB of the process, from wait4)."""
    with tempfile.TemporaryFile(mode="w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sys.stderr, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd)} failed:\n{err.read()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def shards(args, work):
    """Single process vs `--shards` class shards + merge, from one coreset."""
    common = distill_args(args, args.seeds)
    coreset = os.path.join(work, "coreset")
    run([args.dace, "coreset", "--data", "embedded", "--teacher", TEACHER, "--ipc", str(args.ipc), "--factor", "2",
         "--out", coreset])
    single = os.path.join(work, "single")
    single_s, _ = run([args.dace, "distill", *common, "--coreset", coreset, "--out", single])
    dirs, shard_rows = [], []
    for i in range(args.shards):
        d = os.path.join(work, f"shard{i}")
        wall, _ = run([args.dace, "distill", *common, "--coreset", coreset, "--shard", f"{i}/{args.shards}", "--out", d])
        report = json.load(open(os.path.join(d, "distill_report.json")))["report"]
        shard_rows.append({"shard": f"{i}/{args.shards}", "classes": len(report["classes"]), "items": report["items"],
                           "expansions": report["expansions"], "partner_expansions": report["partner_expansions"],
                           "wall_s": wall})
        dirs.append(d)
    merged = os.path.join(work, "merged")
    merge_s, _ = run([args.dace, "package", "merge", *dirs, "--out", merged])
    files = [{"file": f, "single_sha256": sha(os.path.join(single, f)), "merged_sha256": sha(os.path.join(merged, f))}
             for f in FILES]
    return single, coreset, {"merged_equals_single": all(f["single_sha256"] == f["merged_sha256"] for f in files),
                    "files": files, "single_s": single_s, "merge_s": merge_s, "shards": shard_rows}


def distill_args(args, seeds):
    return ["--data", "embedded", "--teacher", TEACHER, "--prior", PRIOR, "--ipc", str(args.ipc), "--factor", "2",
            "--seeds", str(seeds), "--variant", "sr-aug-mixup", "--threads", str(os.cpu_count())]


def slurm(args, work, single, coreset):
    """The same shards as a job array on a one-node Slurm cluster started here, timed from
    `dace slurm submit` to the merge job's completion."""
    cluster = os.path.join("/tmp", f"dace-bench-slurm-{os.getpid()}")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy", "slurm", "local-cluster.sh")
    subprocess.run([script, "start", cluster], check=True, stdout=sys.stderr)
    env = dict(os.environ, SLURM_CONF=os.path.join(cluster, "slurm.conf"))
    try:
        version = subprocess.run(["sbatch", "--version"], env=env, capture_output=True, text=True).stdout.strip()
        out = os.path.join(work, "slurm-run")
        start = time.perf_counter()
        subprocess.run([args.dace, "slurm", "submit", "--shards", str(args.shards), "--out", out, "--",
                        *distill_args(args, args.seeds), "--coreset", coreset], env=env, check=True, stdout=sys.stderr)
        merge = json.load(open(os.path.join(out, "slurm", "jobs.json")))["merge_job"]
        while True:
            show = subprocess.run(["scontrol", "show", "job", "-o", merge], env=env, capture_output=True, text=True).stdout
            state = next((f.split("=", 1)[1] for f in show.split() if f.startswith("JobState=")), "UNKNOWN")
            if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                break
            time.sleep(0.5)
        wall = time.perf_counter() - start
        if state != "COMPLETED":
            sys.exit(f"the Slurm merge job ended {state}; logs in {out}/slurm/logs")
        equal = all(sha(os.path.join(out, "package", f)) == sha(os.path.join(single, f)) for f in FILES)
        return {"version": version, "tasks": args.shards, "wall_s": wall, "merged_equals_single": equal,
                "cpus": os.cpu_count()}
    finally:
        subprocess.run([script, "stop", cluster], stdout=sys.stderr)
        shutil.rmtree(cluster, ignore_errors=True)


def student(args, package, out, epochs, cache_mb, prefetch):
    wall, rss = run([args.dace, "student", "--package", package, "--prior", PRIOR, "--data", "embedded",
                     "--epochs", str(epochs), "--cache-mb", str(cache_mb), "--threads", str(os.cpu_count()),
                     *([] if prefetch else ["--no-prefetch"]), "--out", out])
    record = json.load(open(os.path.join(out, "report.json")))
    report = record["report"]
    return {"cache_mb": cache_mb, "peak_rss_mb": rss, "epoch_s": report["seconds"] / epochs,
            "regen_s": report["regen_seconds"], "cache_hits": record["cache"]["hits"],
            "cached_mb": record["cache"]["cached_mb"], "prefetch": prefetch, "epochs": epochs,
            "final_accuracy": report["final_accuracy"], "wall_s": wall}


def students(args, package, work):
    return [student(args, package, os.path.join(work, f"student-{cache_mb}-{prefetch}"), args.epochs, cache_mb, prefetch)
            for cache_mb in args.cache_mb for prefetch in (False, True)]


def large_students(args, coreset, work):
    """A package of `--large-seeds` seeds trained for as many epochs, so that every seed's images
    are made once and together exceed the small budget many times over."""
    package = os.path.join(work, "large")
    run([args.dace, "distill", *distill_args(args, args.large_seeds), "--coreset", coreset, "--out", package])
    rows = [student(args, package, os.path.join(work, f"large-{mb}"), args.large_seeds, mb, True)
            for mb in (args.cache_mb[1], 1024)]
    for r in rows:
        r["package_seeds"] = args.large_seeds
    return rows


def projection(gpu_json):
    """ImageNet-1K IPC 10 at r = 2 (40 patches per class) with 300 seeds, the SDXL-Turbo
    expansion measured on the lent GPU (CUDA, 512 px, batch 1, 5 steps, f16 where measured)."""
    rows = [r for r in json.load(open(gpu_json))["prior"]
            if r["device"] == "cuda" and r["what"] == "expand_5_steps" and r["prior"] == "sdxl-turbo"]
    best = min(rows, key=lambda r: r["ms_per_batch"] / r["batch"])
    per_image_s = best["ms_per_batch"] / 1000 / best["batch"]
    expansions = 1000 * 40 * 300
    return {"expansions": expansions, "per_expansion_s": per_image_s, "measured": {k: best[k] for k in ("dtype", "batch", "ms_per_batch")},
            "gpus": [{"gpus": g, "wall_h": expansions * per_image_s / g / 3600} for g in (1, 8, 64)],
            "assumes": "shards of whole classes scale linearly (no shared state but the prior's weights); "
                       "CutMix partners add up to one more expansion per labelled image on small shards "
                       "(not counted); labelling and I/O not counted"}


def measure(args):
    with tempfile.TemporaryDirectory() as work:
        package, coreset, merge = shards(args, work)
        slurm_row = slurm(args, work, package, coreset)
        student_rows = students(args, package, work)
        large_rows = large_students(args, coreset, work)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"merged_equals_single": merge["merged_equals_single"], "shards": merge, "slurm": slurm_row,
            "student": student_rows, "large_student": large_rows, "projection": projection("docs/results/gpu.json"),
            "settings": {"ipc": args.ipc, "seeds": args.seeds, "epochs": args.epochs, "large_seeds": args.large_seeds},
            "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.uname().release}",
            "command": " ".join(sys.argv), "partial": "issue 20 part 2 (several GPUs in one process) needs GPUs and is not measured here"}


def slurm_lines(record):
    r = record["slurm"]
    if r is None:
        return ["", "## Under Slurm", "", "Not measured in this record."]
    return ["", "## Under Slurm", "",
            f"The same {r['tasks']} shards as a job array (`dace slurm submit --shards {r['tasks']}`, one array "
            f"task per shard, a dependent merge job) on a one-node cluster started on this machine "
            f"(deploy/slurm/local-cluster.sh, {r['version']}, {r['cpus']} CPUs shared by the tasks): "
            f"{r['wall_s']:.0f} s from submission to the merge job's completion. Merged package byte-identical "
            f"to the single-process one: **{'yes' if r['merged_equals_single'] else 'NO'}**. The requeue of a "
            "running task (it resumes from its per-seed checkpoint without redoing finished seeds) is "
            "exercised by tests/slurm.rs, which CI runs."]


def student_lines(record):
    settings = record["settings"]
    lines = ["", "## A package student under a regeneration-cache budget", "",
             f"`dace student --package` for {settings['epochs']} epochs on the single-process package "
             f"({settings['seeds']} seeds; every epoch's images regenerated from its seed unless cached), "
             "with the next epoch regenerated on its own thread (prefetch) or between epochs (`--no-prefetch`). "
             "Peak RSS of the process (wait4); regeneration s is the time training waited for images.", "",
             "| package seeds | epochs | --cache-mb | prefetch | peak RSS MiB | s / epoch | regeneration s | cache hits | cached MiB | final accuracy % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = record["student"] + record.get("large_student", [])
    lines += [f"| {r.get('package_seeds', settings['seeds'])} | {r.get('epochs', settings['epochs'])} | {r['cache_mb']} | "
              f"{'yes' if r['prefetch'] else 'no'} | {r['peak_rss_mb']:.0f} | {r['epoch_s']:.2f} | {r['regen_s']:.1f} | "
              f"{r['cache_hits']} | {r['cached_mb']:.1f} | {r['final_accuracy']:.2f} |" for r in rows]
    accuracies = sorted({r["final_accuracy"] for r in record["student"]})
    lines += ["", "Same package, same seeds: " + (
        f"every budget and feed ends at the same accuracy ({accuracies[0]:.2f} %): cached, prefetched and inline "
        "regeneration give the student the same images, and its training sums in a fixed order."
        if len(accuracies) == 1 else
        f"final accuracy differs between runs ({', '.join(f'{a:.2f}' for a in accuracies)} %), which it should not: "
        "a determinism bug to find.")]
    by = {(r["cache_mb"], r["prefetch"]): r for r in record["student"]}
    pairs = [(by[(mb, False)], by[(mb, True)]) for mb in sorted({mb for mb, _ in by}) if (mb, False) in by and (mb, True) in by]
    if pairs:
        extra = [on["peak_rss_mb"] - off["peak_rss_mb"] for off, on in pairs]
        waited = [(off["regen_s"], on["regen_s"]) for off, on in pairs]
        lines += ["", f"Prefetch costs {min(extra):.0f} to {max(extra):.0f} MiB of peak RSS (the expansion's working "
                  "memory alive beside training's, not images: an epoch here is 0.3 MiB) and cuts the time training "
                  "waits for images from " + ", ".join(f"{a:.0f}" for a, _ in waited) + " s to " +
                  ", ".join(f"{b:.0f}" for _, b in waited) + " s (by budget). On 2 cores regeneration and training "
                  "share the CPUs, so it overlaps only partly; it hides regeneration where the two run on different "
                  "devices or cores."]
    large = record.get("large_student", [])
    if len(large) == 2:
        small, full = large
        lines += ["", f"On the {small['package_seeds']}-seed package all seeds' images are {full['cached_mb']:.1f} MiB "
                  f"(what the unbounded cache ends up holding). Under --cache-mb {small['cache_mb']} the cache holds "
                  f"{small['cached_mb']:.1f} MiB and peak RSS is {small['peak_rss_mb']:.0f} MiB, "
                  f"{full['peak_rss_mb'] - small['peak_rss_mb']:.0f} MiB below the unbounded run's "
                  f"{full['peak_rss_mb']:.0f} MiB: the budget bounds the images' memory; the rest is the process "
                  "(model, prior, evaluation data, one epoch in training and one being made)."]
    return lines


def render(path):
    record = json.load(open(path))
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "scale_out")
    summary = {k: record[k] for k in ("merged_equals_single", "slurm", "commit", "machine", "command", "partial")}
    summary["shards"] = len(record["shards"]["shards"])
    summary["student"] = [{k: r[k] for k in ("cache_mb", "peak_rss_mb", "epoch_s", "prefetch")} | {"package_seeds": r.get("package_seeds", record["settings"]["seeds"])}
                          for r in record["student"] + record.get("large_student", [])]
    summary["projection"] = record["projection"]
    summary["rendered_by"] = f"python3 bench/scale_out.py --render {path}"
    with open(base + ".json", "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    s, p = record["shards"], record["projection"]
    lines = [
        "# Scale-out (issue 20)" + (" — partial" if record.get("partial") else ""), "",
        f"Written by `python3 bench/scale_out.py --render {path}` from the raw record, which "
        f"`{record['command']}` wrote at commit {record['commit']} on {record['machine']}. "
        f"The record says what it did not measure: {record['partial']}. Since then several GPUs in one process "
        "(`--device cuda:0,cuda:1`, `wgpu:N`) is built and tested with `--device cpu,cpu` (merged package and "
        "regenerated images byte-identical to one device, tests/package.rs); it is not measured on GPUs (none lent). "
        "Coreset shards (`dace coreset --shard i/n`, `dace coreset merge`) are tested the same way.", "",
        "## Class shards merged vs one process", "",
        f"`dace distill` of the embedded Fashion-MNIST subset (IPC {record['settings']['ipc']}, r = 2, "
        f"{record['settings']['seeds']} seeds, sr-aug-mixup, committed teacher and prior) in one process "
        f"({s['single_s']:.0f} s) and as {len(s['shards'])} shards from the same coreset, run one after "
        f"the other here, then `dace package merge` ({s['merge_s']:.1f} s).", "",
        f"**Merged package byte-identical to the single-process one: {'yes' if record['merged_equals_single'] else 'NO'}**", "",
        "| file | single sha256 | merged sha256 |", "|---|---|---|"]
    lines += [f"| {f['file']} | {f['single_sha256'][:16]} | {f['merged_sha256'][:16]} |" for f in s["files"]]
    lines += ["", "| shard | classes | items | own expansions | CutMix partner expansions | wall s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['shard']} | {r['classes']} | {r['items']} | {r['expansions']} | {r['partner_expansions']} | {r['wall_s']:.0f} |"
              for r in s["shards"]]
    lines += slurm_lines(record)
    lines += student_lines(record)
    lines += ["", "## On paper: ImageNet-1K, IPC 10", "",
              f"{p['expansions']:,} expansions (1000 classes x 40 patches x 300 seeds) at "
              f"{p['per_expansion_s']:.2f} s each (SDXL-Turbo, 512 px, 5 steps, CUDA {p['measured']['dtype']}, "
              f"batch {p['measured']['batch']}, measured on an H100 in docs/results/gpu.json). Assumes "
              f"{p['assumes']}.", "",
              "| GPUs | wall time (hours) |", "|---|---|"]
    lines += [f"| {g['gpus']} | {g['wall_h']:.0f} |" for g in p["gpus"]]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {base}.json and {base}.md")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dace")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--large-seeds", type=int, default=60)
    p.add_argument("--cache-mb", type=int, nargs="+", default=[0, 2, 1024])
    p.add_argument("--out")
    p.add_argument("--render")
    args = p.parse_args()
    if args.render:
        render(args.render)
        return
    if not (args.dace and args.out):
        p.error("--dace and --out are needed to measure")
    record = measure(args)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {args.out}")
    render(args.out)


if __name__ == "__main__":
    main()
