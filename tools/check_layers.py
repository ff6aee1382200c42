#!/usr/bin/env python3
"""Checks that each folder under src/ includes only the layers below it.

The order of the layers is read from docs/architecture.md (the block under
"## Layers", top layer first), so the page and the code cannot drift apart:
a layer missing from the page, or an include of a layer above, fails with
the file, the line and the rule broken. Usage: check_layers.py SOURCE_DIR
"""
import pathlib
import re
import sys


def layer_order(doc: pathlib.Path) -> list[str]:
    text = doc.read_text()
    section = text.split("## Layers", 1)[1].split("```", 2)[1]
    return [m.group(1) for m in re.finditer(r"^src/(\w+)/", section, re.M)]


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    order = layer_order(root / "docs" / "architecture.md")
    rank = {name: i for i, name in enumerate(order)}
    errors = []
    folders = sorted(p.name for p in (root / "src").iterdir() if p.is_dir())
    for name in folders:
        if name not in rank:
            errors.append(f"src/{name}/: not in the layer list of docs/architecture.md")
    for path in sorted((root / "src").glob("*/*")):
        layer = path.parent.name
        if layer not in rank:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r'\s*#\s*include\s+"(\w+)/', line)
            if m and m.group(1) in rank and rank[m.group(1)] < rank[layer]:
                errors.append(f"{path.relative_to(root)}:{n}: {layer}/ includes {m.group(1)}/, a layer above it")
    for e in errors:
        print(e)
    print(f"layers: {len(order)} in order, {len(errors)} violation(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
