#!/usr/bin/env bash
# Fresh-machine time of the README's two commands: a clean clone, an empty target dir and (for a
# true first run) an empty cargo cache, then the test command and the demo, each timed.
#
#   bench/fresh_machine.sh OUT_DIR [TARGET_DIR]
#
# Writes OUT_DIR/summary.txt (commit, what the cargo cache held, seconds and exit status of each
# command) and the two logs; bench/ci_results.py turns the summaries under docs/results/ci/ into
# docs/results/ci.{md,json}. Run it on a machine whose ~/.cargo has no registry yet and as root
# (the test command then installs its packages, which a fresh machine also pays for).
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [TARGET_DIR]" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
target=${2:-$(mktemp -d)}
repo=$(cd "$(dirname "$0")/.." && pwd)
clone=$(mktemp -d)/dace
git clone -q "$repo" "$clone"
cd "$clone"
export CARGO_TARGET_DIR=$target
{
  echo "commit $(git rev-parse --short HEAD)"
  echo "cargo home: $(ls "${CARGO_HOME:-$HOME/.cargo}" | tr '\n' ' ')"
  echo "target dir: $target ($(du -sh "$target" 2>/dev/null | cut -f1) before)"
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
  s=$(date +%s)
  scripts/test.sh > "$out/test.log" 2>&1
  echo "test rc=$? seconds=$(( $(date +%s) - s ))"
  s=$(date +%s)
  cargo run --release -- demo > "$out/demo.log" 2>&1
  echo "demo rc=$? seconds=$(( $(date +%s) - s ))"
} | tee "$out/summary.txt"
