#!/usr/bin/env python3
"""Lengths of the workspace's functions outside tests.

Prints the longest functions, the 95th percentile and the count over the
limit, and exits 1 when a function is longer than --max or the 95th
percentile is above --p95. A function's length counts the lines from its
`fn` line to its closing brace. Test code (`tests/`, `benches/`, `fuzz/`,
`#[cfg(test)]` modules and `testing` modules) is left out.

    python3 scripts/fn-lengths.py [--top 20] [--max 150] [--p95 45]
"""

import argparse
import os
import re
import sys

FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"C\"\s+)?fn\s+(\w+)")
SKIP_DIRS = {"tests", "benches", "fuzz", "target", "testing"}


def strip_code(line, state):
    """The line with strings, chars and comments blanked; `state` carries
    block comments and multi-line strings over lines."""
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if state["block"]:
            if line.startswith("*/", i):
                state["block"] -= 1
                i += 2
            elif line.startswith("/*", i):
                state["block"] += 1
                i += 2
            else:
                i += 1
            continue
        if state["raw"] is not None:
            end = '"' + "#" * state["raw"]
            if line.startswith(end, i):
                state["raw"] = None
                i += len(end)
            else:
                i += 1
            continue
        if state["str"]:
            if c == "\\":
                i += 2
            elif c == '"':
                state["str"] = False
                i += 1
            else:
                i += 1
            continue
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = 1
            i += 2
            continue
        m = re.match(r'b?r(#*)"', line[i:])
        if m and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["raw"] = len(m.group(1))
            i += len(m.group(0))
            continue
        if c == '"':
            state["str"] = True
            i += 1
            continue
        m = re.match(r"b?'(\\.|[^\\'])'", line[i:])
        if m:
            i += len(m.group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def functions(path):
    """(name, line, length) of each function in a file, tests left out."""
    lines = open(path, encoding="utf-8").read().splitlines()
    state = {"block": 0, "raw": None, "str": False}
    code = [strip_code(line, state) for line in lines]
    found, skip_until = [], -1
    for n, text in enumerate(code):
        if n <= skip_until:
            continue
        if re.match(r"\s*#\[cfg\(test\)\]", lines[n]) or re.match(r"\s*(pub\s+)?mod\s+(tests|testing)\b", text):
            end = block_end(code, n)
            skip_until = end if end is not None else n
            continue
        m = FN.match(text)
        if not m:
            continue
        end = block_end(code, n)
        if end is not None:
            found.append((m.group(1), n + 1, end - n + 1))
    return found


def block_end(code, start):
    """The line where the first brace block opened at or after `start` closes;
    None for a declaration without a body."""
    depth, opened = 0, False
    for n in range(start, len(code)):
        for c in code[n]:
            if c == "{":
                depth, opened = depth + 1, True
            elif c == "}":
                depth -= 1
                if opened and depth == 0:
                    return n
            elif c == ";" and not opened and depth == 0:
                return None
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--max", type=int, default=150)
    parser.add_argument("--p95", type=int, default=45)
    parser.add_argument("root", nargs="?", default="crates")
    args = parser.parse_args()
    rows = []
    for directory, dirs, files in os.walk(args.root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            if name.endswith(".rs") and name != "testing.rs":
                path = os.path.join(directory, name)
                rows += [(length, f"{path}:{line}", fn) for fn, line, length in functions(path)]
    rows.sort(reverse=True)
    lengths = sorted(r[0] for r in rows)
    p95 = lengths[min(len(lengths) - 1, int(len(lengths) * 0.95))]
    for length, place, fn in rows[: args.top]:
        print(f"{length:5}  {fn:32} {place}")
    over = [r for r in rows if r[0] > args.max]
    print(f"functions: {len(rows)}, 95th percentile: {p95} lines (limit {args.p95}), "
          f"longer than {args.max}: {len(over)}")
    return 1 if over or p95 > args.p95 else 0


if __name__ == "__main__":
    sys.exit(main())
