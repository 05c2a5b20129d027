# syntax=docker/dockerfile:1
# Container images of the mesh, one target per image:
#
#   docker build --target istiod    -t ambient-mesh/istiod:0.1.0 .
#   docker build --target ztunnel   -t ambient-mesh/ztunnel:0.1.0 .
#   docker build --target cni       -t ambient-mesh/cni:0.1.0 .      (cni-agent + mesh-cni + iptables)
#   docker build --target waypoint  -t ambient-mesh/waypoint:0.1.0 .
#   docker build --target mesh-echo -t ambient-mesh/mesh-echo:0.1.0 . (the e2e test app)
#
# The builder compiles the whole workspace once (release profile); each final image is FROM
# scratch plus its binaries and exactly the shared libraries they need (glibc, libgcc_s, libm,
# the loader), assembled by e2e/cluster/rootfs.sh, the script e2e/cluster/images.sh uses to
# write the same images without Docker (`make images`). No base image from a registry ends up
# in the images; only the builder comes from one.
#
# The builder is Debian bookworm (glibc 2.36). mesh-cni is copied by the cni-agent onto the
# node and run there by the container runtime, so nodes need glibc >= 2.36 (kind's node image
# is bookworm-based).

ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS builder
# cmake: aws-lc-sys may use it. iptables: copied into the cni image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake iptables binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out/bin \
 && cp target/release/istiod target/release/ztunnel target/release/cni-agent \
       target/release/mesh-cni target/release/waypoint target/release/mesh-echo /out/bin/

FROM builder AS rootfs-istiod
RUN e2e/cluster/rootfs.sh istiod /out/bin /rootfs
FROM builder AS rootfs-ztunnel
RUN e2e/cluster/rootfs.sh ztunnel /out/bin /rootfs
FROM builder AS rootfs-cni
RUN e2e/cluster/rootfs.sh cni /out/bin /rootfs
FROM builder AS rootfs-waypoint
RUN e2e/cluster/rootfs.sh waypoint /out/bin /rootfs
FROM builder AS rootfs-mesh-echo
RUN e2e/cluster/rootfs.sh mesh-echo /out/bin /rootfs

FROM scratch AS istiod
COPY --from=rootfs-istiod /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/istiod"]

FROM scratch AS ztunnel
COPY --from=rootfs-ztunnel /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/ztunnel"]

FROM scratch AS cni
COPY --from=rootfs-cni /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/cni-agent"]

FROM scratch AS waypoint
COPY --from=rootfs-waypoint /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/waypoint"]

FROM scratch AS mesh-echo
COPY --from=rootfs-mesh-echo /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/mesh-echo"]
