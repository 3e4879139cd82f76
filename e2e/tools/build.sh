#!/usr/bin/env bash
# Builds the local control plane and the CNI peers from the pinned Go modules
# into a cache folder keyed by the pins, and prints that folder. A second call
# with the same pins prints the folder at once.
#   HEREABOUTS_CACHE  where the cache lives (default ~/.cache/hereabouts)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${HEREABOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hereabouts}
# This script is part of the key: a change in how the tools are built
# (flags, another binary) rebuilds them.
key=$( (go env GOVERSION; cat "$here/build.sh" "$here/versions.env" "$here"/*/go.mod "$here"/*/go.sum) | sha256sum | cut -c1-16)
out=$cache/bin/$key
if [[ -f $out/.complete ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
# shellcheck source=/dev/null
source "$here/versions.env"
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
build() { # module-dir output package [ldflags...]
  local start=$SECONDS
  echo "building $2 ($3)" >&2
  (cd "$here/$1" && CGO_ENABLED=0 go build -ldflags="-s -w ${*:4}" -o "$out/$2" "$3")
  echo "built $2 in $((SECONDS - start))s" >&2
}
# What Kubernetes' own build stamps (hack/lib/version.sh): without it the
# binaries report v0.0.0-master (kubectl get nodes, /version).
kube_version=()
minor=${KUBERNETES_VERSION#v1.}
minor=${minor%%.*}
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_version+=("-X $pkg.gitVersion=$KUBERNETES_VERSION" "-X $pkg.gitMajor=1" "-X $pkg.gitMinor=$minor"
    "-X $pkg.gitTreeState=clean")
done
build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "${kube_version[@]}"
build kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "${kube_version[@]}"
build kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "${kube_version[@]}"
build kube kubelet k8s.io/kubernetes/cmd/kubelet "${kube_version[@]}"
build kube etcd go.etcd.io/etcd/server/v3
build multus multus gopkg.in/k8snetworkplumbingwg/multus-cni.v4/cmd/multus
build whereabouts whereabouts github.com/k8snetworkplumbingwg/whereabouts/cmd
# What whereabouts' DaemonSet runs beside its installer (bench/real-nodes.sh).
build whereabouts ip-control-loop github.com/k8snetworkplumbingwg/whereabouts/cmd/controlloop
build helm helm helm.sh/helm/v3/cmd/helm
touch "$out/.complete"
echo "$out"
