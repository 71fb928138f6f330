#!/usr/bin/env bash
# A host bridge for the bridged-networking tests: vmcbr0 with 10.213.0.1/16,
# from which the tests' guests take static addresses. It has no uplink: the
# host and the guests on it reach each other, nothing else. Idempotent; needs
# root (CAP_NET_ADMIN).
set -euo pipefail
bridge=${1:-vmcbr0}
ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge
ip addr replace 10.213.0.1/16 dev "$bridge"
ip link set "$bridge" up
