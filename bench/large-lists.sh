#!/usr/bin/env bash
# Large lists: GET /api/v1/instances over 100 000 instance rows on PostgreSQL,
# spread over 1000 customers plus one customer owning 10 000 of them (every
# tenth row, so hers are interleaved with everybody's); 90 % running, 9 %
# stopped, 1 % error. Pages of 20 and 100, the first page and deep pages
# (cursors collected by walking the whole list once), as that customer and as
# an admin, with and without a status filter; REQUESTS requests each, one
# keep-alive connection on loopback, round trip measured by the client.
# Usage: bench/large-lists.sh [requests per case, default 2000]
# Needs PostgreSQL as scripts/test does (VMCLOUD_TEST_DATABASE_URL overrides
# postgres://postgres@127.0.0.1:5432/test); works in its own database
# vmcloud_bench_<random>, dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages psql:postgresql-client
pg_base=${VMCLOUD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
db=vmcloud_bench_$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
pg_url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$pg_base" "$db")
bin=$(build_vmcloud)
cleanup() { psql "$pg_base" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql "$pg_base" -qc "CREATE DATABASE $db" >/dev/null
DATABASE_URL=$pg_url VMCLOUD_LOG_LEVEL=warn VMCLOUD_DATA_DIR=$(mktemp -d) "$bin" migrate >/dev/null

echo "Inserting 1001 customers and 100 000 instances into $db ..."
start=$(date +%s.%N)
psql "$pg_url" -q -v ON_ERROR_STOP=1 <<'SQL'
-- A UUIDv7 (what the platform's ids are) for a time.
CREATE FUNCTION pg_temp.uuid7(ts timestamptz) RETURNS uuid LANGUAGE sql AS $$
  SELECT (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7'
    || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid $$;
INSERT INTO regions (id, slug, name, active, created_at, updated_at)
  VALUES ('018f0000-0000-7000-8000-000000000001', 'bench', 'Bench', true, now(), now());
INSERT INTO products (id, slug, name, vcpus, memory_mib, disk_gib, transfer_gib,
    price_monthly_minor, price_hourly_minor, currency, active, hidden, sort_order, created_at, updated_at)
  VALUES ('018f0000-0000-7000-8000-000000000002', 'bench-plan', 'Bench plan', 1, 1024, 20, 1000,
    500, 1, 'EUR', true, false, 0, now(), now());
INSERT INTO images (id, slug, name, os_family, os_version, default_user, min_disk_gib, status,
    active, created_at, updated_at)
  VALUES ('018f0000-0000-7000-8000-000000000003', 'bench-image', 'Bench image', 'debian', '12',
    'debian', 3, 'available', true, now(), now());
CREATE TABLE pg_temp.customers AS
  SELECT n, pg_temp.uuid7(now() - interval '400 days' + n * interval '1 minute') AS id
  FROM generate_series(0, 999) AS n;
INSERT INTO users (id, email, name, password_hash, role, status, email_verified_at, created_at, updated_at)
  SELECT id, 'customer' || n || '@example.org', 'Customer ' || n, 'x', 'customer', 'active', now(), now(), now()
  FROM pg_temp.customers;
SQL
echo "a long enough bench password" | DATABASE_URL=$pg_url VMCLOUD_LOG_LEVEL=warn VMCLOUD_DATA_DIR=$(mktemp -d) \
  "$bin" admin create-user --email owner@example.org --role customer >/dev/null
echo "a long enough bench password" | DATABASE_URL=$pg_url VMCLOUD_LOG_LEVEL=warn VMCLOUD_DATA_DIR=$(mktemp -d) \
  "$bin" admin create-user --email admin@example.org --role admin >/dev/null
psql "$pg_url" -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE FUNCTION pg_temp.uuid7(ts timestamptz) RETURNS uuid LANGUAGE sql AS $$
  SELECT (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7'
    || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid $$;
CREATE TABLE pg_temp.customers AS
  SELECT row_number() OVER (ORDER BY id) - 1 AS n, id FROM users
  WHERE role = 'customer' AND email <> 'owner@example.org';
INSERT INTO instances (id, user_id, product_id, region_id, image_id, name, hostname, status,
    vcpus, memory_mib, disk_gib, created_at, updated_at)
  SELECT pg_temp.uuid7(now() - interval '100000 minutes' + i * interval '1 minute'),
    CASE WHEN i % 10 = 0 THEN (SELECT id FROM users WHERE email = 'owner@example.org')
         ELSE (SELECT id FROM pg_temp.customers WHERE n = i % 1000) END,
    '018f0000-0000-7000-8000-000000000002', '018f0000-0000-7000-8000-000000000001',
    '018f0000-0000-7000-8000-000000000003', 'vm-' || i, 'vm-' || i,
    CASE WHEN i % 100 = 7 THEN 'error' WHEN i % 100 < 10 THEN 'stopped' ELSE 'running' END,
    1, 1024, 20, now() - interval '100000 minutes' + i * interval '1 minute', now()
  FROM generate_series(0, 99999) AS i;
ANALYZE;
SQL
echo "  done in $(python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$start") s:" \
  "$(psql "$pg_url" -Atc 'SELECT count(*) FROM instances') instances," \
  "$(psql "$pg_url" -Atc "SELECT count(*) FROM instances i JOIN users u ON u.id = i.user_id WHERE u.email = 'owner@example.org'") of them the owner's"

DATABASE_URL=$pg_url REQUESTS=${1:-2000} python3 - <<'PY'
import os, random, sys, time
sys.path.insert(0, "bench")
from vmcloud_bench import *

requests = int(os.environ["REQUESTS"])
server = Server({"DATABASE_URL": os.environ["DATABASE_URL"], "VMCLOUD_LOCAL_NODE": "false"})
try:
    owner = server.login("owner@example.org")
    admin = server.login("admin@example.org")

    walks = {}

    def walk(api, query):
        """Every page's cursor, in order (None = the first page)."""
        if (id(api), query) not in walks:
            walks[(id(api), query)] = walk_all(api, query)
        return walks[(id(api), query)]

    def walk_all(api, query):
        cursors, cursor, items = [None], None, 0
        while True:
            path = f"/api/v1/instances?{query}" + (f"&cursor={cursor}" if cursor else "")
            page = api.ok("GET", path)
            items += len(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return cursors, items
            cursors.append(cursor)

    def measure(label, api, query, deep):
        cursors, items = walk(api, query)
        if deep:
            # Pages from the deepest half, down to the last one.
            pool = cursors[len(cursors) // 2:]
        else:
            pool = [None]
        times = []
        for _ in range(requests):
            cursor = random.choice(pool)
            path = f"/api/v1/instances?{query}" + (f"&cursor={cursor}" if cursor else "")
            t = time.perf_counter()
            status, _ = api.request("GET", path)
            times.append(time.perf_counter() - t)
            assert status == 200, status
        times.sort()
        p50, p99 = percentile(times, 50) * 1000, percentile(times, 99) * 1000
        where = f"pages {len(cursors) // 2 + 1}-{len(cursors)}" if deep else "page 1"
        print(f"| {label} | `?{query}` | {where} of {len(cursors)} ({items} rows) | "
              f"{p50:.2f} | {p99:.2f} | {'yes' if p99 < 20 else 'NO'} |", flush=True)

    print()
    print("| Who | Query | Pages | p50 ms | p99 ms | p99 < 20 ms |")
    print("|---|---|---|---|---|---|")
    for limit in (20, 100):
        for deep in (False, True):
            measure("owner of 10k", owner, f"limit={limit}", deep)
    measure("owner of 10k", owner, "limit=20&status=stopped", False)
    measure("owner of 10k", owner, "limit=20&status=stopped", True)
    for limit in (20, 100):
        for deep in (False, True):
            measure("admin", admin, f"limit={limit}", deep)
    measure("admin", admin, "limit=20&status=error", False)
    measure("admin", admin, "limit=20&status=error", True)
    measure("admin", admin, "limit=100&status=stopped", True)
finally:
    server.stop()
PY
