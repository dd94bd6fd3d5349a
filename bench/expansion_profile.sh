#!/usr/bin/env bash
# Where an expansion's CPU time goes: `perf record -g` on `dace bench prior` (the Fashion-MNIST
# prior, batch 64, 2 threads), reported per symbol (self time) into
# docs/results/expansion_speed/perf-LABEL.txt, which bench/expansion_speed_results.py groups.
#
#   bench/expansion_profile.sh LABEL [DACE]      (Debian: apt-get install linux-perf)
set -euo pipefail
cd "$(dirname "$0")/.."
label=${1:?usage: $0 LABEL [DACE]} dace=${2:-target/release/dace}
out=docs/results/expansion_speed/perf-$label.txt
data=$(mktemp)
trap 'rm -f "$data"' EXIT
cmd=("$dace" bench prior --prior artifacts/priors/fashion-mnist --batch 64 --steps 5 --seconds 5 --threads 2)
perf record -g -o "$data" -- "${cmd[@]}" > /dev/null 2>&1
mkdir -p "$(dirname "$out")"
{
  echo "# perf record -g -- ${cmd[*]}"
  echo "# commit $(git rev-parse --short HEAD); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) logical CPUs"
  perf report -i "$data" --no-children --sort symbol --stdio -g none --percent-limit 0.3 2>/dev/null | grep -v '^$'
} > "$out"
echo "wrote $out"
