#!/usr/bin/env bash
# Packs a directory into a single-layer OCI image archive (an OCI image
# layout in a tar, what `ctr images import` and `skopeo copy oci-archive:`
# read), with tar, gzip, sha256sum and jq: no container engine.
#   oci.sh ROOTFS NAME:TAG OUT.tar CONFIG_JSON
# CONFIG_JSON is the image's runtime `config` object, e.g.
#   '{"Entrypoint":["/pause"],"User":"65535:65535"}'
# The archive is reproducible: files owned by 0:0 (the config names the user
# the process runs as), timestamps SOURCE_DATE_EPOCH (default 0), entries
# sorted by name.
set -euo pipefail
rootfs=${1:?rootfs dir}
ref=${2:?image reference NAME:TAG}
out=${3:?output archive}
runtime_config=${4:-'{}'}
epoch=${SOURCE_DATE_EPOCH:-0}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
tag=${ref##*:}
[[ $tag != "$ref" && $tag != */* ]] || { echo "oci.sh: $ref has no :TAG" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/layout/blobs/sha256"
blob() { # file -> prints digest, moves it into the layout
  local d
  d=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/layout/blobs/sha256/$d"
  echo "$d"
}

# The layer: modes as in ROOTFS, every entry owned by root.
tar --create --file "$work/layer.tar" --directory "$rootfs" --sort=name \
  --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 "$work/layer.tar"
layer_size=$(stat -c %s "$work/layer.tar.gz")
layer=$(blob "$work/layer.tar.gz")

jq -n --arg created "$created" --arg diff "sha256:$diff_id" --argjson config "$runtime_config" '{
  created: $created, architecture: "amd64", os: "linux",
  config: ({Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]} + $config),
  rootfs: {type: "layers", diff_ids: [$diff]},
  history: [{created: $created, created_by: "e2e/oci.sh"}]
}' >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(blob "$work/config.json")

jq -n --arg config "sha256:$config" --argjson config_size "$config_size" \
  --arg layer "sha256:$layer" --argjson layer_size "$layer_size" '{
  schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
  config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $config, size: $config_size},
  layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $layer, size: $layer_size}]
}' >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(blob "$work/manifest.json")

# ref.name is the tag (OCI layout convention); io.containerd.image.name is
# the full name `ctr images import` gives the image.
jq -n --arg manifest "sha256:$manifest" --argjson size "$manifest_size" --arg ref "$ref" --arg tag "$tag" '{
  schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
  manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $manifest, size: $size,
    platform: {architecture: "amd64", os: "linux"},
    annotations: {"org.opencontainers.image.ref.name": $tag, "io.containerd.image.name": $ref}}]
}' >"$work/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

mkdir -p "$(dirname "$out")"
tar --create --file "$out.tmp" --directory "$work/layout" --sort=name --mtime="@$epoch" \
  --owner=0 --group=0 --numeric-owner oci-layout index.json blobs
mv "$out.tmp" "$out"
echo "sha256:$manifest"
