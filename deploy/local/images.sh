#!/usr/bin/env bash
# Builds the project's container image localhost/hapair:dev without docker and imports it into the
# local cluster's containerd (deploy/local/cluster.sh up must have run).
#
#   images.sh              build + import
#   images.sh --no-import  build the tarball only (target/image/hapair-dev.tar)
#
# Every binary target of the package (src/main.rs, src/bin/*) is built statically linked against glibc
# (-C target-feature=+crt-static; kube uses rustls + ring, so no OpenSSL) and copied to /<name> in a
# minimal rootfs: /etc/passwd with the non-root user 65532 (the image's default user), /tmp.
# Entrypoint: /hapair. The static build has its own target dir (target/image) so it does not thrash
# the debug build cache.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
IMAGE="${HAPAIR_IMAGE:-localhost/hapair:dev}"
TARGET=x86_64-unknown-linux-gnu
TD="$ROOT/target/image"
log() { printf '[images.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
T0=${EPOCHREALTIME/,/.}

log "cargo build --release (static) of every bin target"
mkdir -p "$TD"
# The JSON messages name every built executable: exactly the package's bin targets.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --manifest-path "$ROOT/Cargo.toml" --release --bins --target "$TARGET" \
  --target-dir "$TD" --message-format=json-render-diagnostics > "$TD/build.json"
mapfile -t BINS < <(grep -o '"executable":"[^"]*"' "$TD/build.json" | cut -d'"' -f4 | sort -u)
[ ${#BINS[@]} -gt 0 ] || { echo "no binaries built" >&2; exit 1; }

RFS="$TD/rootfs"; rm -rf "$RFS"; mkdir -p "$RFS"/{etc,tmp,home/nonroot}
chmod 1777 "$RFS/tmp"; chown 65532:65532 "$RFS/home/nonroot"
for b in "${BINS[@]}"; do
  if ldd "$b" 2>&1 | grep -q '=>'; then echo "$b is dynamically linked: $(ldd "$b" | xargs)" >&2; exit 1; fi
  install -m 0755 "$b" "$RFS/$(basename "$b")"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$RFS/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$RFS/etc/group"
"$ROOT/deploy/local/mkimage.sh" "$RFS" "$IMAGE" "$TD/hapair-dev.tar" '["/hapair"]' null 65532
log "built $IMAGE with $(printf '/%s ' "${BINS[@]##*/}")($(du -h "$TD/hapair-dev.tar" | cut -f1))"
if [ "${1:-}" != --no-import ]; then
  ctr -n k8s.io images import "$TD/hapair-dev.tar" >/dev/null
  log "imported $IMAGE into containerd (k8s.io)"
fi
awk -v a="$T0" -v b="${EPOCHREALTIME/,/.}" 'BEGIN{printf "[images.sh] done in %.1fs\n", b-a}' >&2
