#!/usr/bin/env bash
# Foundation benchmarks of `vmcloud serve` on the embedded defaults (SQLite,
# in-process cache and queue): start to ready, idle RSS, /healthz throughput.
# Usage: [BENCH_LOG_LEVEL=info] bench/foundation.sh [wrk duration, default 10s]
# The server logs at BENCH_LOG_LEVEL (default warn: no per-request access log).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages wrk:wrk curl:curl python3:python3
duration=${1:-10s}
bin=$(build_vmcloud)
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# Spawns the server and times the first 200 from /readyz, polling every ms.
start_and_time() {
  python3 - "$bin" "$port" "$work" <<'PY'
import os, subprocess, sys, time, urllib.request
binary, port, work = sys.argv[1], sys.argv[2], sys.argv[3]
env = {k: v for k, v in os.environ.items() if not k.startswith("VMCLOUD_") and k not in ("DATABASE_URL", "REDIS_URL")}
env.update(VMCLOUD_BIND=f"127.0.0.1:{port}", VMCLOUD_DATA_DIR=f"{work}/data", VMCLOUD_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "warn"))
start = time.perf_counter()
proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
            break
    except OSError:
        time.sleep(0.001)
print(f"{(time.perf_counter() - start) * 1000:.0f} {proc.pid}")
PY
}

read -r first_ms pid < <(start_and_time)
kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
read -r warm_ms pid < <(start_and_time)
sleep 3
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "start to ready, empty data dir (creates and migrates the database): ${first_ms} ms"
echo "start to ready, existing database: ${warm_ms} ms"
echo "idle RSS: $((rss_kb / 1024)) MiB (${rss_kb} KiB)"
echo "/healthz, wrk -t2 -c64 -d${duration}:"
wrk -t2 -c64 -d"$duration" "http://127.0.0.1:$port/healthz" | sed 's/^/  /'
