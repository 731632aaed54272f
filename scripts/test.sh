#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what the tests need (idempotent), then checks formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

for setup in scripts/setup-*.sh; do
    [ -e "$setup" ] && bash "$setup"
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every test binary's result, then one total line ("total: N passed, M failed")
# so the log ends with the whole suite's count, conformance cases included.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{n += $1} END {print n + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{n += $1} END {print n + 0}')
echo "total: $passed passed, $failed failed"
exit "$status"
