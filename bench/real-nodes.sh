#!/usr/bin/env bash
# `make bench-real-nodes`: pod-to-Running for 100 pods with one secondary
# network on the kit's two real nodes (kubelet -> containerd -> Multus ->
# macvlan -> IPAM), hereabouts vs whereabouts, each installed the way its
# project tells an admin to:
#   hereabouts   kubectl apply --server-side -f manifests/install.yaml
#                (the image from `make image`)
#   whereabouts  kubectl apply -f doc/crds/daemonset-install.yaml of its pinned
#                Go module (v0.9.3): its DaemonSet runs install-cni.sh,
#                token-watcher.sh and ip-control-loop from its image, built
#                here from the same module by e2e/whereabouts-image.sh
# One system installed at a time (both keep IPPools in kube-system), on the
# same nodes, same NAD but ipam.type, same pod template; rounds alternate
# which goes first. Results: bench/results/real-nodes-<time>.{json,md}.
#   HB_BENCH_PODS=100 HB_BENCH_ROUNDS=2 bench/real-nodes.sh
set -euo pipefail
source "$(dirname "$0")/../e2e/lib.sh"
cd "$HB_ROOT"
PODS=${HB_BENCH_PODS:-100}
ROUNDS=${HB_BENCH_ROUNDS:-2}
TIMEOUT=${HB_BENCH_TIMEOUT:-600}
NODES=(bench-real-1 bench-real-2)
POOLS_NS=kube-system
PAUSE=localhost/hereabouts-kit/pause:3.10
declare -A RANGE=([hereabouts]=100.72.40.0/24 [whereabouts]=100.72.41.0/24)
k() { kubectl --kubeconfig "$HB_KUBECONFIG" "$@"; }
now() { date +%s.%N; }
# Seconds between two `now`s, to 0.1 s.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

stamp=$(date -u +%Y%m%dT%H%M%S)
work=$HB_LOCAL/bench-real-nodes
rm -rf "$work" && mkdir -p "$work" bench/results

hereabouts_manifest() { # without the CRDs, which the kit's other users share
  awk 'BEGIN{RS="\n---\n"; ORS="\n---\n"} !/kind: CustomResourceDefinition/' manifests/install.yaml
}
whereabouts_manifest() { # its DaemonSet install, the image ours (pinned tag: pulled never)
  sed "s|image: ghcr.io/k8snetworkplumbingwg/whereabouts:latest|image: $whereabouts_image|" \
    "$whereabouts_src/doc/crds/daemonset-install.yaml"
}

install() {
  local system=$1 node conf
  say "installing $system"
  case $system in
    hereabouts)
      k apply --server-side -f manifests/install.yaml >/dev/null
      k rollout status deployment/hereabouts-controller -n "$POOLS_NS" --timeout=180s >/dev/null
      k rollout status daemonset/hereabouts-node -n "$POOLS_NS" --timeout=180s >/dev/null
      conf=etc-cni-net.d/hereabouts.d/hereabouts.kubeconfig ;;
    whereabouts)
      whereabouts_manifest | k apply --server-side -f - >/dev/null
      k rollout status daemonset/whereabouts -n "$POOLS_NS" --timeout=180s >/dev/null
      conf=etc-cni-net.d/whereabouts.d/whereabouts.kubeconfig ;;
  esac
  for node in "${NODES[@]}"; do
    local f
    f=$("$HB_ROOT/e2e/real-node.sh" dir "$node")/$conf
    for _ in $(seq 240); do [[ -s $f ]] && break; sleep 0.5; done
    [[ -s $f ]] || die "$system's DaemonSet did not write $conf on $node"
  done
}

# What a system's DaemonSet leaves on a node when it goes (neither
# removes its files): removed, so the next system starts on a clean node.
# It matters: hereabouts reads whereabouts' flat file as a drop-in, and
# with a leftover whereabouts.conf a "type": "hereabouts" NAD's ADDs use
# the kubeconfig named there (a deleted service account's token: 401).
node_files() {
  case $1 in
    hereabouts) echo opt-cni-bin/hereabouts etc-cni-net.d/hereabouts.d ;;
    whereabouts) echo opt-cni-bin/whereabouts etc-cni-net.d/whereabouts.d ;;
  esac
}

uninstall() {
  local system=$1 node f
  case $system in
    hereabouts)
      hereabouts_manifest | k delete --ignore-not-found -f - >/dev/null 2>&1 || true
      k wait --for=delete pod -n "$POOLS_NS" -l 'app.kubernetes.io/name in (hereabouts-controller,hereabouts-node)' --timeout=120s >/dev/null 2>&1 || true ;;
    whereabouts)
      whereabouts_manifest | k delete --ignore-not-found -f - >/dev/null 2>&1 || true
      k wait --for=delete pod -n "$POOLS_NS" -l app=whereabouts --timeout=120s >/dev/null 2>&1 || true ;;
  esac
  for node in "${NODES[@]}"; do
    [[ -d $HB_NODES/$node ]] || continue
    for f in $(node_files "$system"); do rm -rf "${HB_NODES:?}/$node/$f"; done
  done
}

# Allocations in the pools of a range (hereabouts shards a range's pool).
allocated() {
  k get ippools.whereabouts.cni.cncf.io -n "$POOLS_NS" -o json |
    jq --arg r "$1" '[.items[] | select(.spec.range == $r) | (.spec.allocations // {}) | length] | add // 0'
}

delete_pools() {
  local r=$1
  k get ippools.whereabouts.cni.cncf.io -n "$POOLS_NS" -o json |
    jq -r --arg r "$r" '.items[] | select(.spec.range == $r) | .metadata.name' |
    while read -r p; do k delete ippools.whereabouts.cni.cncf.io -n "$POOLS_NS" "$p" --ignore-not-found >/dev/null; done
}

# One measurement: PODS pods of a Deployment, from `kubectl apply` to every
# pod Running; then their addresses; then deletion until the pool is empty.
measure() {
  local system=$1 round=$2 ns range t0 t_all="" t_half="" t_90="" running=0 json
  ns=bench-$system-$round
  range=${RANGE[$system]}
  k delete namespace "$ns" --ignore-not-found --timeout=180s >/dev/null
  delete_pools "$range"
  k create namespace "$ns" >/dev/null
  k apply -f - >/dev/null <<NAD
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: lan, namespace: $ns}
spec:
  config: '{"cniVersion": "1.0.0", "name": "lan", "type": "macvlan", "master": "eth1", "mode": "bridge",
            "ipam": {"type": "$system", "range": "$range"}}'
NAD
  say "$system, round $round: $PODS pods"
  t0=$(now)
  k apply -f - >/dev/null <<DEPLOY
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench, namespace: $ns}
spec:
  replicas: $PODS
  selector: {matchLabels: {app: bench}}
  template:
    metadata:
      labels: {app: bench}
      annotations: {k8s.v1.cni.cncf.io/networks: lan}
    spec:
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      containers: [{name: app, image: $PAUSE, imagePullPolicy: Never}]
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: bench}}}
DEPLOY
  while :; do
    json=$(k get pods -n "$ns" -o json)
    running=$(jq '[.items[] | select(.status.phase == "Running")] | length' <<<"$json")
    local t
    t=$(now)
    [[ -z $t_half ]] && ((running * 2 >= PODS)) && t_half=$(elapsed "$t0" "$t")
    [[ -z $t_90 ]] && ((running * 10 >= PODS * 9)) && t_90=$(elapsed "$t0" "$t")
    if ((running >= PODS)); then t_all=$(elapsed "$t0" "$t"); break; fi
    if (($(elapsed "$t0" "$t" | cut -d. -f1) >= TIMEOUT)); then
      say "$system: only $running of $PODS pods Running after ${TIMEOUT}s"
      break
    fi
    sleep 0.5
  done
  echo "$json" >"$work/$system-$round-pods.json"
  # Each pod's own creation -> container started (the API's whole seconds).
  local per_pod addresses unique failed reasons
  per_pod=$(jq -c '[.items[] | select(.status.phase == "Running")
      | ((.status.containerStatuses[0].state.running.startedAt | fromdate) - (.metadata.creationTimestamp | fromdate))]
      | sort | if length == 0 then {p50: null, p90: null, max: null}
        else {p50: .[(length * 0.5 | floor)], p90: .[(length * 0.9 | floor)], max: .[-1]} end' <<<"$json")
  addresses=$(jq -r --arg net "$ns/lan" '.items[] | .metadata.annotations["k8s.v1.cni.cncf.io/network-status"] // "[]"
      | fromjson | .[] | select(.name == $net) | .ips[0]' <<<"$json")
  unique=$(sort -u <<<"$addresses" | grep -c . || true)
  # Why sandboxes failed (the kubelet retries them): each message with its
  # pod, sandbox, ids and numbers blanked, counted.
  k get events -n "$ns" --field-selector reason=FailedCreatePodSandBox -o json >"$work/$system-$round-failed.json"
  failed=$(jq '[.items[].count // 1] | add // 0' "$work/$system-$round-failed.json")
  reasons=$(jq -c --arg ns "$ns" '[.items[] | {n: (.count // 1), m: (.message
      | sub("^Failed to create pod sandbox: rpc error: code = Unknown desc = "; "")
      | gsub("sandbox \"[0-9a-f]+\""; "sandbox")
      | gsub($ns + "/[a-z0-9-]+"; "NS/POD") | gsub("bench-[a-z0-9]+-[a-z0-9]+"; "POD")
      | gsub("[0-9a-f]{8}-[0-9a-f-]{27}"; "UID") | gsub("[0-9]+(\\.[0-9]+)*"; "N")
      | .[0:300])}] | group_by(.m) | map({count: (map(.n) | add), reason: .[0].m}) | sort_by(-.count)' \
    "$work/$system-$round-failed.json")
  local allocations
  allocations=$(allocated "$range")
  # Teardown: every pod gone and every address back in the pool.
  local t1 t_released=""
  t1=$(now)
  k delete deployment bench -n "$ns" --wait=false >/dev/null
  while :; do
    local left a t
    left=$(k get pods -n "$ns" -o name | grep -c . || true)
    a=$(allocated "$range")
    t=$(now)
    if ((left == 0 && a == 0)); then t_released=$(elapsed "$t1" "$t"); break; fi
    if (($(elapsed "$t1" "$t" | cut -d. -f1) >= TIMEOUT)); then
      say "$system: $left pods and $a allocations left ${TIMEOUT}s after the delete"
      break
    fi
    sleep 1
  done
  k delete namespace "$ns" --timeout=180s >/dev/null || true
  jq -n --arg system "$system" --argjson round "$round" --argjson pods "$PODS" --argjson running "$running" \
    --arg all "$t_all" --arg half "$t_half" --arg p90 "$t_90" --argjson per_pod "$per_pod" \
    --argjson unique "$unique" --argjson allocations "$allocations" --argjson failed "${failed:-0}" --argjson reasons "$reasons" \
    --arg released "$t_released" '{
      system: $system, round: $round, pods: $pods, running: $running,
      all_running_s: ($all | if . == "" then null else tonumber end),
      half_running_s: ($half | if . == "" then null else tonumber end),
      p90_running_s: ($p90 | if . == "" then null else tonumber end),
      per_pod_created_to_started_s: $per_pod,
      unique_addresses: $unique, pool_allocations: $allocations,
      failed_sandbox_events: $failed, failed_sandbox_reasons: $reasons,
      delete_to_released_s: ($released | if . == "" then null else tonumber end)
    }' >>"$work/results.jsonl"
  say "$system, round $round: $running/$PODS Running in ${t_all:-(not all)}s; $unique unique addresses, $allocations allocations, $failed failed sandbox attempts; released in ${t_released:-(not all)}s"
}

cleanup() {
  say "cleaning up (the local control plane keeps running)"
  for system in hereabouts whereabouts; do
    for round in $(seq "$ROUNDS"); do k delete namespace "bench-$system-$round" --ignore-not-found --wait=false >/dev/null 2>&1 || true; done
  done
  uninstall hereabouts
  uninstall whereabouts
  for node in "${NODES[@]}"; do "$HB_ROOT/e2e/node.sh" remove "$node" >/dev/null 2>&1 || true; done
  for system in hereabouts whereabouts; do delete_pools "${RANGE[$system]}" 2>/dev/null || true; done
  "$HB_ROOT/e2e/real-node.sh" control-plane down >/dev/null 2>&1 || true
}

"$HB_ROOT/e2e/cluster.sh" up
hb_archive=$("$HB_ROOT/e2e/image.sh" | tail -1)
wa_archive=$("$HB_ROOT/e2e/whereabouts-image.sh" | tail -1)
whereabouts_image=localhost/hereabouts-kit/whereabouts:$(sed -n 's/^WHEREABOUTS_VERSION=//p' e2e/tools/versions.env)
whereabouts_src=$(cd e2e/tools/whereabouts && go list -m -f '{{.Dir}}' github.com/k8snetworkplumbingwg/whereabouts)
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The CRDs (hereabouts' are whereabouts' IPPool and
# OverlappingRangeIPReservation, same group, versions and fields, and its
# own IPClaim): installed once, for both.
awk 'BEGIN{RS="\n---\n"; ORS="\n---\n"} /kind: CustomResourceDefinition\n/' manifests/install.yaml |
  k apply --server-side -f - >/dev/null
uninstall hereabouts
uninstall whereabouts
for node in "${NODES[@]}"; do "$HB_ROOT/e2e/node.sh" add "$node" --real "$hb_archive" "$wa_archive"; done

for round in $(seq "$ROUNDS"); do
  order=(hereabouts whereabouts)
  ((round % 2 == 1)) || order=(whereabouts hereabouts)
  for system in "${order[@]}"; do
    install "$system"
    measure "$system" "$round"
    uninstall "$system"
  done
done

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r)"
jq -s --arg machine "$machine" --arg when "$stamp" --arg commit "$(git rev-parse --short HEAD)" \
  --argjson nodes "${#NODES[@]}" '{when: $when, commit: $commit, machine: $machine, real_nodes: $nodes, runs: .}' \
  "$work/results.jsonl" >"bench/results/real-nodes-$stamp.json"
{
  echo "# Pod-to-Running on real nodes: hereabouts vs whereabouts ($stamp)"
  echo
  echo "$PODS pods (one Deployment, one macvlan network each) on ${#NODES[@]} real nodes"
  echo "(kubelet + containerd + Multus in the local kit), each system installed as its"
  echo "project says (hereabouts: manifests/install.yaml; whereabouts v0.9.3:"
  echo "doc/crds/daemonset-install.yaml, image built here from its Go module), one at a"
  echo "time, rounds alternating which goes first. Commit $(git rev-parse --short HEAD); $machine."
  echo "Times from \`kubectl apply\` of the Deployment; per pod: creation to container start"
  echo "(the API's whole seconds). Released: from deleting the Deployment to no pod left"
  echo "and no allocation in the pool."
  echo
  echo "| system | round | Running | 50% | 90% | all | per pod p50 / p90 / max | unique addresses | failed sandbox attempts | released |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  jq -r '.runs | sort_by(.system, .round)[] | "| \(.system) | \(.round) | \(.running)/\(.pods) | \(.half_running_s // "-") s | \(.p90_running_s // "-") s | **\(.all_running_s // "not all")** s | \(.per_pod_created_to_started_s.p50) / \(.per_pod_created_to_started_s.p90) / \(.per_pod_created_to_started_s.max) s | \(.unique_addresses) | \(.failed_sandbox_events) | \(.delete_to_released_s // "not all") s |"' \
    "bench/results/real-nodes-$stamp.json"
  echo
  echo "Why sandbox creations failed (the kubelet retried them; messages with names and numbers blanked):"
  echo
  jq -r '.runs | sort_by(.system, .round)[] | "- \(.system), round \(.round): " +
    (if (.failed_sandbox_reasons | length) == 0 then "none" else
      (.failed_sandbox_reasons | map("\(.count) x `\(.reason | gsub("`"; "'"'"'"))`") | join("; ")) end)' \
    "bench/results/real-nodes-$stamp.json"
  echo
  echo "Side by side (mean over rounds of the time to all $PODS Running):"
  echo
  jq -r '.runs | group_by(.system)[] | "- \(.[0].system): \([.[].all_running_s | select(. != null)] | if length == 0 then "never all Running" else "\((add / length * 10 | round) / 10) s over \(length) round(s)" end)"' \
    "bench/results/real-nodes-$stamp.json"
} >"bench/results/real-nodes-$stamp.md"
cat "bench/results/real-nodes-$stamp.md"
