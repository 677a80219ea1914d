#!/usr/bin/env bash
# stop.sh DIR: stops what start.sh DIR started and removes its state:
#   socat bridge, kube-proxy, scheduler, controller-manager, kubelet (each by
#   pid file, only if that pid runs inside DIR's mount namespace), every
#   process in the pods' cgroup subtree, containerd, etcd + kube-apiserver (the
#   project's stop.sh), leftover shims in the namespace, then the namespace
#   holder (the namespaces, their mounts, bridge, veths and iptables rules go
#   with it), the cgroup directories, the host mount-point directories that
#   start.sh created, and DIR/state. RN_KEEP_LOGS=1 keeps DIR/log.
# Idempotent.
set -uo pipefail
RN_CP_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../control-plane
[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
[[ -d $1 ]] || exit 0
DIR=$(cd "$1" && pwd -P)
log() { echo "stop.sh: $*" >&2; }

alive() { [[ -d /proc/$1 ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
wait_gone() { # pid seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do alive "$1" || return 0; sleep 0.1; done
    return 1
}

HOLDER=
MNT=
if [[ -f $DIR/holder.pid ]]; then
    HOLDER=$(<"$DIR/holder.pid")
    if [[ $HOLDER =~ ^[0-9]+$ ]] && alive "$HOLDER" &&
        [[ $(tr '\0' ' ' <"/proc/$HOLDER/cmdline") == "sleep infinity " ]] &&
        [[ $(readlink "/proc/$HOLDER/ns/mnt") != $(readlink /proc/self/ns/mnt) ]]; then
        MNT=$(readlink "/proc/$HOLDER/ns/mnt")
    else
        HOLDER=
    fi
fi
in_ns() { [[ -n $MNT && $(readlink "/proc/$1/ns/mnt" 2>/dev/null) == "$MNT" ]]; }
stop_pidfile() { # name
    local f=$DIR/$1.pid pid
    [[ -f $f ]] || return 0
    pid=$(<"$f")
    rm -f "$f"
    [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 0
    if [[ $1 == socat ]]; then
        grep -q "TCP-LISTEN" "/proc/$pid/cmdline" 2>/dev/null || return 0
    else
        in_ns "$pid" || return 0
    fi
    kill "$pid" 2>/dev/null
    wait_gone "$pid" 10 || { log "$1 ($pid) ignored SIGTERM; SIGKILL"; kill -9 "$pid" 2>/dev/null; wait_gone "$pid" 5; }
}

stop_pidfile socat
for n in kube-proxy kube-scheduler kube-controller-manager kubelet; do stop_pidfile "$n"; done

CG=
[[ -f $DIR/cgroup ]] && CG=$(<"$DIR/cgroup")
if [[ $CG =~ ^/rn-[0-9]+$ ]]; then
    for _ in $(seq 20); do
        pids=$(find /sys/fs/cgroup/pids"$CG" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
        [[ -n $pids ]] || break
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null
        sleep 0.3
    done
fi
stop_pidfile containerd

if [[ -f $DIR/cp/env || -f $DIR/cp/kube-apiserver.pid ]]; then
    RSIGMA_CP_KEEP_LOGS=1 "$RN_CP_SCRIPTS/stop.sh" "$DIR/cp"
    mkdir -p "$DIR/log"
    for f in etcd.log kube-apiserver.log; do [[ -f $DIR/cp/$f ]] && mv "$DIR/cp/$f" "$DIR/log/$f"; done
    rmdir "$DIR/cp" 2>/dev/null
fi

if [[ -n $MNT ]]; then
    # leftovers in the namespace (containerd shims), never the holder itself
    for sig in TERM KILL; do
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            [[ $pid != "$HOLDER" ]] && in_ns "$pid" && kill -"$sig" "$pid" 2>/dev/null
        done
        sleep 1
    done
    kill "$HOLDER" 2>/dev/null
    wait_gone "$HOLDER" 10
fi
rm -f "$DIR/holder.pid"

if [[ $CG =~ ^/rn-[0-9]+$ ]]; then
    for h in /sys/fs/cgroup/*/; do
        [[ -d $h${CG#/} ]] && find "$h${CG#/}" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    left=$(ls -d /sys/fs/cgroup/*"$CG" 2>/dev/null)
    [[ -z $left ]] || log "cgroups left: $left"
fi
rm -f "$DIR/cgroup"

if [[ -f $DIR/created-dirs ]]; then
    tac "$DIR/created-dirs" | while read -r d; do
        [[ -n $d ]] && rmdir "$d" 2>/dev/null
    done
    rm -f "$DIR/created-dirs"
fi
rm -rf "${DIR:?}"/{state,images,etc,env,kubeconfig,in,kubectl}
[[ ${RN_KEEP_LOGS:-0} == 1 ]] || rm -rf "$DIR/log"
rmdir "$DIR" 2>/dev/null
true
