#!/usr/bin/env bash
# build.sh [COMMAND...]: builds Kubernetes v1.20.2 commands from Debian's
# `kubernetes` source package and caches each as
# ${RSIGMA_CACHE:-~/.cache/rsigma}/COMMAND-v1.20.2. COMMAND is one of
# kube-apiserver (the default), kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy, or pause (the pod sandbox program, a static C
# binary from build/pause/linux/pause.c). All the commands that are missing
# are built from one source tree and one Go cache (e2e/real-node/build.sh asks
# for all of them at once: the tree and the generated code are shared).
#
# Idempotent: a cached binary that answers --version with v1.20.2 (pause:
# runs) and carries the current recipe stamp (common.sh) is not rebuilt; with
# every command cached it does nothing but make sure etcd is installed.
# Otherwise it installs the packages that are missing
# (etcd-server; golang-go, rsync, make, gcc, dpkg-dev and Debian's reflect2 and
# json-iterator Go sources), fetches the source with `apt-get source
# --download-only` (adding a temporary deb-src entry), swaps in reflect2 1.0.2
# (1.0.1 crashes under Go >= 1.18), builds in GOPATH mode with Debian's Go,
# copies the binaries into the cache and removes the temporary tree.
# See docs/testing.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

STEP=init
LOG=$RSIGMA_CACHE/kube-build.log
COMMANDS=("$@")
((${#COMMANDS[@]} > 0)) || COMMANDS=(kube-apiserver)
for cmd in "${COMMANDS[@]}"; do
    case $cmd in
    kube-apiserver | kubelet | kube-controller-manager | kube-scheduler | kube-proxy | pause) ;;
    *)
        echo "build.sh: unknown command '$cmd' (kube-apiserver, kubelet, kube-controller-manager, kube-scheduler, kube-proxy, pause)" >&2
        exit 2
        ;;
    esac
done
WORK=
DEBSRC_FILE=

on_error() {
    local rc=$?
    echo "build.sh: FAILED (exit $rc) during step: $STEP" >&2
    if [[ -s $LOG ]]; then
        echo "build.sh: last lines of $LOG:" >&2
        tail -n 40 "$LOG" >&2 || true
    fi
}
cleanup() {
    if [[ -n $DEBSRC_FILE && -f $DEBSRC_FILE ]]; then rm -f "$DEBSRC_FILE"; fi
    if [[ -n $WORK && -d $WORK ]]; then rm -rf "$WORK"; fi
}
trap on_error ERR
trap cleanup EXIT

T0=$SECONDS
TSTEP=$SECONDS
step() {
    if [[ $STEP != init ]]; then
        echo "build.sh: step '$STEP' took $((SECONDS - TSTEP)) s"
    fi
    STEP=$1
    TSTEP=$SECONDS
    echo "build.sh: == $STEP"
}

APT_UPDATED=0
apt_update_once() {
    if ((APT_UPDATED == 0)); then
        cp_apt_get update -q
        APT_UPDATED=1
    fi
}
# Installs the given Debian packages that are not installed yet.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg -s "$p" >/dev/null 2>&1; then missing+=("$p"); fi
    done
    if ((${#missing[@]} > 0)); then
        echo "build.sh: installing ${missing[*]}"
        apt_update_once
        cp_apt_get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

mkdir -p "$RSIGMA_CACHE"
# One build at a time per cache directory.
exec 9>"$RSIGMA_CACHE/.kube-build.lock"
flock 9

step "runtime packages (etcd-server)"
ensure_packages etcd-server
if [[ ! -x $ETCD ]]; then
    ETCD=$(command -v etcd || true)
    [[ -n $ETCD ]] || { echo "build.sh: etcd-server is installed but no etcd binary was found" >&2; false; }
fi

MISSING=()
for cmd in "${COMMANDS[@]}"; do
    if kube_bin_ok "$cmd"; then
        echo "build.sh: $(kube_bin "$cmd") (recipe $KUBE_RECIPE) is present"
    else
        MISSING+=("$cmd")
    fi
done
if ((${#MISSING[@]} == 0)); then
    echo "build.sh: nothing to build"
    exit 0
fi
echo "build.sh: building ${MISSING[*]}"

step "build packages (golang-go rsync make gcc dpkg-dev reflect2 json-iterator)"
: >"$LOG"
ensure_packages golang-go rsync make gcc libc6-dev dpkg-dev \
    golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
export PATH=/usr/lib/go/bin:$PATH
go version

step "deb-src entry and apt-get update"
if ! apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; then
    DEBSRC_FILE=/etc/apt/sources.list.d/rsigma-deb-src.sources
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        sed 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$DEBSRC_FILE.tmp"
    elif [[ -f /etc/apt/sources.list ]]; then
        DEBSRC_FILE=/etc/apt/sources.list.d/rsigma-deb-src.list
        sed -n 's/^deb \(.*\)$/deb-src \1/p' /etc/apt/sources.list >"$DEBSRC_FILE.tmp"
    else
        echo "build.sh: found neither /etc/apt/sources.list.d/debian.sources nor /etc/apt/sources.list to derive a deb-src entry from" >&2
        false
    fi
    if [[ $(id -u) -ne 0 ]]; then
        sudo mv "$DEBSRC_FILE.tmp" "$DEBSRC_FILE"
    else
        mv "$DEBSRC_FILE.tmp" "$DEBSRC_FILE"
    fi
    cp_apt_get update -q
    APT_UPDATED=1
fi

step "apt-get source --download-only kubernetes"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rsigma-kube-build.XXXXXX")
chmod 755 "$WORK"
mkdir "$WORK/dl"
# Let apt's download sandbox user write there (avoids the "unsandboxed" warning).
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$WORK/dl"; fi
(cd "$WORK/dl" && apt-get source -q --download-only kubernetes)
ls -l "$WORK/dl"

step "unpack (dpkg-source -x)"
DSC=$(ls "$WORK"/dl/kubernetes_*.dsc)
dpkg-source --no-check -x "$DSC" "$WORK/src" >>"$LOG" 2>&1
mkdir -p "$WORK/gopath/src/k8s.io"
ln -s "$WORK/src" "$WORK/gopath/src/k8s.io/kubernetes"
[[ -f $WORK/src/cmd/kube-apiserver/apiserver.go && -f $WORK/src/build/pause/linux/pause.c ]] || {
    echo "build.sh: the unpacked source has no cmd/kube-apiserver or build/pause" >&2
    false
}

step "replace vendored reflect2 1.0.1 / json-iterator 1.1.10 with Debian's 1.0.2 / 1.1.12"
# Kubernetes 1.20 vendors modern-go/reflect2 v1.0.1, whose map iteration
# crashes under Go >= 1.18 (SIGSEGV in reflect2.UnsafeIterate as soon as the
# apiserver encodes a map with json-iterator, e.g. on every custom resource
# create). reflect2 v1.0.2 fixes it and json-iterator v1.1.12 is the release
# that goes with it; Debian ships both as Go source packages.
replace_vendored() {
    local from=$1 to=$WORK/src/vendor/$2 f
    [[ -d $from && -d $to ]] || { echo "build.sh: missing $from or $to" >&2; return 1; }
    find "$to" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
    for f in "$from"/*.go "$from"/*.s; do
        [[ -e $f && $f != *_test.go ]] || continue
        cp "$f" "$to/"
    done
}
replace_vendored /usr/share/gocode/src/github.com/modern-go/reflect2 github.com/modern-go/reflect2
replace_vendored /usr/share/gocode/src/github.com/json-iterator/go github.com/json-iterator/go

export GOPATH=$WORK/gopath
export GO111MODULE=off
export GOCACHE=$WORK/gocache
export GOFLAGS=
export CGO_ENABLED=0
export KUBE_GIT_VERSION=$KUBE_VERSION
export KUBE_GIT_TREE_STATE=clean
KDIR=$GOPATH/src/k8s.io/kubernetes

GO_COMMANDS=()
for cmd in "${MISSING[@]}"; do
    [[ $cmd == pause ]] || GO_COMMANDS+=("$cmd")
done

if ((${#GO_COMMANDS[@]} > 0)); then
    step "make generated_files (log: $LOG)"
    (cd "$KDIR" && make generated_files) >>"$LOG" 2>&1
fi

# GOPATH mode: the vendored packages' import paths are under k8s.io/kubernetes/vendor/.
# Both version packages are set, as hack/lib/version.sh does: --version reads
# component-base's, the /version endpoint client-go's.
LDFLAGS="-s -w"
for PKG in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
    k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    LDFLAGS+=" -X $PKG.gitVersion=$KUBE_VERSION -X $PKG.gitMajor=1 -X $PKG.gitMinor=20"
    LDFLAGS+=" -X $PKG.gitTreeState=clean -X $PKG.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done

# install_bin CMD FILE: checks FILE and moves it into the cache with the recipe stamp.
install_bin() {
    local target
    target=$(kube_bin "$1")
    cp "$2" "$target.tmp.$$"
    mv "$target.tmp.$$" "$target"
    echo "$KUBE_RECIPE" >"$target.recipe"
    kube_bin_ok "$1" || { echo "build.sh: $target does not check out after the build" >&2; false; }
    echo "build.sh: built $target ($(du -h "$target" | cut -f1))"
}

for cmd in "${MISSING[@]}"; do
    if [[ $cmd == pause ]]; then
        step "gcc -static build/pause/linux/pause.c"
        gcc -Os -static -Wall -Werror -DVERSION=v3.4.1-rsigma \
            -o "$WORK/pause" "$WORK/src/build/pause/linux/pause.c" >>"$LOG" 2>&1
        strip "$WORK/pause"
    else
        step "go build ./cmd/$cmd (log: $LOG)"
        (cd "$KDIR" && go build -ldflags "$LDFLAGS" -o "$WORK/$cmd" "./cmd/$cmd") >>"$LOG" 2>&1
    fi
    install_bin "$cmd" "$WORK/$cmd"
done

step "clean up"
cleanup
WORK=
step "done"
echo "build.sh: built ${MISSING[*]} in $((SECONDS - T0)) s"
