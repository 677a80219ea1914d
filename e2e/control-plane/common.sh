# shellcheck shell=bash
# Shared settings of the control-plane scripts (sourced, not run).
#
# RSIGMA_CACHE   where built binaries are kept (default ~/.cache/rsigma)
# KUBE_APISERVER path of the kube-apiserver binary to use (default: the cached build)
# ETCD           path of the etcd binary to use (default: etcd on PATH, or /usr/bin/etcd)

KUBE_VERSION=v1.20.2
# Bumped whenever build.sh changes what it builds; a cached binary whose stamp
# (BINARY.recipe) differs is rebuilt. 2: vendored reflect2 1.0.2.
KUBE_RECIPE=2
RSIGMA_CACHE=${RSIGMA_CACHE:-${HOME:-/root}/.cache/rsigma}
KUBE_APISERVER=${KUBE_APISERVER:-$RSIGMA_CACHE/kube-apiserver-$KUBE_VERSION}
ETCD=${ETCD:-$(command -v etcd 2>/dev/null || echo /usr/bin/etcd)}

# Runs apt-get (with sudo when not root).
cp_apt_get() {
    if [[ $(id -u) -ne 0 ]]; then
        sudo DEBIAN_FRONTEND=noninteractive apt-get "$@"
    else
        DEBIAN_FRONTEND=noninteractive apt-get "$@"
    fi
}

# Path of the cached build of COMMAND (kube-apiserver, kubelet, ..., pause).
kube_bin() {
    if [[ $1 == kube-apiserver ]]; then
        echo "$KUBE_APISERVER"
    else
        echo "$RSIGMA_CACHE/$1-$KUBE_VERSION"
    fi
}

# True when the cached COMMAND exists, reports the expected version (pause has
# none: it must be executable) and was built by the current recipe of build.sh.
kube_bin_ok() {
    local bin
    bin=$(kube_bin "$1")
    [[ -x $bin ]] || return 1
    if [[ $1 != pause ]]; then
        "$bin" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION" || return 1
    fi
    [[ $(cat "$bin.recipe" 2>/dev/null) == "$KUBE_RECIPE" ]]
}

# True while process $1 exists and is not a zombie (a zombie still passes kill -0).
cp_alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}
