#!/usr/bin/env bash
# `make demo`: hereabouts as a cluster admin meets it, on the local kit.
# Builds the image (no container engine), brings up two real nodes
# (kubelet + containerd, e2e/real-node.sh) with the image imported,
# `kubectl apply --server-side -f manifests/install.yaml`, creates a
# macvlan NetworkAttachmentDefinition with hereabouts IPAM, starts a
# Deployment of six pods through kubelet -> containerd -> Multus, and prints
# what an admin looks at; pings across nodes. Exits 0 only if all worked.
#   demo.sh         run it (leaves everything up to look around)
#   demo.sh down    remove the demo's namespace, the install and the nodes
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HB_ROOT"
DEMO=$HB_LOCAL/demo
NS=hereabouts-demo
POOLS_NS=kube-system
NODES=(demo-node-1 demo-node-2)
k() { kubectl --kubeconfig "$HB_KUBECONFIG" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# install.yaml without its CRDs: the kit's other users share those.
uninstall() {
  awk 'BEGIN{RS="\n---\n"; ORS="\n---\n"} !/kind: CustomResourceDefinition/' manifests/install.yaml |
    k delete --ignore-not-found --wait=false -f - >/dev/null 2>&1 || true
}

down() {
  if [[ -f $HB_KUBECONFIG ]]; then
    # The namespace first, while the controller runs to release its pods'
    # addresses; then the install.
    k delete namespace "$NS" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
    uninstall
    for node in "${NODES[@]}"; do "$HB_ROOT/e2e/node.sh" remove "$node" 2>/dev/null || true; done
    "$HB_ROOT/e2e/real-node.sh" control-plane down 2>/dev/null || true
  fi
  rm -rf "$DEMO"
  say "demo stopped (the local control plane still runs: make cluster-down)"
}

if [[ ${1:-} == down ]]; then
  down
  exit 0
fi

step "Building the image: static binaries in an OCI archive, no container engine (make image)"
archive=$("$HB_ROOT/e2e/image.sh" | tail -1)
image=$(awk '$1 == "image:" {print $2; exit}' manifests/install.yaml)
echo "$image: $archive ($(du -h --apparent-size "$archive" | cut -f1))"

step "Starting the local control plane (etcd, kube-apiserver, controller managers, kube-scheduler)"
"$HB_ROOT/e2e/cluster.sh" up
down >/dev/null 2>&1 || true
mkdir -p "$DEMO"

step "Two real nodes: containerd + runc + kubelet each, the image imported (never pulled)"
for node in "${NODES[@]}"; do "$HB_ROOT/e2e/node.sh" add "$node" --real "$archive"; done
k get nodes -l hereabouts.dev/kubelet -o wide

step "kubectl apply --server-side -f manifests/install.yaml"
k apply --server-side -f manifests/install.yaml
say "waiting for the controller Deployment and the node DaemonSet"
k rollout status deployment/hereabouts-controller -n "$POOLS_NS" --timeout=180s
for node in "${NODES[@]}"; do
  kc=$("$HB_ROOT/e2e/real-node.sh" dir "$node")/etc-cni-net.d/hereabouts.d/hereabouts.kubeconfig
  for _ in $(seq 240); do [[ -f $kc ]] && break; sleep 0.5; done
  [[ -f $kc ]] || die "the DaemonSet did not install hereabouts on $node"
done
k get pods -n "$POOLS_NS" -l 'app.kubernetes.io/name in (hereabouts-controller,hereabouts-node)' -o wide
echo
echo "leader: $(k get lease -n "$POOLS_NS" hereabouts-controller -o jsonpath='{.spec.holderIdentity}')"
for node in "${NODES[@]}"; do
  dir=$("$HB_ROOT/e2e/real-node.sh" dir "$node")
  echo "$node: /opt/cni/bin/hereabouts $(stat -c '%s bytes' "$dir/opt-cni-bin/hereabouts"), " \
    "/etc/cni/net.d/hereabouts.d/hereabouts.kubeconfig mode $(stat -c %a "$dir/etc-cni-net.d/hereabouts.d/hereabouts.kubeconfig")"
done

step "A macvlan network 'lan' with hereabouts IPAM (100.64.100.0/24)"
k create namespace "$NS" >/dev/null
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
              "gateway": "100.64.100.254"}}
NAD
sed -n '/config:/,$p' "$DEMO/nad.yaml"

step "A Deployment of 6 pods asking for it (k8s.v1.cni.cncf.io/networks: lan)"
cat <<DEPLOY | tee "$DEMO/deployment.yaml" | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: $NS}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {k8s.v1.cni.cncf.io/networks: lan}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: app, image: localhost/hereabouts-kit/pause:3.10, imagePullPolicy: Never}]
      # The kit's real nodes (simulated ones, where nothing starts, would
      # count for the spread below).
      affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms:
        [{matchExpressions: [{key: hereabouts.dev/kubelet, operator: Exists}]}]}}}
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: web}}}
DEPLOY
k rollout status deployment/web -n "$NS" --timeout=240s
k get pods -n "$NS" -o wide

step "Pod addresses (Multus' k8s.v1.cni.cncf.io/network-status)"
printf '%-24s %-13s %s\n' POD NODE "lan (net1)"
declare -A addr node_of
for pod in $(k get pods -n "$NS" -l app=web -o jsonpath='{.items[*].metadata.name}'); do
  json=$(k get pod -n "$NS" "$pod" -o json)
  node_of[$pod]=$(jq -r .spec.nodeName <<<"$json")
  addr[$pod]=$(jq -r '.metadata.annotations["k8s.v1.cni.cncf.io/network-status"] | fromjson | .[] | select(.name == "'"$NS"'/lan") | .ips[0]' <<<"$json")
  [[ -n ${addr[$pod]} && ${addr[$pod]} != null ]] || die "$pod has no address on lan"
  printf '%-24s %-13s %s\n' "$pod" "${node_of[$pod]}" "${addr[$pod]}"
done
unique=$(printf '%s\n' "${addr[@]}" | sort -u | wc -l)
((unique == ${#addr[@]})) || die "addresses are not unique"

step "kubectl get ippools -n $POOLS_NS -o wide (one row per shard; the range's totals on its own object)"
for _ in $(seq 50); do
  [[ $(k get ippool -n "$POOLS_NS" 100.64.100.0-24 -o jsonpath='{.status.rangeAllocated}' 2>/dev/null) == "${#addr[@]}" ]] && break
  sleep 0.2
done
k get ippools -n "$POOLS_NS" -o wide
step "kubectl hereabouts pools"
"$HB_ROOT/target/x86_64-unknown-linux-gnu/release/kubectl-hereabouts" --kubeconfig "$HB_KUBECONFIG" -n "$POOLS_NS" pools
step "kubectl get ipclaims -n $NS"
k get ipclaims -n "$NS"

step "Pinging across nodes over the macvlan network"
from= to=
for pod in "${!addr[@]}"; do
  [[ ${node_of[$pod]} == "${NODES[0]}" && -z $from ]] && from=$pod
  [[ ${node_of[$pod]} == "${NODES[1]}" && -z $to ]] && to=$pod
done
[[ -n $from && -n $to ]] || die "no pods on both nodes"
pid=$("$HB_ROOT/e2e/real-node.sh" pod-pid "${NODES[0]}" "$NS" "$from")
echo "$from (${NODES[0]}) -> $to (${NODES[1]}, ${addr[$to]%/*})"
nsenter -t "$pid" -n ping -c 3 -W 2 "${addr[$to]%/*}" | tail -2 || die "$from cannot reach $to"

look() { printf '  %-62s # %s\n' "$1" "$2"; }
cat <<DONE

Demo done: the manifest installed on two real nodes, 6 pods with unique
addresses, reachable across nodes.
Look around (export KUBECONFIG=$HB_KUBECONFIG):
DONE
look "kubectl get pods -A -o wide" "everything, on which node"
look "kubectl get ippools -n $POOLS_NS -o wide" "each shard's addresses, allocated, held, free"
look "kubectl get ippools -n $POOLS_NS -o yaml" "the whereabouts-format allocations"
look "kubectl get ipclaims -n $NS" "one claim per pod interface"
look "kubectl get lease -n $POOLS_NS hereabouts-controller" "the leading controller replica"
look "kubectl scale deployment/web -n $NS --replicas=10" "more pods: more addresses"
look "kubectl scale deployment/web -n $NS --replicas=2" "fewer: addresses held 60 s, then free"
look "e2e/real-node.sh pod-pid ${NODES[0]} $NS POD" "a pod's pid: nsenter -t PID -n ip addr"
look "ls ${HB_NODES#"$HB_ROOT"/}/${NODES[0]}" "kubelet.log, containerd.log, its /etc/cni/net.d"
echo "Tear down:"
look "make demo-down" "the demo's namespace, the install and the nodes"
look "make cluster-down" "the local control plane too"
