#!/usr/bin/env bash
# Builds kube-apiserver v1.20.2 from Debian's `kubernetes` source package and
# caches it as ${RSIGMA_CACHE:-~/.cache/rsigma}/kube-apiserver-v1.20.2.
#
# Idempotent: when the cached binary exists, answers --version with v1.20.2
# and carries the current recipe stamp (common.sh), it does nothing but make
# sure etcd is installed. Otherwise it installs the packages that are missing
# (etcd-server; golang-go, rsync, make, gcc, dpkg-dev and Debian's reflect2 and
# json-iterator Go sources), fetches the source with `apt-get source
# --download-only` (adding a temporary deb-src entry), swaps in reflect2 1.0.2
# (1.0.1 crashes under Go >= 1.18), builds in GOPATH mode with Debian's Go,
# copies the binary into the cache and removes the temporary tree.
# See docs/testing.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

STEP=init
LOG=$RSIGMA_CACHE/kube-apiserver-build.log
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
exec 9>"$RSIGMA_CACHE/.kube-apiserver-build.lock"
flock 9

step "runtime packages (etcd-server)"
ensure_packages etcd-server
if [[ ! -x $ETCD ]]; then
    ETCD=$(command -v etcd || true)
    [[ -n $ETCD ]] || { echo "build.sh: etcd-server is installed but no etcd binary was found" >&2; false; }
fi

if cp_apiserver_ok; then
    echo "build.sh: $KUBE_APISERVER (recipe $KUBE_APISERVER_RECIPE) is present ($("$KUBE_APISERVER" --version)); nothing to build"
    exit 0
fi

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
[[ -f $WORK/src/cmd/kube-apiserver/apiserver.go ]] || {
    echo "build.sh: the unpacked source has no cmd/kube-apiserver" >&2
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

step "make generated_files (log: $LOG)"
(cd "$KDIR" && make generated_files) >>"$LOG" 2>&1

step "go build ./cmd/kube-apiserver (log: $LOG)"
# GOPATH mode: the vendored packages' import paths are under k8s.io/kubernetes/vendor/.
# Both version packages are set, as hack/lib/version.sh does: --version reads
# component-base's, the /version endpoint client-go's.
LDFLAGS="-s -w"
for PKG in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
    k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    LDFLAGS+=" -X $PKG.gitVersion=$KUBE_VERSION -X $PKG.gitMajor=1 -X $PKG.gitMinor=20"
    LDFLAGS+=" -X $PKG.gitTreeState=clean -X $PKG.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done
(cd "$KDIR" && go build -ldflags "$LDFLAGS" -o "$WORK/kube-apiserver" ./cmd/kube-apiserver) >>"$LOG" 2>&1

step "check and install into $RSIGMA_CACHE"
built_version=$("$WORK/kube-apiserver" --version 2>&1 || true)
if [[ $built_version != "Kubernetes $KUBE_VERSION" ]]; then
    echo "build.sh: the built binary reports '$built_version', not 'Kubernetes $KUBE_VERSION'" >&2
    false
fi
cp "$WORK/kube-apiserver" "$KUBE_APISERVER.tmp.$$"
mv "$KUBE_APISERVER.tmp.$$" "$KUBE_APISERVER"
echo "$KUBE_APISERVER_RECIPE" >"$KUBE_APISERVER.recipe"
cp_apiserver_ok

step "clean up"
cleanup
WORK=
step "done"
echo "build.sh: built $KUBE_APISERVER ($("$KUBE_APISERVER" --version), $(du -h "$KUBE_APISERVER" | cut -f1)) in $((SECONDS - T0)) s"
