#!/usr/bin/env bash
# Real nodes: a node network namespace like a simulated node's (uplink eth1
# on the shared segment, the API server on its loopback), running Debian's
# containerd with runc and a kubelet built from the pinned Kubernetes
# module, so pods start the way they do on a host: kubelet -> containerd ->
# Multus -> the NAD's plugins.
#   real-node.sh add NAME [ARCHIVE...]  create (or find) and wait until Ready;
#                                    OCI image archives are imported first
#   real-node.sh remove NAME [--local-only]
#   real-node.sh kubelet NAME stop|start
#   real-node.sh import NAME ARCHIVE import an OCI image archive into its containerd
#   real-node.sh pod-pid NAME NAMESPACE POD   pid of the pod's sandbox (for nsenter)
#   real-node.sh dir NAME            the node's folder (its /etc/cni/net.d is etc-cni-net.d/)
#   real-node.sh control-plane up|down   kube-scheduler and the workload controllers
#
# How the machine is shared (PID 1 is not systemd; cgroups v1, hybrid):
# - containerd and kubelet run inside the node netns and in a private mount
#   namespace (nsenter --net, unshare --mount --propagation slave), where the
#   node's own folders are bind-mounted over the host paths a node uses
#   (/opt/cni/bin, /etc/cni/net.d, /var/lib/{kubelet,containerd,cni},
#   /run/containerd, /var/log/{pods,containers}): what the DaemonSet writes
#   to its hostPath lands in this node's folder, not on the machine.
# - kubelet's cgroupRoot is /hb-<hash> of the node (cgroupfs driver), so two
#   kubelets never see each other's pods; every process of the node
#   (containerd, shims, kubelet, pods) lives under it in the pids hierarchy,
#   and removal kills exactly those.
# - kubelet would set vm.overcommit_memory, kernel.panic and
#   kernel.panic_on_oops machine-wide. It runs with protectKernelDefaults
#   (it never writes a sysctl), and the node's mount namespace shows it
#   the values it expects through bind-mounted files: the machine keeps its
#   own values. A real host sets them in sysctl.d.
# - Pods reach the API server at the service IP 10.96.0.1:443 (the
#   certificate names it): each node netns holds 10.96.0.1 on its loopback,
#   relayed to the API server like the node's 127.0.0.1:<api port>.
# - kubelet uses the kit's admin kubeconfig (the kit's API server has no
#   Node authorizer); pods' projected tokens are bound to their pod and node
#   as on any cluster.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

HB_PAUSE_IMAGE=localhost/hereabouts-kit/pause:3.10
HB_SERVICE_IP=10.96.0.1
# kubelet, containerd and pods see these host paths as the node's own.
NODE_PATHS=(/opt/cni/bin /etc/cni/net.d /var/lib/kubelet /var/lib/containerd /var/lib/cni
  /run/containerd /run/hereabouts /var/log/pods /var/log/containers)
CGROUP_SUBSYSTEMS=(cpu cpuacct cpuset memory devices freezer blkio pids systemd)

k() { kubectl --kubeconfig "$HB_KUBECONFIG" "$@"; }
node_dir() { echo "$HB_NODES/$1"; }
node_cgroup() { echo "hb-$(hb_short "$HB_LOCAL/$1")"; }
# /opt/cni/bin -> opt-cni-bin: the node folder that stands for a host path.
host_path_dir() { local p=${1#/}; echo "${p//\//-}"; }

ensure_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  command -v nsenter >/dev/null || missing+=(util-linux)
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The pause image: Kubernetes' own build/pause/linux/pause.c from the pinned
# module source, compiled static, packed like ours. Cached by version.
pause_archive() {
  local tools=$1 version src out
  version=$(sed -n 's/^KUBERNETES_VERSION=//p' "$HB_ROOT/e2e/tools/versions.env")
  out=$(dirname "$tools")/pause-$version
  if [[ ! -f $out/pause.oci.tar ]]; then
    src=$(cd "$HB_ROOT/e2e/tools/kube" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
    [[ -f $src ]] || (cd "$HB_ROOT/e2e/tools/kube" && go mod download k8s.io/kubernetes)
    say "building the pause image from $src"
    rm -rf "$out" && mkdir -p "$out/rootfs"
    gcc -Os -Wall -Werror -static -DVERSION="v3.10-kubernetes-$version" -o "$out/rootfs/pause" "$src"
    SOURCE_DATE_EPOCH=0 "$HB_ROOT/e2e/oci.sh" "$out/rootfs" "$HB_PAUSE_IMAGE" "$out/pause.oci.tar" \
      '{"Entrypoint":["/pause"],"User":"65535:65535"}' >/dev/null
  fi
  echo "$out/pause.oci.tar"
}

# --- the control plane parts only real nodes need ---------------------------

control_plane_up() {
  local tools=$1
  # The workload controllers in a controller manager of their own, next to
  # the kit's (which runs the garbage collector, namespaces and service
  # accounts for every tier), so tiers without kubelets are untouched.
  # nodelifecycle lifts the not-ready taint a kubelet registers its node
  # with (and marks a node whose kubelet stopped NotReady); no
  # taint-eviction controller, so nothing is evicted.
  if ! pid_alive "$HB_STATE/kube-controller-manager-workloads.pid"; then
    say "starting kube-controller-manager-workloads (log: $HB_LOGS/kube-controller-manager-workloads.log)"
    setsid "$tools/kube-controller-manager" \
      --kubeconfig "$HB_KUBECONFIG" --authentication-kubeconfig "$HB_KUBECONFIG" \
      --authorization-kubeconfig "$HB_KUBECONFIG" \
      --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
      --controllers deployment,replicaset,daemonset,statefulset,root-ca-cert-publisher,nodelifecycle \
      --root-ca-file "$HB_PKI/ca.crt" --kube-api-qps 200 --kube-api-burst 400 --v=0 \
      >"$HB_LOGS/kube-controller-manager-workloads.log" 2>&1 </dev/null &
    echo $! >"$HB_STATE/kube-controller-manager-workloads.pid"
  fi
  if ! pid_alive "$HB_STATE/kube-scheduler.pid"; then
    # Pods go to nodes with a kubelet only: Node objects of simulated nodes
    # (no kubelet, nothing would ever start there) are never chosen.
    cat >"$HB_STATE/kube-scheduler.yaml" <<YAML
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: "$HB_KUBECONFIG", qps: 200, burst: 400}
leaderElection: {leaderElect: false}
profiles:
- schedulerName: default-scheduler
  pluginConfig:
  - name: NodeAffinity
    args:
      addedAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
          - matchExpressions: [{key: hereabouts.dev/kubelet, operator: Exists}]
YAML
    say "starting kube-scheduler (log: $HB_LOGS/kube-scheduler.log)"
    setsid "$tools/kube-scheduler" --config "$HB_STATE/kube-scheduler.yaml" \
      --bind-address 127.0.0.1 --secure-port 0 --v=0 \
      >"$HB_LOGS/kube-scheduler.log" 2>&1 </dev/null &
    echo $! >"$HB_STATE/kube-scheduler.pid"
  fi
}

control_plane_down() {
  local name
  for name in kube-scheduler kube-controller-manager-workloads; do
    if pid_alive "$HB_STATE/$name.pid"; then
      say "stopping $name"
      kill "$(cat "$HB_STATE/$name.pid")" 2>/dev/null || true
    fi
    rm -f "$HB_STATE/$name.pid"
  done
}

# --- a node -----------------------------------------------------------------

cgroups_make() {
  local cg=$1 s
  for s in "${CGROUP_SUBSYSTEMS[@]}"; do
    [[ -d /sys/fs/cgroup/$s ]] || continue
    mkdir -p "/sys/fs/cgroup/$s/$cg"
  done
  # A new cpuset starts empty; a child of an empty one can hold no task.
  local c=/sys/fs/cgroup/cpuset
  if [[ -d $c/$cg ]]; then
    [[ -n $(cat "$c/$cg/cpuset.cpus") ]] || cat "$c/cpuset.cpus" >"$c/$cg/cpuset.cpus"
    [[ -n $(cat "$c/$cg/cpuset.mems") ]] || cat "$c/cpuset.mems" >"$c/$cg/cpuset.mems"
  fi
  mkdir -p "/sys/fs/cgroup/pids/$cg/node"
}

# Every process of the node, from the pids hierarchy.
node_pids() {
  local cg=$1
  [[ -d /sys/fs/cgroup/pids/$cg ]] || return 0
  find "/sys/fs/cgroup/pids/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
}

cgroups_remove() {
  local cg=$1 s
  for s in "${CGROUP_SUBSYSTEMS[@]}"; do
    [[ -d /sys/fs/cgroup/$s/$cg ]] || continue
    find "/sys/fs/cgroup/$s/$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# Runs "$@" as a process of the node: its netns, its mount namespace
# (through the holder process), its cgroup.
in_node() {
  local name=$1 dir netns holder
  shift
  dir=$(node_dir "$name")
  netns=$("$HB_ROOT/e2e/node.sh" netns "$name")
  holder=$(cat "$dir/holder.pid")
  exec nsenter --net="/run/netns/$netns" --mount="/proc/$holder/ns/mnt" "$@"
}

spawn() { # name what log command...
  local name=$1 what=$2 log=$3 dir cg
  shift 3
  dir=$(node_dir "$name")
  cg=$(node_cgroup "$name")
  # The child joins the node's cgroup before it execs, so everything it
  # starts (shims, pods' parents) is the node's.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "/sys/fs/cgroup/pids/$cg/node/cgroup.procs" \
    "$HB_ROOT/e2e/real-node.sh" __in_node "$name" "$@" >"$log" 2>&1 </dev/null &
  echo $! >"$dir/$what.pid"
}

write_configs() {
  local name=$1 dir=$2 cg=$3 node_ip=$4 index=$5
  cat >"$dir/containerd.toml" <<TOML
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$HB_PAUSE_IMAGE"
  # No CAP_SYS_RESOURCE here: runc may not lower oom_score_adj below ours.
  restrict_oom_score_adj = true
  # Pod netns bind mounts under /run/containerd (the node's), not /run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
TOML
  cat >"$dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$cg
failSwapOn: false
# Never write a machine-wide sysctl (see the top of this script).
protectKernelDefaults: true
makeIPTablesUtilChains: false
address: $node_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
resolvConf: /etc/resolv.conf
syncFrequency: 10s
nodeStatusReportFrequency: 10s
# Images are imported, never pulled: do not collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# No eviction for disk: the node's disk is the machine's, shared with
# everything else on it (builds, other kits); a full disk there must not
# evict the tier's pods ("0%" turns a signal off).
evictionHard: {memory.available: 50Mi, nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
maxPods: 250
serializeImagePulls: false
YAML
  # The runtime's default network (each pod's eth0): a bridge local to the
  # node with host-local addresses, the default route via the node (where
  # the service IP answers), through Multus,
  # which adds the networks the pods' annotations ask for.
  cat >"$dir/etc-cni-net.d/00-multus.conf" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "multus-cni-network",
  "type": "multus",
  "kubeconfig": "$HB_KUBECONFIG",
  "cniDir": "/var/lib/cni/multus",
  "binDir": "/opt/cni/bin",
  "confDir": "/etc/cni/net.d",
  "logLevel": "error",
  "logToStderr": true,
  "delegates": [{
    "cniVersion": "1.0.0",
    "name": "cluster-default",
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.$index.0/24"}]],
             "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
CONF
}

next_index() {
  # The node's number: its addresses are 100.127.255.<n> on eth1 and
  # 10.244.<n>.0/24 for its pods' eth0.
  local n used
  used=$(cat "$HB_NODES"/*/index 2>/dev/null || true)
  for n in $(seq 1 250); do
    grep -qx "$n" <<<"$used" || { echo "$n"; return; }
  done
  die "no free node index"
}

add() {
  local name=$1 dir netns cg tools index node_ip pause archive
  shift
  dir=$(node_dir "$name")
  cg=$(node_cgroup "$name")
  ensure_packages
  tools=$(hb_tools_dir)
  [[ -x $tools/kubelet ]] || die "no kubelet in $tools"
  openssl x509 -in "$HB_PKI/apiserver.crt" -noout -ext subjectAltName 2>/dev/null | grep -q "IP Address:$HB_SERVICE_IP" ||
    die "the API server certificate does not name $HB_SERVICE_IP (made before real nodes existed): make cluster-down, then again"
  control_plane_up "$tools"
  "$HB_ROOT/e2e/node.sh" plumb "$name"
  netns=$("$HB_ROOT/e2e/node.sh" netns "$name")
  touch "$dir/real"
  [[ -f $dir/index ]] || next_index >"$dir/index"
  index=$(cat "$dir/index")
  node_ip=100.127.255.$index
  ip -n "$netns" addr replace "$node_ip/24" dev eth1
  ip -n "$netns" addr replace "$HB_SERVICE_IP/32" dev lo
  if ! pid_alive "$dir/service-proxy.pid"; then
    setsid ip netns exec "$netns" socat \
      "TCP-LISTEN:443,bind=$HB_SERVICE_IP,fork,reuseaddr,backlog=4096" "UNIX-CONNECT:$HB_STATE/api.sock" \
      >/dev/null 2>&1 </dev/null &
    echo $! >"$dir/service-proxy.pid"
  fi
  local p
  for p in "${NODE_PATHS[@]}"; do
    mkdir -p "$dir/$(host_path_dir "$p")"
    # The mount point on the machine: an empty folder if it was missing.
    mkdir -p "$p"
  done
  for p in "$HB_REFERENCE_PLUGINS"/*; do ln -sfn "$p" "$dir/opt-cni-bin/$(basename "$p")"; done
  ln -sfn "$tools/multus" "$dir/opt-cni-bin/multus"
  mkdir -p "$dir/sysctl"
  printf '1\n' >"$dir/sysctl/vm-overcommit_memory"
  printf '10\n' >"$dir/sysctl/kernel-panic"
  printf '1\n' >"$dir/sysctl/kernel-panic_on_oops"
  write_configs "$name" "$dir" "$cg" "$node_ip" "$index"
  cgroups_make "$cg"

  if ! pid_alive "$dir/holder.pid"; then
    # The holder keeps the node's mount namespace for containerd and
    # kubelet (which can then be restarted on their own).
    spawn "$name" holder "$dir/holder.log" __holder
    local deadline=$((SECONDS + 10))
    until [[ -f $dir/mounts-ready ]]; do
      ((SECONDS < deadline)) || die "node $name: mount namespace not ready ($dir/holder.log)"
      sleep 0.1
    done
  fi
  if ! pid_alive "$dir/containerd.pid"; then
    say "starting containerd on $name (log: $dir/containerd.log)"
    spawn "$name" containerd "$dir/containerd.log" in containerd --config "$dir/containerd.toml"
  fi
  local deadline=$((SECONDS + 30))
  until ctr_ version >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "node $name: containerd not ready ($dir/containerd.log)"
    sleep 0.2
  done
  pause=$(pause_archive "$tools")
  # Before the kubelet registers the node: a pod scheduled there must find
  # its image, not try to pull it.
  for archive in "$pause" "$@"; do
    ctr_ -n k8s.io images import "$archive" >/dev/null
  done
  kubelet_start "$name"
  say "waiting for node $name to be Ready"
  deadline=$((SECONDS + 120))
  until [[ $(k get node "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; do
    ((SECONDS < deadline)) || die "node $name not Ready after 120s ($dir/kubelet.log)"
    pid_alive "$dir/kubelet.pid" || die "kubelet on $name exited ($dir/kubelet.log)"
    sleep 0.5
  done
  say "node $name ready: kubelet + containerd (netns $netns, eth1 $node_ip on $HB_FABRIC, pods' eth0 10.244.$index.0/24)"
}

ctr_() { ctr --address "$dir/run-containerd/containerd.sock" "$@"; }

kubelet_start() {
  local name=$1 dir index
  dir=$(node_dir "$name")
  index=$(cat "$dir/index")
  pid_alive "$dir/kubelet.pid" && return
  say "starting kubelet on $name (log: $dir/kubelet.log)"
  spawn "$name" kubelet "$dir/kubelet.log" in "$(hb_tools_dir)/kubelet" \
    --config "$dir/kubelet.yaml" --kubeconfig "$HB_KUBECONFIG" \
    --hostname-override "$name" --node-ip "100.127.255.$index" \
    --node-labels "hereabouts.dev/kubelet=true" --v=1
}

kubelet_stop() {
  local name=$1 dir
  dir=$(node_dir "$name")
  if pid_alive "$dir/kubelet.pid"; then
    kill "$(cat "$dir/kubelet.pid")"
    local deadline=$((SECONDS + 20))
    while pid_alive "$dir/kubelet.pid" && ((SECONDS < deadline)); do sleep 0.1; done
  fi
  rm -f "$dir/kubelet.pid"
}

remove() {
  local name=$1 dir cg
  dir=$(node_dir "$name")
  cg=$(node_cgroup "$name")
  # Every process of the node: kubelet, containerd, its shims, the pods.
  local round pids
  for round in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(node_pids "$cg")
    [[ -n $pids ]] || break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    sleep 0.3
  done
  [[ -z $(node_pids "$cg") ]] || say "warning: node $name still has processes: $(node_pids "$cg" | tr '\n' ' ')"
  for what in service-proxy; do
    if pid_alive "$dir/$what.pid"; then kill -- "-$(cat "$dir/$what.pid")" 2>/dev/null || true; fi
  done
  cgroups_remove "$cg"
  # With the mount namespace gone, the node's folders hold plain files.
  HB_REAL_REMOVING=1 "$HB_ROOT/e2e/node.sh" remove "$name" "${2:-}"
  # Its pods can never finish terminating now: remove them, as an admin
  # does for a node that is gone.
  if [[ ${2:-} != --local-only && -f $HB_KUBECONFIG ]]; then
    k delete pods -A --field-selector "spec.nodeName=$name" --force --grace-period=0 >/dev/null 2>&1 || true
  fi
}

# Internal: the holder, inside the new mount namespace.
holder() {
  local name=$1 dir p
  dir=$(node_dir "$name")
  for p in "${NODE_PATHS[@]}"; do mount --bind "$dir/$(host_path_dir "$p")" "$p"; done
  mount --bind "$dir/sysctl/vm-overcommit_memory" /proc/sys/vm/overcommit_memory
  mount --bind "$dir/sysctl/kernel-panic" /proc/sys/kernel/panic
  mount --bind "$dir/sysctl/kernel-panic_on_oops" /proc/sys/kernel/panic_on_oops
  touch "$dir/mounts-ready"
  exec sleep infinity
}

pod_pid() { # node namespace pod
  local name=$1 ns=$2 pod=$3 dir id
  dir=$(node_dir "$name")
  for id in $(ctr_ -n k8s.io containers ls -q); do
    if ctr_ -n k8s.io containers info "$id" | jq -e --arg ns "$ns" --arg pod "$pod" \
      '.Labels["io.cri-containerd.kind"] == "sandbox" and .Labels["io.kubernetes.pod.namespace"] == $ns and .Labels["io.kubernetes.pod.name"] == $pod' >/dev/null; then
      ctr_ -n k8s.io tasks ls | awk -v id="$id" '$1 == id && $3 == "RUNNING" {print $2}'
      return
    fi
  done
  return 1
}

case ${1:-} in
  add) shift; add "${1:?node name}" "${@:2}" ;;
  remove) remove "${2:?node name}" "${3:-}" ;;
  kubelet)
    case ${3:-} in
      stop) kubelet_stop "${2:?node name}" ;;
      start) kubelet_start "${2:?node name}" ;;
      *) echo "usage: $0 kubelet NAME stop|start" >&2; exit 2 ;;
    esac ;;
  import) dir=$(node_dir "${2:?node name}"); ctr_ -n k8s.io images import "${3:?archive}" ;;
  pod-pid) dir=$(node_dir "${2:?node name}"); pod_pid "$2" "${3:?namespace}" "${4:?pod}" ;;
  dir) node_dir "${2:?node name}" ;;
  control-plane)
    case ${2:-} in
      up) control_plane_up "$(hb_tools_dir)" ;;
      down) control_plane_down ;;
      *) echo "usage: $0 control-plane up|down" >&2; exit 2 ;;
    esac ;;
  __in_node)
    name=${2:?}
    shift 2
    case $1 in
      __holder)
        netns=$("$HB_ROOT/e2e/node.sh" netns "$name")
        exec nsenter --net="/run/netns/$netns" unshare --mount --propagation slave \
          "$HB_ROOT/e2e/real-node.sh" __holder "$name" ;;
      in) shift; in_node "$name" "$@" ;;
    esac ;;
  __holder) holder "${2:?}" ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
