#!/usr/bin/env bash
# scenario.sh: the user's end-to-end scenario (e2e/scenario/steps.sh) on a
# real single-node cluster: starts it (start.sh), builds the release binaries
# and the two images and imports them (images.sh), runs every step, stops
# the cluster. Run by .ci/run; needs root (namespaces, mounts, cgroups) and
# the tools of build.sh.
#
#   bash e2e/real-node/scenario.sh [STEP...]
#
# Environment:
#   RSIGMA_SIGMAHQ_DIR  SigmaHQ checkout (default: shared/corpus/sigmahq next
#                       to the repository or one of its parents; without
#                       one the scenario is skipped with a notice, as the
#                       corpus tests are)
#   RN_DIR              use this directory for the cluster (default: a
#                       temporary one); RN_KEEP=1 leaves the cluster running
#   RSIGMA_SKIP_BUILD=1 use target/release as it is
# Exit status: 0 passed (or skipped without a corpus); 1 a step failed (logs
# of the operator and the engine pods are printed); 3 the cluster could not
# start or this is not root.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../control-plane/common.sh
source "$HERE/../control-plane/common.sh"
log() { echo "real-node/scenario.sh: $*" >&2; }

# The SigmaHQ corpus: RSIGMA_SIGMAHQ_DIR, else shared/corpus/sigmahq beside
# the checkout or beside one of its parent directories. Like the corpus
# tests of `cargo test`, the scenario is skipped (loudly) without it.
find_corpus() {
    local dir=$ROOT
    if [[ -n ${RSIGMA_SIGMAHQ_DIR:-} ]]; then
        echo "$RSIGMA_SIGMAHQ_DIR"
        return
    fi
    while [[ $dir != / ]]; do
        dir=$(dirname "$dir")
        if [[ -d $dir/shared/corpus/sigmahq/rules ]]; then
            echo "$dir/shared/corpus/sigmahq"
            return
        fi
    done
}
SIGMAHQ_DIR=$(find_corpus)
if [[ -z $SIGMAHQ_DIR || ! -d $SIGMAHQ_DIR/rules ]]; then
    log "SKIPPED: no SigmaHQ corpus (looked for shared/corpus/sigmahq beside $ROOT and its parents; set RSIGMA_SIGMAHQ_DIR to a SigmaHQ checkout)"
    exit 0
fi
SIGMAHQ_DIR=$(cd "$SIGMAHQ_DIR" && pwd)
log "SigmaHQ corpus: $SIGMAHQ_DIR"
[[ $(id -u) -eq 0 ]] || { log "the real node needs root (namespaces, mounts, cgroups)"; exit 3; }

T0=$SECONDS
if [[ ${RSIGMA_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release -p rsigma-cli -p rsigma-operator"
    (cd "$ROOT" && cargo build --release --quiet -p rsigma-cli -p rsigma-operator)
fi
T_BUILD=$SECONDS

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rsigma-scenario.XXXXXX")
RN_DIR=${RN_DIR:-$WORK/node}
STARTED=0
finish() {
    local rc=$?
    if ((rc != 0)) && [[ -f $RN_DIR/kubeconfig ]]; then
        log "FAILED in step ${SCENARIO_STEP:-?}; diagnostics:"
        KUBECONFIG=$RN_DIR/kubeconfig "$KUBECTL" get pods -A -o wide >&2 || true
        KUBECONFIG=$RN_DIR/kubeconfig "$KUBECTL" get detectionengines,sigmarulesets -A -o yaml >&2 | tail -n 80 || true
        KUBECONFIG=$RN_DIR/kubeconfig "$KUBECTL" -n rsigma-system logs deployment/rsigma --tail=60 >&2 || true
        for pod in $(KUBECONFIG=$RN_DIR/kubeconfig "$KUBECTL" -n detection get pods -o name 2>/dev/null); do
            KUBECONFIG=$RN_DIR/kubeconfig "$KUBECTL" -n detection logs "$pod" --tail=20 >&2 || true
        done
    fi
    if ((STARTED == 1)) && [[ ${RN_KEEP:-0} != 1 ]]; then
        "$HERE/stop.sh" "$RN_DIR" || true
    fi
    rm -rf "$WORK"
}
trap finish EXIT

if [[ ! -f $RN_DIR/kubeconfig ]]; then
    STARTED=1
    "$HERE/start.sh" "$RN_DIR" || { log "the real node could not start (see the messages above)"; exit 3; }
fi
T_NODE=$SECONDS
"$HERE/images.sh" "$RN_DIR" e2e
T_IMAGES=$SECONDS

export KUBECONFIG=$RN_DIR/kubeconfig
KUBECTL=$RSIGMA_CACHE/kubectl-$KUBE_VERSION
# shellcheck source=../lib/tools.sh
source "$ROOT/e2e/lib/tools.sh"
ensure_helm_kubectl
KUBECTL=$RSIGMA_CACHE/kubectl-$KUBE_VERSION
RSIGMA=${CARGO_TARGET_DIR:-$ROOT/target}/release/rsigma
OPERATOR_IMAGE=rsigma.local/rsigma-operator:e2e
DAEMON_IMAGE=rsigma.local/rsigma:e2e
IMAGE_PULL_POLICY=Never
NATS_IMAGE=rsigma.local/nats:e2e
NATS_PULL_POLICY=Never
# shellcheck source=../scenario/steps.sh
source "$ROOT/e2e/scenario/steps.sh"
run_scenario "$@"
log "passed: build $((T_BUILD - T0)) s, node start $((T_NODE - T_BUILD)) s, images $((T_IMAGES - T_NODE)) s, scenario $((SECONDS - T_IMAGES)) s, total $((SECONDS - T0)) s"
