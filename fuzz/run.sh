#!/usr/bin/env bash
# Fuzzes one target for a while: bash fuzz/run.sh expression|workflow_yaml [SECONDS]
# Seeds come from the test fixtures and GitHub's expression conformance cases.
# Needs cargo-fuzz (cargo install cargo-fuzz) and a nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh expression|workflow_yaml [SECONDS]}
seconds=${2:-600}
seeds=seeds/$target
mkdir -p "$seeds" "corpus/$target"
case "$target" in
    workflow_yaml) cp ../crates/workflow/tests/fixtures/*/*.yml ../examples/demo/.github/workflows/*.yml "$seeds/" ;;
    expression)
        conformance=${FIRERUNNER_CONFORMANCE_DIR:-../../shared/conformance/expressions}
        python3 - "$conformance" "$seeds" <<'PY'
import glob, json, os, sys
src, out = sys.argv[1], sys.argv[2]
n = 0
for path in glob.glob(os.path.join(src, "*.json")):
    for cases in json.load(open(path)).values():
        for case in cases:
            n += 1
            open(os.path.join(out, f"case{n}.txt"), "w").write(case["expr"])
PY
        ;;
esac
exec cargo +nightly fuzz run "$target" "corpus/$target" "$seeds" -- -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048
