#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser tests (Debian's package).
# Idempotent: installs only when chromium is missing, then checks that it runs.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-chromium: chromium is missing; run as root or: apt-get install chromium" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    echo "setup-chromium: installing chromium"
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
if ! chromium --version >/dev/null 2>&1; then
    echo "setup-chromium: 'chromium --version' failed: Chromium does not run after setup" >&2
    exit 1
fi
