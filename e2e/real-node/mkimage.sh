#!/usr/bin/env bash
# mkimage.sh REF ROOTFS OUT.tar [--entrypoint JSON] [--cmd JSON] [--user UID:GID]
# Packs directory ROOTFS as a single-layer image in the "docker save" archive
# format (manifest.json + config + layer.tar), which `ctr image import` reads.
# No registry, no tool beyond tar and sha256sum.
#   mkimage.sh rsigma.local/busybox:e2e /tmp/rootfs busybox.tar --cmd '["sh"]'
set -euo pipefail
REF=$1 ROOTFS=$2 OUT=$3
shift 3
ENTRYPOINT=null CMD=null USER=""
while (($#)); do
    case $1 in
    --entrypoint) ENTRYPOINT=$2; shift 2 ;;
    --cmd) CMD=$2; shift 2 ;;
    --user) USER=$2; shift 2 ;;
    *) echo "mkimage.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$ROOTFS" -cf "$T/layer.tar" .
LAYER=$(sha256sum "$T/layer.tar" | cut -d' ' -f1)
mkdir "$T/$LAYER"
mv "$T/layer.tar" "$T/$LAYER/layer.tar"
cat >"$T/config.json" <<EOF
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",
 "config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
           "Entrypoint":$ENTRYPOINT,"Cmd":$CMD,"User":"$USER","WorkingDir":"/"},
 "rootfs":{"type":"layers","diff_ids":["sha256:$LAYER"]},
 "history":[{"created":"1970-01-01T00:00:00Z","created_by":"mkimage.sh"}]}
EOF
CFG=$(sha256sum "$T/config.json" | cut -d' ' -f1)
mv "$T/config.json" "$T/$CFG.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$CFG" "$REF" "$LAYER" >"$T/manifest.json"
tar --numeric-owner --owner=0 --group=0 -C "$T" -cf "$OUT" manifest.json "$CFG.json" "$LAYER"
echo "mkimage.sh: $OUT ($REF, layer sha256:${LAYER:0:12}, $(du -h "$OUT" | cut -f1))"
