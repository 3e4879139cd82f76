#!/usr/bin/env bash
# Simulated nodes. A node is a Node object plus a network namespace standing
# in for the host: its uplink `eth1` (the macvlan/ipvlan master NADs name)
# is a veth plugged into the shared bridge hb-fabric, and 127.0.0.1:<api port>
# inside it is forwarded to the API server, so Multus and the IPAM plugins
# run inside the node exactly as on a host. The uplink's peer sits in the
# fabric namespace: pod traffic never touches the host's own stack.
#   node.sh add NAME        create (or find) the node
#   node.sh add NAME --real [IMAGE.oci.tar...]
#                           a real node: containerd and kubelet (e2e/real-node.sh)
#   node.sh plumb NAME      only the namespace, uplink and API relay (real nodes use it)
#   node.sh remove NAME     delete it: processes, namespace, link, Node object
#   node.sh netns NAME      print the node's network namespace
set -euo pipefail
source "$(dirname "$0")/lib.sh"

node_netns() { echo "hbnode-$(hb_short "$HB_LOCAL/$1")"; }

plumb() {
  local name=$1 dir=$HB_NODES/$1 netns uplink
  netns=$(node_netns "$name")
  uplink=hbv$(hb_short "$name")
  [[ -f $HB_KUBECONFIG ]] || die "no cluster: run make cluster-up first"
  mkdir -p "$dir"
  if ! ip netns list | grep -qw "$netns"; then
    ip netns add "$netns"
    ip -n "$netns" link set lo up
    ip -n "$HB_FABRIC_NETNS" link add "$uplink" type veth peer name eth1 netns "$netns"
    ip -n "$HB_FABRIC_NETNS" link set "$uplink" master "$HB_FABRIC" up
    ip -n "$netns" link set eth1 up
  fi
  # The API server listens on the host's loopback only; the relay that
  # cluster.sh runs carries the node's loopback connections to it over a
  # unix socket (TLS passes through untouched).
  local sock=$HB_STATE/api.sock
  [[ -S $sock ]] || die "no API relay at $sock: run make cluster-up"
  if ! pid_alive "$dir/proxy.pid"; then
    setsid ip netns exec "$netns" socat \
      "TCP-LISTEN:$HB_API_PORT,bind=127.0.0.1,fork,reuseaddr,backlog=4096" "UNIX-CONNECT:$sock" \
      >/dev/null 2>&1 </dev/null &
    echo $! >"$dir/proxy.pid"
  fi
  # Wait until the node's loopback reaches the API server.
  local deadline=$((SECONDS + 20))
  until ip netns exec "$netns" bash -c "exec 3<>/dev/tcp/127.0.0.1/$HB_API_PORT" 2>/dev/null; do
    ((SECONDS < deadline)) || die "node $name cannot reach the API server"
    sleep 0.05
  done
}

add() {
  local name=$1 dir=$HB_NODES/$1 netns
  netns=$(node_netns "$name")
  plumb "$name"
  mkdir -p "$dir/multus" "$dir/host-local" "$dir/net.d"
  echo "$name" >"$dir/nodename"
  # The runtime's view of the cluster-default network (eth0): a bridge local
  # to the node with host-local addresses; Multus delegates the NADs' networks.
  cat >"$dir/multus.conf" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "multus-cni-network",
  "type": "multus",
  "kubeconfig": "$HB_KUBECONFIG",
  "cniDir": "$dir/multus",
  "binDir": "$HB_CNI_BIN",
  "confDir": "$dir/net.d",
  "logLevel": "error",
  "logToStderr": true,
  "delegates": [{
    "cniVersion": "1.0.0",
    "name": "cluster-default",
    "type": "bridge",
    "bridge": "cni0",
    "ipam": {"type": "host-local", "dataDir": "$dir/host-local", "ranges": [[{"subnet": "10.244.0.0/20"}]]}
  }]
}
CONF
  kubectl --kubeconfig "$HB_KUBECONFIG" apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: $name
  labels: {kubernetes.io/hostname: $name, hereabouts.dev/simulated: "true"}
NODE
  say "node $name ready (netns $netns, uplink eth1 on $HB_FABRIC)"
}

remove() {
  local name=$1 dir=$HB_NODES/$1 netns
  if [[ -f $dir/real && -z ${HB_REAL_REMOVING:-} ]]; then
    exec "$HB_ROOT/e2e/real-node.sh" remove "$name" "${2:-}"
  fi
  netns=$(node_netns "$name")
  if pid_alive "$dir/proxy.pid"; then kill -- "-$(cat "$dir/proxy.pid")" 2>/dev/null || true; fi
  ip -n "$HB_FABRIC_NETNS" link del "hbv$(hb_short "$name")" 2>/dev/null || true
  ip netns del "$netns" 2>/dev/null || true
  if [[ ${2:-} != --local-only && -f $HB_KUBECONFIG ]]; then
    kubectl --kubeconfig "$HB_KUBECONFIG" delete node "$name" --ignore-not-found --wait=false >/dev/null
  fi
  rm -rf "$dir"
  say "node $name removed"
}

case ${1:-} in
  add)
    if [[ ${3:-} == --real ]]; then
      exec "$HB_ROOT/e2e/real-node.sh" add "${2:?node name}" "${@:4}"
    fi
    add "${2:?node name}" ;;
  plumb) plumb "${2:?node name}" ;;
  remove) remove "${2:?node name}" "${3:-}" ;;
  netns) node_netns "${2:?node name}" ;;
  *) echo "usage: $0 add NAME [--real]|plumb|remove|netns NAME" >&2; exit 2 ;;
esac
