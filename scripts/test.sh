#!/usr/bin/env bash
# The test command: sets up what the suite needs on a fresh Debian/Ubuntu machine, then runs it.
#
#   scripts/test.sh [ARGS...]    # ARGS go to `cargo test --release` (e.g. a test binary's name)
#
# The suite needs these system packages:
#   mesa-vulkan-drivers  lavapipe, Mesa's CPU Vulkan driver: the wgpu backend and the WGSL kernels
#                        are tested for real on it where the machine has no GPU;
#   libvulkan1           the Vulkan loader wgpu opens;
#   dataset-fashion-mnist  the full Fashion-MNIST in /usr/share/datasets/fashion-mnist (loader tests);
#   slurm-wlm, munge     a one-node Slurm cluster the Slurm test starts (tests/slurm.rs, as root).
# As root they are installed with apt-get; otherwise the script stops at once with the exact
# install line. Where they are already present this is `cargo test --release`.
set -euo pipefail
cd "$(dirname "$0")/.."

# What each package provides, checked directly so the script also works where the files came
# from somewhere other than dpkg (a container image, a hand-built Mesa).
vulkan_loader() { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; }
vulkan_driver() { compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null || compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null; }
fashion_mnist() { [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; }
slurm() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; }
munge() { command -v munged >/dev/null; }

missing=()
vulkan_driver || missing+=(mesa-vulkan-drivers)
vulkan_loader || missing+=(libvulkan1)
fashion_mnist || missing+=(dataset-fashion-mnist)
slurm || missing+=(slurm-wlm)
munge || missing+=(munge)

if ((${#missing[@]})); then
  install_line="apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "scripts/test.sh: missing ${missing[*]}; install them with: sudo $install_line" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists yet: update only when the first try fails.
  $install_line || { apt-get update && $install_line; }
fi

# --no-fail-fast: a failing test binary does not hide the results of the ones after it.
exec cargo test --release --no-fail-fast "$@"
