# syntax=docker/dockerfile:1
#
# One image with every hereabouts binary, each fully static (musl, no
# loader, no libc at run time), on distroless/static:
#   /usr/local/bin/hereabouts-controller   the Deployment's container
#   /usr/local/bin/hereabouts-install      the node DaemonSet's container
#   /usr/local/bin/hereabouts              the CNI plugin it installs (thin: it
#                                          asks the node agent)
#   /usr/local/bin/hereabouts-direct       installed beside it: the plugin's
#                                          work when no agent answers
#   /usr/local/bin/kubectl-hereabouts      the kubectl plugin (copy it out:
#       docker create --name hb IMAGE && docker cp hb:/usr/local/bin/kubectl-hereabouts . && docker rm hb)
#
#   docker build -t ghcr.io/hereabouts/hereabouts:0.1.0 .
#
# config/default names this image; set your registry there. Without an
# engine, `make image` (e2e/image.sh) builds the same binaries (glibc,
# crt-static) in the same places as an OCI archive.

FROM rust:1.95-alpine AS build
# ring (the TLS crypto) compiles C and assembly: the musl headers and a
# linker. binutils also gives readelf for the check below.
RUN apk add --no-cache musl-dev binutils
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin hereabouts \
        --bin hereabouts-direct \
        --bin hereabouts-controller \
        --bin hereabouts-install \
        --bin kubectl-hereabouts \
    && mkdir -p /out \
    && cp target/release/hereabouts \
          target/release/hereabouts-direct \
          target/release/hereabouts-controller \
          target/release/hereabouts-install \
          target/release/kubectl-hereabouts \
          /out/
# Rust's musl targets link statically by default; fail the build if a
# binary still asks for a program interpreter (a dynamic loader).
RUN for b in /out/*; do \
        if readelf -l "$b" | grep -q 'program interpreter'; then \
            echo "$b is dynamically linked" >&2; exit 1; \
        fi; \
    done

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="hereabouts" \
      org.opencontainers.image.description="Cluster-wide IPAM for Kubernetes secondary networks (Multus), a drop-in successor to whereabouts" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
# Non-root by default; the node DaemonSet runs its container as root to
# write the host's CNI directories.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/hereabouts-controller"]
