#!/usr/bin/env bash
# Installs the PostgreSQL server binaries (initdb, postgres) that the store's
# multi-host tests start a throw-away server with, only when missing.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
echo "setup-postgres: installing postgresql"
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The tests start their own servers; the distribution's cluster is not needed.
if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --force "$(ls /etc/postgresql)" main stop >/dev/null 2>&1 || true
fi
