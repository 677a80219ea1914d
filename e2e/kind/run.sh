#!/usr/bin/env bash
# run.sh: the user's end-to-end scenario (e2e/scenario/steps.sh, the same
# steps and manifests as the real-node run in CI) on a kind cluster, for
# users with Docker and kind:
#
#   bash e2e/kind/run.sh [STEP...]
#
# Creates the cluster, builds the two images with the repository's
# Dockerfile and loads them into kind, builds the rsigma CLI, then runs
# every step: helm install, rule sets and an engine, events through the
# Service, a rule change without restarts, a broken rule set that never
# reaches the pods, `rsigma engine tap` through k8s:// and a replay of the
# fixture, status and reload through k8s://, the rsigma-debug role, and
# deleting the engine. Deletes the cluster at the end.
#
# Needs: docker, kind, kubectl, helm (v3.8+ or v4), cargo, curl, python3,
# and a SigmaHQ checkout (git clone https://github.com/SigmaHQ/sigma).
# Environment:
#   RSIGMA_SIGMAHQ_DIR  the SigmaHQ checkout (default ../shared/corpus/sigmahq
#                       next to the repository)
#   KIND_CLUSTER        cluster name (default rsigma-e2e)
#   KIND_KEEP=1         keep the cluster afterwards
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
log() { echo "kind/run.sh: $*" >&2; }

for tool in docker kind kubectl helm cargo curl python3; do
    command -v "$tool" >/dev/null || { log "$tool is required"; exit 3; }
done
SIGMAHQ_DIR=${RSIGMA_SIGMAHQ_DIR:-$ROOT/../shared/corpus/sigmahq}
[[ -d $SIGMAHQ_DIR/rules ]] || { log "no SigmaHQ checkout at $SIGMAHQ_DIR (set RSIGMA_SIGMAHQ_DIR)"; exit 3; }
SIGMAHQ_DIR=$(cd "$SIGMAHQ_DIR" && pwd)
CLUSTER=${KIND_CLUSTER:-rsigma-e2e}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rsigma-kind.XXXXXX")
cleanup() {
    if [[ ${KIND_KEEP:-0} != 1 ]]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

log "creating the kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --wait 180s
export KUBECONFIG=$WORK/kubeconfig
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

log "building the images (Dockerfile) and loading them into kind"
docker build --target daemon -t rsigma:e2e "$ROOT"
docker build --target operator -t rsigma-operator:e2e "$ROOT"
kind load docker-image rsigma:e2e rsigma-operator:e2e --name "$CLUSTER"

log "building the rsigma CLI"
(cd "$ROOT" && cargo build --release -p rsigma-cli)

KUBECTL=kubectl
HELM=helm
RSIGMA=${CARGO_TARGET_DIR:-$ROOT/target}/release/rsigma
OPERATOR_IMAGE=rsigma-operator:e2e
DAEMON_IMAGE=rsigma:e2e
IMAGE_PULL_POLICY=Never
# The NATS step pulls the official NATS image.
NATS_IMAGE=${NATS_IMAGE:-docker.io/library/nats:2.10-alpine}
NATS_PULL_POLICY=IfNotPresent
# shellcheck source=../scenario/steps.sh
source "$ROOT/e2e/scenario/steps.sh"
run_scenario "$@"
