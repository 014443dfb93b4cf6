#!/usr/bin/env python3
"""Applies insta's pending inline snapshots (`.pending-snap` files) to the test sources.

There is no cargo-insta here. Run the tests with INSTA_UPDATE=always INSTA_FORCE_PASS=1,
review the diff this script makes, commit it. Usage: scripts/apply-inline-snapshots.py [DIR]
"""
import json
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "tests"
for dirpath, _, names in os.walk(root):
    for name in names:
        if not name.endswith(".pending-snap"):
            continue
        pending = os.path.join(dirpath, name)
        source = pending[: -len(".pending-snap")]
        # `.foo.rs.pending-snap` → `foo.rs`
        source = os.path.join(dirpath, os.path.basename(source).lstrip("."))
        latest = {}
        for line in open(pending, encoding="utf-8"):
            if line.strip():
                e = json.loads(line)
                if e.get("new"):  # `null`: the snapshot matched
                    latest[e["line"]] = e["new"]["snapshot"]
        lines = open(source, encoding="utf-8").read().split("\n")
        # Bottom up, so earlier line numbers stay valid.
        for lineno in sorted(latest, reverse=True):
            snap = latest[lineno]
            i = lineno - 1
            # The literal starts at `@` on or after the macro's line.
            j = i
            literal_start = re.compile(r'@(r#*)?"')
            while not literal_start.search(lines[j]):
                j += 1
            text = "\n".join(lines[j:])
            at = literal_start.search(text).start()
            m = literal_start.match(text, at)
            hashes = (m.group(1) or "")[1:] if m.group(1) else ""
            start = m.end()
            close = '"' + hashes
            end = text.index(close, start)
            indent = re.match(r"\s*", lines[i]).group(0)
            body = "\n".join((indent + l) if l else "" for l in snap.split("\n"))
            need = 0
            while ('"' + "#" * need) in snap:
                need += 1
            h = "#" * need
            literal = f'@r{h}"\n{body}\n{indent}"{h}'
            text = text[:at] + literal + text[end + len(close):]
            lines = lines[:j] + text.split("\n")
        open(source, "w", encoding="utf-8").write("\n".join(lines))
        os.remove(pending)
        print(f"applied {len(latest)} snapshot(s) to {source}")
