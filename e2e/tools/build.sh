#!/usr/bin/env bash
# Builds the local control plane and the CNI peers from the pinned Go modules
# into a cache folder keyed by the pins, and prints that folder. A second call
# with the same pins prints the folder at once.
#   HEREABOUTS_CACHE  where the cache lives (default ~/.cache/hereabouts)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${HEREABOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hereabouts}
key=$( (go env GOVERSION; cat "$here/versions.env" "$here"/*/go.mod "$here"/*/go.sum) | sha256sum | cut -c1-16)
out=$cache/bin/$key
if [[ -f $out/.complete ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
build() { # module-dir output package
  local start=$SECONDS
  echo "building $2 ($3)" >&2
  (cd "$here/$1" && CGO_ENABLED=0 go build -ldflags='-s -w' -o "$out/$2" "$3")
  echo "built $2 in $((SECONDS - start))s" >&2
}
build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kube kubelet k8s.io/kubernetes/cmd/kubelet
build kube etcd go.etcd.io/etcd/server/v3
build multus multus gopkg.in/k8snetworkplumbingwg/multus-cni.v4/cmd/multus
build whereabouts whereabouts github.com/k8snetworkplumbingwg/whereabouts/cmd
build helm helm helm.sh/helm/v3/cmd/helm
touch "$out/.complete"
echo "$out"
