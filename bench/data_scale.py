#!/usr/bin/env python3
"""ImageNet-scale input on this machine (issue 19): a folder of 10k and 100k mixed-size JPEGs,
indexed and streamed through dace's teacher training and coreset selection with the peak memory
of each process recorded, the decode + resize throughput of one epoch beside torchvision's
ImageFolder + DataLoader (PIL) on the same folder with the same thread count, and the teacher
import's parity with torchvision on full-size ResNet-18/50 and on the committed torchvision/timm
fixtures.

    .venv-torch/bin/python bench/data_scale.py --dace target/release/dace \\
        --out docs/results/data_scale/run-1.json
    python3 bench/data_scale.py --render docs/results/data_scale/run-1.json

The folder (--root, kept between runs) is Fashion-MNIST's 60k training images (Debian's
dataset-fashion-mnist), each colourised with a random foreground/background pair and resized to
a random 64-512 px box (aspect 1/2-2), 1 in 20 saved greyscale, JPEG quality 90: 10 classes,
100k files (the first 60k images reused with other colours and sizes), plus 20 validation images
per class. The 10k folder is hard links to the first 1000 files per class of the 100k one.
"""
import argparse
import gzip
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time

CLASSES = 10
VAL_PER_CLASS = 20
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
FMNIST_LABELS = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"


# --- the folder --------------------------------------------------------------------------------

def read_fmnist():
    import numpy as np
    with gzip.open(FMNIST) as f:
        _, n, h, w = struct.unpack(">IIII", f.read(16))
        images = np.frombuffer(f.read(), dtype=np.uint8).reshape(n, h, w)
    with gzip.open(FMNIST_LABELS) as f:
        f.read(8)
        labels = np.frombuffer(f.read(), dtype=np.uint8)
    return images, labels


def write_image(job):
    """One colourised, resized JPEG: (path, 28x28 pixels, seed)."""
    import numpy as np
    from PIL import Image
    path, pixels, seed = job
    rng = np.random.default_rng(seed)
    fg, bg = rng.integers(0, 256, size=(2, 3))
    t = (pixels.astype(np.float32) / 255.0)[..., None]
    rgb = (t * fg + (1 - t) * bg).astype(np.uint8)
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    long_side = int(rng.integers(64, 513))
    w, h = (long_side, max(64, int(long_side / aspect))) if aspect >= 1 else (max(64, int(long_side * aspect)), long_side)
    img = Image.fromarray(rgb).resize((w, h), Image.BICUBIC)
    if rng.integers(0, 20) == 0:
        img = img.convert("L")
    img.save(path, quality=90)


def make_folder(root, images):
    """root/full: `images` training JPEGs (class folders c00..c09) + val; root/small: 10k links."""
    import numpy as np
    from multiprocessing import Pool
    done = os.path.join(root, f"full-{images}.done")
    full = os.path.join(root, "full")
    if not os.path.exists(done):
        pixels, labels = read_fmnist()
        jobs = []
        for split, count in (("train", images), ("val", VAL_PER_CLASS * CLASSES)):
            for c in range(CLASSES):
                os.makedirs(os.path.join(full, split, f"c{c:02d}"), exist_ok=True)
            offset = 0 if split == "train" else len(pixels) - count
            for i in range(count):
                k = (offset + i) % len(pixels)
                path = os.path.join(full, split, f"c{labels[k]:02d}", f"{i:06d}.jpg")
                jobs.append((path, pixels[k], 1_000_003 * i + (split == "val")))
        with Pool(os.cpu_count()) as pool:
            for n, _ in enumerate(pool.imap_unordered(write_image, jobs, chunksize=256)):
                if n % 10000 == 0:
                    print(f"  {n}/{len(jobs)} JPEGs", file=sys.stderr)
        open(done, "w").close()
    return full


def linked_subset(root, full, per_class):
    """root/sub-N: hard links to the first `per_class` training files of each class, all val."""
    sub = os.path.join(root, f"sub-{per_class * CLASSES}")
    if os.path.exists(sub + ".done"):
        return sub
    for split in ("train", "val"):
        for c in sorted(os.listdir(os.path.join(full, split))):
            src = os.path.join(full, split, c)
            dst = os.path.join(sub, split, c)
            os.makedirs(dst, exist_ok=True)
            files = sorted(os.listdir(src))
            for f in files[:per_class] if split == "train" else files:
                if not os.path.exists(os.path.join(dst, f)):
                    os.link(os.path.join(src, f), os.path.join(dst, f))
    open(sub + ".done", "w").close()
    return sub


def folder_stats(folder):
    from PIL import Image
    paths = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(folder, "train")) for f in files]
    sizes = [os.path.getsize(p) for p in paths]
    sample = paths[:: max(1, len(paths) // 500)]
    dims = [Image.open(p).size for p in sample]
    return {"files": len(paths), "mean_file_kb": sum(sizes) / len(sizes) / 1024,
            "min_side": min(min(d) for d in dims), "max_side": max(max(d) for d in dims)}


# --- measurements ------------------------------------------------------------------------------

def peak_rss_of(cmd):
    """Runs `cmd`: (stdout, wall seconds, peak RSS in MiB of that process, from wait4)."""
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read()[-3000:]}")
        return out.read(), wall, usage.ru_maxrss / 1024


def dace_epoch(dace, folder, size, batch):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [dace, "bench", "data", "--data", folder, "--size", str(size), "--batch", str(batch),
               "--crop", "resized", "--in-memory-mb", "0", "--json", out.name]
        _, wall, rss = peak_rss_of(cmd)
        row = json.load(open(out.name))["rows"][0]
    row.update({"wall_s": wall, "peak_rss_mb": rss})
    return row


TORCH_EPOCH = r"""
import json, sys, time
import torch, torchvision
from torchvision import datasets, transforms
folder, size, batch, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
start = time.perf_counter()
tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                         transforms.ToTensor(),
                         transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
# convert("RGB") as dace does: greyscale files become 3-channel images.
ds = datasets.ImageFolder(folder + "/train", transform=tf)
load_s = time.perf_counter() - start
loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
start = time.perf_counter()
n = 0
for x, y in loader:
    n += x.shape[0]
epoch_s = time.perf_counter() - start
print(json.dumps({"images": n, "load_s": load_s, "epoch_s": epoch_s, "img_per_s": n / epoch_s,
                  "workers": workers, "torch": torch.__version__, "torchvision": torchvision.__version__}))
"""


def torch_epoch(folder, size, batch, workers):
    # wait4's peak RSS is the largest of the main process and its reaped workers, not their sum.
    out, wall, rss = peak_rss_of([sys.executable, "-c", TORCH_EPOCH, folder, str(size), str(batch), str(workers)])
    row = json.loads(out.strip().splitlines()[-1])
    row.update({"wall_s": wall, "peak_rss_mb": rss})
    return row


def teacher_train(dace, folder, work, size):
    out = os.path.join(work, "teacher")
    cmd = [dace, "teacher", "train", "--data", folder, "--arch", "convnet3", "--resize", str(size),
           "--epochs", "1", "--batch", "128", "--crop", "resized", "--in-memory-mb", "0", "--out", out]
    stdout, wall, rss = peak_rss_of(cmd)
    report = json.load(open(os.path.join(out, "report.json")))
    return out, {"wall_s": wall, "peak_rss_mb": rss, "stdout": stdout.strip(), "test_accuracy": report_accuracy(report)}


def report_accuracy(report):
    history = report.get("history") or []
    return history[-1].get("test_accuracy") if history else None


def coreset(dace, folder, teacher, work, per_class, crops):
    out = os.path.join(work, "coreset")
    cmd = [dace, "coreset", "--data", folder, "--teacher", teacher, "--ipc", "10", "--factor", "2",
           "--crops", str(crops), "--mipc", str(per_class), "--in-memory-mb", "0", "--out", out]
    stdout, wall, rss = peak_rss_of(cmd)
    return {"wall_s": wall, "peak_rss_mb": rss, "stdout": stdout.strip(), "mipc": per_class, "crops": crops}


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def scale_row(args, folder, images, work):
    repeats = args.repeat if images <= 20000 else 1
    dace_runs, torch_runs = [], []
    for _ in range(repeats):  # alternating, medians
        dace_runs.append(dace_epoch(args.dace, folder, args.size, args.batch))
        torch_runs.append(torch_epoch(folder, args.size, args.batch, os.cpu_count()))
    teacher_dir, teacher = teacher_train(args.dace, folder, work, args.teacher_size)
    # --mipc of every image: no class is larger than the folder.
    core = coreset(args.dace, folder, teacher_dir, work, images, args.crops)
    d = median([r["img_per_s"] for r in dace_runs])
    t = median([r["img_per_s"] for r in torch_runs])
    peaks = {"bench_data": max(r["peak_rss_mb"] for r in dace_runs), "teacher_train": teacher["peak_rss_mb"],
             "coreset": core["peak_rss_mb"]}
    return {"images": images, "peak_rss_mb": max(peaks.values()), "peak_rss_by_command_mb": peaks,
            "dace_img_s": d, "torch_img_s": t, "ratio": d / t, "size": args.size, "batch": args.batch,
            "repeats": repeats, "folder": folder_stats(folder), "dace_runs": dace_runs, "torch_runs": torch_runs,
            "teacher_train": teacher, "coreset": core}


# --- teacher import parity ---------------------------------------------------------------------

def write_safetensors(path, tensors):
    """A safetensors file of {name: numpy array} (f32/f64), without the safetensors package."""
    import numpy as np
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        dtype = {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}[array.dtype]
        blob = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    import numpy as np
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    types = {"F64": np.float64, "F32": np.float32, "F16": np.float16}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype=types[info["dtype"]]).reshape(info["shape"])
    return out


def dace_parity(dace, weights, reference, size, work, name):
    out = os.path.join(work, f"import-{name}")
    # Not check=True: an import above the tolerance exits 1 but has written parity.json, and the
    # record should show the miss rather than stop.
    subprocess.run([dace, "teacher", "import", "--weights", weights, "--out", out, "--size", str(size),
                    "--parity", reference], stdout=sys.stderr)
    return json.load(open(os.path.join(out, "parity.json")))["max_abs_err"]


def full_size_parity(dace, work):
    """torchvision's ResNet-18/50 at full size, 1000 classes: torchvision's own random init with
    BN statistics and affine parameters perturbed by up to 10 % (so they are not the identity)."""
    import torch
    import torchvision
    rows = []
    for name in ("resnet18", "resnet50"):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.9, 1.1)
                    m.weight.uniform_(0.9, 1.1)
                    m.bias.uniform_(-0.1, 0.1)
            x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
            # torchvision's own f32 error against its f64 logits: the scale dace's error sits on.
            f32 = model(x.float()).double()
            logits = model.double()(x)
        weights = os.path.join(work, f"torchvision_{name}.pth")
        torch.save(model.float().state_dict(), weights)
        reference = os.path.join(work, f"{name}_reference.safetensors")
        write_safetensors(reference, {"input": x.float().numpy(), "logits": logits.numpy()})
        err = dace_parity(dace, weights, reference, 224, work, name)
        rows.append({"model": f"torchvision {name} (full size, 1000 classes, .pth, 224 px)", "max_abs_err": err,
                     "max_abs_logit": float(logits.abs().max()),
                     "torchvision_f32_err": float((f32 - logits).abs().max())})
    return rows


def fixture_parity(dace, work):
    """The committed narrow torchvision/timm files (tests/fixtures/teacher_import)."""
    fixtures = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "teacher_import")
    expected = read_safetensors(os.path.join(fixtures, "expected.safetensors"))
    rows = []
    for case in json.load(open(os.path.join(fixtures, "cases.json")))["files"]:
        reference = os.path.join(work, case["file"] + ".reference.safetensors")
        logits = expected[case["logits"]]
        write_safetensors(reference, {"input": expected["input"].astype("float32"), "logits": logits.astype("float64")})
        err = dace_parity(dace, os.path.join(fixtures, case["file"]), reference, 64, work, case["file"])
        rows.append({"model": f"{case['source']} {case['arch']} ({case['file']}, {case['dtype']}, narrow)",
                     "max_abs_err": err, "max_abs_logit": float(abs(logits).max())})
    return rows


# --- the record --------------------------------------------------------------------------------

def measure(args):
    os.makedirs(args.root, exist_ok=True)
    largest = max(args.images)
    print(f"making the {largest}-image folder in {args.root} (kept between runs) ...", file=sys.stderr)
    full = make_folder(args.root, largest)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for images in sorted(args.images):
            folder = full if images == largest else linked_subset(args.root, full, images // CLASSES)
            print(f"{images} images: {folder}", file=sys.stderr)
            row_work = os.path.join(work, str(images))
            os.makedirs(row_work)
            rows.append(scale_row(args, folder, images, row_work))
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("runs")}), file=sys.stderr)
        teacher_import = full_size_parity(args.dace, work) + fixture_parity(args.dace, work)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"rows": rows, "teacher_import": teacher_import, "commit": commit,
            "dace_built_from": args.dace_built_from or commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.uname().release}",
            "command": " ".join(sys.argv)}


def targets(record):
    rows = sorted(record["rows"], key=lambda r: r["images"])
    small, big = rows[0], rows[-1]
    growth = big["peak_rss_mb"] / small["peak_rss_mb"]
    worst = max(r["max_abs_err"] for r in record["teacher_import"])
    return [
        (f"peak RSS at {big['images']} images <= 1.3x the {small['images']} figure", f"{growth:.2f}x", growth <= 1.3),
        (f"peak RSS at {big['images']} images < 2 GB", f"{big['peak_rss_mb']:.0f} MiB", big["peak_rss_mb"] < 2048),
        ("decode throughput >= 1.0x torchvision (every row)", ", ".join(f"{r['ratio']:.2f}x" for r in rows),
         all(r["ratio"] >= 1.0 for r in rows)),
        ("teacher parity <= 1e-4", f"{worst:.1e}", worst <= 1e-4),
    ]


def render(path):
    record = json.load(open(path))
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "data_scale")
    summary = {"rows": [{k: r[k] for k in ("images", "peak_rss_mb", "dace_img_s", "torch_img_s")} for r in record["rows"]],
               "teacher_import": [{k: t[k] for k in ("model", "max_abs_err")} for t in record["teacher_import"]],
               "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in targets(record)],
               "commit": record["commit"], "machine": record["machine"], "command": record["command"],
               "rendered_by": f"python3 bench/data_scale.py --render {path}"}
    with open(base + ".json", "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    r0 = record["rows"][0]
    lines = [
        "# ImageNet-scale input on this machine (issue 19)", "",
        f"Written by `python3 bench/data_scale.py --render {path}` from the raw record, which "
        f"`{record['command']}` wrote at commit {record['commit']} (dace built from "
        f"{record['dace_built_from']}) on {record['machine']}.", "",
        "The folder: Fashion-MNIST's training images colourised and resized to random boxes of "
        f"{r0['folder']['min_side']}-{max(r['folder']['max_side'] for r in record['rows'])} px (1 in 20 greyscale), "
        "JPEG quality 90, 10 classes; the smaller folder is hard links to part of the larger. Every "
        "dace command reads the files batch by batch (`--in-memory-mb 0`); peak RSS is each process's "
        "own (`wait4`).", "",
        "## Targets", "", "| target | measured | met |", "|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets(record)]
    lines += ["", "## Memory and speed", "",
              f"Throughput: one epoch of {r0['size']}-px training batches (random resized crop + flip, "
              f"normalised floats, batch {r0['batch']}), dace's rayon pool on every core against "
              "torchvision's ImageFolder + DataLoader with one worker per core; medians of alternating runs "
              "(`repeats`). Teacher: convnet3, one epoch, `--crop resized`, at `--teacher-size` (16 px unless the command "
              "says otherwise), every file decoded from its full resolution. Coreset: "
              "every training image scored (`--mipc` = the number of images).", "",
              "| images | mean file KB | repeats | dace img/s | torchvision img/s | ratio | peak RSS MiB: bench data | teacher train | coreset | max | teacher s | coreset s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        p = r["peak_rss_by_command_mb"]
        lines.append(f"| {r['images']} | {r['folder']['mean_file_kb']:.0f} | {r['repeats']} | {r['dace_img_s']:.0f} | "
                     f"{r['torch_img_s']:.0f} | {r['ratio']:.2f}x | {p['bench_data']:.0f} | {p['teacher_train']:.0f} | "
                     f"{p['coreset']:.0f} | {r['peak_rss_mb']:.0f} | {r['teacher_train']['wall_s']:.0f} | "
                     f"{r['coreset']['wall_s']:.0f} |")
    lines += ["", f"The files are small ({r0['folder']['mean_file_kb']:.0f} KB on average; ImageNet's are ~110 KB), "
              "so these epochs weigh resizing more and entropy decoding less than ImageNet's would; "
              "docs/results/data_loading.md measures the same comparison on 45 KB files."]
    lines += ["", "torchvision's peak RSS (MiB, the largest of its processes, not their sum): " +
              ", ".join(f"{r['images']}: {median([t['peak_rss_mb'] for t in r['torch_runs']]):.0f}" for r in record["rows"]),
              "", "## Teacher import parity", "",
              "`dace teacher import --parity REF`: the imported teacher's logits against the ones "
              "torchvision computed (in f64) for the same input.", "",
              "torchvision's own f32 logits against its f64 ones are given where the run measured "
              "them: the error any f32 implementation carries.", "",
              "| model | max abs err | max abs logit | torchvision f32 vs f64 |", "|---|---|---|---|"]
    lines += [f"| {t['model']} | {t['max_abs_err']:.1e} | {t['max_abs_logit']:.2f} | "
              f"{format(t['torchvision_f32_err'], '.1e') if 'torchvision_f32_err' in t else ''} |" for t in record["teacher_import"]]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {base}.json and {base}.md")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dace", help="the dace binary")
    p.add_argument("--dace-built-from", help="the commit the binary was built from (default: HEAD)")
    p.add_argument("--root", default="/var/tmp/dace-data-scale", help="where the generated folders live")
    p.add_argument("--images", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--size", type=int, default=224, help="side of the throughput epoch's batches")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--teacher-size", type=int, default=16, help="side the teacher trains and scores at")
    p.add_argument("--crops", type=int, default=2, help="coreset crops scored per image")
    p.add_argument("--repeat", type=int, default=3, help="alternating repeats of the rows up to 20k images")
    p.add_argument("--out", help="raw record to write")
    p.add_argument("--render", help="raw record to render into docs/results/data_scale.{json,md}")
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
