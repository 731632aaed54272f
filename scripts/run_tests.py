#!/usr/bin/env python3
"""Runs the workspace's test binaries several at a time and sums their results.

`cargo test` runs one test binary after another; most of the suite's time is
spent in a few binaries that wait on QEMU guests, so running binaries side by
side shortens the wall time without changing what any test does: each binary
still runs as `cargo test` would run it (its package folder as the working
directory, cargo's variables set), and the tests inside it still share what
they build once per process (the agent, the guest images, booted snapshots).

The slowest binaries start first, by the durations the previous run recorded
in target/test-durations.json. Each binary's output is printed whole when it
ends, then one line per binary and a final total line:

    total: N passed, M failed

Documentation tests run (`cargo test --doc`, as one more job) only when a
doc comment holds a Rust code block: otherwise that would only rebuild every
library for rustdoc.

Usage: run_tests.py [--jobs N] [--filter SUBSTRING] [-- TEST-ARGS...]
(the build must be done first: `cargo test --workspace --no-run`).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed", re.M)
# What a binary without libtest's harness prints (the conformance suite).
PLAIN = re.compile(r"^[\w ]+: (\d+) passed, (\d+) failed\b", re.M)


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def test_binaries():
    """Every test executable of the workspace, with the package it belongs to."""
    out = subprocess.run(
        ["cargo", "test", "--workspace", "--locked", "--no-run", "--message-format=json"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ).stdout
    binaries = []
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact" or not message.get("executable"):
            continue
        if not message.get("profile", {}).get("test"):
            continue
        target = message["target"]
        binaries.append(
            {
                "name": f"{package_name(message['package_id'])}::{target['name']}",
                "exe": message["executable"],
                "dir": str(Path(message["manifest_path"]).parent),
                "package": package_name(message["package_id"]),
            }
        )
    return binaries


def package_name(package_id):
    # "path+file:///x/crates/vm#firerunner-vm@0.1.0" or "firerunner-vm 0.1.0 (path+...)".
    if "#" in package_id:
        tail = package_id.rsplit("#", 1)[1]
        return tail.split("@", 1)[0]
    return package_id.split(" ", 1)[0]


DOC_FENCE = re.compile(r"^\s*//[/!]\s?```(.*)$")
NOT_RUST = {"text", "sh", "bash", "console", "toml", "yaml", "yml", "json", "ignore", "txt", "diff"}


def has_doc_tests():
    """Whether any doc comment opens a code block rustdoc would run."""
    for path in (ROOT / "crates").rglob("*.rs"):
        open_fence = False
        for line in path.read_text(errors="replace").splitlines():
            match = DOC_FENCE.match(line)
            if not match:
                continue
            if open_fence:
                open_fence = False
                continue
            open_fence = True
            tags = {t.strip() for t in match.group(1).split(",") if t.strip()}
            if not tags & NOT_RUST:
                return True
    return False


def doc_tests():
    return {
        "name": "doc-tests",
        "cmd": ["cargo", "test", "--workspace", "--locked", "--doc"],
        "dir": str(ROOT),
        "package": "",
    }


def run_one(binary, args):
    env = dict(os.environ)
    env.update(
        CARGO_MANIFEST_DIR=binary["dir"],
        CARGO_PKG_NAME=binary["package"],
        CARGO=env.get("CARGO", "cargo"),
    )
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as log:
        status = subprocess.run(
            binary.get("cmd") or [binary["exe"], *args],
            cwd=binary["dir"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
        log.seek(0)
        output = log.read()
    return binary, status, output, time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("TEST_JOBS", "3")))
    parser.add_argument("--filter", action="append", default=[],
                        help="run only binaries whose name holds this (repeatable)")
    parser.add_argument("args", nargs="*", help="arguments for every test binary")
    options = parser.parse_args()

    durations_file = target_dir() / "test-durations.json"
    try:
        durations = json.loads(durations_file.read_text())
    except (OSError, ValueError):
        durations = {}
    binaries = test_binaries() + ([doc_tests()] if has_doc_tests() else [])
    if options.filter:
        binaries = [b for b in binaries if any(f in b["name"] for f in options.filter)]
    binaries.sort(key=lambda b: -durations.get(b["name"], 0.0))

    passed = failed = 0
    broken = []
    lines = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        futures = [pool.submit(run_one, b, options.args) for b in binaries]
        for future in as_completed(futures):
            binary, status, output, took = future.result()
            durations[binary["name"]] = round(took, 1)
            print(f"\n===== {binary['name']} ({took:.1f} s, exit {status})", flush=True)
            print(output, end="" if output.endswith("\n") else "\n", flush=True)
            counts = RESULT.findall(output) or PLAIN.findall(output)
            p = sum(int(a) for a, _ in counts)
            f = sum(int(b) for _, b in counts)
            if status != 0 and f == 0:
                f = 1  # crashed or failed without a result line
            passed += p
            failed += f
            if status != 0:
                broken.append(binary["name"])
            lines.append(f"{took:7.1f} s  {binary['name']}: {p} passed, {f} failed")
    try:
        durations_file.write_text(json.dumps(durations, indent=1, sort_keys=True))
    except OSError:
        pass
    print("\nper binary (wall time, slowest first):")
    for line in sorted(lines, reverse=True):
        print(line)
    print(f"wall time of the test binaries: {time.monotonic() - started:.0f} s with {options.jobs} at a time")
    if "TEST_STARTED" in os.environ:
        print(f"the whole suite (setup, lints, build, tests) took {time.time() - int(os.environ['TEST_STARTED']):.0f} s")
    if broken:
        print("failed: " + ", ".join(sorted(broken)))
    print(f"total: {passed} passed, {failed} failed")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
