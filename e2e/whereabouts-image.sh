#!/usr/bin/env bash
# The whereabouts image, built here the way `make image` builds ours (no
# container engine, e2e/oci.sh), for running whereabouts' own DaemonSet
# beside hereabouts on the kit's real nodes (bench/real-nodes.sh).
# whereabouts' Dockerfile puts its binaries and scripts at / on Alpine; this
# image holds the same files:
#   /whereabouts, /ip-control-loop   built from the pinned Go module (e2e/tools/build.sh)
#   /install-cni.sh, /lib.sh, /token-watcher.sh   the module's script/ folder
#   /bin/sh and the usual applets     Debian's busybox-static (Alpine's shell is busybox too)
#   whereabouts-image.sh     build; prints the archive's path
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HB_ROOT"
image=${HB_WHEREABOUTS_IMAGE:-localhost/hereabouts-kit/whereabouts:$(sed -n 's/^WHEREABOUTS_VERSION=//p' e2e/tools/versions.env)}
out=$HB_ROOT/target/image
archive=$out/whereabouts.oci.tar
tools=$(hb_tools_dir)
[[ -x $tools/ip-control-loop ]] || die "no ip-control-loop in $tools (e2e/tools/build.sh builds it)"
if [[ ! -x /bin/busybox ]] || ! /bin/busybox --list | grep -qx sh; then
  say "installing busybox-static (the image's shell)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq busybox-static >/dev/null
fi
src=$(cd e2e/tools/whereabouts && go list -m -f '{{.Dir}}' github.com/k8snetworkplumbingwg/whereabouts)
[[ -f $src/script/install-cni.sh ]] || (cd e2e/tools/whereabouts && go mod download github.com/k8snetworkplumbingwg/whereabouts)
rootfs=$out/whereabouts-rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc"
chmod 1777 "$rootfs/tmp"
for b in /bin/busybox "$tools/whereabouts" "$tools/ip-control-loop"; do
  if readelf -l "$b" | grep -q 'program interpreter'; then
    die "$b asks for a program interpreter (dynamically linked): it cannot run in this image"
  fi
done
install -m 0755 /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
done
install -m 0755 "$tools/whereabouts" "$rootfs/whereabouts"
install -m 0755 "$tools/ip-control-loop" "$rootfs/ip-control-loop"
for s in install-cni.sh lib.sh token-watcher.sh; do
  install -m 0755 "$src/script/$s" "$rootfs/$s"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
digest=$(SOURCE_DATE_EPOCH=0 "$HB_ROOT/e2e/oci.sh" "$rootfs" "$image" "$archive" \
  '{"Cmd":["/install-cni.sh"]}')
say "image $image ($digest): $archive, $(du -h --apparent-size "$archive" | cut -f1)"
echo "$archive"
