#!/usr/bin/env bash
# Sets this machine up and runs the main job on embedded defaults:
# the example repository's workflow (examples/demo) is validated and planned
# for a push to main, showing which jobs run, in which order, with matrix values.
set -euo pipefail
cd "$(dirname "$0")/.."

for setup in scripts/setup-*.sh; do
    [ -e "$setup" ] && bash "$setup"
done

cargo build --quiet --bin firerunner
firerunner=target/debug/firerunner

cd examples/demo
echo "== firerunner validate"
"../../$firerunner" validate
echo "== firerunner plan -e push (ref refs/heads/main)"
"../../$firerunner" plan -e push --ref refs/heads/main --changed-file src/numbers.txt
