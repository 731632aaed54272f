#!/usr/bin/env bash
# Fuzzes one target for a while:
#   bash fuzz/run.sh expression|workflow_yaml|tar_unpack|frame_decoder [SECONDS]
# Seeds come from the test fixtures and GitHub's expression conformance cases.
# Needs cargo-fuzz (cargo install cargo-fuzz) and a nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh expression|workflow_yaml|tar_unpack|frame_decoder [SECONDS]}
seconds=${2:-600}
seeds=seeds/$target
mkdir -p "$seeds" "corpus/$target"
case "$target" in
    workflow_yaml) cp ../crates/workflow/tests/fixtures/*/*.yml ../examples/demo/.github/workflows/*.yml "$seeds/" ;;
    tar_unpack)
        # Real streams from pack: this repository's small folders.
        for dir in ../.github ../scripts ../crates/agent-proto/src; do
            [ -d "$dir" ] && tar --format=gnu -C "$dir" -cf "$seeds/$(basename "$dir").tar" .
        done
        ;;
    frame_decoder) printf '\xf1\x7eAG\x05\x00\x00\x00\x86\xa6\x10\x36hello' > "$seeds/hello.bin" ;;
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
max_len=4096
[ "$target" = tar_unpack ] && max_len=65536
exec cargo +nightly fuzz run "$target" "corpus/$target" "$seeds" -- -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048
