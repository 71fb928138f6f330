# Shared by the scripts: install what a fresh Debian machine lacks.

# ensure_packages CMD:PACKAGE... installs PACKAGE when CMD is missing.
ensure_packages() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "Installing ${missing[*]} ..." >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ensure_debs PACKAGE...: installs the Debian packages that are not installed, without
# their recommends (for packages that bring no command to test for, like -dev ones).
ensure_debs() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "Installing ${missing[*]} ..." >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# as_root CMD...: runs CMD as root, through sudo when needed.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    echo "This step needs root: $*" >&2
    return 1
  fi
}

# A local PostgreSQL on 127.0.0.1:5432 that user postgres reaches without a
# password, with a database `test`: installed and started when missing.
ensure_local_postgres() {
  ensure_packages psql:postgresql-client
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    ls /etc/postgresql/*/main >/dev/null 2>&1 || ensure_packages pg_ctlcluster:postgresql
    local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  psql -h 127.0.0.1 -U postgres -Atqc "select 1 from pg_database where datname='test'" | grep -q 1 ||
    psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE test'
}

# A local Redis on 127.0.0.1:6379 that keeps nothing on disk: installed and
# started when missing.
ensure_local_redis() {
  ensure_packages redis-server:redis-server redis-cli:redis-tools
  [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ] && return 0
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/vmcloud-test.log
  for _ in $(seq 30); do [ "$(redis-cli ping 2>/dev/null)" = "PONG" ] && break; sleep 0.5; done
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "Rust is not installed. Install it with rustup (https://rustup.rs), then run this again." >&2
    return 1
  fi
}

# What user-mode guests need on a QEMU node: passt, which carries their traffic
# as the unprivileged account vmcloud-guest, and nft, with which the driver
# confines that account (the nftables table vmcloud_guests). Without them the
# driver falls back to slirp with restrict=on: SSH only, no outbound traffic.
ensure_guest_networking() {
  ensure_packages passt:passt nft:nftables
  getent passwd vmcloud-guest >/dev/null ||
    as_root useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin vmcloud-guest
}

# build_vmcloud: builds the binary the benchmarks measure, the shipped `dist`
# profile unless BENCH_PROFILE names another (e.g. quick), and prints its path.
build_vmcloud() {
  local profile=${BENCH_PROFILE:-dist}
  cargo build --profile "$profile" --locked -p vmcloud >/dev/null 2>&1
  echo "${CARGO_TARGET_DIR:-target}/$profile/vmcloud"
}

# prune_target_dir DIR: a cargo target dir kept between runs only grows (every
# changed crate leaves its old builds behind), and a full disk fails the link
# with a bus error. Drop what a build of a changed workspace makes again
# anyway (incremental state, linked test and binary executables) and keep the
# dependencies; start over only if that is not enough.
prune_target_dir() {
  local dir=$1
  [ -d "$dir" ] || return 0
  rm -rf "$dir"/*/incremental
  find "$dir"/*/deps -maxdepth 1 -type f -perm -u+x ! -name '*.*' -delete 2>/dev/null || true
  local used_gib free_gib
  used_gib=$(( $(du -sk "$dir" | cut -f1) / 1048576 ))
  free_gib=$(( $(df -Pk "$dir" | awk 'NR == 2 { print $4 }') / 1048576 ))
  if [ "$used_gib" -gt 60 ] || [ "$free_gib" -lt 10 ]; then
    echo "Removing $dir (${used_gib} GiB, ${free_gib} GiB free on its disk)" >&2
    rm -rf "$dir"
  fi
}
