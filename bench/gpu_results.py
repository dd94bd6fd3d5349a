#!/usr/bin/env python3
"""docs/results/gpu.{md,json} from the raw outputs of bench/gpu_session.sh kept in docs/results/gpu/,
and the GPU rows of docs/results/kernels.json (issue 5) and the GPU timing of turbo.json and of
turbo.md's table (issue 9). Then bench/kernels_results.py renders kernels.md from kernels.json.

    python3 bench/gpu_results.py --commit 98f8508

Raw files (each copied from the device run's $OUT): conformance-{cuda,wgpu}.json, kernels-gpu.json,
expand-{cuda,wgpu}.json, prior-run*.json, log-run*.txt.
"""
import argparse, json, os

ap = argparse.ArgumentParser()
ap.add_argument("--raw", default="docs/results/gpu")
ap.add_argument("--out", default="docs/results")
ap.add_argument("--commit", required=True, help="commit of the dace binary that produced the raw files")
ap.add_argument("--machine", default="NVIDIA H100 80GB HBM3 (driver 580.159.04, CUDA 13.0), 16 CPU cores; "
                "wgpu on the NVIDIA Vulkan driver; lent device machine")
a = ap.parse_args()
load = lambda name: json.load(open(os.path.join(a.raw, name)))

conf = {d: load(f"conformance-{d}.json") for d in ("cuda", "wgpu")}
kernels = load("kernels-gpu.json")
expand = {d: load(f"expand-{d}.json") for d in ("cuda", "wgpu")}
# The newest run of each (device, prior, dtype, what) wins: run 3 re-timed CUDA after run 2's limit.
prior_rows = {}
for run in sorted(f for f in os.listdir(a.raw) if f.startswith("prior-run")):
    if run == "prior-run1.json":
        continue  # before the CUDA kernel fix (kept for the record, not reported)
    for r in load(run)["rows"]:
        prior_rows[(r["device"], r["prior"], r.get("dtype", "f32"), r["what"])] = dict(r, source=run)

targets = {"speedup_vs_unfused": 2.0, "fused_over_copy": 1.5, "conformance_max_abs_err": 1e-5}
data = {
    "commit": a.commit,
    "machine": a.machine,
    "command": "bench/gpu_session.sh (DACE=... FIDELITY=... OUT=...), then a CUDA-only re-run of "
               "`dace bench prior --layout sdxl-turbo --resolution 512 --batch 1 --steps 5 --seconds 0.1 --dtype f32,f16 --device cuda`",
    "targets": targets,
    "conformance": {d: {"cases": len({(r["batch"], r["len"], r["seed"]) for r in c["rows"]}),
                        "max_abs_err": c["max_abs_err"], "worst_per_kernel": dict(c["worst_per_kernel"])}
                    for d, c in conf.items()},
    "kernels": kernels["rows"],
    "fidelity": {d: {"psnr_db": e["compare"]["psnr_db"], "max_abs_pixel_diff": e["compare"]["max_abs_diff"],
                     "argmax_agreement": e["argmax_agreement"], "images": e["images"],
                     "images_per_s": e["images_per_s"]} for d, e in expand.items()},
    "prior": list(prior_rows.values()),
    # Kept for the record: timed before the CUDA kernel fix (its scheduler kernels did not run).
    "prior_run1_before_kernel_fix": load("prior-run1.json")["rows"],
}
json.dump(data, open(os.path.join(a.out, "gpu.json"), "w"), indent=1)

# kernels.json: the GPU rows beside the CPU / lavapipe ones; every row gets the issue's `device` key.
kpath = os.path.join(a.out, "kernels.json")
kj = json.load(open(kpath))
names = {"flex": "cpu (Flex)", "wgpu": "wgpu (lavapipe)"}
rows = [dict(r, device=r.get("device", names.get(r["backend"], r["backend"]))) for r in kj["rows"] if "H100" not in r.get("device", "")]
gpu_names = {"cuda": "cuda (H100)", "wgpu": "wgpu (Vulkan, H100)"}
rows += [dict(r, device=gpu_names[r["backend"]], commit=a.commit) for r in kernels["rows"]]
kj["rows"] = rows
kj["gpu"] = {"machine": a.machine, "commit": a.commit, "conformance": data["conformance"]}
json.dump(kj, open(kpath, "w"), indent=2)

# turbo.json: seconds per expansion at 512 px on the GPU.
tpath = os.path.join(a.out, "turbo.json")
tj = json.load(open(tpath))
tj["gpu_seconds_per_expansion"] = {
    f"{r['prior']} {r['device']} {r['dtype']}": round(r["ms_per_batch"] / r["batch"] / 1000, 3)
    for r in prior_rows.values() if r["what"].startswith("expand")}
tj["gpu_unet_forward_ms"] = {
    f"{r['prior']} {r['device']} {r['dtype']}": round(r["ms_per_batch"] / r["batch"], 1)
    for r in prior_rows.values() if r["what"] == "unet_forward"}
tj["gpu_f16_eps_rel_err_vs_f32"] = {
    f"{r['prior']} {r['device']}": r["eps_rel_err_vs_f32"]
    for r in prior_rows.values() if r.get("eps_rel_err_vs_f32") is not None}
tj["gpu_machine"] = a.machine
tj["gpu_commit"] = a.commit
tj["missing"] = [m for m in tj.get("missing", []) if "GPU" not in m and "f16" not in m]
tj["partial"] = bool(tj["missing"])
json.dump(tj, open(tpath, "w"), indent=2)

# turbo.md: the SDXL-Turbo timings as a table, between its markers (the rest of the page is prose).
mpath = os.path.join(a.out, "turbo.md")
begin, end = "<!-- gpu-table: bench/gpu_results.py -->", "<!-- /gpu-table -->"
tmd = open(mpath).read()
if begin in tmd:
    sec = lambda dev, dtype, what: next((r["ms_per_batch"] / r["batch"] / 1000 for (d, p, dt, w), r in prior_rows.items()
                                         if (d, p, dt) == (dev, "sdxl-turbo", dtype) and w.startswith(what)), None)
    T = [begin, "| device | UNet type | UNet step s | VAE encode + decode s | seconds per expansion |", "|---|---|---|---|---|"]
    for dev, name in (("cuda", "cuda"), ("wgpu", "wgpu (Vulkan)")):
        for dtype in ("f32", "f16"):  # the VAE runs in f32 in every row
            if sec(dev, dtype, "expand") is not None:
                vae = sec(dev, "f32", "vae_encode") + sec(dev, "f32", "vae_decode")
                T.append(f"| {name} | {dtype} | {sec(dev, dtype, 'unet_forward'):.3f} | {vae:.2f} | **{sec(dev, dtype, 'expand'):.2f}** |")
    T.append(end)
    open(mpath, "w").write(tmd[:tmd.index(begin)] + "\n".join(T) + tmd[tmd.index(end) + len(end):])

ok = lambda v, t, le=True: "met" if (v <= t if le else v >= t) else "missed"
L = ["# GPU results (lent NVIDIA H100)", "",
     f"Machine: {a.machine}. dace at commit `{a.commit}` (the binaries of runs 2 and 3 were built from",
     "that working tree just before it was committed: `CUDARC_CUDA_VERSION=13000 cargo build --release",
     "--features cuda` here) and run there by `bench/gpu_session.sh`; raw outputs and logs in",
     "`docs/results/gpu/`. Table made by `bench/gpu_results.py`.", "",
     "## Kernel conformance (issue 5)", "",
     "`dace bench conformance --device D --random 60`: 6 fixed and 60 random cases (batch 1-24, length",
     "1-6000, random coefficients), every kernel against the CPU reference; the noise-only step is also",
     "compared with `SeedRng::normal_at` directly (row \"philox normals\").", "",
     "| kernel | cuda max abs error | wgpu (Vulkan) max abs error | bound |", "|---|---|---|---|"]
for k, e in conf["cuda"]["worst_per_kernel"]:
    L.append(f"| {k} | {e:.2e} | {dict(conf['wgpu']['worst_per_kernel'])[k]:.2e} | 1e-5 |")
L += ["", "The first device run found the CUDA path broken: cubecl-cuda reads the compiler's representation",
      "of a kernel for its shared-memory size and panicked on dace's raw kernels (which had none); the",
      "launch was dropped and the output was uninitialised memory (errors up to 10, PSNR 7.8 dB on the",
      "fidelity package; `log-run1.txt`). dace now hands it the representation of an empty kernel",
      "(`src/kernels/diffusion.rs`); the numbers above are after that fix.", "",
      "## Fused scheduler step vs separate ops vs copy (issue 5)", "",
      "`dace bench kernels --backend cuda,wgpu --seconds 1`.", "",
      "| device | latents | fused ms | unfused ms | speed-up (>= 2x) | copy ms | fused / copy (<= 1.5) | fused GB/s |",
      "|---|---|---|---|---|---|---|---|"]
for r in kernels["rows"]:
    b, c, h, w = r["shape"]
    L.append(f"| {gpu_names[r['backend']]} | {b} x {c}x{h}x{w} | {r['fused_ms']:.3f} | {r['unfused_ms']:.3f} | "
             f"**{r['speedup_vs_unfused']:.2f}x** ({ok(r['speedup_vs_unfused'], 2.0, False)}) | {r['copy_ms']:.3f} | "
             f"**{r['fused_over_copy']:.2f}** ({ok(r['fused_over_copy'], 1.5)}) | {r['fused_gb_s']:.1f} |")
L += ["", "These latents are 1 MB: every op here takes a few microseconds of launch and synchronisation",
      "overhead, not memory time (a copy at 150 GB/s is 5 % of the H100's bandwidth). On CUDA the fused",
      "step meets both targets for the 4x64x64 batch and misses the copy target by 6 % for 256 x 4x8x8.",
      "On wgpu the per-dispatch overhead of burn's wgpu runtime dominates and both targets are missed.", "",
      "## Regeneration across devices (issue 7's package)", "",
      "The Fashion-MNIST IPC 1 sr-aug-mixup package of docs/results/fidelity.md (160 expansions, made on",
      "the CPU here) regenerated on the GPU and compared with its CPU regeneration:", "",
      "| device | PSNR vs CPU | largest pixel difference | teacher argmax = stored label argmax |", "|---|---|---|---|"]
for d, f in data["fidelity"].items():
    L.append(f"| {gpu_names[d]} | {f['psnr_db']:.2f} dB | {f['max_abs_pixel_diff']} / 255 | {f['argmax_agreement']:.2f} % |")
L += ["", "## Seconds per expansion at 512 px (issue 9)", "",
      "`dace bench prior --layout sdxl-turbo --resolution 512 --batch 1 --steps 5 --dtype f32,f16`: the real",
      "SDXL-Turbo UNet (2.6 G parameters) and VAE shapes with random weights; an expansion is VAE encode,",
      "5 Euler-a UNet steps (strength 1: the most a Turbo expansion runs), VAE decode. The VAE runs in",
      "f32 in every row; f16 rows hold the UNet's weights and activations in f16, with the relative",
      "error of its eps against f32 on the same input.", "",
      "| layout | device | UNet type | VAE encode s | VAE decode s | UNet forward s | expansion s | f16 eps rel. error |",
      "|---|---|---|---|---|---|---|---|"]
for (dev, prior, dtype, what), r in sorted(prior_rows.items()):
    if not what.startswith("expand"):
        continue
    g = lambda w, dt="f32": prior_rows.get((dev, prior, dt, w), {}).get("ms_per_batch", float("nan")) / 1000
    err = r.get("eps_rel_err_vs_f32")
    L.append(f"| {prior} | {gpu_names[dev]} | {dtype} | {g('vae_encode'):.2f} | {g('vae_decode'):.2f} | "
             f"{g('unet_forward', dtype):.3f} | **{r['ms_per_batch'] / 1000:.2f}** | {'' if err is None else f'{err:.1e}'} |")
L += ["", "- The VAE at 512 px (convolutions over 512x512x128 activations, a 4096-token attention) takes",
      "  3.6 s of the 5.8 s CUDA expansion, more than the five UNet steps (0.45 s each in f32, 0.34 s in",
      "  f16). Which of its ops is slow was not profiled in the device time; it is the first thing to",
      "  speed up for full-resolution use.",
      "- f16 speeds the UNet up 1.3x on CUDA and 1.5x on wgpu. Whether burn 0.21's kernels use the tensor",
      "  cores for these shapes was not checked; no PyTorch comparison was run in the device time.",
      "- The f16 error (2-3 % of max |eps| with random weights; 0.3 % on the tiny parity UNet against",
      "  diffusers' fp32) is why dace records the UNet type in the package and regenerates with the",
      "  same type on every device.",
      "- SD-Turbo's layout (865 M-parameter UNet) was timed on CUDA only in the first run, before the",
      "  kernel fix (its scheduler kernels were not running): UNet 0.40 s, expansion 5.52 s",
      "  (`prior-run1.json`); its re-run with the VAE rows and f16 did not finish in its time limit.",
      ""]
open(os.path.join(a.out, "gpu.md"), "w").write("\n".join(L))
print("\n".join(L))
