#!/usr/bin/env bash
# A local libvirtd for the libvirt driver's tests (VMCLOUD_TEST_LIBVIRT_URI=qemu:///system)
# on a Debian machine without systemd: installs QEMU, the daemon with its QEMU driver
# (the directory storage backend is built in) and the headers the `virt` crate builds
# against, creates the accounts Debian's qemu.conf runs guests as, and starts virtlogd
# and libvirtd. Idempotent; run it as root (scripts/test does, through as_root).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# No recommends: libvirt-daemon's pull in the LXC, Xen and VirtualBox drivers and LVM.
ensure_debs qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
  libvirt-dev pkg-config

# libvirt-daemon-system's postinst would make these; we do not install it because it
# needs systemd or sysv-rc. Debian's qemu.conf runs guests as libvirt-qemu:libvirt-qemu
# and gives them the kvm group.
getent group kvm >/dev/null || as_root groupadd -r kvm
getent group libvirt-qemu >/dev/null || as_root groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  as_root useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu

# Debian's udev rule gives /dev/kvm to group kvm; without udev it stays root-only,
# which libvirt then finds different from its cached QEMU capabilities on every
# call and probes QEMU again each time (seconds per API call).
if [ -e /dev/kvm ]; then
  as_root chgrp kvm /dev/kvm
  as_root chmod 0660 /dev/kvm
fi

# virtlogd writes the guests' serial logs here.
as_root mkdir -p /var/log/libvirt/qemu /var/lib/vmcloud
pgrep -x virtlogd >/dev/null || as_root /usr/sbin/virtlogd -d
pgrep -x libvirtd >/dev/null || as_root /usr/sbin/libvirtd -d
for _ in $(seq 60); do
  as_root virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "libvirtd did not answer on qemu:///system within 30 s" >&2
as_root virsh -c qemu:///system version
