#!/usr/bin/env python3
"""Build assets/fashion-mnist-mini: the first 100 train and first 100 test images of each
Fashion-MNIST class, as gzipped IDX files with the standard names.

Usage: scripts/make_mini_fmnist.py [SRC_DIR] [DEST_DIR]
  SRC_DIR  defaults to /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)
  DEST_DIR defaults to assets/fashion-mnist-mini next to this script's parent directory

The output is byte-for-byte deterministic: gzip headers carry mtime 0 and no file name.
"""
import gzip
import io
import os
import shutil
import struct
import sys

PER_CLASS = 100
NUM_CLASSES = 10
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801


def read_idx(path, magic):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        sys.exit(f"{path}: bad magic {found:#010x}, expected {magic:#010x}")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def write_gz(path, payload):
    # GzipFile with mtime=0 and an empty filename keeps the archive reproducible.
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as gz:
        gz.write(payload)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def subset(src, dest, prefix):
    (n, rows, cols), pixels = read_idx(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"), IMAGE_MAGIC)
    (n_labels,), labels = read_idx(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"), LABEL_MAGIC)
    if n != n_labels:
        sys.exit(f"{prefix}: {n} images but {n_labels} labels")
    size = rows * cols
    taken = [0] * NUM_CLASSES
    keep = []
    for i, label in enumerate(labels[:n]):
        if taken[label] < PER_CLASS:
            taken[label] += 1
            keep.append(i)
    if any(t < PER_CLASS for t in taken):
        sys.exit(f"{prefix}: fewer than {PER_CLASS} images in some class: {taken}")
    images = b"".join(pixels[i * size:(i + 1) * size] for i in keep)
    kept_labels = bytes(labels[i] for i in keep)
    write_gz(os.path.join(dest, f"{prefix}-images-idx3-ubyte.gz"),
             struct.pack(">IIII", IMAGE_MAGIC, len(keep), rows, cols) + images)
    write_gz(os.path.join(dest, f"{prefix}-labels-idx1-ubyte.gz"),
             struct.pack(">II", LABEL_MAGIC, len(keep)) + kept_labels)
    print(f"{prefix}: kept {len(keep)} of {n} images")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    dest = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "assets", "fashion-mnist-mini")
    os.makedirs(dest, exist_ok=True)
    for prefix in ("train", "t10k"):
        subset(src, dest, prefix)
    with open(os.path.join(dest, "classes.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")


if __name__ == "__main__":
    main()
