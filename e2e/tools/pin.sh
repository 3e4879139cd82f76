#!/usr/bin/env bash
# Regenerates the go.mod/go.sum of the tool modules from versions.env.
# k8s.io/kubernetes points its staging modules at ./staging through `replace`;
# a module that requires it must map each of them to the published v0.X
# release, so the list is read from Kubernetes' own go.mod, never typed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "$here/versions.env"
# whereabouts tags are not in the public checksum database.
export GONOSUMDB=github.com/k8snetworkplumbingwg/whereabouts
export GOFLAGS=-mod=mod

staging_version="v0.${KUBERNETES_VERSION#v1.}"

pin_kube() {
  local dir=$here/kube
  cd "$dir"
  rm -f go.mod go.sum
  go mod init hereabouts.dev/e2e/tools/kube >/dev/null 2>&1
  go mod edit -go=1.24.0
  local kmod
  kmod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  sed -n '/^replace (/,/^)/p' "$kmod" | awk '$2 == "=>" {print $1}' | while read -r m; do
    go mod edit -replace "$m=$m@$staging_version"
  done
  go mod edit -require "k8s.io/kubernetes@$KUBERNETES_VERSION" -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION" \
    "k8s.io/kubernetes/cmd/kube-scheduler@$KUBERNETES_VERSION" \
    "k8s.io/kubernetes/cmd/kubelet@$KUBERNETES_VERSION" \
    "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
}

pin_simple() { # dir module version tool-package...
  local dir=$here/$1 module=$2 version=$3 tool
  shift 3
  cd "$dir"
  rm -f go.mod go.sum
  go mod init "hereabouts.dev/e2e/tools/$(basename "$dir")" >/dev/null 2>&1
  for tool in "$@"; do go get -tool "$tool@$version"; done
  go mod tidy
}

pin_kube
pin_simple multus gopkg.in/k8snetworkplumbingwg/multus-cni.v4 "$MULTUS_VERSION" gopkg.in/k8snetworkplumbingwg/multus-cni.v4/cmd/multus
# The CNI plugin and the ip-control-loop its DaemonSet runs (bench/real-nodes.sh).
pin_simple whereabouts github.com/k8snetworkplumbingwg/whereabouts "$WHEREABOUTS_VERSION" \
  github.com/k8snetworkplumbingwg/whereabouts/cmd github.com/k8snetworkplumbingwg/whereabouts/cmd/controlloop
pin_simple helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
echo "pinned: kubernetes $KUBERNETES_VERSION (staging $staging_version), etcd $ETCD_VERSION, multus $MULTUS_VERSION, whereabouts $WHEREABOUTS_VERSION, helm $HELM_VERSION"
