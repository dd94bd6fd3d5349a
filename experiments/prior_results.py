#!/usr/bin/env python3
"""Collects the prior's numbers into docs/results/prior.md and prior.json.

Inputs: the prior directory (train_state.json: training history and time), the report of
`dace prior eval` (prior_eval.json + PNG grids), bench/prior_speed.py's prior_speed.json, and the
diffusers parity errors printed by `cargo test --release --test prior_parity -- --nocapture`.

    python3 experiments/prior_results.py --prior artifacts/priors/fashion-mnist --eval runs/prior-eval \
        --speed runs/prior-speed/prior_speed.json --out docs/results --commit $(git rev-parse --short HEAD) \
        --machine "..."

Another dataset's prior is added to those files (its own section, without rerunning parity/speed):

    python3 experiments/prior_results.py --add --prior artifacts/priors/mnist --eval runs/prior-eval-mnist \
        --commit $(git rev-parse --short HEAD) --machine "..."
"""
import argparse
import json
import os
import re
import shutil
import subprocess

DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}

PARITY_NAMES = {
    "vae mean": "vae_encode_mean",
    "vae logvar": "vae_encode_logvar",
    "vae decode": "vae_decode",
    "unet eps (linear proj)": "unet_linear_projection",
    "unet eps (conv proj)": "unet_conv_projection",
    "img2img final latents": "img2img_latents",
    "img2img decoded": "img2img_decoded",
    "wgpu img2img decoded": "img2img_decoded_on_wgpu",
}


def parity():
    out = subprocess.run(["cargo", "test", "--release", "--test", "prior_parity", "--", "--nocapture", "--test-threads", "1"],
                         capture_output=True, text=True, check=True).stdout
    errs = {}
    for line in out.splitlines():
        m = re.search(r"([^:]+): max abs err ([0-9.e+-]+)", line.split(" ... ")[-1])
        if m and m.group(1).strip() in PARITY_NAMES:
            errs[PARITY_NAMES[m.group(1).strip()]] = float(m.group(2))
    return errs

def copy_grids(ev, out, prefix):
    os.makedirs(os.path.join(out, "prior"), exist_ok=True)
    grids = []
    for g in ev["grids"]:
        dst = os.path.join(out, "prior", prefix + os.path.basename(g))
        shutil.copy(g, dst)
        grids.append(os.path.relpath(dst, out))
    return grids


def train_seconds(state):
    return sum(p["seconds"] for p in state["vae_history"]) + sum(p["seconds"] for p in state["unet_history"])


def train_command(prior, state):
    cfg = state["config"]
    return (f"dace prior train --data <{state['dataset']}> --out {prior} --vae-steps {cfg['vae_steps']} "
            f"--unet-steps {cfg['unet_steps']} --batch {cfg['batch_size']} --checkpoint-every {cfg['checkpoint_every']}")


def prior_section(prior, state, ev, grids, time_note):
    """The markdown of one trained prior: command, quality against its targets, curve, grids."""
    cfg = state["config"]
    ds = state["dataset"]
    name = DATASET_NAMES.get(ds, ds)
    L = []
    L.append(f"## The {name} prior dace trains (`{prior}`)")
    L.append("")
    L.append(f"Command: `{train_command(prior, state)}`")
    L.append(f"(VAE widths {cfg['vae_channels']} -> {cfg['latent_channels']}x14x14 latents; UNet widths {cfg['unet_channels']}, "
             f"class table of width {cfg['class_dim']} as the cross-attention context, {int(cfg['cond_drop']*100)} % null-class drop).")
    L.append(f"Fingerprint `{ev['prior_fingerprint'][:12]}`. Steps done: VAE {state['vae_step']}/{cfg['vae_steps']}, "
             f"UNet {state['unet_step']}/{cfg['unet_steps']}; {time_note}.")
    L.append("")
    L.append("| metric | value | target |")
    L.append("|---|---|---|")
    L.append(f"| VAE reconstruction PSNR, {ev['test_images']} test images | {ev['vae_psnr_db']:.2f} dB | >= 26 dB |")
    L.append(f"| teacher accuracy on class-conditional samples ({ev['config']['samples_per_class']}/class, "
             f"{ev['config']['sample_steps']} Euler-a steps, guidance {ev['config']['guidance']}) | {ev['cond_teacher_acc']:.2f} % | >= 85 % |")
    L.append("")
    L.append("Per class: " + ", ".join(f"{c['class']} {c['accuracy']:.0f} %" for c in ev["cond_teacher_acc_per_class"]))
    L.append("")
    L.append("Training curve (loss per checkpoint interval):")
    L.append("")
    L.append("| stage | step | loss | test PSNR (dB) | img/s |")
    L.append("|---|---|---|---|---|")
    for stage in ["vae", "unet"]:
        for p in state[f"{stage}_history"]:
            ps = f"{p['test_psnr_db']:.2f}" if p.get("test_psnr_db") is not None else ""
            L.append(f"| {stage} | {p['step']} | {p['loss']:.5f} | {ps} | {p['img_per_s']:.0f} |")
    L.append("")
    L.append("Grids (`dace prior eval`): class-conditional samples, one row per class; img2img rows per class: "
             "original, RDED's plain upsample of the H/r patch, then rho 0.4 (3 seeds), rho 0.8 (3 seeds).")
    L.append("")
    for g in grids:
        L.append(f"![{g}]({g})")
        L.append("")
    return L


def prior_json(prior, eval_dir, state, ev):
    ds = state["dataset"]
    return {
        "dataset": ds,
        "prior_fingerprint": ev["prior_fingerprint"],
        "train_command": train_command(prior, state),
        "eval_command": f"dace prior eval --prior {prior} --data <{ds}> --teacher <teacher> --out {eval_dir}",
        "config": state["config"],
        "vae_steps_done": state["vae_step"],
        "unet_steps_done": state["unet_step"],
        "vae_psnr_db": ev["vae_psnr_db"],
        "cond_teacher_acc": ev["cond_teacher_acc"],
        "cond_teacher_acc_per_class": ev["cond_teacher_acc_per_class"],
    }


def add_prior(args):
    """--add: put one more dataset's prior into an existing prior.md/prior.json (between markers, so
    rerunning replaces it) without rerunning the parity test or the speed benchmark."""
    state = json.load(open(os.path.join(args.prior, "train_state.json")))
    ev = json.load(open(os.path.join(args.eval, "prior_eval.json")))
    ds = state["dataset"]
    grids = copy_grids(ev, args.out, ds + "-")
    L = prior_section(args.prior, state, ev, grids,
                      "training time not reported: the run was paused and resumed across sessions, so the img/s of the intervals that contain a pause mean nothing")
    begin, end = f"<!-- prior:{ds} -->", f"<!-- /prior:{ds} -->"
    block = "\n".join([begin, f"Commit `{args.commit}`; machine: {args.machine}.", ""] + L + [end])
    md_path = os.path.join(args.out, "prior.md")
    md = open(md_path).read()
    if begin in md:
        md = md[:md.index(begin)] + block + md[md.index(end) + len(end):]
    else:
        anchor = "## Speed"
        md = md.replace(anchor, block + "\n\n" + anchor, 1)
    with open(md_path, "w") as f:
        f.write(md)
    js_path = os.path.join(args.out, "prior.json")
    js = json.load(open(js_path))
    extra = prior_json(args.prior, args.eval, state, ev)
    extra.update({"commit": args.commit, "machine": args.machine})
    js.setdefault("other_priors", {})[ds] = extra
    with open(js_path, "w") as f:
        json.dump(js, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--speed", help="prior_speed.json (not with --add)")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--commit", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--partial", action="store_true", help="mark the results as partial")
    ap.add_argument("--notes", default=None, help="markdown file appended as the findings section")
    ap.add_argument("--add", action="store_true",
                    help="add this prior's section to the existing prior.md/json (another dataset's prior)")
    args = ap.parse_args()
    if args.add:
        return add_prior(args)
    if not args.speed:
        ap.error("--speed is required")

    state = json.load(open(os.path.join(args.prior, "train_state.json")))
    ev = json.load(open(os.path.join(args.eval, "prior_eval.json")))
    speed = json.load(open(args.speed))
    errs = parity()
    secs = train_seconds(state)
    by = {(r["device"], r["what"]): r for r in speed["rows"]}
    expand = {}
    unet = {}
    for key, dev in [("dace_cpu", "dace-cpu"), ("torch_cpu", "torch-cpu"), ("dace_wgpu", "dace-wgpu")]:
        for (d, what), r in by.items():
            if d == dev and what.startswith("expand"):
                expand[key] = r["img_per_s"]
            if d == dev and what == "unet_forward":
                unet[key] = r["img_per_s"]
    grids = copy_grids(ev, args.out, "")
    js = {
        "partial": args.partial,
        "commit": args.commit,
        "machine": args.machine,
        **prior_json(args.prior, args.eval, state, ev),
        "speed_command": speed["command"],
        "parity_command": "cargo test --release --test prior_parity -- --nocapture --test-threads 1",
        "parity_max_abs_err": errs,
        "expand_img_per_s": expand,
        "unet_forward_img_per_s": unet,
        "dace_over_torch": speed.get("dace_over_torch", {}),
        "speed_versions": speed.get("versions", {}),
        "train_minutes": secs / 60,
    }
    with open(os.path.join(args.out, "prior.json"), "w") as f:
        json.dump(js, f, indent=1)

    L = []
    L.append("# Latent diffusion prior" + (" (PARTIAL)" if args.partial else ""))
    L.append("")
    L.append(f"Commit `{args.commit}`; machine: {args.machine}.")
    L.append("")
    L.append("## Parity with diffusers")
    L.append("")
    L.append("`cargo test --release --test prior_parity` loads tiny random-weight diffusers models (made by "
             "`tests/fixtures/make_parity.py`, diffusers 0.42.1, torch 2.15, fp32) and compares outputs. Bound 1e-4.")
    L.append("")
    L.append("| output | max abs error |")
    L.append("|---|---|")
    for k, v in errs.items():
        L.append(f"| {k} | {v:.2e} |")
    L.append("")
    L += prior_section(args.prior, state, ev, grids,
                       f"training time {secs/60:.1f} min on this CPU (shared with other jobs part of the time)")
    L.append("## Speed")
    L.append("")
    L.append(f"`{speed['command']}` ({speed['threads']} threads; torch {speed.get('versions', {}).get('torch')}, "
             f"diffusers {speed.get('versions', {}).get('diffusers')}). Expansion = encode, posterior sample, "
             "5 Euler-ancestral steps at strength 1, decode. PyTorch loads the same weights with diffusers' from_pretrained.")
    L.append("")
    L.append("| device | workload | batch | ms/batch | img/s |")
    L.append("|---|---|---|---|---|")
    for r in speed["rows"]:
        L.append(f"| {r['device']} | {r['what']} | {r['batch']} | {r['ms_per_batch']:.1f} | {r['img_per_s']:.1f} |")
    L.append("")
    for k, v in speed.get("dace_over_torch", {}).items():
        L.append(f"- dace CPU / PyTorch CPU, {k}: **{v:.2f}x**")
    L.append("")
    if args.notes:
        L.append(open(args.notes).read())
    with open(os.path.join(args.out, "prior.md"), "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
