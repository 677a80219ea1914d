#!/usr/bin/env bash
# images.sh DIR [TAG]: makes the container images of the daemon (`rsigma`)
# and the operator (`rsigma-operator`) from the release binaries in
# target/release (build them first: cargo build --release -p rsigma-cli -p
# rsigma-operator), and of a NATS server (`nats`, for the scenario's NATS
# step) from the host's nats-server (Debian package nats-server), and
# imports them into the containerd of the real node started by start.sh DIR.
#
# Each image is one layer: the stripped binary, the shared libraries `ldd`
# lists (with the dynamic loader) at their paths, /etc/passwd and /etc/group
# naming the non-root user 65532, and a world-writable /tmp. The image
# config runs as 65532:65532. Images are named rsigma.local/NAME:TAG (TAG
# defaults to e2e); pods use them with imagePullPolicy: Never.
# Prints one line per image: name, stripped binary size, image size.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
log() { echo "images.sh: $*" >&2; }
[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 DIR [TAG]" >&2; exit 2; }
DIR=$(cd "$1" && pwd -P)
TAG=${2:-e2e}
[[ -x $DIR/in ]] || { log "$DIR is not a running real node (no $DIR/in): run start.sh $DIR"; exit 1; }
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rsigma-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# image NAME BINARY: builds and imports rsigma.local/NAME:TAG running BINARY
# (a path) as /usr/local/bin/BASENAME.
image() {
    local name=$1 bin=$2 exe rootfs=$WORK/$1 lib
    exe=$(basename "$bin")
    [[ -x $bin ]] || { log "missing $bin: cargo build --release first"; exit 3; }
    mkdir -p "$rootfs"/{usr/local/bin,etc,tmp}
    chmod 1777 "$rootfs/tmp"
    strip --strip-all -o "$rootfs/usr/local/bin/$exe" "$bin"
    # Every resolved library, plus the loader (the line without "=>").
    for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
    "$HERE/mkimage.sh" "rsigma.local/$name:$TAG" "$rootfs" "$WORK/$name.tar" \
        --entrypoint "[\"/usr/local/bin/$exe\"]" --user 65532:65532 >&2
    "$DIR/in" ctr -n k8s.io image import "$WORK/$name.tar" >&2
    echo "rsigma.local/$name:$TAG binary $(du -h --apparent-size "$rootfs/usr/local/bin/$exe" | cut -f1) (unstripped $(du -h --apparent-size "$bin" | cut -f1)) image $(du -h --apparent-size "$WORK/$name.tar" | cut -f1)"
}

image rsigma "$TARGET/rsigma"
image rsigma-operator "$TARGET/rsigma-operator"
NATS_SERVER=$(command -v nats-server || true)
[[ -n $NATS_SERVER ]] || { log "no nats-server on this host (apt-get install nats-server)"; exit 3; }
image nats "$NATS_SERVER"
