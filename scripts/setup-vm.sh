#!/usr/bin/env bash
# Installs what booting test guests needs, only when missing (idempotent):
# QEMU for x86 (microvm under TCG or KVM) with a qemu-img of the same release,
# a static busybox for the initramfs, Dropbear and the OpenSSH client for the
# SSH variant of the test image (the boot benchmark compares the agent with
# SSH), and fresh apt lists so the kernel package can be downloaded. Then it
# checks that every tool it promises runs, and fails naming the one that does not.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
need=()
qemu_set=()
# qemu-system-x86 and qemu-utils must come from one QEMU release: a machine may
# ship a newer qemu-utils (from backports) that Debian's qemu-system-x86 cannot
# sit beside, and apt would then remove qemu-img. So both are installed as one
# set at the version of qemu-system-x86 that apt offers.
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-img >/dev/null; then
    qemu_set=(qemu-system-x86 qemu-utils)
fi
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v dropbear >/dev/null || [ -x /usr/sbin/dropbear ] || need+=(dropbear-bin)
command -v ssh >/dev/null || need+=(openssh-client)

# apt-cache must know the kernel meta package the image builder resolves.
if [ "${#need[@]}" -gt 0 ] || [ "${#qemu_set[@]}" -gt 0 ] ||
    ! apt-cache show --no-all-versions linux-image-cloud-amd64 >/dev/null 2>&1; then
    apt-get update -qq
fi
if [ "${#qemu_set[@]}" -gt 0 ]; then
    version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        echo "setup-vm: apt offers no qemu-system-x86 package; check /etc/apt/sources.list" >&2
        exit 1
    fi
    echo "setup-vm: installing qemu-system-x86 and qemu-utils $version as one set"
    apt-get install -y -qq --no-install-recommends --allow-downgrades \
        "qemu-system-x86=$version" "qemu-utils=$version" >/dev/null
fi
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup-vm: installing ${need[*]}"
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# What this script promises, checked by running it.
check() {
    local what=$1
    shift
    if ! "$@" >/dev/null 2>&1; then
        echo "setup-vm: '$*' failed: $what does not run after setup" >&2
        exit 1
    fi
}
check "QEMU (qemu-system-x86)" qemu-system-x86_64 --version
check "qemu-img (qemu-utils)" qemu-img --version
check "busybox (busybox-static)" /bin/busybox true
check "cpio" cpio --version
check "dropbear (dropbear-bin)" sh -c 'command -v dropbear || test -x /usr/sbin/dropbear'
check "ssh (openssh-client)" ssh -V
