#!/usr/bin/env python3
"""The ImageNet-style data path (issue 19): one epoch of training batches from a folder of
mixed-size JPEGs, dace against torchvision's ImageFolder + DataLoader on the same files and the
same CPU, in one run; and dace's peak memory with the folder read from its files batch by batch
versus decoded into memory, at two dataset sizes.

    .venv-torch/bin/python bench/data_loading.py --dace target/release/dace \\
        --out docs/results/data_loading/LABEL.json
    python3 bench/data_loading.py --render docs/results/data_loading/LABEL.json

The folder is synthetic (no ImageNet offline): smooth random images, shorter side 200-400 px,
aspect 3/4-4/3, JPEG quality 90 with fine noise (files of ImageNet's order of size; ImageNet's average ~110 KB), 10 classes. Both sides read
them at --size with a random resized crop + flip and normalise to float batches of --batch; dace
with its rayon pool on all cores, torchvision with a DataLoader of one worker per core.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

CLASSES = 10


def make_folder(root, per_class, seed):
    """`per_class` training and one validation JPEG per class under root/{train,val}/cNN/."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", 1)):
        for c in range(CLASSES):
            d = os.path.join(root, split, f"c{c:02d}")
            os.makedirs(d, exist_ok=True)
            for i in range(count):
                short = int(rng.integers(200, 401))
                aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
                w, h = (int(short * aspect), short) if aspect >= 1 else (short, int(short / aspect))
                coarse = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
                smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
                # Fine noise, so the files are about as large as ImageNet's (~110 KB).
                pixels = np.clip(smooth + rng.normal(0, 10, size=smooth.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(d, f"{i:05d}.jpg"), quality=90)


def mean_file_kb(folder):
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files]
    return sum(sizes) / len(sizes) / 1024


def run_dace(dace, folder, size, batch, in_memory_mb):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [dace, "bench", "data", "--data", folder, "--size", str(size), "--batch", str(batch),
               "--in-memory-mb", str(in_memory_mb), "--json", out.name]
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        return json.load(open(out.name))["rows"][0]


TORCH_EPOCH = r"""
import json, resource, sys, time
import torch, torchvision
from torchvision import datasets, transforms
folder, size, batch, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
start = time.perf_counter()
tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                         transforms.ToTensor(),
                         transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
ds = datasets.ImageFolder(folder + "/train", transform=tf)
load_s = time.perf_counter() - start
loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                     persistent_workers=False)
start = time.perf_counter()
n = 0
for x, y in loader:
    n += x.shape[0]
epoch_s = time.perf_counter() - start
rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
       + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
print(json.dumps({"images": n, "load_s": load_s, "epoch_s": epoch_s, "img_per_s": n / epoch_s,
                  "peak_rss_mb": rss, "workers": workers, "torch": torch.__version__,
                  "torchvision": torchvision.__version__}))
"""


def run_torch(folder, size, batch, workers):
    out = subprocess.run([sys.executable, "-c", TORCH_EPOCH, folder, str(size), str(batch), str(workers)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def measure(args):
    cores = os.cpu_count()
    rows, memory = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in args.per_class:
            folder = os.path.join(tmp, f"folder{per_class}")
            print(f"making {per_class * CLASSES} JPEGs ...", file=sys.stderr)
            make_folder(folder, per_class, seed=per_class)
            # Speed: dace (read from files) and torchvision alternating, medians.
            dace_runs, torch_runs = [], []
            for _ in range(args.repeat):
                dace_runs.append(run_dace(args.dace, folder, args.size, args.batch, 0))
                torch_runs.append(run_torch(folder, args.size, args.batch, cores))
            d, t = median([r["img_per_s"] for r in dace_runs]), median([r["img_per_s"] for r in torch_runs])
            rows.append({"images": per_class * CLASSES, "mean_file_kb": mean_file_kb(folder),
                         "size": args.size, "batch": args.batch,
                         "dace_img_s": d, "torchvision_img_s": t, "ratio": d / t,
                         "dace_runs": dace_runs, "torchvision_runs": torch_runs})
            # Memory: the same epoch with the decoded folder held in memory.
            held = run_dace(args.dace, folder, args.size, args.batch, 1 << 20)
            memory.append({"images": per_class * CLASSES, "size": args.size,
                           "files_peak_rss_mb": median([r["peak_rss_mb"] for r in dace_runs]),
                           "memory_peak_rss_mb": held["peak_rss_mb"], "memory_run": held,
                           "torchvision_peak_rss_mb": median([r["peak_rss_mb"] for r in torch_runs])})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"rows": rows, "memory": memory, "commit": commit, "dace_built_from": args.dace_built_from or commit,
            "machine": f"{platform.machine()}, {cores} cores, {platform.processor() or platform.uname().release}",
            "command": " ".join(sys.argv)}


def render(path):
    record = json.load(open(path))
    lines = [
        "# Data loading: ImageNet-style folders (issue 19)", "",
        f"Written by `python3 bench/data_loading.py --render {path}` from the raw record, which "
        f"`{record['command']}` wrote at commit {record['commit']} (dace built from "
        f"{record['dace_built_from']}) on {record['machine']}.", "",
        "One epoch of training batches (random resized crop + flip, normalised floats) from "
        "synthetic mixed-size JPEGs; dace reads the files batch by batch, torchvision's "
        "ImageFolder + DataLoader runs one worker per core. Medians of alternating runs.", "",
        "| images | mean file KB | size | batch | dace img/s | torchvision img/s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(f"| {r['images']} | {r['mean_file_kb']:.0f} | {r['size']} | {r['batch']} | {r['dace_img_s']:.0f} | "
                     f"{r['torchvision_img_s']:.0f} | {r['ratio']:.2f}x |")
    lines += ["", "Peak resident memory of the same epoch (MiB): dace reading the files, dace with "
              "the decoded folder held in memory, torchvision (main process + workers, summed).", "",
              "| images | size | dace, files | dace, in memory | torchvision |", "|---|---|---|---|---|"]
    for m in record["memory"]:
        lines.append(f"| {m['images']} | {m['size']} | {m['files_peak_rss_mb']:.0f} | "
                     f"{m['memory_peak_rss_mb']:.0f} | {m['torchvision_peak_rss_mb']:.0f} |")
    lines += ["", "Every raw record in the folder (the speed rows; dace's build differs between them, "
              "torchvision's runs show its spread from run to run):", "",
              "| record | dace built from | images | dace img/s | torchvision img/s | ratio |", "|---|---|---|---|---|---|"]
    folder = os.path.dirname(path)
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".json")):
        other = json.load(open(os.path.join(folder, name)))
        for r in other["rows"]:
            lines.append(f"| {name} | {other['dace_built_from']} | {r['images']} | {r['dace_img_s']:.0f} | "
                         f"{r['torchvision_img_s']:.0f} | {r['ratio']:.2f}x |")
    out_md = os.path.join(os.path.dirname(folder), "data_loading.md")
    open(out_md, "w").write("\n".join(lines) + "\n")
    summary = {k: record[k] for k in ("commit", "machine", "command")}
    summary["rows"] = [{k: r[k] for k in ("images", "mean_file_kb", "size", "batch", "dace_img_s", "torchvision_img_s", "ratio")}
                       for r in record["rows"]]
    summary["memory"] = [{k: m[k] for k in ("images", "size", "files_peak_rss_mb", "memory_peak_rss_mb",
                                            "torchvision_peak_rss_mb")} for m in record["memory"]]
    json.dump(summary, open(out_md[:-3] + ".json", "w"), indent=1)
    print(f"wrote {out_md} and {out_md[:-3]}.json")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dace", help="the dace binary")
    p.add_argument("--dace-built-from", help="the commit the binary was built from (default: HEAD)")
    p.add_argument("--per-class", type=int, nargs="+", default=[100, 400])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out")
    p.add_argument("--render", help="write docs/results/data_loading.{md,json} from this raw record")
    args = p.parse_args()
    if args.render:
        return render(args.render)
    if not (args.dace and args.out):
        p.error("--dace and --out are needed to measure")
    record = measure(args)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    json.dump(record, open(args.out, "w"), indent=1)
    print(f"wrote {args.out}")
    render(args.out)


if __name__ == "__main__":
    main()
