#!/usr/bin/env bash
# The whole suite (scripts/test.sh) with a CPU hog on every core beside it and
# more test binaries at a time than cores, so that every test that starts a
# guest or a server shows it passes on a loaded machine, not only an idle one.
#
#   bash scripts/test-under-load.sh            # one hog per core, 4 binaries at a time
#   LOAD=1 TEST_JOBS=3 bash scripts/test-under-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v stress-ng >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    echo "test-under-load: installing stress-ng"
    apt-get install -y -qq --no-install-recommends stress-ng >/dev/null
fi
if ! stress-ng --version >/dev/null 2>&1; then
    echo "test-under-load: 'stress-ng --version' failed: stress-ng does not run after setup" >&2
    exit 1
fi
FIRERUNNER_TEST_LOAD="${LOAD:-$(nproc)}" TEST_JOBS="${TEST_JOBS:-4}" exec bash scripts/test.sh
