#!/usr/bin/env bash
# Builds the bench's extra peers (versions.env here) from their pinned Go
# modules into a cache folder keyed by this folder's pins and this script,
# and prints that folder; a second call with the same pins prints it at
# once. The control plane's own build (../build.sh) and its key are not
# touched: a new peer rebuilds only the peer.
#   HEREABOUTS_CACHE  where the cache lives (default ~/.cache/hereabouts)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${HEREABOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hereabouts}
# shellcheck source=/dev/null
source "$here/versions.env"
wb=whereabouts-$WHEREABOUTS_PEER_VERSION
key=$( (go env GOVERSION; cat "$here/build.sh" "$here/versions.env" "$here/$wb/go.mod" "$here/$wb/go.sum") |
  sha256sum | cut -c1-16)
out=$cache/peers/$key
if [[ -f $out/.complete ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
build() { # module-dir output package
  local start=$SECONDS
  echo "building $2 ($3)" >&2
  (cd "$here/$1" && CGO_ENABLED=0 go build -ldflags="-s -w" -o "$out/$2" "$3")
  echo "built $2 in $((SECONDS - start))s" >&2
}
build "$wb" "$wb" github.com/k8snetworkplumbingwg/whereabouts/cmd
build "$wb" "$wb-node-slice-controller" github.com/k8snetworkplumbingwg/whereabouts/cmd/nodeslicecontroller
# The NodeSlicePool CRD of the same release, for the harness to apply.
mod=$(cd "$here/$wb" && go list -m -f '{{.Dir}}' github.com/k8snetworkplumbingwg/whereabouts)
cp "$mod/doc/crds/whereabouts.cni.cncf.io_nodeslicepools.yaml" "$out/$wb-nodeslicepools-crd.yaml"
chmod u+w "$out/$wb-nodeslicepools-crd.yaml"
touch "$out/.complete"
echo "$out"
