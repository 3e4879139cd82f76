#!/usr/bin/env bash
# `make image`: the hereabouts image without a container engine. Builds the
# five binaries fully static (glibc, `-C target-feature=+crt-static`: the
# musl target is not installable here), refuses any binary that asks for a
# program interpreter, and packs them as an OCI image archive named as
# manifests/install.yaml names it, in the Dockerfile's layout:
#   /usr/local/bin/{hereabouts,hereabouts-direct,hereabouts-controller,hereabouts-install,kubectl-hereabouts}
#   image.sh            build; prints the archive's path
#   HB_IMAGE=REG/NAME:TAG image.sh   another name (default: install.yaml's)
#   HB_IMAGE_PROFILE=image-test image.sh   the test tiers' cheaper build
#                       (Cargo.toml's [profile.image-test]; default release)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$HB_ROOT"
bins=(hereabouts hereabouts-direct hereabouts-controller hereabouts-install kubectl-hereabouts)
image=${HB_IMAGE:-$(awk '$1 == "image:" {print $2; exit}' manifests/install.yaml)}
[[ -n $image ]] || die "no image: line in manifests/install.yaml"
target=x86_64-unknown-linux-gnu
profile=${HB_IMAGE_PROFILE:-release}
[[ $profile =~ ^[a-z][a-z0-9-]*$ ]] || die "HB_IMAGE_PROFILE: $profile is no cargo profile name"
out=$HB_ROOT/target/image
archive=$out/hereabouts.oci.tar

# Run from a test (cargo test sets CARGO_PKG_*, CARGO_MANIFEST_*,
# CARGO_BIN_EXE_*, LD_LIBRARY_PATH for its binaries), the build must see
# the environment a shell gives it, or cargo takes it for a different one
# and rebuilds every crate.
while read -r v; do
  case $v in
    CARGO_HOME | CARGO_TARGET_DIR | CARGO_TERM_COLOR | CARGO_BUILD_JOBS) ;;
    CARGO | CARGO_* | LD_LIBRARY_PATH | RUST_RECURSION_COUNT) unset "$v" ;;
  esac
done < <(compgen -e)
say "building ${bins[*]} ($profile, static, $target)"
# --target keeps these apart from the host build in target/release (build
# scripts and proc macros stay dynamic: RUSTFLAGS with --target only
# reaches the target's crates).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --profile "$profile" --locked --target "$target" "${bins[@]/#/--bin=}"
command -v readelf >/dev/null || die "readelf (binutils) is needed to check the binaries"
rootfs=$out/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
for b in "${bins[@]}"; do
  if readelf -l "target/$target/$profile/$b" | grep -q 'program interpreter'; then
    die "target/$target/$profile/$b asks for a program interpreter (dynamically linked): refusing to pack it"
  fi
  install -m 0755 "target/$target/$profile/$b" "$rootfs/usr/local/bin/$b"
done
# What distroless/static gives the Dockerfile's image: users and a /tmp.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
digest=$("$HB_ROOT/e2e/oci.sh" "$rootfs" "$image" "$archive" \
  '{"Entrypoint":["/usr/local/bin/hereabouts-controller"],"User":"65532:65532","Labels":{"org.opencontainers.image.title":"hereabouts","org.opencontainers.image.licenses":"Apache-2.0"}}')
say "image $image ($digest): $archive, $(du -h --apparent-size "$archive" | cut -f1)"
echo "$archive"
