#!/usr/bin/env bash
# Authenticated request throughput: GET /api/v1/users/me with a bearer token
# (signature check, revocation lookup in the cache, one user read), 64
# connections, on SQLite + in-process cache and on PostgreSQL + Redis.
# Usage: bench/identity.sh [wrk duration, default 10s]
# Needs PostgreSQL and Redis as scripts/test does (VMCLOUD_TEST_DATABASE_URL,
# VMCLOUD_TEST_REDIS_URL override the defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages wrk:wrk curl:curl psql:postgresql-client
duration=${1:-10s}
pg_base=${VMCLOUD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
redis_url=${VMCLOUD_TEST_REDIS_URL:-redis://127.0.0.1:6379}
bin=$(build_vmcloud)
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  psql "$pg_base" -qc 'DROP DATABASE IF EXISTS vmcloud_bench WITH (FORCE)' >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

run() {
  local label=$1; shift
  rm -rf "$work/data"
  env -i PATH="$PATH" HOME="$HOME" VMCLOUD_BIND="127.0.0.1:$port" VMCLOUD_DATA_DIR="$work/data" \
    VMCLOUD_LOG_LEVEL=warn "$@" "$bin" serve >"$work/serve.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.05; done
  printf 'a long enough bench password\n' | env -i PATH="$PATH" HOME="$HOME" VMCLOUD_DATA_DIR="$work/data" \
    VMCLOUD_LOG_LEVEL=warn "$@" "$bin" admin create-user --email bench@example.org --role customer >/dev/null
  token=$(curl -sf "http://127.0.0.1:$port/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench@example.org","password":"a long enough bench password"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  echo "$label: GET /api/v1/users/me, wrk -t2 -c64 -d$duration"
  wrk -t2 -c64 -d"$duration" -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/users/me" | sed 's/^/  /'
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

run "SQLite + in-process cache"
psql "$pg_base" -qc 'DROP DATABASE IF EXISTS vmcloud_bench WITH (FORCE)' >/dev/null
psql "$pg_base" -qc 'CREATE DATABASE vmcloud_bench' >/dev/null
pg_bench_url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/vmcloud_bench")))' "$pg_base")
run "PostgreSQL + Redis" DATABASE_URL="$pg_bench_url" REDIS_URL="$redis_url" VMCLOUD_REDIS_PREFIX="vmcloud-bench:"
