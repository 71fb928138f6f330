#!/usr/bin/env bash
# Socket.IO load on one `vmcloud serve` (PostgreSQL + Redis, dist build),
# with the official socket.io-client (bench/realtime, pinned by its
# package-lock.json): 10k authenticated connections and the server's extra
# RSS, then instance.status events fanned out to 1,000 of them and their
# delivery latency. See bench/realtime/bench.mjs for the details.
# Usage: bench/realtime.sh   (CONNECTIONS, LISTENERS, EVENTS, INTERVAL_MS
# override the sizes). Needs PostgreSQL and Redis as scripts/test does
# (VMCLOUD_TEST_DATABASE_URL, VMCLOUD_TEST_REDIS_URL override the defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages curl:curl psql:postgresql-client node:nodejs npm:npm
pg_base=${VMCLOUD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
redis_url=${VMCLOUD_TEST_REDIS_URL:-redis://127.0.0.1:6379}
redis_port=$(python3 -c 'import sys,urllib.parse as u; print(u.urlsplit(sys.argv[1]).port or 6379)' "$redis_url")
prefix=vmcloud-bench-rt:
(cd bench/realtime && npm ci --no-audit --no-fund >/dev/null)
bin=$(build_vmcloud)
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  psql "$pg_base" -qc 'DROP DATABASE IF EXISTS vmcloud_bench_rt WITH (FORCE)' >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# Each connection is a file descriptor on both sides (separate processes,
# so the hard limit needs only to exceed CONNECTIONS).
ulimit -n "$(ulimit -Hn)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
psql "$pg_base" -qc 'DROP DATABASE IF EXISTS vmcloud_bench_rt WITH (FORCE)' >/dev/null
psql "$pg_base" -qc 'CREATE DATABASE vmcloud_bench_rt' >/dev/null
pg_url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/vmcloud_bench_rt")))' "$pg_base")
server_env=(env -i PATH="$PATH" HOME="$HOME" VMCLOUD_DATA_DIR="$work/data" VMCLOUD_LOG_LEVEL=warn
  VMCLOUD_LOCAL_NODE=false DATABASE_URL="$pg_url" REDIS_URL="$redis_url" VMCLOUD_REDIS_PREFIX="$prefix")
"${server_env[@]}" VMCLOUD_BIND="127.0.0.1:$port" "$bin" serve >"$work/serve.log" 2>&1 &
pid=$!
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.05; done
password='a long enough bench password'
login() {
  curl -sf "http://127.0.0.1:$port/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"$password\"}"
}
printf '%s\n' "$password" | "${server_env[@]}" "$bin" admin create-user --email crowd@example.org --role admin >/dev/null
printf '%s\n' "$password" | "${server_env[@]}" "$bin" admin create-user --email listener@example.org --role customer >/dev/null
crowd=$(login crowd@example.org | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
listener_json=$(login listener@example.org)
listener=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' <<<"$listener_json")
listener_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])' <<<"$listener_json")
# One account holds most of the connections; lift its limit.
curl -sf -X PUT "http://127.0.0.1:$port/api/v1/admin/settings/realtime" -H "Authorization: Bearer $crowd" \
  -H 'content-type: application/json' -d '{"max_connections_per_user":100000}' >/dev/null
sleep 2
node bench/realtime/bench.mjs "http://127.0.0.1:$port" "$pid" "$crowd" "$listener" "$listener_id" \
  "$redis_port" "${prefix}events:instances"
