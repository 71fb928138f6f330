#!/usr/bin/env bash
# Platform overhead of creating an instance: create-to-running through the API
# minus a bare qemu-system-x86_64 boot of the same guest to the same point (the
# SSH banner answering on the forwarded port).
# Usage: bench/boot-overhead.sh [runs, default 5]
# Env: BENCH_POLL_INTERVAL_MS (VMCLOUD_WORKER_POLL_INTERVAL_MS of the server,
# default: the server's default).
# Needs the test guest (guest/build.sh --out guest/out), QEMU, qemu-img,
# mkfs.vfat and mcopy. The runs alternate bare, platform, bare, platform...
# The platform polls GET /instances/{id} every 20 ms; the bare boot starts a
# banner probe every 20 ms: both figures are +0/+20 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils mcopy:mtools \
  ssh-keygen:openssh-client
[ -x /usr/sbin/mkfs.vfat ] || command -v mkfs.vfat >/dev/null || ensure_debs dosfstools
[ -f guest/out/disk.qcow2 ] || as_root bash guest/build.sh --out guest/out
build_vmcloud >/dev/null
RUNS=${1:-5} exec python3 - <<'PY'
import datetime, json, os, sys, time
sys.path.insert(0, "bench")
from vmcloud_bench import *

runs = int(os.environ["RUNS"])
env = {
    "VMCLOUD_LOCAL_NODE": "true",
    "VMCLOUD_QEMU_ACCEL": "tcg",
    "VMCLOUD_SSH_BIND": "127.0.0.1",
    "VMCLOUD_SSH_PORT_MIN": "24000",
    "VMCLOUD_SSH_PORT_MAX": "24099",
}
if os.environ.get("BENCH_POLL_INTERVAL_MS"):
    env["VMCLOUD_WORKER_POLL_INTERVAL_MS"] = os.environ["BENCH_POLL_INTERVAL_MS"]
server = Server(env, ["--demo", "--demo-image", "guest/out/disk.qcow2"], log_level="info")
try:
    api = server.create_user("bench@example.org", "customer")
    key = ssh_key(server.work)
    key_id = api.ok("POST", "/api/v1/ssh-keys", {"public_key": key})["id"]

    def ts(text):
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    def steps_of(instance):
        """(step, wall time) from the server's log lines for this instance."""
        out = []
        with open(server.log_path) as f:
            for line in f:
                if instance not in line or '"step"' not in line:
                    continue
                entry = json.loads(line)
                fields = entry.get("fields", entry)
                out.append((fields["step"], ts(entry["timestamp"])))
        return out

    def platform(i):
        body = {"plan": "demo-nano", "image": "vmcloud-test-guest", "region": "local",
                "hostname": f"bench-{i}", "ssh_key_ids": [key_id]}
        wall0 = time.time()
        t0 = time.monotonic()
        created = api.ok("POST", "/api/v1/instances", body)
        accepted = time.monotonic() - t0
        iid = created["id"]
        action_id = created["pending_action"]["id"]
        while True:
            view = api.ok("GET", f"/api/v1/instances/{iid}")
            if view["status"] == "running":
                break
            if view["status"] == "error":
                raise SystemExit(f"instance {iid}: {view.get('status_reason')}")
            time.sleep(0.02)
        total = time.monotonic() - t0
        action = api.ok("GET", f"/api/v1/instances/{iid}/actions/{action_id}")
        marks = {"accepted": accepted,
                 "action started": ts(action["started_at"]) - wall0,
                 "action finished": ts(action["finished_at"]) - wall0}
        for step, at in steps_of(iid):
            marks[f"step {step}"] = at - wall0
        api.ok("DELETE", f"/api/v1/instances/{iid}")
        while api.request("GET", f"/api/v1/instances/{iid}")[0] != 404:
            time.sleep(0.05)
        while any(iid in open(f"/proc/{p}/cmdline").read().replace("\0", " ")
                  for p in qemu_pids() if os.path.exists(f"/proc/{p}/cmdline")):
            time.sleep(0.05)
        return total, marks

    bare, plat, marks_all = [], [], []
    for i in range(runs):
        b, prep = bare_boot("guest/out/disk.qcow2", key, 1, 256, 1, f"bare-{i}")
        bare.append(b)
        p, marks = platform(i)
        plat.append(p)
        marks_all.append(marks)
        print(f"run {i + 1}: bare {b:.3f} s (overlay+seed {prep * 1000:.0f} ms before it), "
              f"platform {p:.3f} s, difference {p - b:+.3f} s", flush=True)
        print("   platform timeline (s after POST): " +
              ", ".join(f"{k} {v:.3f}" for k, v in marks.items()), flush=True)
    print()
    print(f"bare QEMU spawn -> SSH banner:     {summary(bare)}")
    print(f"platform POST -> status running:   {summary(plat)}")
    diffs = [p - b for p, b in zip(plat, bare)]
    print(f"overhead (paired run differences): {summary(diffs, 'ms', 1000, 0)}")
    med = statistics.median(plat) - statistics.median(bare)
    print(f"overhead (median - median):        {med * 1000:.0f} ms (target < 500 ms: "
          f"{'holds' if med < 0.5 else 'MISSED'})")
finally:
    server.stop()
PY
