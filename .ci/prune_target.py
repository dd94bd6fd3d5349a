#!/usr/bin/env python3
"""Keep a persistent cargo target dir from growing without bound.

Each change of features or dependency versions leaves a new copy of every dace artifact
(~300-400 MB per test binary) beside the old ones, and incremental caches add more; on a
shared disk that once filled it and failed CI with "No space left on device". This keeps
the two newest builds of each dace artifact (default features and `--features cuda`) and
leaves dependencies alone, so a warm build stays warm.

usage: prune_target.py TARGET_DIR/release CRATE_OR_TEST_NAME...
"""
import collections
import os
import re
import shutil
import sys

profile_dir, names = sys.argv[1], set(sys.argv[2:])
deps = os.path.join(profile_dir, "deps")
freed = 0

incremental = os.path.join(profile_dir, "incremental")
if os.path.isdir(incremental):
    for root, _, files in os.walk(incremental):
        freed += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    shutil.rmtree(incremental)

# Grouped by (crate, library or executable): `dace` is both a library (libdace-*.rlib/.rmeta,
# one build per feature set) and the `dace` binary, and each must keep its own newest builds.
builds = collections.defaultdict(lambda: collections.defaultdict(list))
if os.path.isdir(deps):
    for name in os.listdir(deps):
        m = re.match(r"^(lib)?([a-z_0-9]+)-([0-9a-f]{16})(?:\..*)?$", name)
        if m and m.group(2) in names:
            builds[(m.group(2), bool(m.group(1)))][m.group(3)].append(os.path.join(deps, name))

for _, by_hash in builds.items():
    newest_first = sorted(by_hash.values(), key=lambda fs: max(map(os.path.getmtime, fs)), reverse=True)
    for files in newest_first[2:]:
        for path in files:
            freed += os.path.getsize(path)
            os.remove(path)

print(f"pruned {freed / 1e9:.1f} GB from {profile_dir}")
