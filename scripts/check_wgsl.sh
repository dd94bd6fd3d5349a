#!/usr/bin/env bash
# Validates every WGSL kernel in shaders/ the way the Rust side loads it: shaders/philox.wgsl
# prepended (WGSL has no #include). Uses the `naga` CLI (cargo install naga-cli). Exits 0 when
# all validate, 1 on a failure, 2 when naga is not installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sdir="$root/shaders"
if ! command -v naga >/dev/null 2>&1; then
    echo "check_wgsl: naga not found (cargo install naga-cli); shaders NOT checked" >&2
    exit 2
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
naga "$sdir/philox.wgsl" >/dev/null || { echo "FAIL philox.wgsl alone"; fail=1; }
for k in "$sdir"/*.wgsl; do
    name="$(basename "$k" .wgsl)"
    [[ "$name" == philox ]] && continue
    cat "$sdir/philox.wgsl" "$k" >"$tmp/$name.wgsl"
    # Validate, then translate to SPIR-V as a backend smoke test.
    if naga "$tmp/$name.wgsl" "$tmp/$name.spv" >/dev/null; then
        echo "ok   $name.wgsl (philox.wgsl prepended; validated, SPIR-V emitted)"
    else
        echo "FAIL $name.wgsl"; fail=1
    fi
done
[[ $fail -eq 0 ]] || { echo "check_wgsl: FAILED" >&2; exit 1; }
echo "check_wgsl: all shaders validate ($(naga --version))"
