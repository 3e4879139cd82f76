#!/usr/bin/env bash
# The whole test suite: unit, property, integration and e2e tiers, and the
# real-nodes tier (kubelet + containerd, tests/real_nodes.rs) beside them.
# Brings the local control plane up first and takes it down at the end (set
# HB_KEEP_CLUSTER=1 to leave it running for a faster next run).
#
# The real-nodes tier is mostly waiting (8 of its ~10 minutes for the
# kubelet to rotate a token), so it runs IN PARALLEL with the other tiers,
# on a kit of its own: its own folder ($HB_REAL_LOCAL, default
# .local-real), its own ports (HB_REAL_API_PORT, HB_REAL_ETCD_PORT,
# HB_REAL_ETCD_PEER_PORT; default the main kit's + 1, + 2, + 2), its output
# in $HB_REAL_LOCAL/real-nodes.log. Each tier's result is printed at the
# end; the suite fails if any fails. HB_REAL_NODES=0 leaves the tier out
# (it then says NOT RUN).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HB_ROOT"
HB_REAL_LOCAL=${HB_REAL_LOCAL:-$HB_ROOT/.local-real}
HB_REAL_API_PORT=${HB_REAL_API_PORT:-$((HB_API_PORT + 1))}
HB_REAL_ETCD_PORT=${HB_REAL_ETCD_PORT:-$((HB_ETCD_PORT + 2))}
HB_REAL_ETCD_PEER_PORT=${HB_REAL_ETCD_PEER_PORT:-$((HB_ETCD_PEER_PORT + 2))}
real_kit() { # command... : runs it against the real-nodes tier's kit
  HB_LOCAL=$HB_REAL_LOCAL HB_API_PORT=$HB_REAL_API_PORT HB_ETCD_PORT=$HB_REAL_ETCD_PORT \
    HB_ETCD_PEER_PORT=$HB_REAL_ETCD_PEER_PORT "$@"
}
real_pid=
main_log=
cleanup() {
  [[ -z $main_log ]] || rm -f "$main_log"
  if [[ -n $real_pid ]] && kill -0 "$real_pid" 2>/dev/null; then
    kill -- "-$real_pid" 2>/dev/null || kill "$real_pid" 2>/dev/null || true
    wait "$real_pid" 2>/dev/null || true
  fi
  if [[ ${HB_KEEP_CLUSTER:-} != 1 ]]; then
    "$HB_ROOT/e2e/cluster.sh" down || true
    [[ ${HB_REAL_NODES:-1} == 0 ]] || real_kit "$HB_ROOT/e2e/cluster.sh" down || true
  fi
}
trap cleanup EXIT
"$HB_ROOT/e2e/cluster.sh" up
say "building every test target"
cargo test --locked --workspace --all-targets --no-run

real_rc=
if [[ ${HB_REAL_NODES:-1} != 0 ]]; then
  # Built before the other tiers run, so nothing of the tier waits for
  # cargo's lock on target/ while they do.
  # The image-test profile: the release code built cheaper (no LTO,
  # opt-level 1); HB_IMAGE_PROFILE=release tests the image users get.
  say "real-nodes tier: building the image (e2e/image.sh, profile ${HB_IMAGE_PROFILE:-image-test})"
  # A failed build fails the tier, not the whole script: the other tiers
  # still run and every result is printed.
  image=$(HB_IMAGE_PROFILE=${HB_IMAGE_PROFILE:-image-test} "$HB_ROOT/e2e/image.sh" | tail -1) || image=
  real_test=$(cargo test --locked --test real_nodes --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "real_nodes" and .executable != null) | .executable') || real_test=
fi
if [[ ${HB_REAL_NODES:-1} != 0 ]] && [[ -z $image || ! -x $real_test ]]; then
  say "real-nodes tier: FAILED to build (image: ${image:-none}, test binary: ${real_test:-none})"
  real_rc=1
elif [[ ${HB_REAL_NODES:-1} != 0 ]]; then
  mkdir -p "$HB_REAL_LOCAL"
  say "real-nodes tier: started beside the others (kit $HB_REAL_LOCAL, API port $HB_REAL_API_PORT; log $HB_REAL_LOCAL/real-nodes.log)"
  # setsid: its own process group, so a cut-off run stops all of it.
  HB_LOCAL=$HB_REAL_LOCAL HB_API_PORT=$HB_REAL_API_PORT HB_ETCD_PORT=$HB_REAL_ETCD_PORT \
    HB_ETCD_PEER_PORT=$HB_REAL_ETCD_PEER_PORT HB_REAL_NODES_IMAGE=$image \
    setsid "$real_test" --ignored --test-threads 1 >"$HB_REAL_LOCAL/real-nodes.log" 2>&1 &
  real_pid=$!
fi

main_rc=0
# --no-fail-fast: one failing test binary does not hide the others' results.
# The output is kept so the end of the run can repeat each failure's panic.
main_log=$(mktemp)
cargo test --locked --workspace --all-targets --no-fail-fast 2>&1 | tee "$main_log" || main_rc=$?
ipvlan_rc=
if "$HB_ROOT/e2e/ipvlan.sh"; then
  say "ipvlan is available: running the ipvlan tests"
  ipvlan_rc=0
  cargo test --locked --all-targets -- --ignored ipvlan || ipvlan_rc=$?
else
  printf '\n%s\n%s\n%s\n\n' \
    "######################################################################" \
    "# ipvlan tests: NOT RUN: no ipvlan in this kernel (e2e/ipvlan.sh)   #" \
    "######################################################################" >&2
fi

if [[ -n $real_pid ]]; then
  say "waiting for the real-nodes tier"
  real_rc=0
  wait "$real_pid" || real_rc=$?
  real_pid=
  # A run that ran no test is no pass (the tier's test is #[ignore]d
  # outside this tier, and run here with --ignored).
  if ((real_rc == 0)) && ! grep -qE '^test result: ok\. [1-9][0-9]* passed' "$HB_REAL_LOCAL/real-nodes.log"; then
    say "real-nodes tier: ran no test"
    real_rc=1
  fi
  echo "---- real-nodes tier ($HB_REAL_LOCAL/real-nodes.log) ----" >&2
  if ((real_rc == 0)); then
    grep -E '^\[real-nodes\]|^test |^test result' "$HB_REAL_LOCAL/real-nodes.log" >&2 || true
  else
    cat "$HB_REAL_LOCAL/real-nodes.log" >&2
  fi
elif [[ -n $real_rc ]]; then
  echo "---- real-nodes tier: FAILED to build its image or test binary (see above) ----" >&2
else
  printf '\n%s\n%s\n%s\n\n' \
    "######################################################################" \
    "# real-nodes tier: NOT RUN: HB_REAL_NODES=0                          #" \
    "######################################################################" >&2
fi

if ((main_rc != 0)); then
  # Each failing test's own output (libtest's "---- name stdout ----"
  # sections), repeated here at the end where a truncated log still shows it.
  echo "---- failures of cargo test, repeated ----" >&2
  awk '/^---- .* stdout ----$/ {keep = 1} /^failures:$/ && keep {keep = 0} keep' "$main_log" | head -400 >&2 || true
  grep -E '^test .* FAILED$|^error: test failed' "$main_log" >&2 || true
fi

verdict() { # name rc
  if [[ -z $2 ]]; then echo "NOT RUN"; elif (($2 == 0)); then echo "passed"; else echo "FAILED (exit $2)"; fi
}
{
  echo
  echo "== tiers"
  echo "unit, integration, e2e (cargo test --workspace --all-targets): $(verdict all "$main_rc")"
  echo "ipvlan tests: $(verdict ipvlan "$ipvlan_rc")"
  echo "real-nodes tier (tests/real_nodes.rs, kubelet + containerd): $(verdict real "$real_rc")"
} >&2
((main_rc == 0)) && [[ ${ipvlan_rc:-0} == 0 && ${real_rc:-0} == 0 ]]
