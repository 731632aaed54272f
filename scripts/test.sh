#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what the tests need (idempotent), checks formatting and lints,
# builds every test binary and the guest images they share, then runs the
# test binaries several at a time (scripts/run_tests.py) and ends with one
# total line: "total: N passed, M failed".
#
#   TEST_JOBS=N              test binaries at a time (default 3)
#   FIRERUNNER_TEST_LOAD=N   run N CPU hogs (stress-ng) beside the tests, to
#                            prove they pass on a loaded machine; see
#                            scripts/test-under-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

for setup in scripts/setup-*.sh; do
    [ -e "$setup" ] && bash "$setup"
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-run
cargo build --locked --bin firerunner

# The guest images every VM test uses, built once here (cached outside the
# clone in ~/.cache/firerunner) rather than by several test binaries at once.
FIRERUNNER_AGENT="$(bash scripts/build-agent.sh)"
export FIRERUNNER_AGENT
for kind in test debian; do
    target/debug/firerunner image build --kind "$kind" >/dev/null
done
echo "test.sh: built and ready after $(($(date +%s) - started)) s"

if [ "${FIRERUNNER_TEST_LOAD:-0}" -gt 0 ]; then
    echo "test.sh: ${FIRERUNNER_TEST_LOAD} CPU hogs run beside the tests"
    # Ends by itself when this shell's process (the test runner, after exec) is gone.
    stress-ng --cpu "$FIRERUNNER_TEST_LOAD" --cpu-method matrixprod --quiet --timeout 3h &
    hog=$!
    (while kill -0 $$ 2>/dev/null; do sleep 2; done; kill "$hog" 2>/dev/null) &
fi

TEST_STARTED=$started exec python3 scripts/run_tests.py --jobs "${TEST_JOBS:-3}"
