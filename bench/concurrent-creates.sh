#!/usr/bin/env bash
# Concurrent creates: COUNT instances of demo-nano (1 vCPU, 256 MiB) ordered at
# once on the one local node under TCG, each polled every 250 ms until
# running; then all deleted, and no QEMU of theirs may be left.
# Usage: bench/concurrent-creates.sh [count, default 20]
# The local node's capacity is the host's (2 vCPUs here), so the bench raises
# its CPU overcommit to 1600 % as an admin, and the instance quota to 50.
# Env: BENCH_WORKER_CONCURRENCY (VMCLOUD_WORKER_CONCURRENCY, default the
# server's: 4 jobs at once).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils ssh-keygen:openssh-client
[ -f guest/out/disk.qcow2 ] || as_root bash guest/build.sh --out guest/out
build_vmcloud >/dev/null
COUNT=${1:-20} exec python3 - <<'PY'
import datetime, os, sys, threading, time
sys.path.insert(0, "bench")
from vmcloud_bench import *

count = int(os.environ["COUNT"])
env = {
    "VMCLOUD_LOCAL_NODE": "true",
    "VMCLOUD_QEMU_ACCEL": "tcg",
    "VMCLOUD_SSH_BIND": "127.0.0.1",
    "VMCLOUD_SSH_PORT_MIN": "24100",
    "VMCLOUD_SSH_PORT_MAX": "24199",
    "VMCLOUD_GUEST_BOOT_TIMEOUT_SECS": "1800",
}
if os.environ.get("BENCH_WORKER_CONCURRENCY"):
    env["VMCLOUD_WORKER_CONCURRENCY"] = os.environ["BENCH_WORKER_CONCURRENCY"]
server = Server(env, ["--demo", "--demo-image", "guest/out/disk.qcow2"])
try:
    admin = server.create_user("admin@example.org", "admin")
    api = server.create_user("bench@example.org", "customer")
    nodes = admin.ok("GET", "/api/v1/admin/nodes")
    nodes = nodes["items"] if isinstance(nodes, dict) else nodes
    node = nodes[0]
    admin.ok("PATCH", f"/api/v1/admin/nodes/{node['id']}", {"cpu_overcommit_pct": 1600})
    admin.ok("PUT", "/api/v1/admin/settings/instances",
             {"max_instances_per_user": 50, "placement_strategy": "spread",
              "restart_crashed": True})
    key_id = api.ok("POST", "/api/v1/ssh-keys", {"public_key": ssh_key(server.work)})["id"]

    def ts(text):
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    start_wall = time.time()
    start = time.monotonic()
    ids, accepted = [], []
    lock = threading.Lock()

    def create(i):
        client = Api(server.port, api.token)
        t = time.monotonic()
        status, view = client.request(
            "POST", "/api/v1/instances",
            {"plan": "demo-nano", "image": "vmcloud-test-guest", "region": "local",
             "hostname": f"c{i}", "ssh_key_ids": [key_id]})
        if status != 202:
            print(f"create {i}: {status} {view}", flush=True)
            return
        with lock:
            ids.append((view["id"], view["pending_action"]["id"]))
            accepted.append(time.monotonic() - t)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(ids) < count:
        raise SystemExit(f"only {len(ids)} of {count} creates were accepted")
    print(f"{count} creates accepted (202) in {time.monotonic() - start:.2f} s; "
          f"each POST {summary(accepted, 'ms', 1000, 0)}", flush=True)

    running = {}
    last = 0
    while len(running) < count:
        for iid, _ in ids:
            if iid in running:
                continue
            view = api.ok("GET", f"/api/v1/instances/{iid}")
            if view["status"] == "running":
                running[iid] = time.monotonic() - start
            elif view["status"] == "error":
                raise SystemExit(f"instance {iid}: {view.get('status_reason')}")
        if len(running) != last:
            last = len(running)
            print(f"  {last}/{count} running after {time.monotonic() - start:.1f} s", flush=True)
        time.sleep(0.25)
    total = max(running.values())
    queued, boot = [], []
    for iid, action_id in ids:
        action = api.ok("GET", f"/api/v1/instances/{iid}/actions/{action_id}")
        queued.append(ts(action["started_at"]) - start_wall)
        boot.append(ts(action["finished_at"]) - ts(action["started_at"]))
    print()
    print(f"all {count} running after {total:.1f} s (first after "
          f"{min(running.values()):.1f} s)")
    print(f"per instance, order -> running:         {summary(running.values(), 's', 1, 1)}")
    print(f"per instance, order -> action started:  {summary(queued, 's', 1, 1)}")
    print(f"per instance, action started -> finished: {summary(boot, 's', 1, 1)}")

    start = time.monotonic()
    for iid, _ in ids:
        api.ok("DELETE", f"/api/v1/instances/{iid}")
    for iid, _ in ids:
        while api.request("GET", f"/api/v1/instances/{iid}")[0] != 404:
            time.sleep(0.1)
    print(f"all {count} deleted (404) after {time.monotonic() - start:.1f} s")
    time.sleep(1)
    left = [p for p in qemu_pids() if os.path.exists(f"/proc/{p}/cmdline")
            and any(iid in open(f"/proc/{p}/cmdline").read() for iid, _ in ids)]
    print(f"QEMU processes of these instances left: {len(left)}")
    if left:
        raise SystemExit(1)
finally:
    server.stop()
PY
