#!/usr/bin/env python3
"""Renders docs/results/refactor.md from the records scripts/package_identity.sh wrote under
docs/results/refactor/ (one JSON per check: the same packages distilled by the dace binaries
before and after a refactor, file by file)."""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
records = sorted((root / "docs/results/refactor").glob("package_identity*.json"), key=lambda p: (len(p.name), p.name))
lines = [
    "# Package bytes across refactors",
    "",
    "Written by `python3 scripts/package_identity_results.py` from the records under",
    "`docs/results/refactor/`, each made by `scripts/package_identity.sh OLD_DACE NEW_DACE OUT.json`:",
    "the same packages distilled by a binary built before a refactor and one built after, on the",
    "embedded Fashion-MNIST subset with the committed teacher and prior, one variant per expansion",
    "mode (rded: upsample; cond-only: generate; sr-aug-mixup: img2img with mixup).",
    "",
    "| record | commit | old binary | new binary | variant | manifest.json | patches.bin | labels.bin |",
    "|---|---|---|---|---|---|---|---|",
]
for path in records:
    r = json.loads(path.read_text())
    for v in r["variants"]:
        same = {f["file"]: ("identical" if f["identical"] else "**differs**") for f in v["files"]}
        lines.append(
            f"| `{path.name}` | `{r['commit']}` | {r['old_binary']} | {r['new_binary']} | {v['variant']} | "
            f"{same['manifest.json']} | {same['patches.bin']} | {same['labels.bin']} |"
        )
lines += ["", "Distillation command of every record (V = the variant):", ""]
for path in records:
    r = json.loads(path.read_text())
    lines.append(f"- `{path.name}`: `{r['distill']}`; machine: {r['machine']}; all identical: {r['all_identical']}")
(root / "docs/results/refactor.md").write_text("\n".join(lines) + "\n")
summary = {
    "renderer": "python3 scripts/package_identity_results.py",
    "records": [{"record": f"docs/results/refactor/{p.name}", **json.loads(p.read_text())} for p in records],
}
(root / "docs/results/refactor.json").write_text(json.dumps(summary, indent=2) + "\n")
print("wrote docs/results/refactor.{md,json}")
