#!/usr/bin/env bash
# Smoke test of the VMCloud test guest, the way the platform uses it:
# NoCloud seed (vfat, label cidata) + qcow2 overlay on OUT/disk.qcow2, boot
# from disk under TCG, wait for the READY marker on the serial console, ssh in
# with the seeded key, check hostname and disk size, reboot and wait for READY
# again, then ACPI power-off via QMP and check qemu exits.
# Usage: guest/smoke.sh [--out DIR] [--no-build] [--no-reboot] [--keep]
#   --out DIR    guest build directory (default guest/out)
#   --no-build   do not run build.sh first (it is a no-op when up to date)
#   --no-reboot  skip the reboot round trip
#   --keep       keep the temp dir (serial log, overlay) for inspection
# Env: SMOKE_BOOT_TIMEOUT (seconds to wait for READY, default 120).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$HERE/out
BUILD=1
REBOOT=1
KEEP=0
BOOT_TIMEOUT=${SMOKE_BOOT_TIMEOUT:-120}
HOSTNAME_WANTED=smoke-guest

while [ $# -gt 0 ]; do
	case "$1" in
	--out) OUT=${2:?--out needs a directory}; shift 2 ;;
	--out=*) OUT=${1#--out=}; shift ;;
	--no-build) BUILD=0; shift ;;
	--no-reboot) REBOOT=0; shift ;;
	--keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "smoke.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

log() { echo "[guest/smoke] $*" >&2; }
QEMU_PID=
WORK=
fail() {
	echo "[guest/smoke] FAIL: $*" >&2
	if [ -n "$WORK" ] && [ -f "$WORK/serial.log" ]; then
		echo "----- serial console (last 60 lines) -----" >&2
		tail -n 60 "$WORK/serial.log" | tr -d '\r' >&2
		echo "------------------------------------------" >&2
	fi
	exit 1
}
cleanup() {
	if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
		kill "$QEMU_PID" 2>/dev/null || true
		sleep 0.5
		kill -9 "$QEMU_PID" 2>/dev/null || true
		wait "$QEMU_PID" 2>/dev/null || true
	fi
	if [ -n "$WORK" ]; then
		if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ tools
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || MISSING+=("$2"); }
MISSING=()
need ssh-keygen openssh-client
need ssh openssh-client
need mkfs.vfat dosfstools
need mcopy mtools
need qemu-img qemu-utils
need qemu-system-x86_64 qemu-system-x86
need python3 python3-minimal
if [ ${#MISSING[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || fail "missing tools (${MISSING[*]}); install them or run as root"
	log "installing ${MISSING[*]}"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >&2
fi
export PATH=$PATH:/usr/sbin:/sbin

if [ "$BUILD" = 1 ]; then
	"$HERE/build.sh" --out "$OUT" || fail "build.sh failed"
fi
OUT=$(cd "$OUT" && pwd)
[ -f "$OUT/disk.qcow2" ] || fail "no $OUT/disk.qcow2 (run guest/build.sh)"

WORK=$(mktemp -d /tmp/vmcloud-smoke.XXXXXX)

# ------------------------------------------------------------ seed + overlay
ssh-keygen -q -t ed25519 -N '' -C smoke@vmcloud -f "$WORK/key"
printf 'instance-id: iid-smoke-%s\nlocal-hostname: %s\n' "$$" "$HOSTNAME_WANTED" >"$WORK/meta-data"
{
	echo '#cloud-config'
	echo 'ssh_authorized_keys:'
	echo "  - $(cat "$WORK/key.pub")"
} >"$WORK/user-data"
printf 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n' >"$WORK/network-config"
truncate -s 2M "$WORK/seed.img"
mkfs.vfat -n cidata "$WORK/seed.img" >/dev/null 2>&1
MTOOLS_SKIP_CHECK=1 mcopy -i "$WORK/seed.img" "$WORK/meta-data" "$WORK/user-data" "$WORK/network-config" ::/
qemu-img create -q -f qcow2 -b "$OUT/disk.qcow2" -F qcow2 "$WORK/overlay.qcow2"
WANT=$(qemu-img info --output=json "$WORK/overlay.qcow2" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"] // 512)')

# a free local port for the SSH forward
PORT=
for _ in $(seq 1 50); do
	p=$((20000 + RANDOM % 20000))
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORT=$p; break; fi
done
[ -n "$PORT" ] || fail "no free port"

# ------------------------------------------------------------------- boot
qmp() { # qmp COMMAND: run one QMP command, print the reply
	python3 - "$WORK/qmp.sock" "$1" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rw")
def reply():
    while True:
        m = json.loads(f.readline())
        if "event" not in m:
            return m
reply()  # greeting
for cmd in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush()
    r = reply()
    if "error" in r:
        sys.exit("QMP %s: %s" % (cmd, r["error"]))
print(json.dumps(r))
PY
}
marker_count() {
	local n
	[ -f "$WORK/serial.log" ] || { echo 0; return; }
	n=$(tr -d '\r' <"$WORK/serial.log" | grep -c "^VMCLOUD-GUEST-READY hostname=") || true
	echo "${n:-0}"
}
# wait_ready N: wait until the N-th READY marker; prints seconds waited
wait_ready() {
	local n=$1 start now
	start=$(date +%s.%N)
	while [ "$(marker_count)" -lt "$n" ]; do
		kill -0 "$QEMU_PID" 2>/dev/null || fail "qemu exited before READY #$n"
		now=$(date +%s.%N)
		awk -v a="$start" -v b="$now" -v t="$BOOT_TIMEOUT" 'BEGIN { exit !(b - a > t) }' &&
			fail "no READY #$n within ${BOOT_TIMEOUT}s"
		sleep 0.1
	done
	now=$(date +%s.%N)
	awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }'
}
SSH=(timeout 60 ssh -p "$PORT" -i "$WORK/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
	-o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o LogLevel=ERROR root@127.0.0.1)
ssh_retry() { # the guest is READY, but give slirp a moment on a loaded host
	local _
	for _ in 1 2 3 4 5; do
		if "${SSH[@]}" "$@"; then return 0; fi
		sleep 1
	done
	return 1
}

log "booting $OUT/disk.qcow2 (overlay) under TCG, ssh on 127.0.0.1:$PORT"
qemu-system-x86_64 -accel tcg -m 256 -nographic -monitor none \
	-serial "file:$WORK/serial.log" \
	-drive "file=$WORK/overlay.qcow2,if=virtio,format=qcow2" \
	-drive "file=$WORK/seed.img,if=virtio,format=raw,readonly=on" \
	-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-pci,netdev=n0 \
	-qmp "unix:$WORK/qmp.sock,server,nowait" \
	</dev/null >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!

T=$(wait_ready 1) || exit 1
log "READY after ${T}s: $(grep -m1 '^VMCLOUD-GUEST-READY' "$WORK/serial.log" | tr -d '\r')"
grep -q "^VMCLOUD-GUEST-READY hostname=$HOSTNAME_WANTED" "$WORK/serial.log" ||
	fail "READY marker does not carry hostname=$HOSTNAME_WANTED"

GOT=$(ssh_retry hostname) || fail "ssh into the guest failed"
[ "$GOT" = "$HOSTNAME_WANTED" ] || fail "ssh hostname printed '$GOT', wanted '$HOSTNAME_WANTED'"
log "ssh hostname: $GOT"
SECTORS=$(ssh_retry cat /sys/block/vda/size) || fail "ssh cat /sys/block/vda/size failed"
[ "$SECTORS" = "$WANT" ] || fail "guest sees vda as $SECTORS sectors, wanted $WANT"
log "disk vda: $SECTORS sectors"

if [ "$REBOOT" = 1 ]; then
	"${SSH[@]}" reboot >/dev/null 2>&1 || true
	T2=$(wait_ready 2) || exit 1
	log "READY again ${T2}s after 'reboot'"
	GOT=$(ssh_retry hostname) || fail "ssh after reboot failed"
	[ "$GOT" = "$HOSTNAME_WANTED" ] || fail "after reboot ssh hostname printed '$GOT'"
fi

# ------------------------------------------------------- ACPI power-off
qmp system_powerdown >/dev/null || fail "QMP system_powerdown failed"
START=$(date +%s)
while kill -0 "$QEMU_PID" 2>/dev/null; do
	[ $(($(date +%s) - START)) -lt 30 ] || fail "qemu still running 30s after system_powerdown"
	sleep 0.2
done
wait "$QEMU_PID" || fail "qemu exited with status $? after system_powerdown"
QEMU_PID=
grep -q VMCLOUD-GUEST-SHUTDOWN "$WORK/serial.log" || fail "guest did not run its shutdown script"
log "powered off $(($(date +%s) - START))s after system_powerdown"
log "PASS (boot to READY ${T}s under TCG)"
