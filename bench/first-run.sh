#!/usr/bin/env bash
# A newcomer's first start: `scripts/run` from a fresh clone of this checkout's
# HEAD with an empty cargo cache (registry and target directory) until it logs
# "VMCloud is listening", then a rebuild after a one-line change in a module.
# Usage: bench/first-run.sh [--keep-cargo-home]
#   --keep-cargo-home  reuse ~/.cargo's registry (no downloads): a cold build
#                      without the network's share.
# Needs what scripts/run needs, and the network for the crates unless kept.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /var/tmp/vmcloud-first-run.XXXXXX)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
git clone -q . "$work/clone"
cd "$work/clone"
if [ "${1:-}" != --keep-cargo-home ]; then
  export CARGO_HOME=$work/cargo-home
  mkdir -p "$CARGO_HOME"
  # rustup's proxies find the toolchain through RUSTUP_HOME, not CARGO_HOME.
  export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
fi
unset CARGO_TARGET_DIR
export VMCLOUD_BIND=127.0.0.1:0

elapsed() { echo $(($(date +%s) - $1)); }

start=$(date +%s)
scripts/run >"$work/run.log" 2>&1 &
pid=$!
until grep -q "VMCloud is listening" "$work/run.log"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 20 "$work/run.log" >&2
    exit 1
  fi
  sleep 1
done
echo "scripts/run, fresh clone to listening: $(elapsed "$start") s"
kill -TERM "$pid"
wait "$pid" || true
pid=

# A one-line change in a module, as a developer makes while working.
echo '// touched by bench/first-run.sh' >>crates/server/src/modules/support/mod.rs
start=$(date +%s)
cargo build --profile quick --locked -p vmcloud 2>/dev/null
echo "rebuild after a one-line change in modules/support: $(elapsed "$start") s"
