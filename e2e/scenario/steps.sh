# shellcheck shell=bash
# The end-to-end scenario of a user (docs/getting-started.md), as one list of
# steps shared by the real-node run (e2e/real-node/scenario.sh, in CI) and
# the kind script for users (e2e/kind/run.sh). Sourced, then `run_scenario`.
#
# The caller provides:
#   KUBECONFIG          the cluster (exported)
#   KUBECTL, HELM       the kubectl and helm binaries
#   RSIGMA              the rsigma CLI binary
#   OPERATOR_IMAGE, DAEMON_IMAGE   repository:tag of the two images
#   IMAGE_PULL_POLICY   Never for locally loaded images
#   NATS_IMAGE, NATS_PULL_POLICY   a nats-server image for the NATS step
#   SIGMAHQ_DIR         a SigmaHQ checkout (the directory holding rules/)
#   WORK                a scratch directory
#   HELM_EXTRA_ARGS     (optional) more `helm install` arguments
# and may override the `on_step` hook (called with each step's name).

SCENARIO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCENARIO_ROOT=$(cd "$SCENARIO_DIR/../.." && pwd)
MANIFESTS=$SCENARIO_DIR/manifests
NS=detection
ENGINE=soc
OPERATOR_NS=rsigma-system
# The SigmaHQ rules the scenario loads (relative to SIGMAHQ_DIR).
SIGMAHQ_RULES=(rules/windows/process_creation/proc_creation_win_certutil_*.yml
    rules/windows/process_creation/proc_creation_win_whoami_*.yml)
CERTUTIL_DECODE_RULE=cc9cbe82-7bc0-4ef5-bc23-bbfb83947be7
WHOAMI_ALL_RULE=c248c896-e412-4279-8c15-1c558067b6fa
MARKER_RULE=6b0c1a52-7d2e-4c1f-9a3b-e2e000000001

# The steps, in order.
STEPS=(install_operator deploy_engine detect_through_service change_rule
    broken_rule_keeps_serving tap_and_replay status_and_reload_through_k8s
    debug_role_is_enough tap_disabled_is_refused detect_over_nats delete_engine)

on_step() { :; }

fail() {
    echo "scenario: FAILED: $*" >&2
    return 1
}

# eventually SECONDS DESCRIPTION COMMAND...: retries COMMAND every second.
eventually() {
    local timeout=$1 what=$2 start=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS - start >= timeout)); then
            echo "scenario: waited ${timeout} s for: $what" >&2
            "$@" >&2 || true
            return 1
        fi
        sleep 1
    done
    echo "scenario: $what (after $((SECONDS - start)) s)"
}

k() { "$KUBECTL" "$@"; }

# jsonpath OBJECT PATH: one field of an object in the namespace.
jsonpath() { k -n "$NS" get "$1" -o "jsonpath={$2}"; }

condition_is() { # OBJECT TYPE STATUS
    [[ $(jsonpath "$1" ".status.conditions[?(@.type==\"$2\")].status") == "$3" ]]
}

engine_settled() {
    condition_is "detectionengine/$ENGINE" Ready True &&
        condition_is "detectionengine/$ENGINE" RulesInSync True &&
        [[ $(jsonpath "detectionengine/$ENGINE" .status.observedGeneration) == \
            $(jsonpath "detectionengine/$ENGINE" .metadata.generation) ]]
}

# Every pod (of status.pods, as many as the engine's pods) reports the
# engine's desired rules hash.
pods_report_desired_hash() {
    local desired hashes names
    desired=$(jsonpath "detectionengine/$ENGINE" .status.desiredRulesHash)
    hashes=$(jsonpath "detectionengine/$ENGINE" '.status.pods[*].rulesHash')
    names=$(jsonpath "detectionengine/$ENGINE" '.status.pods[*].name')
    [[ -n $desired && -n $names ]] || return 1
    [[ $(wc -w <<<"$hashes") == $(wc -w <<<"$names") &&
        $(wc -w <<<"$names") == $(engine_pods | wc -l) ]] || return 1
    for h in $hashes; do [[ $h == "$desired" ]] || return 1; done
}

engine_in_sync() { engine_settled && pods_report_desired_hash; }

desired_hash_is_not() {
    [[ $(jsonpath "detectionengine/$ENGINE" .status.desiredRulesHash) != "$1" ]]
}

has_token() {
    [[ -n $(k -n "$NS" get serviceaccount "$1" -o 'jsonpath={.secrets[0].name}') ]]
}

engine_objects_gone() {
    local left
    left=$(k -n "$NS" get deployment,service,configmap,serviceaccount,pods \
        -l "app.kubernetes.io/instance=$ENGINE" -o name) || return 1
    [[ -z $left ]]
}

# The engine's pods by name, in byte order (as the CLI picks them).
engine_pods() {
    k -n "$NS" get pods -l "app.kubernetes.io/instance=$ENGINE" \
        -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}' | LC_ALL=C sort
}

# The first ready pod by name: the one a k8s:// address of the engine picks.
first_ready_pod() {
    k -n "$NS" get pods -l "app.kubernetes.io/instance=$ENGINE" \
        -o 'jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
        awk '$2 == "True" { print $1 }' | LC_ALL=C sort | head -n 1
}

# name uid restartCount, one line per pod.
pod_identities() {
    k -n "$NS" get pods -l "app.kubernetes.io/instance=$ENGINE" \
        -o 'jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.containerStatuses[0].restartCount}{"\n"}{end}' | LC_ALL=C sort
}

# Detection records in the logs of every engine pod.
detections() {
    local pod
    for pod in $(engine_pods); do
        k -n "$NS" logs "$pod" | grep '^{"rule_title"' || true
    done
}

# detected RULE_ID TEXT: some pod reported RULE_ID for an event holding TEXT.
# (grep without -q: an early exit would fail the pipeline under pipefail.)
detected() {
    detections | grep -F "\"rule_id\":\"$1\"" | grep -F "$2" >/dev/null
}

# port_forward TARGET VAR [PORT]: `kubectl port-forward TARGET :PORT` (the
# API's 9090 unless named) in the background; sets VAR to the local port
# and PF_PID to the process.
port_forward() {
    local pf_log=$WORK/pf.$RANDOM.log pf_port=
    k -n "$NS" port-forward "$1" ":${3:-9090}" >"$pf_log" 2>&1 &
    PF_PID=$!
    for _ in $(seq 1 100); do
        pf_port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$pf_log" | head -n 1)
        [[ -z $pf_port ]] || break
        sleep 0.2
    done
    if [[ -z $pf_port ]]; then
        kill "$PF_PID" 2>/dev/null
        wait "$PF_PID" 2>/dev/null || true
        cat "$pf_log" >&2
        fail "kubectl port-forward $1 did not start"
        return 1
    fi
    printf -v "$2" '%s' "$pf_port"
}

# send_events TARGET FILE: POSTs the NDJSON FILE to /api/v1/events of
# TARGET (svc/NAME or pod/NAME) through a port-forward.
send_events() {
    local port answer
    port_forward "$1" port || return 1
    answer=$(curl -fsS --max-time 10 -H 'Content-Type: application/x-ndjson' \
        --data-binary "@$2" "http://127.0.0.1:$port/api/v1/events") || {
        kill "$PF_PID" 2>/dev/null
        wait "$PF_PID" 2>/dev/null || true
        fail "POST $2 to $1 failed"
        return 1
    }
    kill "$PF_PID" 2>/dev/null
    wait "$PF_PID" 2>/dev/null || true
    echo "scenario: sent $(wc -l <"$2") events to $1: $answer"
}

# event COMMANDLINE IMAGE: one Sysmon process-creation event (flat JSON).
event() {
    printf '{"Channel":"Microsoft-Windows-Sysmon/Operational","EventID":1,"Computer":"ws-17.corp.example","User":"CORP\\\\alice","Image":"%s","OriginalFileName":"%s","CommandLine":"%s","ParentImage":"C:\\\\Windows\\\\explorer.exe"}\n' \
        "$2" "${2##*\\\\}" "$1"
}

# nats_connect PORT VAR: opens a NATS client connection to 127.0.0.1:PORT in
# the text protocol of docs.nats.io ("Client Protocol": INFO, CONNECT,
# PING/PONG), presenting NATS_TOKEN; sets VAR to its file descriptor.
nats_connect() {
    local fd line
    exec {fd}<>"/dev/tcp/127.0.0.1/$1" || { fail "no connection to the NATS port-forward"; return 1; }
    IFS= read -r -t 10 line <&"$fd" || { fail "no INFO from the NATS server"; return 1; }
    [[ $line == INFO* ]] || { fail "the NATS server said: $line"; return 1; }
    printf 'CONNECT {"verbose":false,"pedantic":false,"auth_token":"%s","name":"rsigma-scenario"}\r\nPING\r\n' \
        "$NATS_TOKEN" >&"$fd"
    nats_pong "$fd" || return 1
    printf -v "$2" '%s' "$fd"
}

# nats_pong FD: reads the connection until the server's PONG.
nats_pong() {
    local line
    while IFS= read -r -t 10 line <&"$1"; do
        case ${line%$'\r'} in
        PONG) return 0 ;;
        -ERR*) fail "the NATS server said: $line"; return 1 ;;
        esac
    done
    fail "no PONG from the NATS server"
}

# nats_publish FD SUBJECT FILE: one message per line of FILE, then a
# PING/PONG: the server has taken every message before it answers.
nats_publish() {
    local LC_ALL=C line
    while IFS= read -r line; do
        printf 'PUB %s %d\r\n%s\r\n' "$2" "${#line}" "$line" >&"$1"
    done <"$3"
    printf 'PING\r\n' >&"$1"
    nats_pong "$1"
}

# ---------------------------------------------------------------------------

install_operator() {
    # shellcheck disable=SC2086
    # The documented install (docs/getting-started.md): the chart renders the
    # CRDs for the server's version (without CEL rules before 1.25).
    "$HELM" install rsigma "$SCENARIO_ROOT/charts/rsigma" \
        --namespace "$OPERATOR_NS" --create-namespace --skip-crds --set crds.install=true \
        --set "image.repository=${OPERATOR_IMAGE%:*},image.tag=${OPERATOR_IMAGE##*:},image.pullPolicy=$IMAGE_PULL_POLICY" \
        --set "engineDefaults.image.repository=${DAEMON_IMAGE%:*},engineDefaults.image.tag=${DAEMON_IMAGE##*:},engineDefaults.image.pullPolicy=$IMAGE_PULL_POLICY" \
        --wait --timeout 180s ${HELM_EXTRA_ARGS:-}
    k -n "$OPERATOR_NS" rollout status deployment/rsigma --timeout=120s
    # The operator runs under its own ServiceAccount, not as an admin.
    [[ $(k -n "$OPERATOR_NS" get pods -l app.kubernetes.io/component=operator \
        -o 'jsonpath={.items[0].spec.serviceAccountName}') == rsigma ]] ||
        fail "the operator pod does not run as the ServiceAccount rsigma"
}

deploy_engine() {
    k create namespace "$NS"
    local files=() pattern
    for pattern in "${SIGMAHQ_RULES[@]}"; do
        # shellcheck disable=SC2206 # the glob is meant to expand
        files+=($SIGMAHQ_DIR/$pattern)
    done
    [[ -f ${files[0]} ]] || { fail "no SigmaHQ rules under $SIGMAHQ_DIR"; return 1; }
    local from=()
    for f in "${files[@]}"; do from+=("--from-file=$f"); done
    k -n "$NS" create configmap sigmahq-windows "${from[@]}"
    echo "scenario: ConfigMap sigmahq-windows holds ${#files[@]} SigmaHQ rules"
    k apply -f "$MANIFESTS/sigmahq-ruleset.yaml" -f "$MANIFESTS/custom-v1.yaml" -f "$MANIFESTS/engine.yaml"
    eventually 180 "engine Ready and RulesInSync" engine_settled
    eventually 60 "every pod reports the rules hash" pods_report_desired_hash
    condition_is sigmaruleset/sigmahq-windows Valid True || fail "sigmahq-windows is not Valid"
    [[ $(jsonpath sigmaruleset/sigmahq-windows .status.ruleCount) == "${#files[@]}" ]] ||
        fail "sigmahq-windows ruleCount is not ${#files[@]}"
    [[ $(engine_pods | wc -l) == 2 ]] || fail "the engine does not have 2 pods"
    # The operator applies the ServiceAccount before the Deployment: with the
    # ServiceAccount admission plugin no pod creation was refused.
    if k -n "$NS" get events -o 'jsonpath={range .items[*]}{.reason} {.message}{"\n"}{end}' |
        grep -i 'FailedCreate.*serviceaccount'; then
        fail "a pod of the engine was refused for a missing ServiceAccount"
    fi
    pod_identities >"$WORK/pods.before"
}

detect_through_service() {
    {
        event 'certutil -decode payload.b64 payload.exe svc-batch' 'C:\\Windows\\System32\\certutil.exe'
        event 'whoami -all svc-batch' 'C:\\Windows\\System32\\whoami.exe'
        event 'notepad.exe report.txt svc-batch' 'C:\\Windows\\System32\\notepad.exe'
    } >"$WORK/service.ndjson"
    send_events "svc/$ENGINE" "$WORK/service.ndjson"
    eventually 30 "certutil -decode detected" detected "$CERTUTIL_DECODE_RULE" 'svc-batch'
    eventually 30 "whoami -all detected" detected "$WHOAMI_ALL_RULE" 'svc-batch'
    if detections | grep -F 'notepad.exe report.txt svc-batch' >/dev/null; then
        fail "the benign notepad event was detected"
    fi
}

change_rule() {
    local old_hash
    old_hash=$(jsonpath "detectionengine/$ENGINE" .status.desiredRulesHash)
    event 'cmd /c echo rsigma-e2e-v2 before-change' 'C:\\Windows\\System32\\cmd.exe' >"$WORK/before.ndjson"
    send_events "svc/$ENGINE" "$WORK/before.ndjson"
    sleep 2
    if detected "$MARKER_RULE" 'before-change'; then fail "the v2 marker matched before the change"; fi
    k apply -f "$MANIFESTS/custom-v2.yaml"
    eventually 60 "the engine wants the new rules" desired_hash_is_not "$old_hash"
    eventually 180 "every pod reloaded the new rules" engine_in_sync
    eventually 30 "the custom rule set is Applied" condition_is sigmaruleset/custom Applied True
    for pod in $(engine_pods); do
        event "cmd /c echo rsigma-e2e-v2 after-change-$pod" 'C:\\Windows\\System32\\cmd.exe' >"$WORK/after.ndjson"
        send_events "pod/$pod" "$WORK/after.ndjson"
        eventually 30 "pod $pod detects the changed rule" detected "$MARKER_RULE" "after-change-$pod"
    done
    pod_identities >"$WORK/pods.after"
    diff "$WORK/pods.before" "$WORK/pods.after" ||
        fail "a pod was replaced or restarted by the rule change"
}

broken_rule_keeps_serving() {
    local hash generation
    hash=$(jsonpath "detectionengine/$ENGINE" .status.desiredRulesHash)
    generation=$(jsonpath sigmaruleset/custom .metadata.generation)
    k apply -f "$MANIFESTS/custom-broken.yaml"
    eventually 60 "the broken rule set is reported Valid=False" condition_is sigmaruleset/custom Valid False
    jsonpath sigmaruleset/custom '.status.conditions[?(@.type=="Valid")].message'
    echo
    [[ $(jsonpath sigmaruleset/custom .status.servingGeneration) == "$generation" ]] ||
        fail "servingGeneration is not the last valid generation $generation"
    eventually 60 "the engine reports Degraded" condition_is "detectionengine/$ENGINE" Degraded True
    [[ $(jsonpath "detectionengine/$ENGINE" .status.desiredRulesHash) == "$hash" ]] ||
        fail "the broken rule set changed the engine's rules"
    pods_report_desired_hash || fail "a pod left the last valid rules"
    event 'cmd /c echo rsigma-e2e-v2 while-broken' 'C:\\Windows\\System32\\cmd.exe' >"$WORK/broken.ndjson"
    send_events "svc/$ENGINE" "$WORK/broken.ndjson"
    eventually 30 "the last valid rule still detects" detected "$MARKER_RULE" 'while-broken'
    k apply -f "$MANIFESTS/custom-v2.yaml"
    eventually 60 "the fixed rule set is Valid again" condition_is sigmaruleset/custom Valid True
    eventually 60 "the engine is no longer Degraded" condition_is "detectionengine/$ENGINE" Degraded False
    pod_identities >"$WORK/pods.after"
    diff "$WORK/pods.before" "$WORK/pods.after" || fail "a pod was replaced or restarted"
}

tap_and_replay() {
    local tapped rules=$WORK/rules
    # k8s:// picks the first ready pod by name: send the batch there.
    tapped=$(first_ready_pod)
    [[ -n $tapped ]] || fail "no ready pod to tap"
    : >"$WORK/tap.ndjson"
    for i in 1 2 3 4 5; do
        event "certutil -decode in$i.b64 out$i.exe tap-batch-$i" 'C:\\Windows\\System32\\certutil.exe' >>"$WORK/tap.ndjson"
        event "whoami -all tap-batch-$i" 'C:\\Windows\\System32\\whoami.exe' >>"$WORK/tap.ndjson"
        event "cmd /c echo rsigma-e2e-v2 tap-batch-$i" 'C:\\Windows\\System32\\cmd.exe' >>"$WORK/tap.ndjson"
        event "notepad.exe notes$i.txt tap-batch-$i" 'C:\\Windows\\System32\\notepad.exe' >>"$WORK/tap.ndjson"
    done
    # The pod's detections of the batch: its log lines after this point.
    local seen
    seen=$(k -n "$NS" logs "$tapped" | wc -l)
    "$RSIGMA" engine tap --addr "k8s://$NS/$ENGINE" --duration 8s -o "$WORK/fixture.ndjson" \
        2>"$WORK/tap.err" &
    local tap_pid=$!
    sleep 3
    send_events "pod/$tapped" "$WORK/tap.ndjson"
    wait "$tap_pid" || { cat "$WORK/tap.err" >&2; fail "rsigma engine tap failed"; return 1; }
    cat "$WORK/tap.err"
    [[ $(grep -c 'tap-batch' "$WORK/fixture.ndjson") == 20 ]] ||
        fail "the fixture does not hold the 20 tapped events ($(grep -c 'tap-batch' "$WORK/fixture.ndjson"))"
    # The same rules as the pods: the SigmaHQ files and the custom rule.
    mkdir -p "$rules"
    for pattern in "${SIGMAHQ_RULES[@]}"; do
        # shellcheck disable=SC2086
        cp $SIGMAHQ_DIR/$pattern "$rules/"
    done
    jsonpath sigmaruleset/custom '.spec.rules[0]' >"$rules/custom.yml"
    "$RSIGMA" engine eval -r "$rules" -e "@$WORK/fixture.ndjson" 2>/dev/null |
        grep '^{"rule_title"' | sort >"$WORK/replayed"
    k -n "$NS" logs "$tapped" | tail -n +"$((seen + 1))" | grep '^{"rule_title"' | sort >"$WORK/live"
    [[ -s $WORK/live ]] || fail "no live detection of the tapped batch"
    diff "$WORK/live" "$WORK/replayed" || fail "replaying the fixture gives other detections than the pod"
    echo "scenario: the replayed fixture gives the pod's $(wc -l <"$WORK/live") detections"
}

status_and_reload_through_k8s() {
    local status desired
    status=$("$RSIGMA" engine status --addr "k8s://$NS/$ENGINE")
    desired=$(jsonpath "detectionengine/$ENGINE" .status.desiredRulesHash)
    grep -q "\"$desired\"" <<<"$status" || fail "engine status does not show the rules hash $desired"
    "$RSIGMA" config reload --addr "k8s://$NS/$ENGINE" ||
        fail "rsigma config reload through k8s:// failed"
    "$RSIGMA" engine status --addr "k8s://$NS/svc/$ENGINE" >/dev/null ||
        fail "engine status through k8s://NS/svc/NAME failed"
}

# account_token ACCOUNT: a token of the ServiceAccount: `kubectl create
# token` (Kubernetes 1.24+), else its token Secret (older clusters).
account_token() {
    local secret
    if k -n "$NS" create token "$1" 2>/dev/null; then return 0; fi
    eventually 30 "ServiceAccount $1 has a token Secret" has_token "$1" >&2 || return 1
    secret=$(k -n "$NS" get serviceaccount "$1" -o 'jsonpath={.secrets[0].name}')
    k -n "$NS" get secret "$secret" -o 'jsonpath={.data.token}' | base64 -d
}

# kubeconfig_for ACCOUNT FILE: a kubeconfig of the cluster with the token of
# ACCOUNT (a ServiceAccount of the namespace).
kubeconfig_for() {
    local token server
    token=$(account_token "$1") || return 1
    server=$(k config view --minify -o 'jsonpath={.clusters[0].cluster.server}')
    cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: $server
    insecure-skip-tls-verify: true
users:
- name: $1
  user:
    token: $token
contexts:
- name: $1
  context: {cluster: c, user: $1, namespace: $NS}
current-context: $1
EOF
}

debug_role_is_enough() {
    k apply -f "$MANIFESTS/debug-user.yaml"
    kubeconfig_for debugger "$WORK/debugger.kubeconfig"
    kubeconfig_for outsider "$WORK/outsider.kubeconfig"
    "$RSIGMA" engine status --kubeconfig "$WORK/debugger.kubeconfig" --addr "k8s://$NS/$ENGINE" >/dev/null ||
        fail "the rsigma-debug role does not allow engine status"
    "$RSIGMA" engine tap --kubeconfig "$WORK/debugger.kubeconfig" --addr "k8s://$NS/$ENGINE" \
        --duration 1s -o "$WORK/debugger.ndjson" || fail "the rsigma-debug role does not allow the tap"
    local rc=0
    "$RSIGMA" engine status --kubeconfig "$WORK/outsider.kubeconfig" --addr "k8s://$NS/$ENGINE" \
        2>"$WORK/outsider.err" || rc=$?
    cat "$WORK/outsider.err"
    [[ $rc == 3 ]] || fail "an account without the role got exit code $rc, not 3"
    grep -q 'forbidden.*get detectionengines' "$WORK/outsider.err" ||
        fail "the error does not name the missing permission"
}

tap_disabled_is_refused() {
    k -n "$NS" patch detectionengine "$ENGINE" --type merge -p '{"spec":{"tap":{"enabled":false}}}'
    local rc=0
    "$RSIGMA" engine tap --addr "k8s://$NS/$ENGINE" --duration 1s -o "$WORK/refused.ndjson" \
        2>"$WORK/refused.err" || rc=$?
    cat "$WORK/refused.err"
    [[ $rc == 3 ]] || fail "a tap of an engine without tap got exit code $rc, not 3"
    grep -q 'the tap is disabled on DetectionEngine' "$WORK/refused.err" ||
        fail "the error does not say that the tap is disabled"
    [[ ! -e $WORK/refused.ndjson ]] || fail "a refused tap created the fixture"
}

# Every certutil event of the NATS batch (n1.b64 ... n10.b64) was reported
# by an engine pod (stdout) and published to the NATS subject detections.
nats_batch_detected() {
    local i
    for i in $(seq 1 10); do
        detected "$CERTUTIL_DECODE_RULE" "n$i.b64" || return 1
        grep -F "\"rule_id\":\"$CERTUTIL_DECODE_RULE\"" "$WORK/nats-detections" |
            grep -F "n$i.b64" >/dev/null || return 1
    done
}

detect_over_nats() {
    # The helpers below act on the NATS engine.
    local ENGINE=edge NATS_TOKEN host port pub sub reader i
    NATS_TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    k -n "$NS" create secret generic nats-server --from-literal=nats.conf="port: 4222
jetstream { store_dir: /data }
authorization { token: \"$NATS_TOKEN\" }"
    k -n "$NS" create secret generic nats-auth --from-literal=token="$NATS_TOKEN"
    sed -e "s|@NATS_IMAGE@|$NATS_IMAGE|" -e "s|@NATS_PULL_POLICY@|$NATS_PULL_POLICY|" \
        "$MANIFESTS/nats-server.yaml" | k apply -f -
    k -n "$NS" rollout status deployment/nats --timeout=120s
    host=$(jsonpath service/nats .spec.clusterIP)
    sed -e "s|@NATS_HOST@|$host|" "$MANIFESTS/engine-nats.yaml" | k apply -f -
    eventually 180 "NATS engine Ready and RulesInSync" engine_settled
    eventually 60 "every NATS engine pod reports the rules hash" pods_report_desired_hash
    [[ $(engine_pods | wc -l) == 2 ]] || fail "the NATS engine does not have 2 pods"
    # One consumer group for both pods; the token only as a Secret reference.
    k -n "$NS" get deployment "$ENGINE" -o json >"$WORK/edge-deployment.json"
    grep -F '"--consumer-group"' -A1 "$WORK/edge-deployment.json" | grep -F '"rsigma-detection-edge"' >/dev/null ||
        fail "the NATS engine's pods do not share the consumer group rsigma-detection-edge"
    if grep -F -- "$NATS_TOKEN" "$WORK/edge-deployment.json" >/dev/null; then
        fail "the NATS token appears in the engine's Deployment"
    fi

    port_forward svc/nats port 4222
    nats_connect "$port" sub
    printf 'SUB detections 1\r\nPING\r\n' >&"$sub"
    nats_pong "$sub"
    cat <&"$sub" >"$WORK/nats-detections" &
    reader=$!
    : >"$WORK/nats.ndjson"
    for i in $(seq 1 10); do
        event "certutil -decode n$i.b64 n$i.exe nats-batch" 'C:\\Windows\\System32\\certutil.exe' >>"$WORK/nats.ndjson"
        event "notepad.exe n$i.txt nats-batch" 'C:\\Windows\\System32\\notepad.exe' >>"$WORK/nats.ndjson"
    done
    nats_connect "$port" pub
    nats_publish "$pub" events.windows.sysmon "$WORK/nats.ndjson"
    echo "scenario: published $(wc -l <"$WORK/nats.ndjson") events to events.windows.sysmon"
    eventually 60 "every certutil event detected, on stdout and on NATS" nats_batch_detected
    if detections | grep -F 'notepad.exe n' >/dev/null; then
        fail "a benign notepad event of the NATS batch was detected"
    fi
    exec {pub}>&- {sub}>&-
    kill "$reader" "$PF_PID" 2>/dev/null || true
    wait "$reader" "$PF_PID" 2>/dev/null || true

    k -n "$NS" delete detectionengine "$ENGINE" --wait=true --timeout=60s
    eventually 120 "the NATS engine's objects are garbage-collected" engine_objects_gone
    k -n "$NS" delete deployment/nats service/nats secret/nats-server secret/nats-auth
}

delete_engine() {
    k -n "$NS" delete detectionengine "$ENGINE" --wait=true --timeout=60s
    eventually 120 "the engine's objects are garbage-collected" engine_objects_gone
    "$HELM" uninstall rsigma --namespace "$OPERATOR_NS" --wait --timeout 120s
}

# Runs every step (or those named) and reports each one's time. The caller
# runs with `set -e`: the first failing command of a step ends the run
# (SCENARIO_STEP names the step). Steps are not called in an `||` or `if`
# context, where bash would ignore `set -e` inside them.
run_scenario() {
    local steps=("$@") step start total=$SECONDS
    ((${#steps[@]} > 0)) || steps=("${STEPS[@]}")
    for step in "${steps[@]}"; do
        declare -F "$step" >/dev/null || { fail "no step named $step (steps: ${STEPS[*]})"; return 1; }
    done
    for step in "${steps[@]}"; do
        # shellcheck disable=SC2034 # read by the caller's exit trap
        SCENARIO_STEP=$step
        echo "scenario: == $step"
        on_step "$step"
        start=$SECONDS
        "$step"
        echo "scenario: step $step passed in $((SECONDS - start)) s"
    done
    # shellcheck disable=SC2034 # read by the caller's exit trap
    SCENARIO_STEP=""
    echo "scenario: all ${#steps[@]} steps passed in $((SECONDS - total)) s"
}
