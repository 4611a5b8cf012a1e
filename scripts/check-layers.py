#!/usr/bin/env python3
"""Checks that the library's folders depend only on the folders below them.

Layers, lowest first (README "Architecture"): a file in a folder may use names declared in its own
folder or in a folder listed before it, never after. Names are the top-level types, functions and
globals declared in each folder; a use is the name appearing as an identifier outside comments and
string literals. Prints each upward use and exits 1 if there is any; `--graph` prints the edges.
"""
import collections
import os
import re
import sys

LAYERS = ["Support", "Model", "Runtime", "Kernels", "Quant", "Trace", "Evaluation", "Report", "Gate", "Sweep"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Sources", "QuantDrift")

DECL = re.compile(r"^(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|internal|private|fileprivate|package|final|indirect)\s+)*"
                  r"(struct|class|enum|protocol|typealias|actor|func|let|var)\s+([A-Za-z_]\w*)", re.M)


def strip(src):
    """Source without comments and string literals (so prose does not count as a use)."""
    src = re.sub(r'"""[\s\S]*?"""', '""', src)
    src = re.sub(r"/\*[\s\S]*?\*/", "", src)
    src = re.sub(r"//[^\n]*", "", src)
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', src)


def main():
    files = {}
    for d, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".swift"):
                p = os.path.join(d, n)
                files[p] = strip(open(p, encoding="utf-8").read())
    owner = collections.defaultdict(set)
    unknown = set()
    for p, s in files.items():
        folder = os.path.relpath(p, ROOT).split(os.sep)[0]
        if folder not in LAYERS:
            unknown.add(folder)
        for m in DECL.finditer(s):
            owner[m.group(2)].add(folder)
    if unknown:
        print("folders missing from LAYERS: " + ", ".join(sorted(unknown)))
        return 1
    edges = collections.defaultdict(set)
    for p, s in files.items():
        folder = os.path.relpath(p, ROOT).split(os.sep)[0]
        for ident in set(re.findall(r"\b[A-Za-z_]\w*\b", s)):
            homes = owner.get(ident, ())
            # A name declared in several folders (a common word like `run`) tells nothing.
            if len(homes) == 1 and folder not in homes:
                (home,) = homes
                edges[(folder, home)].add((ident, os.path.relpath(p, ROOT)))
    upward = 0
    for (a, b), uses in sorted(edges.items()):
        up = LAYERS.index(b) > LAYERS.index(a)
        if "--graph" in sys.argv:
            print(f"{a} -> {b}" + ("   UPWARD" if up else ""))
        if up:
            upward += 1
            for ident, path in sorted(uses):
                print(f"{path}: uses {ident} from {b}/, a layer above {a}/")
    print(f"layers: {' <- '.join(LAYERS)}; {len(files)} files, {upward} upward dependencies")
    return 1 if upward else 0


if __name__ == "__main__":
    sys.exit(main())
