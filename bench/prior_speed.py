#!/usr/bin/env python3
"""UNet forward and full-expansion throughput of a dace prior: dace (CPU, optionally wgpu) and
PyTorch + diffusers on the same CPU, in one script run, on the same weights.

The PyTorch side loads the prior's vae/ and unet/ directories with diffusers' own
`from_pretrained` (dace writes them in diffusers' layout), and the class table from
class_embedder/. The workload matches `dace bench prior`: UNet forward at t=500 on a batch of
latents; expansion = VAE encode, posterior sample, noise to the first of `steps` Euler-ancestral
steps at strength 1 (trailing spacing), `steps` UNet calls and scheduler steps, VAE decode.

    /work/torch-venv/bin/python bench/prior_speed.py --prior artifacts/priors/fashion-mnist \
        --dace target/release/dace --devices cpu,wgpu --out docs/results
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
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel, EulerAncestralDiscreteScheduler
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    vae = AutoencoderKL.from_pretrained(os.path.join(prior, "vae")).eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(prior, "unet")).eval()
    table = load_file(os.path.join(prior, "class_embedder", "diffusion_pytorch_model.safetensors"))
    emb = table["embedding.weight"]
    index = json.load(open(os.path.join(prior, "model_index.json")))
    c, h, w = index["image_shape"]
    classes = torch.arange(batch) % len(index["classes"])
    ctx = emb[classes].unsqueeze(1)
    g = torch.Generator().manual_seed(0)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.randn(batch, vae.config.latent_channels, h // f, w // f, generator=g)
    images = torch.rand(batch, c, h, w, generator=g) * 2 - 1
    sched = EulerAncestralDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                            beta_schedule="scaled_linear", timestep_spacing="trailing")
    scale = vae.config.scaling_factor

    def unet_fwd():
        with torch.inference_mode():
            unet(z, 500, encoder_hidden_states=ctx).sample

    def expand():
        with torch.inference_mode():
            lat = vae.encode(images).latent_dist.sample(generator=g) * scale
            sched.set_timesteps(steps)
            noise = torch.randn(lat.shape, generator=g)
            x = sched.add_noise(lat, noise, sched.timesteps[:1])
            for t in sched.timesteps:
                eps = unet(sched.scale_model_input(x, t), t, encoder_hidden_states=ctx).sample
                x = sched.step(eps, t, x, generator=g).prev_sample
            vae.decode(x / scale).sample

    rows = []
    for what, fn in [("unet_forward", unet_fwd), (f"expand_{steps}_steps", expand)]:
        ms = timed(fn, seconds)
        rows.append({"device": "torch-cpu", "what": what, "batch": batch, "ms_per_batch": ms,
                     "img_per_s": batch * 1e3 / ms})
    import diffusers
    return rows, {"torch": torch.__version__, "diffusers": diffusers.__version__}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", required=True)
    ap.add_argument("--dace", default="target/release/dace")
    ap.add_argument("--devices", default="cpu", help="dace devices, e.g. cpu,wgpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--wgpu-batch", type=int, default=16, help="smaller batch on wgpu/lavapipe (slow)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="directory for prior_speed.json")
    args = ap.parse_args()

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
