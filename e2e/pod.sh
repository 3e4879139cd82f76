#!/usr/bin/env bash
# Simulated pods. A pod is a Pod object bound to a simulated node (no kubelet)
# plus a network namespace; the kit calls Multus for it exactly as a container
# runtime does: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME=eth0,
# CNI_ARGS with K8S_POD_*, the node's Multus config on stdin, run inside the
# node's network namespace with NODENAME set.
#   pod.sh add NS NAME NODE [NETWORKS]   create the Pod (annotation
#                                        k8s.v1.cni.cncf.io/networks=NETWORKS)
#                                        and its namespace, run ADD, print the result
#   pod.sh cni ADD|DEL|CHECK NS NAME     call Multus again for the pod
#   pod.sh del NS NAME                   DEL, remove the namespace, delete the Pod
#   pod.sh vanish NS NAME                what a node crash leaves: the Pod object
#                                        and namespace go, no DEL is ever sent
#   pod.sh exec NS NAME CMD...           run CMD inside the pod's namespace
#   pod.sh netns NS NAME                 print the pod's network namespace path
set -euo pipefail
source "$(dirname "$0")/lib.sh"
HB_PODS=$HB_LOCAL/pods
k() { kubectl --kubeconfig "$HB_KUBECONFIG" "$@"; }

pod_dir() { echo "$HB_PODS/$1.$2"; }

create() {
  local ns=$1 name=$2 node=$3 networks=${4:-} dir
  dir=$(pod_dir "$ns" "$name")
  [[ -d $HB_NODES/$node ]] || die "no simulated node $node (node.sh add $node)"
  local annotations='{}'
  [[ -n $networks ]] && annotations=$(jq -n --arg n "$networks" '{"k8s.v1.cni.cncf.io/networks": $n}')
  jq -n --arg ns "$ns" --arg name "$name" --arg node "$node" --argjson ann "$annotations" '{
    apiVersion: "v1", kind: "Pod",
    metadata: {namespace: $ns, name: $name, annotations: $ann, labels: {"hereabouts.dev/simulated": "true"}},
    spec: {nodeName: $node, terminationGracePeriodSeconds: 0, automountServiceAccountToken: false,
           containers: [{name: "app", image: "pause"}]}
  }' | k create -f - >/dev/null
  local uid
  uid=$(k get pod -n "$ns" "$name" -o jsonpath='{.metadata.uid}')
  mkdir -p "$dir"
  echo "$uid" >"$dir/uid"
  echo "$node" >"$dir/node"
  printf '%s' "$uid" | sha256sum | cut -c1-64 >"$dir/containerid"
  echo "hbpod-$(hb_short "$uid")" >"$dir/netns"
  ip netns add "$(cat "$dir/netns")"
  ip -n "$(cat "$dir/netns")" link set lo up
}

cni() {
  local cmd=$1 ns=$2 name=$3 dir node
  dir=$(pod_dir "$ns" "$name")
  [[ -d $dir ]] || die "no simulated pod $ns/$name"
  node=$(cat "$dir/node")
  local netns
  netns=$(cat "$dir/netns")
  ip netns exec "$("$HB_ROOT/e2e/node.sh" netns "$node")" env \
    CNI_COMMAND="$cmd" \
    CNI_CONTAINERID="$(cat "$dir/containerid")" \
    CNI_NETNS="/var/run/netns/$netns" \
    CNI_IFNAME=eth0 \
    CNI_PATH="$HB_CNI_BIN" \
    CNI_ARGS="IgnoreUnknown=true;K8S_POD_NAMESPACE=$ns;K8S_POD_NAME=$name;K8S_POD_INFRA_CONTAINER_ID=$(cat "$dir/containerid");K8S_POD_UID=$(cat "$dir/uid")" \
    NODENAME="$node" \
    "$HB_CNI_BIN/multus" <"$HB_NODES/$node/multus.conf"
}

# ADD the way a kubelet does it: a sandbox whose ADD failed is torn down
# (DEL) and tried again. Only Multus's own failure to read the Pod before it
# called any delegate is retried (its thin plugin gives each GET 250 ms and
# gives up after 2.5 s, which a loaded API server can exceed); any other
# failure, hereabouts' included, is the test's answer and is not retried.
add() {
  local ns=$1 name=$2 attempt out err status
  out=$(mktemp) err=$(mktemp)
  for attempt in 1 2 3 4; do
    status=0
    cni ADD "$ns" "$name" >"$out" 2>"$err" || status=$?
    if ((status == 0)) || ! grep -qs 'error waiting for pod' "$err" "$out" || ((attempt == 4)); then
      cat "$out"
      cat "$err" >&2
      rm -f "$out" "$err"
      return "$status"
    fi
    echo "[kit] Multus could not read pod $ns/$name from a slow API server (attempt $attempt); DEL and ADD again, as a kubelet would" >&2
    cni DEL "$ns" "$name" >/dev/null 2>&1 || true
    sleep "$attempt"
  done
}

del() {
  local ns=$1 name=$2 dir
  dir=$(pod_dir "$ns" "$name")
  if [[ -d $dir ]]; then
    cni DEL "$ns" "$name" >/dev/null
    ip netns del "$(cat "$dir/netns")" 2>/dev/null || true
    rm -rf "$dir"
  fi
  k delete pod -n "$ns" "$name" --grace-period=0 --force --ignore-not-found >/dev/null 2>&1
}

vanish() {
  local ns=$1 name=$2 dir
  dir=$(pod_dir "$ns" "$name")
  [[ -d $dir ]] && ip netns del "$(cat "$dir/netns")" 2>/dev/null || true
  rm -rf "$dir"
  k delete pod -n "$ns" "$name" --grace-period=0 --force --ignore-not-found >/dev/null 2>&1
}

case ${1:-} in
  add)
    create "${2:?namespace}" "${3:?name}" "${4:?node}" "${5:-}"
    add "$2" "$3"
    ;;
  cni) cni "${2:?command}" "${3:?namespace}" "${4:?name}" ;;
  del) del "${2:?namespace}" "${3:?name}" ;;
  vanish) vanish "${2:?namespace}" "${3:?name}" ;;
  exec)
    dir=$(pod_dir "${2:?namespace}" "${3:?name}")
    shift 3
    exec ip netns exec "$(cat "$dir/netns")" "$@"
    ;;
  netns) echo "/var/run/netns/$(cat "$(pod_dir "${2:?namespace}" "${3:?name}")/netns")" ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
