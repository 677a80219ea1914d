#!/usr/bin/env bash
# start.sh DIR: starts a throw-away Kubernetes control plane (etcd +
# kube-apiserver v1.20.2, no kubelet/scheduler/controller-manager) whose
# state lives under DIR, and waits until /readyz answers ok.
#
# On success DIR holds:
#   kubeconfig          admin kubeconfig (bearer token, insecure-skip-tls-verify)
#   env                 KEY=VALUE lines, no quoting: KUBECONFIG, APISERVER_URL,
#                       TOKEN, ETCD_URL, APISERVER_CA_FILE
#   etcd.pid, kube-apiserver.pid (and watcher.pid with RSIGMA_CP_OWNER_PID)
#   etcd.log, kube-apiserver.log, etcd-data/, certs/, pki/
# Stop it with stop.sh DIR.
#
# Ports: etcd (client, peer) and the apiserver's secure port are picked at
# random among free loopback ports below the kernel's ephemeral range, and
# a start that loses a port race is retried with new ports, so several
# control planes (one per test process) can run at once.
#
# Environment:
#   KUBE_APISERVER, ETCD, RSIGMA_CACHE   binaries (see common.sh)
#   RSIGMA_CP_READY_TIMEOUT  seconds to wait for /readyz (default 60)
#   RSIGMA_CP_OWNER_PID      if set, a watcher runs stop.sh DIR once that
#                            process is gone (no leak when a test dies)
#   RSIGMA_CP_APISERVER_ARGS extra kube-apiserver flags (word-split; they come
#                            last, so they override the defaults above them)
#   RSIGMA_CP_DISABLE_ADMISSION admission plugins to disable (default
#                            ServiceAccount: without a controller-manager
#                            no token is ever made; the real node sets "")
#   RSIGMA_CP_PORT_RANGE     LO-HI: pick ports in [LO, HI) (default 10000 up
#                            to the start of the ephemeral range)
# Exit status: 0 ready; 1 failed (the message and log tails go to stderr);
# 2 usage error; 3 a binary is missing (run build.sh).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

log() { echo "start.sh: $*" >&2; }

if [[ $# -ne 1 || -z $1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi

# --- prerequisites -----------------------------------------------------------
if [[ ! -x $KUBE_APISERVER ]]; then
    log "kube-apiserver not found at $KUBE_APISERVER: run e2e/control-plane/build.sh first (or set KUBE_APISERVER)"
    exit 3
fi
if [[ ! -x $ETCD ]]; then
    log "etcd not found (looked for $ETCD): install the Debian package etcd-server (e2e/control-plane/build.sh does) or set ETCD"
    exit 3
fi
if [[ -n ${RSIGMA_CP_OWNER_PID:-} ]] && ! { [[ $RSIGMA_CP_OWNER_PID =~ ^[0-9]+$ ]] && cp_alive "$RSIGMA_CP_OWNER_PID"; }; then
    log "RSIGMA_CP_OWNER_PID=$RSIGMA_CP_OWNER_PID is not a running process"
    exit 2
fi
for tool in curl openssl; do
    command -v "$tool" >/dev/null || { log "$tool is required"; exit 3; }
done
mkdir -p "$1"
DIR=$(cd "$1" && pwd -P)
if [[ $DIR =~ [[:space:]] ]]; then
    log "DIR must not contain whitespace: '$DIR'"
    exit 2
fi

READY_TIMEOUT=${RSIGMA_CP_READY_TIMEOUT:-60}
MAX_TRIES=10
T0=$(date +%s.%N)

die() {
    # Stop what was started first: printing can fail (a closed stderr).
    trap - ERR
    kill_started
    rm -rf "$DIR/etcd-data" "$DIR/certs" "$DIR/pki" "$DIR/env.tmp"
    log "FAILED: $*"
    local f
    for f in etcd.log kube-apiserver.log; do
        if [[ -s $DIR/$f ]]; then
            log "last lines of $DIR/$f:"
            tail -n 15 "$DIR/$f" | cut -c1-400 >&2 || true
        fi
    done
    exit 1
}

if [[ -f $DIR/kube-apiserver.pid || -f $DIR/etcd.pid ]]; then
    log "$DIR already holds a control plane (pid files present): run stop.sh $DIR first"
    exit 1
fi

ETCD_PID=
API_PID=
kill_started() {
    local pid
    for pid in $API_PID $ETCD_PID; do
        if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    done
    for pid in $API_PID $ETCD_PID; do
        for _ in $(seq 1 100); do cp_alive "$pid" || break; sleep 0.1; done
        if cp_alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
        wait "$pid" 2>/dev/null || true
    done
    API_PID=
    ETCD_PID=
}
trap 'die "interrupted"' INT TERM
trap 'die "unexpected error at line $LINENO"' ERR

# --- ports ---------------------------------------------------------------------
# Random ports below the ephemeral range (outgoing connections take those).
# RSIGMA_CP_PORT_RANGE=LO-HI overrides the range (LO inclusive, HI exclusive).
read -r EPH_LO _ </proc/sys/net/ipv4/ip_local_port_range || EPH_LO=32768
PORT_LO=10000
PORT_HI=$((EPH_LO > PORT_LO + 2000 ? EPH_LO : 30000))
if [[ -n ${RSIGMA_CP_PORT_RANGE:-} ]]; then
    if ! [[ $RSIGMA_CP_PORT_RANGE =~ ^([0-9]+)-([0-9]+)$ ]] || ((BASH_REMATCH[1] >= BASH_REMATCH[2])); then
        log "RSIGMA_CP_PORT_RANGE must be LO-HI with LO < HI, got '$RSIGMA_CP_PORT_RANGE'"
        exit 2
    fi
    PORT_LO=${BASH_REMATCH[1]}
    PORT_HI=${BASH_REMATCH[2]}
fi
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pick_port VAR: sets VAR to a random free port not in TAKEN and adds it there.
TAKEN=" "
pick_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((PORT_LO + (RANDOM * 32768 + RANDOM) % (PORT_HI - PORT_LO)))
        if [[ $TAKEN != *" $p "* ]] && ! port_in_use "$p"; then
            TAKEN+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "found no free port in $PORT_LO-$PORT_HI"
}

# --- credentials -----------------------------------------------------------------
mkdir -p "$DIR/pki" "$DIR/certs"
chmod 700 "$DIR/pki"
openssl genrsa -out "$DIR/pki/sa.key" 2048 2>/dev/null || die "openssl genrsa failed"
openssl rsa -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null || die "openssl rsa -pubout failed"
TOKEN=$(openssl rand -hex 32)
echo "$TOKEN,admin,admin,system:masters" >"$DIR/pki/tokens.csv"

# --- etcd --------------------------------------------------------------------------
start_etcd() {
    TAKEN=" "
    pick_port ETCD_PORT
    pick_port PEER_PORT
    rm -rf "$DIR/etcd-data"
    "$ETCD" --name rsigma-e2e --data-dir "$DIR/etcd-data" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
        --initial-cluster "rsigma-e2e=http://127.0.0.1:$PEER_PORT" \
        --initial-cluster-state new \
        --logger zap --log-outputs stderr \
        </dev/null >"$DIR/etcd.log" 2>&1 &
    ETCD_PID=$!
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        if ! cp_alive "$ETCD_PID"; then
            wait "$ETCD_PID" 2>/dev/null || true
            ETCD_PID=
            return 1
        fi
        # Our own process must have logged that it serves: a health answer
        # alone could come from another etcd that won the port race.
        if grep -qE 'serving client traffic|ready to serve client requests' "$DIR/etcd.log" 2>/dev/null &&
            curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; then
            return 0
        fi
        sleep 0.2
    done
    die "etcd did not become healthy within 30 s"
}

# --- kube-apiserver ------------------------------------------------------------
start_apiserver() {
    TAKEN=" $ETCD_PORT $PEER_PORT "
    pick_port API_PORT
    # shellcheck disable=SC2086
    "$KUBE_APISERVER" \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 \
        --endpoint-reconciler-type=none \
        --secure-port="$API_PORT" \
        --insecure-port=0 \
        --cert-dir="$DIR/certs" \
        --token-auth-file="$DIR/pki/tokens.csv" \
        --authorization-mode=RBAC \
        --service-account-key-file="$DIR/pki/sa.pub" \
        --service-account-signing-key-file="$DIR/pki/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --api-audiences=https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range=10.0.0.0/24 \
        --disable-admission-plugins="${RSIGMA_CP_DISABLE_ADMISSION-ServiceAccount}" \
        --allow-privileged=true \
        --profiling=false \
        ${RSIGMA_CP_APISERVER_ARGS:-} \
        </dev/null >"$DIR/kube-apiserver.log" 2>&1 &
    API_PID=$!
    local deadline=$((SECONDS + READY_TIMEOUT)) body
    while ((SECONDS < deadline)); do
        if ! cp_alive "$API_PID"; then
            wait "$API_PID" 2>/dev/null || true
            API_PID=
            return 1
        fi
        # The token is ours alone, so an "ok" cannot come from another apiserver.
        body=$(curl -ksS --max-time 2 -H "Authorization: Bearer $TOKEN" \
            "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null || true)
        if [[ $body == ok ]]; then return 0; fi
        sleep 0.5
    done
    local failing
    failing=$(grep '^\[-\]' <<<"${body:-}" | tr '\n' ' ' || true)
    die "kube-apiserver did not answer ok on /readyz within $READY_TIMEOUT s (${failing:-last answer: ${body:-none}})"
}

port_race_lost() { grep -qiE 'address already in use|bind: ' "$1" 2>/dev/null; }

for try in $(seq 1 "$MAX_TRIES"); do
    if start_etcd; then break; fi
    port_race_lost "$DIR/etcd.log" || die "etcd exited during start-up"
    log "etcd lost a port race (try $try of $MAX_TRIES); retrying with new ports"
    ((try < MAX_TRIES)) || die "etcd could not bind free ports after $MAX_TRIES tries"
done
T_ETCD=$(date +%s.%N)
for try in $(seq 1 "$MAX_TRIES"); do
    if start_apiserver; then break; fi
    port_race_lost "$DIR/kube-apiserver.log" || die "kube-apiserver exited during start-up"
    log "kube-apiserver lost a port race (try $try of $MAX_TRIES); retrying with a new port"
    ((try < MAX_TRIES)) || die "kube-apiserver could not bind a free port after $MAX_TRIES tries"
done
T_READY=$(date +%s.%N)

# --- outputs -------------------------------------------------------------------------
URL=https://127.0.0.1:$API_PORT
cat >"$DIR/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: rsigma-e2e
  cluster:
    server: $URL
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: rsigma-e2e
  context:
    cluster: rsigma-e2e
    user: admin
    namespace: default
current-context: rsigma-e2e
KUBECONFIG
chmod 600 "$DIR/kubeconfig"
cat >"$DIR/env.tmp" <<ENV
KUBECONFIG=$DIR/kubeconfig
APISERVER_URL=$URL
TOKEN=$TOKEN
ETCD_URL=http://127.0.0.1:$ETCD_PORT
APISERVER_CA_FILE=$DIR/certs/apiserver.crt
ENV
echo "$ETCD_PID" >"$DIR/etcd.pid"
echo "$API_PID" >"$DIR/kube-apiserver.pid"

if [[ -n ${RSIGMA_CP_OWNER_PID:-} ]]; then
    # Stops the control plane once the owner is gone, unless stop.sh ran first.
    # shellcheck disable=SC2016 # expanded by the inner bash
    nohup bash -c 'source "$4"
        while cp_alive "$1" && [[ -f $2/kube-apiserver.pid ]]; do sleep 2; done
        [[ -f $2/kube-apiserver.pid ]] && exec "$3" "$2"' \
        rsigma-cp-watcher "$RSIGMA_CP_OWNER_PID" "$DIR" "$HERE/stop.sh" "$HERE/common.sh" \
        </dev/null >/dev/null 2>&1 &
    echo "$!" >"$DIR/watcher.pid"
fi
# env is written last: its presence means "ready".
mv "$DIR/env.tmp" "$DIR/env"
trap - INT TERM ERR

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
log "ready: $URL (etcd http://127.0.0.1:$ETCD_PORT) after $(secs "$T0" "$T_READY") s (etcd healthy after $(secs "$T0" "$T_ETCD") s); env: $DIR/env"
