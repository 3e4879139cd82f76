# Shared settings of the local control plane kit; sourced, not run.
# Everything lives under $HB_LOCAL (default <repo>/.local) so `cluster-down`
# can remove it whole.
HB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HB_LOCAL=${HB_LOCAL:-$HB_ROOT/.local}
HB_STATE=$HB_LOCAL/cluster
HB_PKI=$HB_STATE/pki
HB_LOGS=$HB_STATE/logs
HB_KUBECONFIG=$HB_LOCAL/kubeconfig
HB_CNI_BIN=$HB_LOCAL/cni/bin
HB_NODES=$HB_LOCAL/nodes
HB_API_PORT=${HB_API_PORT:-16443}
HB_ETCD_PORT=${HB_ETCD_PORT:-23790}
HB_ETCD_PEER_PORT=${HB_ETCD_PEER_PORT:-23800}
HB_FABRIC=hb-fabric
# The simulated nodes' shared segment lives in a network namespace of its
# own, so nothing on it can ever reach the host's own stack or network.
# Named after the kit's folder, so two checkouts' kits (on their own
# HB_API_PORT and HB_ETCD_PORT) can run on one machine side by side.
HB_FABRIC_NETNS=${HB_FABRIC_NETNS:-hb-fabric-$(printf '%s' "$HB_LOCAL" | sha256sum | cut -c1-6)}
HB_REFERENCE_PLUGINS=${HB_REFERENCE_PLUGINS:-/usr/lib/cni}

say() { printf '[kit] %s\n' "$*" >&2; }
die() { printf '[kit] error: %s\n' "$*" >&2; exit 1; }

# The folder holding the Go-built binaries (kube-apiserver, etcd, multus, ...),
# built on first use and cached by version.
hb_tools_dir() { "$HB_ROOT/e2e/tools/build.sh"; }

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# A Linux interface name is at most 15 bytes: derive short, stable names.
hb_short() { printf '%s' "$1" | sha256sum | cut -c1-8; }
