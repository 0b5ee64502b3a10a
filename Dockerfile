# The HAPair image: /hapair (operator and member agent; also `hapair crd`, `hapair record show`),
# statically linked, running as the non-root user 65532, nothing else in it.
#
#   docker build -t hapair:0.1.0 .        (or: podman build -t hapair:0.1.0 .)
#   helm install hapair charts/hapair --set image.repository=hapair --set image.tag=0.1.0
#
# The local cluster (deploy/local/, no docker, no registry) gets the same image from
# deploy/local/images.sh: the same static build and the same layout (/hapair, /etc/passwd with user
# 65532, /tmp), packed by deploy/local/mkimage.sh and imported into containerd.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Static against glibc: kube uses rustls + ring, so no OpenSSL; the binary runs FROM scratch.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --bins --target "$target" --target-dir /build \
 && mkdir -p /rootfs/etc /rootfs/tmp \
 && chmod 1777 /rootfs/tmp \
 && find "/build/$target/release" -maxdepth 1 -type f -perm -u+x -exec install -m 0755 {} /rootfs/ \; \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group \
 && ! ldd /rootfs/hapair 2>/dev/null | grep -q '=>'

FROM scratch
COPY --from=build /rootfs /
USER 65532:65532
ENTRYPOINT ["/hapair"]
