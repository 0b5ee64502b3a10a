#!/usr/bin/env bash
# mkimage.sh ROOTFS_DIR IMAGE_REF OUT_TAR [ENTRYPOINT_JSON] [CMD_JSON] [USER]
# Hand-builds a docker-archive ("docker save" format) tarball with one layer from a root-filesystem
# folder: no docker, no registry. Reproducible (sorted entries, mtime 0, numeric owner root).
# Import with: ctr -n k8s.io images import OUT_TAR
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,5p' "$0" | sed 's/^# //' >&2; exit 2; }
ROOTFS=$1; REF=$2; OUT=$3; EP=${4:-null}; CMD=${5:-null}; USER_JSON=${6:+\"$6\"}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$ROOTFS" -cf "$W/layer.tar" .
DIFF=$(sha256sum "$W/layer.tar" | cut -d' ' -f1)
mkdir "$W/$DIFF" && mv "$W/layer.tar" "$W/$DIFF/layer.tar"
cat > "$W/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",
 "config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":$EP,"Cmd":$CMD,"User":${USER_JSON:-\"\"},"WorkingDir":"/"},
 "rootfs":{"type":"layers","diff_ids":["sha256:$DIFF"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"deploy/local/mkimage.sh"}]}
JSON
CFG=$(sha256sum "$W/config.json" | cut -d' ' -f1)
mv "$W/config.json" "$W/$CFG.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$CFG" "$REF" "$DIFF" > "$W/manifest.json"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$W" -cf "$OUT.tmp" manifest.json "$CFG.json" "$DIFF"
mv "$OUT.tmp" "$OUT"
