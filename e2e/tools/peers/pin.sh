#!/usr/bin/env bash
# Regenerates the go.mod/go.sum of the peer modules from versions.env.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "$here/versions.env"
# whereabouts tags are not in the public checksum database.
export GONOSUMDB=github.com/k8snetworkplumbingwg/whereabouts
export GOFLAGS=-mod=mod
module=github.com/k8snetworkplumbingwg/whereabouts
dir=$here/whereabouts-$WHEREABOUTS_PEER_VERSION
rm -rf "$here"/whereabouts-v*
mkdir -p "$dir"
cd "$dir"
go mod init "hereabouts.dev/e2e/tools/peers/whereabouts-$WHEREABOUTS_PEER_VERSION" >/dev/null 2>&1
# The CNI plugin and the node-slice controller its fast mode
# (`node_slice_size`) needs.
go get -tool "$module/cmd@$WHEREABOUTS_PEER_VERSION" "$module/cmd/nodeslicecontroller@$WHEREABOUTS_PEER_VERSION"
go mod tidy
echo "pinned: whereabouts $WHEREABOUTS_PEER_VERSION in $dir"
