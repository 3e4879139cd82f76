#!/usr/bin/env bash
# The local control plane: etcd, kube-apiserver and kube-controller-manager
# built from pinned Go modules, on loopback, with self-made certificates and a
# static admin token.
#   cluster.sh up       start (or find running) and write .local/kubeconfig
#   cluster.sh down     stop what `up` started, remove nodes, pods and state
#   cluster.sh status   say what runs
#   cluster.sh restart apiserver|etcd [apiserver flags...]
#                       restart one part, state kept (the fault suite)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_deps() {
  local missing=()
  [[ -x $HB_REFERENCE_PLUGINS/macvlan ]] || missing+=(containernetworking-plugins)
  command -v socat >/dev/null || missing+=(socat)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v curl >/dev/null || missing+=(curl)
  command -v jq >/dev/null || missing+=(jq)
  command -v ping >/dev/null || missing+=(iputils-ping)
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v go >/dev/null || die "Go is needed to build the control plane"
}

make_pki() {
  [[ -f $HB_PKI/tokens.csv ]] && return
  say "making certificates and keys in $HB_PKI"
  mkdir -p "$HB_PKI"
  (
    cd "$HB_PKI"
    # ECDSA P-256 (kubeadm's encryptionAlgorithm: ECDSA-P256): every
    # plugin process makes one TLS handshake, and an RSA-2048 signature per
    # handshake was a tenth of the API server's CPU in a pod storm.
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
    openssl req -x509 "${ec[@]}" -nodes -days 3650 -subj "/CN=hereabouts-local-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req "${ec[@]}" -nodes -subj "/CN=kube-apiserver" \
      -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\n' >san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    printf '%s,admin,admin,system:masters\n' "$(openssl rand -hex 24)" >tokens.csv
    chmod 600 ./*.key tokens.csv
  )
}

write_kubeconfig() {
  local token
  token=$(cut -d, -f1 "$HB_PKI/tokens.csv")
  umask 077
  cat >"$HB_KUBECONFIG" <<KC
apiVersion: v1
kind: Config
clusters:
- name: hereabouts-local
  cluster:
    server: https://127.0.0.1:$HB_API_PORT
    certificate-authority-data: $(base64 -w0 "$HB_PKI/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: hereabouts-local
  context: {cluster: hereabouts-local, user: admin}
current-context: hereabouts-local
KC
}

api_ready() {
  [[ -f $HB_PKI/tokens.csv ]] || return 1
  curl -sf --max-time 2 --cacert "$HB_PKI/ca.crt" \
    -H "Authorization: Bearer $(cut -d, -f1 "$HB_PKI/tokens.csv")" \
    "https://127.0.0.1:$HB_API_PORT/readyz" >/dev/null 2>&1
}

wait_until() { # seconds command... : true once the command succeeds, false after seconds
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

wait_for() { # what seconds command...
  local what=$1 seconds=$2
  shift 2
  wait_until "$seconds" "$@" || die "$what not ready after ${seconds}s (logs: $HB_LOGS)"
}

start() { # name command...
  local name=$1
  shift
  say "starting $name (log: $HB_LOGS/$name.log)"
  setsid "$@" >"$HB_LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$HB_STATE/$name.pid"
}

ensure_relay() {
  # Simulated nodes reach the loopback-only API server through this unix
  # socket (node.sh listens on each node's own loopback and connects here).
  # Started here, once, so concurrent node.sh calls cannot race to start two.
  pid_alive "$HB_STATE/api-socket.pid" && [[ -S $HB_STATE/api.sock ]] && return
  setsid socat "UNIX-LISTEN:$HB_STATE/api.sock,fork,unlink-early,backlog=4096" "TCP:127.0.0.1:$HB_API_PORT" \
    >/dev/null 2>&1 </dev/null &
  echo $! >"$HB_STATE/api-socket.pid"
  wait_for "API relay" 10 test -S "$HB_STATE/api.sock"
}

install_cni_bin() {
  local tools=$1
  mkdir -p "$HB_CNI_BIN"
  for p in "$HB_REFERENCE_PLUGINS"/*; do ln -sfn "$p" "$HB_CNI_BIN/$(basename "$p")"; done
  ln -sfn "$tools/multus" "$HB_CNI_BIN/multus"
  ln -sfn "$tools/whereabouts" "$HB_CNI_BIN/whereabouts"
}

ensure_fabric() {
  # The shared L2 segment every simulated node's uplink is plugged into: a
  # bridge inside its own network namespace, away from the host's stack.
  if ! ip netns list | grep -qw "$HB_FABRIC_NETNS"; then
    say "creating bridge $HB_FABRIC in netns $HB_FABRIC_NETNS (the simulated nodes' shared segment)"
    ip netns add "$HB_FABRIC_NETNS"
  fi
  if ! ip -n "$HB_FABRIC_NETNS" link show "$HB_FABRIC" >/dev/null 2>&1; then
    ip -n "$HB_FABRIC_NETNS" link add "$HB_FABRIC" type bridge
  fi
  ip -n "$HB_FABRIC_NETNS" link set "$HB_FABRIC" up
}

start_etcd() { # tools
  start etcd "$1/etcd" --name hereabouts-local --data-dir "$HB_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$HB_ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$HB_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$HB_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$HB_ETCD_PEER_PORT" \
    --initial-cluster "hereabouts-local=http://127.0.0.1:$HB_ETCD_PEER_PORT" \
    --unsafe-no-fsync="${HB_ETCD_UNSAFE_NO_FSYNC:-true}" --quota-backend-bytes=8589934592 \
    --log-level=warn
  wait_for etcd 30 curl -sf --max-time 1 "http://127.0.0.1:$HB_ETCD_PORT/health" -o /dev/null
}

start_apiserver() { # tools [extra flags, after the usual ones so they win]
  local tools=$1
  shift
  start kube-apiserver "$tools/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$HB_ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$HB_API_PORT" \
    --tls-cert-file "$HB_PKI/apiserver.crt" --tls-private-key-file "$HB_PKI/apiserver.key" \
    --client-ca-file "$HB_PKI/ca.crt" --token-auth-file "$HB_PKI/tokens.csv" \
    --authorization-mode RBAC --allow-privileged=true \
    --service-account-key-file "$HB_PKI/sa.pub" \
    --service-account-signing-key-file "$HB_PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 \
    --max-requests-inflight 1600 --max-mutating-requests-inflight 800 \
    --enable-priority-and-fairness=false \
    --profiling=true --v=0 "$@"
  wait_for kube-apiserver 120 api_ready
}

up() {
  local began=$SECONDS
  ensure_deps
  mkdir -p "$HB_STATE" "$HB_LOGS"
  local tools
  say "building or finding the control plane binaries (e2e/tools, pinned in versions.env)"
  tools=$(hb_tools_dir)
  install_cni_bin "$tools"
  ensure_fabric
  # A running API server that is slow to answer (a busy machine: another
  # tier starting beside the tests) is waited for, never torn down: every
  # test binary calls `up`, and a restart under a running test fails it.
  # Only one that stays unready for a minute is replaced.
  if pid_alive "$HB_STATE/kube-apiserver.pid"; then
    if wait_until 60 api_ready; then
      ensure_relay
      write_kubeconfig
      say "already running: https://127.0.0.1:$HB_API_PORT (kubeconfig: $HB_KUBECONFIG)"
      return
    fi
    say "kube-apiserver runs but was not ready for 60s: starting the control plane again"
  fi
  stop_processes
  make_pki
  start_etcd "$tools"
  start_apiserver "$tools"
  write_kubeconfig
  start kube-controller-manager "$tools/kube-controller-manager" \
    --kubeconfig "$HB_KUBECONFIG" --authentication-kubeconfig "$HB_KUBECONFIG" \
    --authorization-kubeconfig "$HB_KUBECONFIG" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
    --controllers garbagecollector,namespace,serviceaccount,serviceaccount-token \
    --service-account-private-key-file "$HB_PKI/sa.key" --root-ca-file "$HB_PKI/ca.crt" \
    --kube-api-qps 500 --kube-api-burst 1000 --concurrent-gc-syncs 20 --v=0
  wait_for "kube-controller-manager (default service account)" 60 \
    kubectl --kubeconfig "$HB_KUBECONFIG" get serviceaccount default -n default -o name >/dev/null 2>&1
  kubectl --kubeconfig "$HB_KUBECONFIG" apply -f "$HB_ROOT/e2e/manifests/network-attachment-definition-crd.yaml" >/dev/null
  ensure_relay
  say "ready in $((SECONDS - began))s: https://127.0.0.1:$HB_API_PORT"
  say "kubeconfig: $HB_KUBECONFIG   (export KUBECONFIG=$HB_KUBECONFIG)"
}

stop_processes() {
  local name
  for name in kube-scheduler kube-controller-manager-workloads api-socket kube-controller-manager kube-apiserver etcd; do stop_one "$name"; done
}

stop_one() { # name
  local name=$1
  if pid_alive "$HB_STATE/$name.pid"; then
    say "stopping $name"
    kill -- "-$(cat "$HB_STATE/$name.pid")" 2>/dev/null || kill "$(cat "$HB_STATE/$name.pid")" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while pid_alive "$HB_STATE/$name.pid" && ((SECONDS < deadline)); do sleep 0.1; done
    pid_alive "$HB_STATE/$name.pid" && kill -9 "$(cat "$HB_STATE/$name.pid")" 2>/dev/null || true
  fi
  rm -f "$HB_STATE/$name.pid"
}

# One part of a running control plane goes down and comes back, its state
# kept (the fault suite's API server and etcd restarts). Extra flags go to
# the API server after its usual ones, e.g. --max-requests-inflight=1.
restart() { # apiserver|etcd [flags...]
  local part=$1
  shift
  pid_alive "$HB_STATE/kube-apiserver.pid" || die "not running: make cluster-up first"
  local tools
  tools=$(hb_tools_dir)
  case $part in
    apiserver)
      stop_one kube-apiserver
      start_apiserver "$tools" "$@"
      ;;
    etcd)
      (($# == 0)) || die "restart etcd takes no flags"
      stop_one etcd
      start_etcd "$tools"
      wait_for kube-apiserver 120 api_ready
      ;;
    *) die "restart: apiserver or etcd, not $part" ;;
  esac
}

down() {
  [[ -d $HB_LOCAL/demo ]] && "$HB_ROOT/e2e/demo.sh" down >/dev/null 2>&1 || true
  if [[ -d $HB_NODES ]]; then
    local node
    for node in "$HB_NODES"/*/; do
      [[ -d $node ]] && "$HB_ROOT/e2e/node.sh" remove "$(basename "$node")" --local-only || true
    done
  fi
  # The pods this kit made (and only those: another checkout's kit may
  # share the machine).
  local netns
  for netns in "$HB_LOCAL"/pods/*/netns; do
    [[ -f $netns ]] && ip netns del "$(cat "$netns")" 2>/dev/null || true
  done
  stop_processes
  if ip netns list | grep -qw "$HB_FABRIC_NETNS"; then
    say "removing the shared segment (netns $HB_FABRIC_NETNS)"
    ip netns del "$HB_FABRIC_NETNS"
  fi
  say "removing $HB_STATE, $HB_NODES and $HB_KUBECONFIG"
  rm -rf "$HB_STATE" "$HB_NODES" "$HB_KUBECONFIG" "$HB_LOCAL/cni" "$HB_LOCAL/pods" "$HB_LOCAL/host-local"
  say "stopped"
}

status() {
  local name
  for name in etcd kube-apiserver kube-controller-manager; do
    if pid_alive "$HB_STATE/$name.pid"; then echo "$name: running (pid $(cat "$HB_STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
  api_ready && echo "api: ready at https://127.0.0.1:$HB_API_PORT" || echo "api: not ready"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  restart) shift; restart "${1:?apiserver or etcd}" "${@:2}" ;;
  *) echo "usage: $0 up|down|status|restart apiserver|etcd [flags]" >&2; exit 2 ;;
esac
