#!/usr/bin/env bash
# Installs the PostgreSQL server binaries (initdb, postgres, pg_ctl) that the
# store's multi-host tests start a throw-away server with, only when missing,
# then checks that each runs.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    echo "setup-postgres: installing postgresql"
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    # The tests start their own servers; the distribution's cluster is not needed.
    if command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster --force "$(ls /etc/postgresql)" main stop >/dev/null 2>&1 || true
    fi
fi
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
for tool in initdb postgres pg_ctl; do
    if ! "$bin/$tool" --version >/dev/null 2>&1; then
        echo "setup-postgres: '$bin/$tool --version' failed: the PostgreSQL server does not run after setup" >&2
        exit 1
    fi
done
