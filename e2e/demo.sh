#!/usr/bin/env bash
# `make demo`: hereabouts on the local control plane, end to end. Builds,
# brings the kit up, installs the CRDs, starts two controller replicas,
# creates a macvlan NetworkAttachmentDefinition with hereabouts IPAM,
# starts pods on three simulated nodes through Multus, shows their
# addresses and the pools, pings across nodes. Exits 0 only if all worked.
#   demo.sh         run it (leaves everything up to look around)
#   demo.sh down    stop the demo's controllers, pods and nodes
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HB_ROOT"
DEMO=$HB_LOCAL/demo
NS=hereabouts-demo
POOLS_NS=kube-system
NODES=(demo-node-1 demo-node-2 demo-node-3)
k() { kubectl --kubeconfig "$HB_KUBECONFIG" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

down() {
  for pid in "$DEMO"/*.pid; do
    [[ -f $pid ]] || continue
    kill "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  done
  if [[ -f $HB_KUBECONFIG ]]; then
    for dir in "$HB_LOCAL"/pods/"$NS".*; do
      [[ -d $dir ]] && "$HB_ROOT/e2e/pod.sh" del "$NS" "${dir##*/$NS.}" 2>/dev/null || true
    done
    for node in "${NODES[@]}"; do "$HB_ROOT/e2e/node.sh" remove "$node" 2>/dev/null || true; done
    k delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$DEMO"
  say "demo stopped (the local control plane still runs: make cluster-down)"
}

if [[ ${1:-} == down ]]; then
  down
  exit 0
fi

step "Building hereabouts (controller and CNI plugin)"
cargo build --locked --bins
step "Starting the local control plane (etcd, kube-apiserver, kube-controller-manager)"
"$HB_ROOT/e2e/cluster.sh" up
down >/dev/null 2>&1 || true
mkdir -p "$DEMO"

step "Installing the CRDs and the plugin"
k apply --server-side -f crds/ >/dev/null
k wait --for condition=established --timeout=60s -f crds/ >/dev/null
ln -sfn "$HB_ROOT/target/debug/hereabouts" "$HB_CNI_BIN/hereabouts"
echo "CRDs: $(ls crds | tr '\n' ' ')"
echo "plugin: $HB_CNI_BIN/hereabouts"

step "Starting two controller replicas (leader election on a Lease in $POOLS_NS)"
for replica in a b; do
  port=$([[ $replica == a ]] && echo 19091 || echo 19092)
  KUBECONFIG=$HB_KUBECONFIG RUST_LOG=info setsid "$HB_ROOT/target/debug/hereabouts-controller" \
    --namespace "$POOLS_NS" --watch-namespace "$NS" --http-addr "127.0.0.1:$port" --gc-grace 30s \
    >"$DEMO/controller-$replica.log" 2>&1 </dev/null &
  echo $! >"$DEMO/controller-$replica.pid"
  echo "replica $replica: pid $(cat "$DEMO/controller-$replica.pid"), http://127.0.0.1:$port/metrics, log $DEMO/controller-$replica.log"
done
for port in 19091 19092; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || die "controller on $port not ready"
done
for _ in $(seq 50); do
  holder=$(k get lease -n "$POOLS_NS" hereabouts-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
  [[ -n $holder ]] && break
  sleep 0.2
done
echo "leader: $holder"

step "Creating the macvlan network 'lan' (hereabouts IPAM, 100.64.100.0/24)"
k create namespace "$NS" >/dev/null
for _ in $(seq 100); do k get serviceaccount default -n "$NS" >/dev/null 2>&1 && break; sleep 0.1; done
cat <<NAD | tee "$DEMO/nad.yaml" | k apply -f - >/dev/null
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: lan
  namespace: $NS
spec:
  config: |
    {"cniVersion": "1.0.0", "name": "lan", "type": "macvlan", "master": "eth1", "mode": "bridge",
     "ipam": {"type": "hereabouts", "range": "100.64.100.0/24", "exclude": ["100.64.100.0/30"],
              "gateway": "100.64.100.254", "kubernetes": {"kubeconfig": "$HB_KUBECONFIG"}}}
NAD
sed -n '/config:/,$p' "$DEMO/nad.yaml"

step "Starting pods on three simulated nodes through Multus"
for node in "${NODES[@]}"; do "$HB_ROOT/e2e/node.sh" add "$node"; done
pods=()
for i in 1 2 3 4 5 6; do
  node=${NODES[$(((i - 1) % 3))]}
  "$HB_ROOT/e2e/pod.sh" add "$NS" "web-$i" "$node" "$NS/lan" >/dev/null 2>"$DEMO/web-$i.multus.log" ||
    { cat "$DEMO/web-$i.multus.log" >&2; die "pod web-$i failed"; }
  pods+=("web-$i")
done
printf '%-8s %-13s %s\n' POD NODE "ADDRESS (net1)"
declare -A addr
for pod in "${pods[@]}"; do
  addr[$pod]=$("$HB_ROOT/e2e/pod.sh" exec "$NS" "$pod" ip -4 -o addr show dev net1 | awk '{print $4}')
  [[ -n ${addr[$pod]} ]] || die "$pod has no address on net1"
  printf '%-8s %-13s %s\n' "$pod" "$(cat "$HB_LOCAL/pods/$NS.$pod/node")" "${addr[$pod]}"
done
unique=$(printf '%s\n' "${addr[@]}" | sort -u | wc -l)
((unique == ${#pods[@]})) || die "addresses are not unique"

step "kubectl get ippools -n $POOLS_NS"
for _ in $(seq 30); do
  [[ $(k get ippool -n "$POOLS_NS" 100.64.100.0-24 -o jsonpath='{.status.allocated}' 2>/dev/null) == "${#pods[@]}" ]] && break
  sleep 0.2
done
k get ippools -n "$POOLS_NS"
step "kubectl get ipclaims -n $NS"
k get ipclaims -n "$NS"

step "Pinging across nodes over the macvlan network"
from=web-1 to=web-3
target=${addr[$to]%/*}
"$HB_ROOT/e2e/pod.sh" exec "$NS" "$from" ping -c 3 -W 2 "$target" | tail -3 ||
  die "$from ($(cat "$HB_LOCAL/pods/$NS.$from/node")) cannot reach $to"

cat <<DONE

Demo done: 6 pods on 3 nodes, unique addresses, reachable across nodes.
Look around:
  export KUBECONFIG=$HB_KUBECONFIG
  kubectl get ippools -n $POOLS_NS -o yaml       # the whereabouts-format allocations
  kubectl get ipclaims -n $NS                    # one claim per pod interface
  kubectl get lease -n $POOLS_NS hereabouts-controller
  curl -s http://127.0.0.1:19091/metrics | grep hereabouts_
  e2e/pod.sh add $NS web-7 demo-node-2 $NS/lan   # another pod
  e2e/pod.sh del $NS web-1                       # DEL through Multus: the address comes back
  e2e/pod.sh exec $NS web-2 ip addr              # inside a pod
Tear down:
  make demo-down      # the demo's controllers, pods, nodes and namespace
  make cluster-down   # the local control plane too
DONE
