#!/usr/bin/env python3
"""Module cycles inside each crate, from the paths the code names.

A reference from module `a::x` to `a::y::z` (through `crate::`, `super::` or
`self::` paths, `use` or inline) is an edge between the siblings `a::x` and
`a::y`; references between a module and its own ancestors or descendants are
nesting, not dependencies. A cycle among siblings (`x` uses `y`, `y` uses `x`)
is what a reader cannot follow in one direction. Test modules (`#[cfg(test)]`
onwards) are left out.

    scripts/ci/module_cycles.py CRATE_SRC_DIR...

Prints each cycle and exits 1 if there is one, 0 otherwise.
"""

import collections
import os
import re
import sys

PATH = re.compile(r"\b((?:crate|super|self)(?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))+)")


def modules(src):
    """Module path (a tuple) -> file, for every .rs file of a crate's src."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[0] == "bin":
                continue
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            mods[tuple(parts)] = path
    return mods


def referenced(text, me, mods):
    """The modules `text` (module `me`'s source) names."""
    out = set()
    text = re.sub(r"//.*", "", text)
    for m in PATH.finditer(text):
        parts = m.group(1).split("::")
        if parts[0] == "crate":
            cur, parts = [], parts[1:]
        elif parts[0] == "self":
            cur, parts = list(me), parts[1:]
        else:
            cur = list(me)
            while parts and parts[0] == "super":
                cur, parts = cur[:-1], parts[1:]
        for p in parts:
            if tuple(cur + [p]) not in mods:
                break
            cur = cur + [p]
        out.add(tuple(cur))
    return out


def cycles(src):
    mods = modules(src)
    edges = collections.defaultdict(set)
    for me, path in mods.items():
        text = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
        for target in referenced(text, me, mods):
            i = 0
            while i < min(len(me), len(target)) and me[i] == target[i]:
                i += 1
            if i in (len(me), len(target)):
                continue  # an ancestor or a descendant
            edges[me[: i + 1]].add(target[: i + 1])
    found = set()

    def walk(node, stack):
        for nxt in edges.get(node, ()):
            if nxt in stack:
                loop = stack[stack.index(nxt):]
                k = loop.index(min(loop))
                found.add(tuple(loop[k:] + loop[:k]))
            elif len(stack) < 12:
                walk(nxt, stack + [nxt])

    for node in list(edges):
        walk(node, [node])
    return sorted(found)


def main(srcs):
    bad = 0
    for src in srcs:
        for loop in cycles(src):
            bad += 1
            names = ["::".join(m) for m in loop]
            print(f"{src}: {' -> '.join(names + names[:1])}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
