#!/usr/bin/env bash
# Build the VMCloud test guest from Debian packages only:
#   OUT/vmlinuz            Debian cloud kernel
#   OUT/initramfs.cpio.gz  busybox + dropbear + the kernel modules it needs
#   OUT/disk.qcow2         bootable (MBR + syslinux + FAT) 64 MiB disk with both
#   OUT/cmdline.txt        kernel command line (for direct kernel boot)
#   OUT/packages.txt       Debian packages (and versions) the guest is made of
# Usage: sudo guest/build.sh [--out DIR] [--force]
# Runs as root on Debian 12. Network: Debian apt repositories only.
# Does nothing when OUT is newer than this script and guest/rootfs/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$HERE/out
FORCE=0
KERNEL_PKG=${KERNEL_PKG:-linux-image-cloud-amd64}
DISK_MIB=64
PART_START=2048 # sectors: the FAT partition starts at 1 MiB
CMDLINE="console=ttyS0,115200 quiet"

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }
while [ $# -gt 0 ]; do
	case "$1" in
	--out) OUT=${2:?--out needs a directory}; shift 2 ;;
	--out=*) OUT=${1#--out=}; shift ;;
	--force) FORCE=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "build.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STAMP=$OUT/.stamp
OUTPUTS=(vmlinuz initramfs.cpio.gz disk.qcow2 cmdline.txt packages.txt)

log() { echo "[guest/build] $*" >&2; }
die() { echo "[guest/build] error: $*" >&2; exit 1; }

up_to_date() {
	[ "$FORCE" = 0 ] && [ -f "$STAMP" ] || return 1
	local f
	for f in "${OUTPUTS[@]}"; do [ -s "$OUT/$f" ] || return 1; done
	[ "$0" -nt "$STAMP" ] && return 1
	[ -z "$(find "$HERE/rootfs" -newer "$STAMP" -print -quit)" ]
}
if up_to_date; then
	log "up to date: $OUT (use --force to rebuild)"
	exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (it installs build tools with apt-get)"

# ---------------------------------------------------------------- host tools
APT_UPDATED=0
apt_update() {
	if [ "$APT_UPDATED" = 0 ]; then
		log "apt-get update"
		apt-get update -qq >&2
		APT_UPDATED=1
	fi
}
# need_tool COMMAND PACKAGE: install PACKAGE if COMMAND is missing.
MISSING=()
need_tool() {
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || MISSING+=("$2")
}
need_tool cpio cpio
need_tool mcopy mtools
need_tool mkfs.vfat dosfstools
need_tool syslinux syslinux
need_tool depmod kmod
need_tool modprobe kmod
need_tool sfdisk fdisk
need_tool qemu-img qemu-utils
need_tool gzip gzip
[ -f /usr/lib/syslinux/mbr/mbr.bin ] || MISSING+=(syslinux-common)
if [ ${#MISSING[@]} -gt 0 ]; then
	apt_update
	log "installing build tools: ${MISSING[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >&2
fi
export PATH=$PATH:/usr/sbin:/sbin

WORK=$(mktemp -d /tmp/vmcloud-guest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"

# -------------------------------------------------- guest packages (not installed)
# Resolve the kernel meta package (linux-image-cloud-amd64) to the real one.
resolve_kernel() {
	apt-cache depends "$KERNEL_PKG" 2>/dev/null |
		awk '/^ *Depends: linux-image-[0-9]/ { print $2; exit }'
}
DEBS=$WORK/debs
mkdir -p "$DEBS"
# apt-get download drops privileges to _apt; let it write there.
if id _apt >/dev/null 2>&1; then chown _apt "$DEBS"; fi
# download_guest_pkgs: the kernel, busybox, dropbear-bin and its library
# closure (libc6 -> libgcc-s1 is not needed by these binaries; the ELF check
# below fails loudly if that ever changes).
download_guest_pkgs() {
	KPKG=$(resolve_kernel) && [ -n "$KPKG" ] || return 1
	GUEST_PKGS=("$KPKG" busybox-static dropbear-bin libc6 libcrypt1 libtomcrypt1
		libtommath1 libgmp10 zlib1g)
	log "downloading ${GUEST_PKGS[*]}"
	rm -f "$DEBS"/*.deb
	(cd "$DEBS" && apt-get download -qq "${GUEST_PKGS[@]}" >&2)
}
# Package lists missing or stale (fresh machine): update once and retry.
download_guest_pkgs || { apt_update && download_guest_pkgs; } ||
	die "cannot download the guest packages ($KERNEL_PKG, dropbear-bin, ...)"

ROOT=$WORK/pkgroot
mkdir -p "$ROOT"
: >"$WORK/packages.txt"
for deb in "$DEBS"/*.deb; do
	dpkg -x "$deb" "$ROOT"
	dpkg-deb -f "$deb" Package Version | paste -sd' ' | sed 's/Package: //; s/ Version: / /' >>"$WORK/packages.txt"
done
sort -o "$WORK/packages.txt" "$WORK/packages.txt"

KVER=$(ls "$ROOT/lib/modules")
[ "$(echo "$KVER" | wc -l)" = 1 ] || die "expected one kernel in $KPKG, got: $KVER"
VMLINUZ=$ROOT/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || die "no $VMLINUZ"
log "kernel $KVER"

# ------------------------------------------------------------------ initramfs
IR=$WORK/initramfs
mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,lib64,etc,proc,sys,dev,run,tmp,mnt,root,var/log}
ln -s ../run "$IR/var/run"
chmod 1777 "$IR/tmp"
chmod 700 "$IR/root"
# /dev/console must exist before devtmpfs is mounted: the kernel opens it
# for init's stdin/stdout/stderr.
mknod -m 600 "$IR/dev/console" c 5 1
mknod -m 666 "$IR/dev/null" c 1 3

# busybox (static) and its applet links
install -m 755 "$ROOT/bin/busybox" "$IR/bin/busybox"
"$IR/bin/busybox" --list-full | while read -r applet; do
	[ "$applet" = bin/busybox ] && continue
	[ -e "$IR/$applet" ] && continue
	mkdir -p "$IR/$(dirname "$applet")"
	ln -s /bin/busybox "$IR/$applet"
done

# dropbear and the shared libraries it needs, found inside the extracted
# packages (never the host's) with the packaged dynamic loader.
LIBDIRS=$ROOT/lib/x86_64-linux-gnu:$ROOT/usr/lib/x86_64-linux-gnu
LOADER=$ROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
[ -e "$LOADER" ] || die "no dynamic loader in libc6"
mkdir -p "$IR/lib/x86_64-linux-gnu"
cp -L "$LOADER" "$IR/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$IR/lib64/ld-linux-x86-64.so.2"
for bin in usr/sbin/dropbear usr/bin/dropbearkey; do
	[ -f "$ROOT/$bin" ] || die "dropbear-bin has no /$bin"
	install -m 755 "$ROOT/$bin" "$IR/$bin"
	"$LOADER" --library-path "$LIBDIRS" --list "$ROOT/$bin" >"$WORK/ldd.txt" ||
		die "cannot list libraries of $bin"
	while read -r name arrow path _; do
		[ "$arrow" = "=>" ] || continue
		name=${name##*/}
		[ "$name" = ld-linux-x86-64.so.2 ] && continue # copied above
		case "$path" in
		"$ROOT"/*) cp -L "$path" "$IR/lib/x86_64-linux-gnu/$name" ;;
		*) die "$bin needs $name, not found in the guest packages (got $path)" ;;
		esac
	done <"$WORK/ldd.txt"
done

# kernel modules: the ones init loads, plus their dependencies. The
# optional ones are only for a seed on a CD-ROM or virtio-scsi disk (the
# cloud kernel has no AHCI driver, for instance).
MODULES=(virtio_pci virtio_blk virtio_net virtio_console virtio_rng
	button evdev fat vfat nls_cp437 nls_iso8859_1 nls_ascii nls_utf8 isofs)
OPTIONAL_MODULES=(ata_piix ahci virtio_scsi sd_mod sr_mod)
depmod -b "$ROOT" "$KVER"
KM=lib/modules/$KVER
mkdir -p "$IR/$KM"
for m in "${MODULES[@]}" "${OPTIONAL_MODULES[@]}"; do
	if ! modprobe -d "$ROOT" -S "$KVER" --show-depends "$m" >"$WORK/deps.txt" 2>/dev/null; then
		case " ${OPTIONAL_MODULES[*]} " in
		*" $m "*) log "kernel $KVER has no module $m (optional, skipped)"; continue ;;
		*) die "kernel $KVER has no module $m" ;;
		esac
	fi
	while read -r kind path _; do
		[ "$kind" = insmod ] || continue # "builtin X" needs nothing
		rel=${path#"$ROOT"/}
		mkdir -p "$IR/$(dirname "$rel")"
		cp "$path" "$IR/$rel"
	done <"$WORK/deps.txt"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
	[ -f "$ROOT/$KM/$f" ] && cp "$ROOT/$KM/$f" "$IR/$KM/"
done
depmod -b "$IR" "$KVER"
(cd "$IR/$KM" && find kernel -name '*.ko*' | sed 's|.*/||; s|\.ko.*||' | sort) >"$WORK/modules.txt"

# guest files (init, rcS, udhcpc and acpid hooks, NoCloud parsers)
cp -a "$HERE/rootfs/." "$IR/"
cat >"$IR/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sshd:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
# "*": no password can match, but the account is not locked (key login works)
echo 'root:*:19000:0:99999:7:::' >"$IR/etc/shadow"
chmod 600 "$IR/etc/shadow"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$IR/etc/group"
echo /bin/sh >"$IR/etc/shells"
echo vmcloud-guest >"$IR/etc/hostname"
cat >"$IR/etc/profile" <<'EOF'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
PS1='\u@\h:\w\$ '
EOF
printf 'KVER=%s\nPACKAGE=%s\n' "$KVER" "$KPKG" >"$IR/etc/vmcloud-guest-release"

log "packing initramfs"
(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$WORK/initramfs.cpio.gz"

# -------------------------------------------------------------- bootable disk
# MBR (syslinux mbr.bin) + one active FAT16 partition at 1 MiB holding
# ldlinux.sys, syslinux.cfg, the kernel and the initramfs. No mounts needed:
# mkfs.vfat/mcopy/syslinux all work on image files.
log "making disk image"
RAW=$WORK/disk.raw
PART=$WORK/part.img
truncate -s "${DISK_MIB}M" "$RAW"
PART_SECTORS=$((DISK_MIB * 2048 - PART_START))
printf 'label: dos\nstart=%s, size=%s, type=e, bootable\n' "$PART_START" "$PART_SECTORS" |
	sfdisk --quiet "$RAW" >&2
mkfs.vfat -F 16 -n VMCLOUD -h "$PART_START" -C "$PART" $((PART_SECTORS / 2)) >/dev/null
syslinux --install "$PART"
cat >"$WORK/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND $CMDLINE
EOF
cp "$VMLINUZ" "$WORK/vmlinuz"
cp "$WORK/initramfs.cpio.gz" "$WORK/initrd.gz"
MTOOLS_SKIP_CHECK=1 mcopy -i "$PART" "$WORK/syslinux.cfg" "$WORK/vmlinuz" "$WORK/initrd.gz" ::/
dd if="$PART" of="$RAW" bs=512 seek="$PART_START" conv=notrunc,sparse status=none
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$RAW" bs=440 count=1 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$RAW" "$WORK/disk.qcow2"

# ------------------------------------------------------------------- publish
echo "$CMDLINE" >"$WORK/cmdline.txt"
{
	echo "# kernel $KVER from $KPKG"
	cat "$WORK/packages.txt"
	echo "# modules in the initramfs"
	sed 's/^/module /' "$WORK/modules.txt"
} >"$WORK/packages.out"
mv "$WORK/packages.out" "$WORK/packages.txt"
rm -f "$STAMP"
for f in "${OUTPUTS[@]}"; do mv -f "$WORK/$f" "$OUT/$f"; done
touch "$STAMP"
log "done: $(cd "$OUT" && ls -l "${OUTPUTS[@]}" | awk '{printf "%s=%s ", $NF, $5}')"
