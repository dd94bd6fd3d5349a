#!/usr/bin/env python3
"""docs/results/kernels.md from docs/results/kernels.json: the rows of `dace bench kernels --json`
(CPU and lavapipe, the command and commit in the file) and the GPU rows and conformance that
bench/gpu_results.py adds from the raw device outputs in docs/results/gpu/.

    python3 bench/kernels_results.py

The tables and the conformance errors are computed from the JSON; the prose is fixed text. Two
numbers have no raw output and are marked as unrecorded on the page.
"""
import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "docs/results/kernels.json"
OUT = ROOT / "docs/results/kernels.md"
UNRECORDED = "unrecorded (hand-entered in commit {}, no raw output kept)"
CLOSE = 0.30  # a miss within 30 % of its target says by how much


def sci(v):
    """5.9604645e-07 -> 5.96e-7"""
    mant, exp = f"{v:.2e}".split("e")
    return f"{mant}e{int(exp)}"


def latents(r):
    b, c, h, w = r["shape"]
    return f"{b} x {c}x{h}x{w}"


def verdict(value, target, at_least):
    met = value >= target if at_least else value <= target
    if met:
        return "met"
    miss = (target - value) / target if at_least else (value - target) / target
    return f"missed by {miss * 100:.0f} %" if miss < CLOSE else "missed"


def ratio(v):
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def row(r, t, gb_s):
    cells = [r["device"], latents(r), f"{r['fused_ms']:.3f}", f"{r['unfused_ms']:.3f}",
             f"**{r['speedup_vs_unfused']:.2f}x** ({verdict(r['speedup_vs_unfused'], t['speedup_vs_unfused_min'], True)})",
             f"{r['copy_ms']:.3f}",
             f"**{ratio(r['fused_over_copy'])}** ({verdict(r['fused_over_copy'], t['fused_over_copy_max'], False)})"]
    if gb_s:
        cells.append(f"{r['fused_gb_s']:.2f}")
    return "| " + " | ".join(cells) + " |"


def both_met(r, t):
    return r["speedup_vs_unfused"] >= t["speedup_vs_unfused_min"] and r["fused_over_copy"] <= t["fused_over_copy_max"]


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    kj = json.loads(SRC.read_text())
    t = kj["targets"]
    gpu = kj["gpu"]
    rows = kj["rows"]
    local = [r for r in rows if "H100" not in r["device"]]
    lent = [r for r in rows if "H100" in r["device"]]
    by_shape = lambda rs: sorted(rs, key=lambda r: -r["shape"][2])  # 64x64 before 8x8, device order kept
    met = [f"{'CUDA' if r['backend'] == 'cuda' else r['device']} for {latents(r)}" for r in rows if both_met(r, t)]
    title = (f"targets met on {'; '.join(met)}, missed elsewhere" if met else "targets missed")
    conf = gpu["conformance"]
    L = [f"# Fused diffusion kernels (issue 5): microbenchmark — {title}", "",
         "Written by `python3 bench/kernels_results.py` from `docs/results/kernels.json` (the rows of `dace bench",
         "kernels`; the GPU rows and conformance added by `bench/gpu_results.py` from `docs/results/gpu/`).", "",
         "What is measured: one Euler-ancestral denoising step `x' = ca*x + ce*eps + cz*z` with `z` standard",
         "normal noise, on a batch of latents.", "",
         "- **fused**: dace's kernel (`kernels::diffusion::scheduler_step`). It reads `x` and `eps`, draws",
         "  `z` in the kernel from the portable Philox stream of each latent, and writes `x'`. On the CPU",
         "  backend this is the plain-Rust reference, parallel over latents. On wgpu it is",
         "  `shaders/scheduler_step.wgsl`.",
         "- **unfused**: the same math as separate burn tensor ops:",
         "  `x*ca + eps*ce + Tensor::random(Normal)*cz`, using burn's own (non-portable) random numbers.",
         "- **copy**: `x + eps`, an elementwise op that moves the same bytes as the fused step (two reads",
         "  and one write per element) with none of its arithmetic.", "",
         "Command (the RDED experiment sharing the machine was paused with `SIGSTOP` during the run):", "",
         "```sh", kj["command"], "```", "",
         f"- commit `{kj['commit']}`; machine: {kj['machine']}.",
         "- \"wgpu\" is Mesa's lavapipe, i.e. Vulkan emulated on the same 2 CPU cores: it shows correctness and",
         "  launch overhead, not GPU speed. No GPU was available to this task.", "",
         "| backend | latents | fused ms | unfused ms | fused speed-up (target >= 2x) | copy ms | fused / copy (target <= 1.5) | fused GB/s |",
         "|---|---|---|---|---|---|---|---|"]
    L += [row(r, t, True) for r in by_shape(local)]
    L += ["", "A 2-second run a minute earlier gave 2.00x / 1.86x / 3.01x / 2.28x for the speed-up column and",
          "61 / 2.75 / 43 / 2.34 for fused/copy; these eight numbers are",
          f"{UNRECORDED.format('e5dc5b2')}. So the lavapipe",
          "speed-ups sit around the 2x target within ±10 % run-to-run noise, and the CPU ones are above it.", "",
          f"## On a GPU (lent NVIDIA H100, commit {gpu['commit']})", "",
          "Same command with `--backend cuda,wgpu --seconds 1` (`bench/gpu_session.sh`; full tables and the",
          "conformance run in [gpu.md](gpu.md)):", "",
          "| backend | latents | fused ms | unfused ms | fused speed-up (target >= 2x) | copy ms | fused / copy (target <= 1.5) |",
          "|---|---|---|---|---|---|---|"]
    L += [row(r, t, False) for r in sorted(lent, key=lambda r: (r["backend"] != "cuda", -r["shape"][2]))]
    L += ["", "On the GPU the Philox rounds cost next to nothing, as expected below: the CUDA step is within",
          "1.5x of a copy for the 4x64x64 batch. At these sizes (1 MB of latents) every op is dominated by",
          "launch overhead, which is larger through burn's wgpu runtime than through its CUDA one.", "",
          "## Why the copy target is missed on the CPU", "",
          "- **On the CPU the step is bound by arithmetic, not memory.** Each group of four elements costs one",
          "  Philox4x32-10 call (10 rounds of 32x32->64-bit multiplies) plus two Box-Muller pairs",
          "  (`ln`, `sqrt`, `sin`, `cos`): about 6 ns per element on 2 cores.",
          "- **The copy runs from cache.** It moves 3 MB, which stays in the CPU caches, so it reaches 90 GB/s.",
          "- **No memory-bound fused step could be within 1.5x of that.** A portable normal per element is",
          "  the point of the kernel: the student must regenerate the teacher's noise bit for bit.",
          "- **On lavapipe the shader is also compute-bound.** It uses series forms of `ln`/`sin`/`cos` so",
          "  that it matches the CPU to 1e-6 (see docs/FORMAT.md).",
          "- **What would close the gap:**",
          "  - SIMD Philox on the CPU (AVX-512 has 32-bit multiplies with high halves) and vectorised",
          "    Box-Muller.",
          "  - On a real GPU, where 10 Philox rounds are cheap next to a DRAM round trip, the fused/copy ratio",
          "    is expected to approach 1. That needs a device run, which this task did not have.", "",
          "## Correctness (tests, run in CI)", "",
          "- `tests/diffusion_kernels.rs`: the three kernels (scheduler step with and without noise,",
          "  add_noise, latent_lerp) on wgpu/lavapipe against the CPU reference, for batches 1x1, 3x23",
          "  (ragged tail), 2x64 and 16x256: max abs error <= 1e-5 (assertion). The CPU backend reproduces",
          "  the reference exactly and its noise equals the `SeedRng` normals.",
          "- `tests/diffusion.rs`: scheduler coefficients against diffusers 0.42.1 (fixture made by",
          "  `tests/fixtures/make_scheduler_fixture.py`): timesteps identical, step outputs within 8.7e-7",
          f"  (the figure is {UNRECORDED.format('e5dc5b2')}).",
          "  The reference kernels are checked against naive formulas, and the WGSL/CUDA numeric constants",
          "  against their intended bits.",
          "- `tests/rng.rs`: Philox4x32-10 Random123 known answers, the 32-bit-only multiply the shaders use,",
          "  and pinned scheme-v1 values.",
          "- `scripts/check_cuda.sh` (in CI, clang 14 CUDA front end, no CUDA toolkit): every `kernels/*.cu`",
          "  compiles to PTX for sm_80. Compiled as host C++, the CUDA code reproduces the Random123 known",
          "  answers and FORMAT.md's normals.",
          "- `cargo check --release --features cuda` (in CI) type-checks the CUDA launch glue.",
          f"- **CUDA conformance, run once on a lent H100** (`dace bench conformance --device cuda --random 60`:",
          "  the same kernels and cases as the wgpu test plus 60 random shapes and coefficients): max abs",
          f"  error {sci(conf['cuda']['max_abs_err'])}, and the noise-only step equals `SeedRng::normal_at` to "
          f"{sci(conf['cuda']['worst_per_kernel']['philox normals'])}. The same run on",
          f"  the H100's Vulkan driver: {sci(conf['wgpu']['max_abs_err'])}. The first attempt found the CUDA launches broken",
          "  (cubecl-cuda needs a kernel representation dace did not give it; the output was uninitialised",
          f"  memory): fixed in {gpu['commit']}, see [gpu.md](gpu.md).",
          "- `tests/diffusion_kernels.rs` now runs the same conformance code (`src/kernels/conformance.rs`)",
          "  on lavapipe in CI, with 4 random cases beside the fixed ones, and checks that the check itself",
          "  flags a 2e-5 error and a NaN."]
    OUT.write_text("\n".join(L) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
