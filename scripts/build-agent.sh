#!/bin/sh
# Builds the static guest agent and prints the path of the binary.
set -eu
cd "$(dirname "$0")/.."
RUSTFLAGS='-C target-feature=+crt-static -C strip=symbols' cargo build --release -p firerunner-agent \
    --target x86_64-unknown-linux-gnu >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/firerunner-agent"
