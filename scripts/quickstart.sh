#!/usr/bin/env bash
# Sets this machine up and runs the main job on embedded defaults: the example
# repository's workflow (examples/demo: a matrix, needs, outputs, an artifact
# and a failing-then-recovered step) runs in QEMU microVMs, one per job, in
# the default Debian guest image (built once, then cached in ~/.cache/firerunner).
set -euo pipefail
cd "$(dirname "$0")/.."

for setup in scripts/setup-*.sh; do
    [ -e "$setup" ] && bash "$setup"
done

cargo build --quiet --release --bin firerunner
firerunner="$PWD/target/release/firerunner"
FIRERUNNER_AGENT="$(bash scripts/build-agent.sh)"
export FIRERUNNER_AGENT

echo "== firerunner image build (Debian bookworm guest; the first build takes a few minutes)"
"$firerunner" image build --kind debian

cd examples/demo
echo "== firerunner validate"
"$firerunner" validate
echo "== firerunner run push (every job in its own microVM)"
"$firerunner" run push
