#!/bin/sh
# Installs the host tools the Debian root filesystem builder needs
# (debootstrap, and e2fsprogs for mke2fs/debugfs/e2fsck), only when missing,
# then checks that each runs.
# Safe to run repeatedly; needs root (or sudo) on Debian/Ubuntu.
set -eu

missing=""
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing="$missing debootstrap"
for tool in mke2fs debugfs e2fsck; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ] && [ ! -x "/sbin/$tool" ]; then
        missing="$missing e2fsprogs"
        break
    fi
done

verify() {
    PATH="$PATH:/usr/sbin:/sbin"
    if ! debootstrap --version >/dev/null 2>&1; then
        echo "setup-rootfs-tools: 'debootstrap --version' failed: debootstrap does not run after setup" >&2
        exit 1
    fi
    for tool in mke2fs debugfs e2fsck; do
        if ! "$tool" -V >/dev/null 2>&1; then
            echo "setup-rootfs-tools: '$tool -V' failed: e2fsprogs does not run after setup" >&2
            exit 1
        fi
    done
}

if [ -z "$missing" ]; then
    verify
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "setup-rootfs-tools: need root to install:$missing" >&2
    exit 1
fi

echo "setup-rootfs-tools: installing$missing" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086 # word splitting of the package list is intended
if ! { $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup-rootfs-tools: apt-get failed installing$missing" >&2
    exit 1
fi
verify
