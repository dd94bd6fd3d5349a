#!/usr/bin/env python3
"""docs/results/fidelity.{md,json} from the outputs of experiments/fidelity.sh."""
import argparse, json, os, subprocess

GPU_SECTION = """
## On a GPU

The same package (made on the CPU) regenerated on a lent GPU ({machine}; commit {commit};
docs/results/gpu.md):

| device | PSNR vs CPU | largest pixel difference | teacher argmax = stored label argmax |
|---|---|---|---|
| cuda | {cuda_psnr_db:.2f} dB | {cuda_max_abs_pixel_diff} / 255 | {cuda_argmax_agreement:.2f} % |
| wgpu (Vulkan) | {wgpu_psnr_db:.2f} dB | {wgpu_max_abs_pixel_diff} / 255 | {wgpu_argmax_agreement:.2f} % |
"""

ap = argparse.ArgumentParser()
ap.add_argument("--runs", default="runs/fidelity")
ap.add_argument("--out", default="docs/results")
ap.add_argument("--machine", default="AMD EPYC (AVX-512), 2 logical CPUs, 24 GiB, no GPU; wgpu on Mesa lavapipe (Vulkan on the CPU)")
a = ap.parse_args()

load = lambda p: json.load(open(os.path.join(a.runs, p)))
cpu_a, cpu_b, wgpu = load("cpu-a/expand.json"), load("cpu-b/expand.json"), load("wgpu/expand.json")
dist = load("package/distill_report.json")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
psnr = wgpu["compare"]["psnr_db"]
psnr_json = psnr if psnr != float("inf") else None
data = {
    "argmax_agreement": wgpu["argmax_agreement"],
    "psnr_db": psnr_json,
    "max_abs_pixel_diff": wgpu["compare"]["max_abs_diff"],
    "bit_identical_same_device": cpu_b["compare"]["bit_identical"],
    "bit_identical_across_devices": wgpu["compare"]["bit_identical"],
    "cpu_argmax_agreement": cpu_a["argmax_agreement"],
    "images": wgpu["images"],
    "package": dist["report"]["description"],
    "cpu_images_per_s": cpu_a["images_per_s"],
    "wgpu_images_per_s": wgpu["images_per_s"],
    "commit": commit,
    "machine": a.machine,
    "command": "DATA=/tmp/dace-data experiments/fidelity.sh",
}
json.dump(data, open(os.path.join(a.out, "fidelity.json"), "w"), indent=2)
ok = lambda b: "yes" if b else "no"
md = f"""# Fidelity of regeneration across devices

The same package regenerated on two devices must give the images its labels were made for.
Package: {data['package']} ({data['images']} expansions: 40 patches x {data['images'] // 40} seeds), made on the CPU.
Targets (issue 7): teacher-argmax agreement >= 99.9 %, PSNR >= 40 dB across devices; bit-identical
on one device.

| check | result | target |
|---|---|---|
| CPU twice: bit-identical | {ok(data['bit_identical_same_device'])} | yes |
| wgpu vs CPU: PSNR over all pixels | {'inf' if psnr_json is None else f'{psnr:.2f}'} dB | >= 40 dB |
| wgpu vs CPU: largest pixel difference | {data['max_abs_pixel_diff']} / 255 | |
| wgpu vs CPU: bit-identical | {ok(data['bit_identical_across_devices'])} | not required |
| teacher argmax on wgpu regenerations = stored label argmax | {data['argmax_agreement']:.2f} % | >= 99.9 % |
| teacher argmax on CPU regenerations = stored label argmax | {data['cpu_argmax_agreement']:.2f} % | 100 % |

The teacher (ConvNet-3, run on the CPU) sees each regenerated image under the package's seeded
augmentation (crop, flip, CutMix), exactly as the labels were made. Pixels differ across devices
only by the last bit of a float before u8 rounding: the UNet, VAE and the fused scheduler/noise
kernels (dace's WGSL on wgpu, plain Rust on the CPU) compute the same Philox noise.

Speed here is not the point (lavapipe is a software Vulkan driver): CPU {data['cpu_images_per_s']:.1f} img/s,
wgpu/lavapipe {data['wgpu_images_per_s']:.1f} img/s.

Command: `{data['command']}` · commit {commit} · machine: {a.machine}.
"""
# The same package regenerated on a GPU (bench/gpu_session.sh; docs/results/gpu.json), if run.
gpu_path = os.path.join(a.out, "gpu.json")
if os.path.exists(gpu_path):
    gpu = json.load(open(gpu_path))
    data["gpu"] = dict(gpu["fidelity"], machine=gpu["machine"], commit=gpu["commit"])
    json.dump(data, open(os.path.join(a.out, "fidelity.json"), "w"), indent=2)
    md += GPU_SECTION.format(**{f"{d}_{k}": v for d, f in gpu["fidelity"].items() for k, v in f.items()}, machine=gpu["machine"], commit=gpu["commit"])
open(os.path.join(a.out, "fidelity.md"), "w").write(md)
print(md)
