#!/usr/bin/env bash
# stop.sh DIR: stops the control plane that start.sh DIR started (kube-apiserver,
# etcd and the owner watcher, each by the pid in its pid file, and only if that
# process still belongs to DIR), then removes everything start.sh created under
# DIR, and DIR itself when it is left empty. Idempotent: stopping a DIR with
# nothing running only cleans up.
#
# RSIGMA_CP_KEEP_LOGS=1 keeps DIR/etcd.log and DIR/kube-apiserver.log.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

if [[ $# -ne 1 || -z $1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
if [[ ! -d $1 ]]; then
    exit 0
fi
DIR=$(cd "$1" && pwd -P)

# Prints the pid from DIR/NAME.pid when that process is alive and was started
# for DIR (its command line names DIR, or it is the watcher of DIR).
owned_pid() {
    local f=$DIR/$1.pid pid
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $pid != "$$" ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    local args arg
    mapfile -d '' args <"/proc/$pid/cmdline" || return 1
    for arg in "${args[@]}"; do
        if [[ $arg == "$DIR" || $arg == "$DIR"/* || $arg == *="$DIR"/* ]]; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

stop_pid() {
    local name=$1 pid
    pid=$(owned_pid "$name") || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        cp_alive "$pid" || return 0
        sleep 0.1
    done
    echo "stop.sh: $name (pid $pid) did not exit within 10 s of SIGTERM; sending SIGKILL" >&2
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        cp_alive "$pid" || return 0
        sleep 0.1
    done
}

stop_pid watcher
stop_pid kube-apiserver
stop_pid etcd

rm -rf "$DIR/etcd-data" "$DIR/certs" "$DIR/pki"
rm -f "$DIR/kubeconfig" "$DIR/env" "$DIR/env.tmp" \
    "$DIR/etcd.pid" "$DIR/kube-apiserver.pid" "$DIR/watcher.pid"
if [[ ${RSIGMA_CP_KEEP_LOGS:-0} != 1 ]]; then
    rm -f "$DIR/etcd.log" "$DIR/kube-apiserver.log"
fi
rmdir "$DIR" 2>/dev/null || true
