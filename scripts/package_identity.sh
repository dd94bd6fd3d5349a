#!/usr/bin/env bash
# Distils the same packages with two dace binaries (e.g. before and after a refactor) and checks
# that every package file is byte-identical. Uses the committed Fashion-MNIST teacher and prior
# on the embedded subset; three variants cover the three expansion modes.
#
#   [OLD_LABEL=...] [NEW_LABEL=...] scripts/package_identity.sh OLD_DACE NEW_DACE OUT.json
#
# OLD_LABEL / NEW_LABEL say what each binary was built from (e.g. its commit); they are recorded.
# OUT.json lists, per variant, the sha256 of manifest.json, patches.bin and labels.bin from each
# binary and whether they are equal; the exit status is 1 when any file differs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { echo "usage: $0 OLD_DACE NEW_DACE OUT.json" >&2; exit 2; }
old=$1 new=$2 out=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

variants=(rded cond-only sr-aug-mixup)
rows=()
status=0
for v in "${variants[@]}"; do
  for side in old new; do
    bin=${!side}
    "$bin" distill --data embedded --teacher artifacts/teachers/fashion-mnist-convnet3 \
      --prior artifacts/priors/fashion-mnist --ipc 1 --factor 2 --seeds 3 --variant "$v" \
      --labels int8 --threads 2 --out "$work/$side-$v" > "$work/$side-$v.log" 2>&1 \
      || { cat "$work/$side-$v.log" >&2; exit 1; }
  done
  files=()
  for f in manifest.json patches.bin labels.bin; do
    a=$(sha256sum "$work/old-$v/$f" | cut -d' ' -f1)
    b=$(sha256sum "$work/new-$v/$f" | cut -d' ' -f1)
    same=false; [ "$a" = "$b" ] && same=true || status=1
    files+=("{\"file\": \"$f\", \"old_sha256\": \"$a\", \"new_sha256\": \"$b\", \"identical\": $same}")
  done
  rows+=("{\"variant\": \"$v\", \"files\": [$(IFS=,; echo "${files[*]}")]}")
done
mkdir -p "$(dirname "$out")"
python3 - "$out" "$status" "$(IFS=$'\n'; echo "${rows[*]}")" <<'EOF'
import json, platform, subprocess, sys
out, status, rows = sys.argv[1], int(sys.argv[2]), [json.loads(r) for r in sys.argv[3].splitlines()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
report = {
    "command": "scripts/package_identity.sh OLD_DACE NEW_DACE " + out,
    "distill": "dace distill --data embedded --teacher artifacts/teachers/fashion-mnist-convnet3 --prior artifacts/priors/fashion-mnist --ipc 1 --factor 2 --seeds 3 --variant V --labels int8 --threads 2",
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "old_binary": __import__("os").environ.get("OLD_LABEL", "?"),
    "new_binary": __import__("os").environ.get("NEW_LABEL", "?"),
    "machine": f"{cpu}, {__import__('os').cpu_count()} cores",
    "variants": rows,
    "all_identical": status == 0,
}
json.dump(report, open(out, "w"), indent=2)
print(f"{out}: " + ("every package file is byte-identical" if status == 0 else "FILES DIFFER"))
EOF
exit $status
