#!/usr/bin/env bash
# The whole test suite: unit, property, integration and e2e tiers. Brings the
# local control plane up first and takes it down at the end (set
# HB_KEEP_CLUSTER=1 to leave it running for a faster next run).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HB_ROOT"
if [[ ${HB_KEEP_CLUSTER:-} != 1 ]]; then
  trap '"$HB_ROOT/e2e/cluster.sh" down' EXIT
fi
"$HB_ROOT/e2e/cluster.sh" up
cargo test --locked --workspace --all-targets
if "$HB_ROOT/e2e/ipvlan.sh"; then
  say "ipvlan is available: running the ipvlan tests"
  cargo test --locked --all-targets -- --ignored ipvlan
else
  printf '\n%s\n%s\n%s\n\n' \
    "######################################################################" \
    "# ipvlan tests: NOT RUN: no ipvlan in this kernel (e2e/ipvlan.sh)   #" \
    "######################################################################" >&2
fi
if [[ ${HB_REAL_NODES:-} == 1 ]]; then
  say "HB_REAL_NODES=1: running the real-nodes tier (kubelet + containerd)"
  cargo test --locked --test real_nodes -- --ignored
else
  printf '\n%s\n%s\n%s\n%s\n\n' \
    "######################################################################" \
    "# real-nodes tier: NOT RUN: opt-in (make test-real-nodes): it adds   #" \
    "# ~10 min plus a static release build of the image (README, Tests)  #" \
    "######################################################################" >&2
fi
