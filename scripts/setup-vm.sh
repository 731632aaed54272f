#!/usr/bin/env bash
# Installs what booting test guests needs, only when missing (idempotent):
# QEMU for x86 (microvm under TCG or KVM), qemu-img, a static busybox for the
# initramfs, Dropbear and the OpenSSH client for the SSH variant of the test
# image (the boot benchmark compares the agent with SSH), and fresh apt lists
# so the kernel package can be downloaded.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v dropbear >/dev/null || [ -x /usr/sbin/dropbear ] || need+=(dropbear-bin)
command -v ssh >/dev/null || need+=(openssh-client)

# apt-cache must know the kernel meta package the image builder resolves.
if [ "${#need[@]}" -gt 0 ] || ! apt-cache show --no-all-versions linux-image-cloud-amd64 >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
fi
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup-vm: installing ${need[*]}"
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
