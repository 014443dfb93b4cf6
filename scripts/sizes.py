#!/usr/bin/env python3
"""Largest files and functions under src/ (lines, tests excluded).

Usage: scripts/sizes.py [ROOT] [N]   (ROOT defaults to ., N to 10)

A function's length runs from its `fn` line to the line that closes its
body, found by counting braces outside strings, chars and comments. Code
under `#[cfg(test)]` modules is skipped.
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
top = int(sys.argv[2]) if len(sys.argv) > 2 else 10
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")


def strip(line, state):
    """Remove strings, chars and comments; `state` carries block comments and raw strings."""
    out, i = [], 0
    while i < len(line):
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"], i = False, j + 2
            continue
        if state["raw"]:
            j = line.find(state["raw"], i)
            if j < 0:
                return "".join(out)
            i, state["raw"] = j + len(state["raw"]), None
            continue
        if state["str"]:
            c = line[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                state["str"] = False
            i += 1
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"], i = True, i + 2
            continue
        m = re.match(r'b?r(#*)"', line[i:])
        if m and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["raw"], i = '"' + m.group(1), i + m.end()
            continue
        if c == '"':
            state["str"], i = True, i + 1
            continue
        if c == "'":
            m = re.match(r"'(\\.|[^\\'])+'", line[i:])
            if m and len(m.group(0)) <= 12:
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


files, fns = [], []
for dirpath, _, names in os.walk(os.path.join(root, "src")):
    for name in names:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)
        lines = open(path, encoding="utf-8").read().splitlines()
        state = {"block": False, "raw": None, "str": False}
        code, depth, stack, test_depth = 0, 0, [], None
        pending_test = False
        for n, line in enumerate(lines, 1):
            clean = strip(line, state)
            if test_depth is None and re.match(r"\s*#\[cfg\(test\)\]", line):
                pending_test = True
            m = FN.match(clean)
            if m and test_depth is None:
                stack.append((m.group(6), n, depth))
            if test_depth is None:
                code += 1
            for ch in clean:
                if ch == "{":
                    if pending_test and test_depth is None:
                        test_depth, pending_test = depth, False
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if test_depth is not None and depth == test_depth:
                        test_depth = None
                    while stack and depth == stack[-1][2]:
                        fname, start, _ = stack.pop()
                        fns.append((n - start + 1, f"{rel}:{start} {fname}"))
            if clean.rstrip().endswith(";") and stack and stack[-1][1] == n:
                stack.pop()  # a declaration without a body
        files.append((code, rel))

print(f"largest files (lines outside #[cfg(test)]), {root}")
for count, rel in sorted(files, reverse=True)[:top]:
    print(f"{count:6} {rel}")
print(f"total {sum(c for c, _ in files)} lines in {len(files)} files")
print("largest functions")
for count, where in sorted(fns, reverse=True)[:top]:
    print(f"{count:6} {where}")
