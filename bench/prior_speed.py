#!/usr/bin/env python3
"""UNet forward and full-expansion throughput of a dace prior: dace (CPU, optionally wgpu) and
PyTorch + diffusers on the same CPU, in one script run, on the same weights.

The PyTorch side loads the prior's vae/ and unet/ directories with diffusers' own
`from_pretrained` (dace writes them in diffusers' layout), and the class table from
class_embedder/. The workload matches `dace bench prior`: UNet forward at t=500 on a batch of
latents; expansion = VAE encode, posterior sample, noise to the first of `steps` Euler-ancestral
steps at strength 1 (trailing spacing), `steps` UNet calls and scheduler steps, VAE decode.

    .venv-torch/bin/python bench/prior_speed.py --prior artifacts/priors/fashion-mnist \
        --dace target/release/dace --devices cpu,wgpu --out docs/results

With --suite it runs the rows of docs/results/expansion_speed.md instead (issue 18): the
Fashion-MNIST prior at batch 1, 16 and 64 and the SD-Turbo layout at 256 px, batch 1; each row
alternates dace and diffusers --repeat times and keeps the medians:

    .venv-torch/bin/python bench/prior_speed.py --suite --dace target/release/dace \
        --out docs/results/expansion_speed/LABEL.json

(.venv-torch: a virtual environment with bench/requirements-torch.txt, diffusers and safetensors
installed; see bench/requirements-torch.txt.)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def timed(fn, seconds):
    fn()
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        fn()
        n += 1
    return (time.perf_counter() - start) * 1e3 / n


def torch_rows(prior, batch, steps, seconds, threads):
    """The PyTorch rows of the single-prior mode: the suite's workloads on the prior in `prior`."""
    import diffusers
    import torch
    torch.set_num_threads(threads)
    work = torch_workloads(prior_models(prior), batch, steps)
    rows = []
    for what, fn in [("unet_forward", work["unet_forward"]), (f"expand_{steps}_steps", work["expand"])]:
        ms = timed(fn, seconds)
        rows.append({"device": "torch-cpu", "what": what, "batch": batch, "ms_per_batch": ms,
                     "img_per_s": batch * 1e3 / ms})
    return rows, {"torch": torch.__version__, "diffusers": diffusers.__version__}


# ---------------------------------------------------------------------------------------------
# The expansion-speed suite (issue 18): the rows users run, dace and diffusers alternating.

# The SD-Turbo layout of `dace bench prior --layout sd-turbo` (src/bench/prior.rs): its UNet and
# VAE configs, built here with diffusers' own random initialisation (speed does not depend on the
# weights' values).
SD_TURBO_UNET = {
    "sample_size": 64,
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 2,
    "use_linear_projection": True,
    "upcast_attention": True,
}
SD_TURBO_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

# (prior label, dace arguments, resolution, batch): the rows of docs/results/expansion_speed.md.
SUITE = [
    ("fashion-mnist", ["--prior", "artifacts/priors/fashion-mnist"], 28, 1),
    ("fashion-mnist", ["--prior", "artifacts/priors/fashion-mnist"], 28, 16),
    ("fashion-mnist", ["--prior", "artifacts/priors/fashion-mnist"], 28, 64),
    ("sd-turbo", ["--layout", "sd-turbo", "--resolution", "256"], 256, 1),
]


def torch_models(label, resolution):
    """(vae, unet, context width, tokens, image shape) for a suite prior."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    if label == "sd-turbo":
        torch.manual_seed(0)
        vae = AutoencoderKL(**SD_TURBO_VAE).eval()
        unet = UNet2DConditionModel(**SD_TURBO_UNET).eval()
        return vae, unet, None, (3, resolution, resolution)
    return prior_models("artifacts/priors/" + label)


def prior_models(prior):
    """(vae, unet, (class table, classes), image shape) of a dace prior directory, loaded by
    diffusers' own `from_pretrained` (dace writes them in diffusers' layout)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    vae = AutoencoderKL.from_pretrained(os.path.join(prior, "vae")).eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(prior, "unet")).eval()
    table = load_file(os.path.join(prior, "class_embedder", "diffusion_pytorch_model.safetensors"))["embedding.weight"]
    index = json.load(open(os.path.join(prior, "model_index.json")))
    return vae, unet, (table, len(index["classes"])), tuple(index["image_shape"])


def torch_workloads(models, batch, steps):
    """The two timed functions of `dace bench prior` in PyTorch: UNet forward, whole expansion."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler
    vae, unet, table, (c, h, w) = models
    g = torch.Generator().manual_seed(0)
    if table is None:  # a text-conditioned layout: 77 random context tokens
        ctx = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    else:
        emb, classes = table
        ctx = emb[torch.arange(batch) % classes].unsqueeze(1)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.randn(batch, vae.config.latent_channels, h // f, w // f, generator=g)
    images = torch.rand(batch, c, h, w, generator=g) * 2 - 1
    sched = EulerAncestralDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                            beta_schedule="scaled_linear", timestep_spacing="trailing")
    scale = vae.config.scaling_factor

    def unet_forward():
        with torch.inference_mode():
            unet(z, 500, encoder_hidden_states=ctx).sample

    def expand():
        with torch.inference_mode():
            lat = vae.encode(images).latent_dist.sample(generator=g) * scale
            sched.set_timesteps(steps)
            x = sched.add_noise(lat, torch.randn(lat.shape, generator=g), sched.timesteps[:1])
            for t in sched.timesteps:
                eps = unet(sched.scale_model_input(x, t), t, encoder_hidden_states=ctx).sample
                x = sched.step(eps, t, x, generator=g).prev_sample
            vae.decode(x / scale).sample

    return {"unet_forward": unet_forward, "expand": expand}


def dace_rates(dace, prior_args, batch, steps, seconds, threads):
    """img/s of `dace bench prior` for the two workloads (one process, as a user runs it)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rows.json")
        cmd = [dace, "bench", "prior", *prior_args, "--device", "cpu", "--batch", str(batch), "--steps", str(steps),
               "--seconds", str(seconds), "--threads", str(threads), "--json", path]
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        rows = json.load(open(path))["rows"]
    rates = {}
    for r in rows:
        if r["what"] == "unet_forward":
            rates["unet_forward"] = r["img_per_s"]
        elif r["what"].startswith("expand_"):
            rates["expand"] = r["img_per_s"]
    return rates


def suite(args):
    import statistics
    import torch
    torch.set_num_threads(args.threads)
    rows, runs = [], []
    for label, prior_args, resolution, batch in SUITE:
        if args.only and label not in args.only.split(","):
            continue
        models = torch_models(label, resolution)
        work = torch_workloads(models, batch, args.steps)
        samples = {"unet_forward": {"dace": [], "diffusers": []}, "expand": {"dace": [], "diffusers": []}}
        repeats = args.repeat if resolution < 256 else args.repeat_large
        for rep in range(repeats):
            for name, rate in dace_rates(args.dace, prior_args, batch, args.steps, args.seconds, args.threads).items():
                samples[name]["dace"].append(rate)
            for name, fn in work.items():
                samples[name]["diffusers"].append(batch * 1e3 / timed(fn, args.seconds))
            print(f"  {label} batch {batch} repeat {rep + 1}: " + ", ".join(
                f"{k} dace {v['dace'][-1]:.2f} / diffusers {v['diffusers'][-1]:.2f} img/s" for k, v in samples.items()),
                file=sys.stderr, flush=True)
        for name, s in samples.items():
            d, t = statistics.median(s["dace"]), statistics.median(s["diffusers"])
            rows.append({"device": "cpu", "prior": label, "resolution": resolution, "batch": batch, "workload": name,
                         "dace_img_s": d, "diffusers_img_s": t, "ratio": d / t})
            runs.append({"prior": label, "batch": batch, "workload": name, **s})
        del models, work
    import diffusers
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out = {
        "command": " ".join(sys.argv),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "dace_binary": args.dace_built_from or "built from the working tree at this commit",
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, {args.threads} threads on each side",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "steps": args.steps, "seconds": args.seconds, "repeats": args.repeat, "repeats_256px": args.repeat_large,
        "rows": rows, "runs": runs,
    }
    for r in rows:
        print(f"{r['prior']:<14} {r['resolution']:>4}px batch {r['batch']:>3} {r['workload']:<13} dace {r['dace_img_s']:9.2f} "
              f"diffusers {r['diffusers_img_s']:9.2f} img/s  ratio {r['ratio']:.2f}x")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        print("wrote", args.out)



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior")
    ap.add_argument("--dace", default="target/release/dace")
    ap.add_argument("--devices", default="cpu", help="dace devices, e.g. cpu,wgpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--wgpu-batch", type=int, default=16, help="smaller batch on wgpu/lavapipe (slow)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="directory for prior_speed.json (with --suite: the raw JSON file)")
    ap.add_argument("--suite", action="store_true",
                    help="the expansion-speed rows (Fashion-MNIST prior at batch 1/16/64, SD-Turbo layout at 256 px, "
                         "batch 1), dace and diffusers alternating --repeat times, medians")
    ap.add_argument("--repeat", type=int, default=3, help="--suite: alternating repeats per row")
    ap.add_argument("--repeat-large", type=int, default=1,
                    help="--suite: repeats of the 256 px rows (minutes per measurement on 2 cores)")
    ap.add_argument("--dace-built-from", default=None, help="--suite: what the --dace binary was built from (recorded)")
    ap.add_argument("--only", default=None, help="--suite: only these priors (comma-separated labels)")
    args = ap.parse_args()
    if args.suite:
        return suite(args)
    if not args.prior:
        ap.error("--prior is required without --suite")

    rows = []
    for dev in args.devices.split(","):
        batch = args.wgpu_batch if dev == "wgpu" else args.batch
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rows.json")
            cmd = [args.dace, "bench", "prior", "--prior", args.prior, "--device", dev, "--batch", str(batch),
                   "--steps", str(args.steps), "--seconds", str(args.seconds), "--json", path]
            if dev == "cpu":
                cmd += ["--threads", str(args.threads)]
            print("+", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True)
            for r in json.load(open(path))["rows"]:
                r["device"] = "dace-" + r["device"]
                rows.append(r)
    trows, versions = torch_rows(args.prior, args.batch, args.steps, args.seconds, args.threads)
    rows += trows
    for r in rows:
        print(f"{r['device']:<10} {r['what']:<16} batch {r['batch']:>4}: {r['ms_per_batch']:9.2f} ms  {r['img_per_s']:9.1f} img/s")
    by = {(r["device"], r["what"]): r["img_per_s"] for r in rows}
    ratios = {}
    for what in ["unet_forward", f"expand_{args.steps}_steps"]:
        if ("dace-cpu", what) in by and ("torch-cpu", what) in by:
            ratios[what] = by[("dace-cpu", what)] / by[("torch-cpu", what)]
            print(f"dace-cpu / torch-cpu {what}: {ratios[what]:.2f}x")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        out = {"command": " ".join(sys.argv), "threads": args.threads, "versions": versions, "rows": rows,
               "dace_over_torch": ratios}
        with open(os.path.join(args.out, "prior_speed.json"), "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
