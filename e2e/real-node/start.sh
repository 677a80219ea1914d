#!/usr/bin/env bash
# start.sh DIR: starts a REAL single-node Kubernetes v1.20.2 cluster (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# containerd+runc, bridge CNI, kube-proxy) with no Docker, no registry and no
# internet; docs/testing.md ("The real node") explains every choice.
#
# Isolation: everything runs inside ONE private network namespace + private
# mount namespace held by a `sleep infinity` process (DIR/holder.pid):
#   - its own loopback and a veth "node0" (10.243.0.2/24) as the node IP;
#     the default route points at node0, so nothing can leave the machine
#     (e.g. the kubelet's AWS credential provider probing 169.254.169.254);
#   - the paths containerd/kubelet hard-code (/run/containerd, /run/netns,
#     /var/lib/{containerd,kubelet,cni}, /var/log/{pods,containers},
#     /etc/cni/net.d) are bind mounts of DIR/state/* visible only there;
#   - the kernel tunables the kubelet insists on writing (vm.overcommit_memory,
#     kernel.panic, ...) are bind-mounted regular files there (RN_FAKE_SYSCTLS=1),
#     so the host's values are untouched;
#   - pods' cgroups live under /sys/fs/cgroup/*/$RN_CGROUP (default rn-<pid>).
# The API server is reachable from the host through a socat bridge on
# 127.0.0.1:$HOST_PORT (DIR/kubeconfig); inside the namespace it listens on
# the node IP too, so that pods (the operator) reach it through the
# `kubernetes` Service with their ServiceAccount tokens (the ServiceAccount
# admission plugin is on).
#
# Outputs: DIR/env (KEY=VALUE), DIR/kubeconfig (host side), DIR/kubectl (a
# wrapper running kubectl 1.20 inside the namespaces), DIR/in (runs a command
# inside the namespaces), logs in DIR/log/. Stop with stop.sh DIR.
#
# Environment:
#   RSIGMA_CACHE      binaries from build.sh (default ~/.cache/rsigma)
#   RN_SYNC_FREQUENCY kubelet --sync-frequency (default 5s; ConfigMap volume
#                     refresh latency is about this; kubelet default 1m)
#   RN_KUBE_PROXY     1: run kube-proxy (iptables mode) if built (default 1)
#   RN_FAKE_SYSCTLS   1 (default): shield the host's sysctls from the kubelet
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RN_CP_SCRIPTS=$HERE/../control-plane
# shellcheck source=../control-plane/common.sh
source "$RN_CP_SCRIPTS/common.sh"
KUBECTL_BIN=$RSIGMA_CACHE/kubectl-$KUBE_VERSION
RN_SYNC_FREQUENCY=${RN_SYNC_FREQUENCY:-5s}
RN_KUBE_PROXY=${RN_KUBE_PROXY:-1}
RN_FAKE_SYSCTLS=${RN_FAKE_SYSCTLS:-1}
NODE_NAME=rn-node
NODE_IP=10.243.0.2
POD_CIDR=10.244.0.0/24
POD_GW=10.244.0.1
BUSYBOX_IMAGE=rsigma.local/busybox:e2e
PAUSE_IMAGE=rsigma.local/pause:3.4.1

log() { echo "start.sh: $(date +%T) $*" >&2; }
[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { log "must run as root"; exit 2; }
mkdir -p "$1"
DIR=$(cd "$1" && pwd -P)
[[ ! -e $DIR/holder.pid ]] || { log "$DIR is in use: run stop.sh $DIR first"; exit 1; }
for b in kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy pause; do
    kube_bin_ok "$b" || { log "missing $(kube_bin "$b"): run e2e/real-node/build.sh"; exit 3; }
done
[[ -x $KUBECTL_BIN ]] || { log "missing $KUBECTL_BIN: run e2e/real-node/build.sh"; exit 3; }
for c in containerd runc ctr socat nsenter unshare busybox iptables /usr/lib/cni/bridge; do
    command -v "$c" >/dev/null || { log "missing $c: run e2e/real-node/build.sh (installs the Debian packages)"; exit 3; }
done
T0=$SECONDS
trap 'log "FAILED at line $LINENO; stopping"; "$HERE/stop.sh" "$DIR" || true; exit 1' ERR
mkdir -p "$DIR"/{log,etc,images} "$DIR"/state/{var-lib-containerd,var-lib-kubelet,var-lib-cni,var-log-pods,var-log-containers,etc-cni-net.d,run-containerd,run-netns,fakesys}

# --- namespaces ------------------------------------------------------------------
unshare --net --mount --propagation private sleep infinity </dev/null >/dev/null 2>&1 &
HOLDER=$!
echo "$HOLDER" >"$DIR/holder.pid"
for _ in $(seq 50); do [[ $(readlink /proc/$HOLDER/ns/net) != $(readlink /proc/self/ns/net) ]] && break; sleep 0.1; done
IN=(nsenter -t "$HOLDER" -n -m --)
RN_CGROUP=/rn-$HOLDER
echo "$RN_CGROUP" >"$DIR/cgroup"

# Mount points on the host: empty directories (created if missing, recorded
# so that stop.sh removes exactly those).
MOUNTS=(
    "run-containerd:/run/containerd" "run-netns:/run/netns"
    "var-lib-containerd:/var/lib/containerd" "var-lib-kubelet:/var/lib/kubelet"
    "var-lib-cni:/var/lib/cni" "var-log-pods:/var/log/pods"
    "var-log-containers:/var/log/containers" "etc-cni-net.d:/etc/cni/net.d"
)
: >"$DIR/created-dirs"
for m in "${MOUNTS[@]}"; do
    t=${m#*:}
    while [[ ! -d $t ]]; do
        p=$t
        while [[ ! -d $(dirname "$p") ]]; do p=$(dirname "$p"); done
        mkdir "$p" && echo "$p" >>"$DIR/created-dirs"
    done
done

SYSCTLS="vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes"
"${IN[@]}" bash -euo pipefail -c '
    DIR=$1 NODE_IP=$2 FAKE=$3 SYSCTLS=$4; shift 4
    ip link set lo up
    ip link add node0 type veth peer name node0-peer
    ip link set node0-peer up
    ip addr add "$NODE_IP/24" dev node0
    ip link set node0 up
    ip route add default dev node0
    for m in "$@"; do mount --bind "$DIR/state/${m%%:*}" "${m#*:}"; done
    if [[ $FAKE == 1 ]]; then
        for k in $SYSCTLS; do
            f=$DIR/state/fakesys/${k//\//_}
            cat "/proc/sys/$k" >"$f"
            mount --bind "$f" "/proc/sys/$k"
        done
    fi' rn-ns-setup "$DIR" "$NODE_IP" "$RN_FAKE_SYSCTLS" "$SYSCTLS" "${MOUNTS[@]}"

for h in /sys/fs/cgroup/*/; do
    [[ -e ${h}cgroup.procs ]] || continue
    mkdir -p "$h${RN_CGROUP#/}"
done
cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset$RN_CGROUP/cpuset.cpus"
cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset$RN_CGROUP/cpuset.mems"
log "namespaces ready (holder $HOLDER, cgroup $RN_CGROUP)"

# --- containerd ------------------------------------------------------------------
cat >"$DIR/etc/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  disable_apparmor = true
  enable_selinux = false
  # This machine's root lacks CAP_SYS_RESOURCE (not in the bounding set):
  # runc cannot lower oom_score_adj (pause wants -998) and sandboxes fail with
  # "can't get final child's PID from pipe: EOF". Clamp to containerd's score.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
EOF
cat >"$DIR/state/etc-cni-net.d/10-rn-bridge.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "rn-bridge",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/var/lib/cni/networks"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
setsid "${IN[@]}" containerd --config "$DIR/etc/containerd.toml" </dev/null >"$DIR/log/containerd.log" 2>&1 &
echo $! >"$DIR/containerd.pid"
for _ in $(seq 100); do "${IN[@]}" ctr version >/dev/null 2>&1 && break; sleep 0.1; done

# --- images (no registry: busybox-static and the static pause binary) -------------
R=$DIR/images/rootfs-busybox
rm -rf "$R" "$DIR/images/rootfs-pause"
mkdir -p "$R"/{bin,etc,tmp,proc,sys,dev,root,var/www} "$DIR/images/rootfs-pause"
cp /bin/busybox "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [[ $a == busybox ]] || ln -s busybox "$R/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$R/etc/group"
chmod 1777 "$R/tmp"
cp "$(kube_bin pause)" "$DIR/images/rootfs-pause/pause"
"$HERE/mkimage.sh" "$BUSYBOX_IMAGE" "$R" "$DIR/images/busybox.tar" --cmd '["sh"]' >&2
"$HERE/mkimage.sh" "$PAUSE_IMAGE" "$DIR/images/rootfs-pause" "$DIR/images/pause.tar" --entrypoint '["/pause"]' >&2
for t in busybox pause; do "${IN[@]}" ctr -n k8s.io image import "$DIR/images/$t.tar" >&2; done
log "containerd up, images imported"

# --- etcd + kube-apiserver (the project's script, run inside the namespaces) --------
# Listening on the node IP and advertising it (lease endpoint reconciler)
# gives the `kubernetes` Service an endpoint pods reach; the ServiceAccount
# admission plugin stays on so that pods get their tokens;
# OwnerReferencesPermissionEnforcement (on in OpenShift) checks that the
# operator's RBAC may set the ownerReferences it sets.
RSIGMA_CP_DISABLE_ADMISSION="" \
    RSIGMA_CP_APISERVER_ARGS="--kubelet-preferred-address-types=InternalIP --bind-address=0.0.0.0 --advertise-address=$NODE_IP --endpoint-reconciler-type=lease --enable-admission-plugins=OwnerReferencesPermissionEnforcement ${RN_APISERVER_ARGS:-}" \
    setsid "${IN[@]}" "$RN_CP_SCRIPTS/start.sh" "$DIR/cp" </dev/null
# shellcheck disable=SC1091
source "$DIR/cp/env"
NS_KUBECONFIG=$DIR/cp/kubeconfig
KCTL=("${IN[@]}" "$KUBECTL_BIN" --kubeconfig "$NS_KUBECONFIG")
log "control plane up: $APISERVER_URL (inside the namespace)"

# --- kubelet, controller-manager, scheduler ----------------------------------------
printf 'nameserver 127.0.0.1\n' >"$DIR/etc/resolv.conf"
setsid "${IN[@]}" "$(kube_bin kubelet)" \
    --kubeconfig="$NS_KUBECONFIG" \
    --container-runtime=remote --container-runtime-endpoint=unix:///run/containerd/containerd.sock \
    --cgroup-driver=cgroupfs --cgroup-root="$RN_CGROUP" \
    --fail-swap-on=false --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --root-dir=/var/lib/kubelet --cert-dir=/var/lib/kubelet/pki \
    --volume-plugin-dir=/var/lib/kubelet/volume-plugins \
    --make-iptables-util-chains=false --read-only-port=0 --healthz-bind-address=127.0.0.1 \
    --anonymous-auth=true --authorization-mode=AlwaysAllow \
    --resolv-conf="$DIR/etc/resolv.conf" \
    --eviction-hard='memory.available<50Mi,nodefs.available<1%,imagefs.available<1%' \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --sync-frequency="$RN_SYNC_FREQUENCY" \
    --v=2 </dev/null >"$DIR/log/kubelet.log" 2>&1 &
echo $! >"$DIR/kubelet.pid"
setsid "${IN[@]}" "$(kube_bin kube-controller-manager)" --kubeconfig="$NS_KUBECONFIG" \
    --leader-elect=false --port=0 --secure-port=0 \
    --service-account-private-key-file="$DIR/cp/pki/sa.key" --root-ca-file="$DIR/cp/certs/apiserver.crt" \
    --use-service-account-credentials=false --flex-volume-plugin-dir=/var/lib/kubelet/volume-plugins \
    --v=2 </dev/null >"$DIR/log/kube-controller-manager.log" 2>&1 &
echo $! >"$DIR/kube-controller-manager.pid"
setsid "${IN[@]}" "$(kube_bin kube-scheduler)" --kubeconfig="$NS_KUBECONFIG" \
    --leader-elect=false --port=0 --secure-port=0 --v=2 </dev/null >"$DIR/log/kube-scheduler.log" 2>&1 &
echo $! >"$DIR/kube-scheduler.pid"
if [[ $RN_KUBE_PROXY == 1 ]]; then
    setsid "${IN[@]}" "$(kube_bin kube-proxy)" --kubeconfig="$NS_KUBECONFIG" \
        --hostname-override="$NODE_NAME" --proxy-mode=iptables --cluster-cidr="$POD_CIDR" \
        --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
        --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 \
        --v=2 </dev/null >"$DIR/log/kube-proxy.log" 2>&1 &
    echo $! >"$DIR/kube-proxy.pid"
fi

for _ in $(seq 240); do
    [[ $("${KCTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]] && break
    sleep 0.5
done
[[ $("${KCTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
# The token controller gives the default ServiceAccount its token Secret;
# until then the admission plugin refuses pods.
for _ in $(seq 120); do
    [[ -n $("${KCTL[@]}" get serviceaccount default -o jsonpath='{.secrets[0].name}' 2>/dev/null) ]] && break
    sleep 0.5
done
log "node $NODE_NAME Ready"

# --- host access: 127.0.0.1:HOST_PORT -> the apiserver inside the namespace ----------
API_PORT=${APISERVER_URL##*:}
HOST_PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null ||
    shuf -i 20000-30000 -n 1)
setsid socat "TCP-LISTEN:$HOST_PORT,bind=127.0.0.1,fork,reuseaddr" \
    "EXEC:nsenter -t $HOLDER -n socat STDIO TCP\\:127.0.0.1\\:$API_PORT" </dev/null >"$DIR/log/socat.log" 2>&1 &
echo $! >"$DIR/socat.pid"
sed "s#server: .*#server: https://127.0.0.1:$HOST_PORT#" "$NS_KUBECONFIG" >"$DIR/kubeconfig"
chmod 600 "$DIR/kubeconfig"
cat >"$DIR/in" <<EOF
#!/bin/sh
# runs a command inside the cluster's network and mount namespaces
exec nsenter -t $HOLDER -n -m -- "\$@"
EOF
cat >"$DIR/kubectl" <<EOF
#!/bin/sh
exec nsenter -t $HOLDER -n -m -- $KUBECTL_BIN --kubeconfig $NS_KUBECONFIG "\$@"
EOF
chmod +x "$DIR/in" "$DIR/kubectl"
cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
APISERVER_URL=https://127.0.0.1:$HOST_PORT
NS_KUBECONFIG=$NS_KUBECONFIG
NS_APISERVER_URL=$APISERVER_URL
TOKEN=$TOKEN
HOLDER_PID=$HOLDER
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
POD_CIDR=$POD_CIDR
BUSYBOX_IMAGE=$BUSYBOX_IMAGE
PAUSE_IMAGE=$PAUSE_IMAGE
CGROUP=$RN_CGROUP
EOF
trap - ERR
log "ready after $((SECONDS - T0)) s: KUBECONFIG=$DIR/kubeconfig (host) or $DIR/kubectl (inside)"
