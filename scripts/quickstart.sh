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

# The example as a repository of its own, the way a user runs firerunner in
# their checkout: a fresh copy each time, one commit on main.
demo="$PWD/target/quickstart-demo"
rm -rf "$demo"
cp -r examples/demo "$demo"
cd "$demo"
git init -q -b main
git add .
git -c user.name=firerunner -c user.email=quickstart@firerunner.invalid commit -q -m "The example repository"
echo "== firerunner validate"
"$firerunner" validate
echo "== firerunner run push (every job in its own microVM)"
"$firerunner" run push
