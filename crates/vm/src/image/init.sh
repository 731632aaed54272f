#!/bin/busybox sh
# firerunner initramfs: load the virtio modules, then hand over to the agent,
# either here (test image) or on the ext4 root named by firerunner.root=.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin /newroot
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /etc/firerunner/modules); do
    insmod "/lib/modules/$module.ko" || echo "firerunner-init: cannot load $module"
done
root=
net=
for word in $(cat /proc/cmdline); do
    case "$word" in
        firerunner.root=*) root="${word#firerunner.root=}" ;;
        firerunner.net=*) net="${word#firerunner.net=}" ;;
    esac
done
# firerunner.net=ADDRESS/PREFIX,GATEWAY,DNS configures eth0 statically.
nameserver=
if [ -n "$net" ]; then
    IFS=, read -r address gateway nameserver <<EOF_NET
$net
EOF_NET
    ip link set lo up
    ip link set eth0 up
    ip addr add "$address" dev eth0
    ip route add default via "$gateway"
    echo "nameserver $nameserver" > /etc/resolv.conf
fi
if [ -z "$root" ]; then
    exec /sbin/firerunner-agent
fi
tries=0
while [ ! -b "$root" ] && [ "$tries" -lt 1000 ]; do
    sleep 0.01
    tries=$((tries + 1))
done
if ! mount -t ext4 "$root" /newroot; then
    echo "firerunner-init: cannot mount $root; powering off"
    poweroff -f
fi
if [ -n "$nameserver" ]; then
    echo "nameserver $nameserver" > /newroot/etc/resolv.conf
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/firerunner-agent
