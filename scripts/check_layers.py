#!/usr/bin/env python3
"""Checks the layering rule of ARCHITECTURE.md against the code.

Reads the layer list from ARCHITECTURE.md (the block after the line `<!-- layers -->`: top layer
first, modules of one layer on one line, comma-separated), collects every `crate::`, `$crate::`,
`super::` and `self::` path in src/, and reports

  * an import from a module to one on a higher layer or on the same layer ("upward"/"sideways"),
  * a circle of imports between files (any length, across or within modules),
  * a module under src/ that the layer list does not name.

Exit status 0 when the tree keeps the rule, 1 otherwise. Standard library only:

    python3 scripts/check_layers.py            # from the repository root
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def layers():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("<!-- layers -->", 1)[1].split("```")[1]
    rank = {}
    lines = [l for l in block.splitlines() if l.strip() and not l.strip() == "text"]
    for depth, line in enumerate(reversed(lines)):
        for name in line.split(","):
            rank[name.strip()] = depth
    return rank


def strip_comments(code):
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    code = re.sub(r'"(?:\\.|[^"\\])*"', '""', code)
    return re.sub(r"//[^\n]*", "", code)


def module_path(path):
    """`src/a/b.rs` -> ['a', 'b']; `src/a/mod.rs` -> ['a']; lib.rs/main.rs -> []."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod" or parts in (["lib"], ["main"]):
        parts = parts[:-1]
    return parts


def expand_use(tree):
    """`a::{b, c::{d as e}}` -> ['a::b', 'a::c::d']."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    depth, start, parts = 0, 0, []
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    for i, ch in enumerate(inner):
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    return [p for part in parts if part for p in expand_use(prefix + part)]


def inline_depths(code):
    """For every offset, how many inline `mod name { ... }` blocks enclose it."""
    depths, opened, level = [0] * (len(code) + 1), [], 0
    mods = {m.end() - 1 for m in re.finditer(r"\bmod\s+\w+\s*\{", code)}
    for i, ch in enumerate(code):
        if ch == "{":
            level += 1
            if i in mods:
                opened.append(level)
        elif ch == "}":
            if opened and opened[-1] == level:
                opened.pop()
            level -= 1
        depths[i + 1] = len(opened)
    return depths


def paths_in(code):
    """Every path in `use` items and in the code (bare `child::item` paths included), with the
    inline-module depth it is written at; a `super` there first leaves the inline modules."""
    depth = inline_depths(code)
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        found += [(p, depth[m.start()]) for p in expand_use(m.group(1))]
    for m in re.finditer(r"(?<![\w:])(\$crate|\w+)((?:::\w+)+)", code):
        found.append((m.group(1) + m.group(2), depth[m.start()]))
    out = []
    for path, d in found:
        segs = path.split("::")
        while d and segs and segs[0] in ("super", "self"):
            # Inside an inline module: `super` steps out of it, still in this file.
            segs, d = (segs[1:], d - 1) if segs[0] == "super" else (segs[1:], d)
        if d and segs and segs[0] not in ("crate", "$crate"):
            continue  # a path relative to an inline module: within this file
        if segs:
            out.append("::".join(segs if segs != path.split("::") else segs))
    return out


def resolve(path, here, files):
    """The file a path points into, or None for paths outside the crate."""
    segs = path.split("::")
    base = module_path(here)
    if segs[0] in ("crate", "$crate"):
        mod, rest = [], segs[1:]
    elif segs[0] == "self":
        mod, rest = base, segs[1:]
    elif segs[0] == "super":
        mod, rest = base, segs
        while rest and rest[0] == "super":
            mod, rest = mod[:-1], rest[1:]
    elif tuple(base + segs[:1]) in files:
        mod, rest = base, segs  # a child module of this one, named without `self::`
    else:
        return None
    full = mod + [s for s in rest if s not in ("self", "*")]
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in files:
            return files[tuple(full[:n])]
    return None


def main():
    rank = layers()
    files = {}
    for f in SRC.rglob("*.rs"):
        if f.name != "main.rs":
            files[tuple(module_path(f))] = f
    main_rs = SRC / "main.rs"
    edges = {}
    problems = []
    for f in sorted(SRC.rglob("*.rs")):
        code = strip_comments(f.read_text())
        targets = set()
        for p in paths_in(code):
            if f == main_rs and p.startswith("dace::"):
                p = "crate::" + p[len("dace::"):]
            t = resolve(p, f, files)
            if t is not None and t != f:
                targets.add(t)
        edges[f] = targets
    top = lambda f: module_path(f)[0] if module_path(f) else ("main" if f == main_rs else "lib")
    for f, targets in edges.items():
        if top(f) == "lib":
            continue  # lib.rs only declares the modules
        if top(f) not in rank:
            problems.append(f"{f.relative_to(ROOT)}: module `{top(f)}` is not in ARCHITECTURE.md's layer list")
            continue
        for t in sorted(targets):
            a, b = top(f), top(t)
            if a == b or b == "lib":
                continue
            if rank.get(b, -1) >= rank[a]:
                kind = "sideways" if rank.get(b) == rank[a] else "upward"
                problems.append(f"{f.relative_to(ROOT)} -> {t.relative_to(ROOT)}: {kind} import ({a} -> {b})")
    problems += [f"circle among: {', '.join(str(p.relative_to(ROOT)) for p in c)}" for c in circles(edges)]
    for p in problems:
        print(p)
    modules = sorted({top(f) for f in edges} - {"lib"}, key=lambda m: -rank.get(m, 99))
    print(f"{len(edges)} files, {sum(len(t) for t in edges.values())} imports between files, modules top to bottom: {', '.join(modules)}")
    print("layering: " + ("OK, no upward or sideways import and no circle" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


def circles(edges):
    """Strongly connected components of more than one file (Tarjan): the files of each circle."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
